//! Register-held sampling for few channels (C <= [`MAX_FUSED_C`], the image case), x86-64 AVX2.
//!
//! The staged fast path ([`crate::fast2d`]) computes the taps of a chunk of 64 positions into
//! memory (offsets, weights, masks) and then reads them back for every channel: that pays off
//! when many channels share the taps, and costs more than the sampling itself for one to four.
//! Here the coordinates, weights and offsets of 8 positions live in registers from the
//! coordinate to the stored output: the taps are computed, the input is read (64-bit pairs
//! for the two taps of a bilinear row, 128-bit quads for a bicubic row where every tap lies
//! inside the plane; eight scalar loads per tap otherwise, see `simd::load8_ps`) and the result is written, for each channel,
//! without a round trip through memory.
//!
//! The operations are those of `fast2d::build` and `fast2d::gather` (the portable path) in
//! the same order, so the results are bitwise identical to it (tested in `determinism.rs`).

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use crate::coords::{Axis, PAD_BORDER, PAD_REFLECTION};
use crate::engine::CHUNK;
use crate::fast2d::{CUBIC, LINEAR, NEAREST};

/// The most channels the register-held path takes (more share the staged taps better).
pub(crate) const MAX_FUSED_C: usize = 4;

/// Whether the register-held path is on (`STN_KERNELS_NO_FUSED=1` turns it off, to compare).
pub(crate) fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("STN_KERNELS_NO_FUSED").is_none())
}

/// The constants of one input axis, broadcast.
#[derive(Clone, Copy)]
struct VAxis {
    size: __m256,
    max: __m256,
    low: __m256,
    twice_span: __m256,
    empty: bool,
}

impl VAxis {
    #[inline(always)]
    unsafe fn new(a: &Axis<f32>) -> Self {
        VAxis {
            size: _mm256_set1_ps(a.size_t),
            max: _mm256_set1_ps(a.max_val),
            low: _mm256_set1_ps(a.low),
            twice_span: _mm256_set1_ps(a.twice_span),
            empty: a.empty,
        }
    }

    /// `Axis::clip`: max(x, 0) then min(., size - 1); NaN becomes 0 (maxps returns its second
    /// operand on NaN, as the portable `if x > 0 { x } else { 0 }`).
    #[inline(always)]
    unsafe fn clip(&self, x: __m256) -> __m256 {
        _mm256_min_ps(_mm256_max_ps(x, _mm256_setzero_ps()), self.max)
    }

    /// `Axis::reflect`.
    #[inline(always)]
    unsafe fn reflect(&self, x: __m256) -> __m256 {
        if self.empty {
            return _mm256_setzero_ps();
        }
        let a = _mm256_andnot_ps(_mm256_set1_ps(-0.0), _mm256_sub_ps(x, self.low));
        let q =
            _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(_mm256_div_ps(a, self.twice_span));
        let extra = _mm256_sub_ps(a, _mm256_mul_ps(q, self.twice_span));
        let other = _mm256_sub_ps(self.twice_span, extra);
        // minps returns its second operand unless the first is smaller: NaN keeps `extra`.
        _mm256_add_ps(_mm256_min_ps(other, extra), self.low)
    }

    /// `Axis::pad` (forward).
    #[inline(always)]
    unsafe fn pad<const PAD: u8>(&self, x: __m256) -> __m256 {
        match PAD {
            PAD_BORDER => self.clip(x),
            PAD_REFLECTION => self.clip(self.reflect(x)),
            _ => x,
        }
    }

    /// `Axis::clip_grad`: (0, 0) at or below 0, (size - 1, 0) at or above it, else (x, 1).
    #[inline(always)]
    unsafe fn clip_grad(&self, x: __m256) -> (__m256, __m256) {
        let zero = _mm256_setzero_ps();
        let low = _mm256_cmp_ps::<_CMP_LE_OQ>(x, zero);
        let high = _mm256_cmp_ps::<_CMP_GE_OQ>(x, self.max);
        let v = _mm256_blendv_ps(_mm256_blendv_ps(x, self.max, high), zero, low);
        (v, _mm256_andnot_ps(_mm256_or_ps(low, high), _mm256_set1_ps(1.0)))
    }

    /// `Axis::reflect_grad`.
    #[inline(always)]
    unsafe fn reflect_grad(&self, x: __m256) -> (__m256, __m256) {
        if self.empty {
            return (_mm256_setzero_ps(), _mm256_setzero_ps());
        }
        let d = _mm256_sub_ps(x, self.low);
        let negative = _mm256_cmp_ps::<_CMP_LT_OQ>(d, _mm256_setzero_ps());
        let a = _mm256_andnot_ps(_mm256_set1_ps(-0.0), d);
        let q =
            _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(_mm256_div_ps(a, self.twice_span));
        let extra = _mm256_sub_ps(a, _mm256_mul_ps(q, self.twice_span));
        let other = _mm256_sub_ps(self.twice_span, extra);
        let flip = _mm256_cmp_ps::<_CMP_GT_OQ>(extra, other);
        let r = _mm256_blendv_ps(extra, other, flip);
        let g = _mm256_blendv_ps(_mm256_set1_ps(1.0), _mm256_set1_ps(-1.0), _mm256_xor_ps(flip, negative));
        (_mm256_add_ps(r, self.low), g)
    }

    /// `fast2d::pad_linear` of a backward pass: the padded coordinate and its derivative, NaN
    /// to (0, 0) under border and reflection padding.
    #[inline(always)]
    unsafe fn pad_linear_grad<const PAD: u8>(&self, x: __m256) -> (__m256, __m256) {
        let (v, g) = match PAD {
            PAD_BORDER => self.clip_grad(x),
            PAD_REFLECTION => {
                let (r, gr) = self.reflect_grad(x);
                let (c, gc) = self.clip_grad(r);
                (c, _mm256_mul_ps(gr, gc))
            }
            _ => return (x, _mm256_set1_ps(1.0)),
        };
        let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x);
        (_mm256_andnot_ps(nan, v), _mm256_andnot_ps(nan, g))
    }

    /// `Axis::in_range` of integral values: all ones where -1 < i < size (false for NaN).
    #[inline(always)]
    unsafe fn in_range(&self, i: __m256) -> __m256 {
        _mm256_and_ps(
            _mm256_cmp_ps::<_CMP_GT_OQ>(i, _mm256_set1_ps(-1.0)),
            _mm256_cmp_ps::<_CMP_LT_OQ>(i, self.size),
        )
    }

    /// `fast2d::clamp_index`: the index clamped into the axis (NaN to 0).
    #[inline(always)]
    unsafe fn index(&self, v: __m256) -> __m256i {
        _mm256_cvttps_epi32(self.clip(v))
    }
}

/// The tap of nearest sampling at 8 positions (`fast2d::build`, NEAREST): its offsets and the
/// mask of the lanes whose rounded position lies inside the plane.
#[inline(always)]
unsafe fn nearest_tap<const PAD: u8>(
    vx: &VAxis,
    vy: &VAxis,
    wrow: __m256i,
    x: __m256,
    y: __m256,
) -> (__m256i, __m256) {
    let rx = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(vx.pad::<PAD>(x));
    let ry = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(vy.pad::<PAD>(y));
    let m = _mm256_and_ps(vx.in_range(rx), vy.in_range(ry));
    (_mm256_add_epi32(_mm256_mullo_epi32(vy.index(ry), wrow), vx.index(rx)), m)
}

/// The taps of bilinear interpolation at 8 positions (`fast2d::build`, LINEAR).
struct LinearTaps {
    w: [__m256; 4],
    m: [__m256; 4],
    o: [__m256i; 4],
    /// d(weight)/dx and d(weight)/dy (backward only).
    dw: [[__m256; 4]; 2],
    /// Every tap of every lane inside the plane: each row's two taps are adjacent.
    inside: bool,
    /// No tap of any lane inside.
    outside: bool,
}

#[inline(always)]
unsafe fn linear_taps<const PAD: u8, const BWD: bool>(
    vx: &VAxis,
    vy: &VAxis,
    wrow: __m256i,
    x: __m256,
    y: __m256,
) -> LinearTaps {
    let one = _mm256_set1_ps(1.0);
    let ((x, mulx), (y, muly)) = if BWD {
        (vx.pad_linear_grad::<PAD>(x), vy.pad_linear_grad::<PAD>(y))
    } else {
        ((vx.pad::<PAD>(x), one), (vy.pad::<PAD>(y), one))
    };
    let (x0, y0) = (_mm256_floor_ps(x), _mm256_floor_ps(y));
    let (fx, fy) = (_mm256_sub_ps(x, x0), _mm256_sub_ps(y, y0));
    let (x1, y1) = (_mm256_add_ps(x0, one), _mm256_add_ps(y0, one));
    let (mx0, mx1) = (vx.in_range(x0), vx.in_range(x1));
    let (my0, my1) = (vy.in_range(y0), vy.in_range(y1));
    let (cx0, cx1) = (vx.index(x0), vx.index(x1));
    let (ry0, ry1) = (_mm256_mullo_epi32(vy.index(y0), wrow), _mm256_mullo_epi32(vy.index(y1), wrow));
    let (wx0, wy0) = (_mm256_sub_ps(one, fx), _mm256_sub_ps(one, fy));
    let w = [_mm256_mul_ps(wy0, wx0), _mm256_mul_ps(wy0, fx), _mm256_mul_ps(fy, wx0), _mm256_mul_ps(fy, fx)];
    let m =
        [_mm256_and_ps(my0, mx0), _mm256_and_ps(my0, mx1), _mm256_and_ps(my1, mx0), _mm256_and_ps(my1, mx1)];
    let o = [
        _mm256_add_epi32(ry0, cx0),
        _mm256_add_epi32(ry0, cx1),
        _mm256_add_epi32(ry1, cx0),
        _mm256_add_epi32(ry1, cx1),
    ];
    let dw = if BWD {
        let (nmx, nmy) = (neg(mulx), neg(muly));
        [
            [
                _mm256_mul_ps(wy0, nmx),
                _mm256_mul_ps(wy0, mulx),
                _mm256_mul_ps(fy, nmx),
                _mm256_mul_ps(fy, mulx),
            ],
            [
                _mm256_mul_ps(nmy, wx0),
                _mm256_mul_ps(nmy, fx),
                _mm256_mul_ps(muly, wx0),
                _mm256_mul_ps(muly, fx),
            ],
        ]
    } else {
        [[_mm256_setzero_ps(); 4]; 2]
    };
    // All four taps inside for every lane: x1 = x0 + 1 and y1 = y0 + 1 inside the plane, so
    // each row's two taps are adjacent. None inside: nothing to load.
    let inside = _mm256_movemask_ps(_mm256_and_ps(m[0], m[3])) == 0xff;
    let outside =
        !inside && _mm256_movemask_ps(_mm256_or_ps(_mm256_or_ps(m[0], m[1]), _mm256_or_ps(m[2], m[3]))) == 0;
    LinearTaps { w, m, o, dw, inside, outside }
}

#[inline(always)]
unsafe fn splat(v: f32) -> __m256 {
    _mm256_set1_ps(v)
}

#[inline(always)]
unsafe fn neg(v: __m256) -> __m256 {
    _mm256_xor_ps(v, _mm256_set1_ps(-0.0))
}

/// The values of the four bilinear taps in one plane (+0.0 outside).
#[inline(always)]
unsafe fn linear_values(plane: *const f32, t: &LinearTaps) -> [__m256; 4] {
    if t.inside {
        let (l0, r0) = pairs(plane, &lanes_of(t.o[0]));
        let (l1, r1) = pairs(plane, &lanes_of(t.o[2]));
        [l0, r0, l1, r1]
    } else if t.outside {
        [_mm256_setzero_ps(); 4]
    } else {
        let (o, m) = (&t.o, &t.m);
        [
            gather(plane, o[0], m[0]),
            gather(plane, o[1], m[1]),
            gather(plane, o[2], m[2]),
            gather(plane, o[3], m[3]),
        ]
    }
}

/// Where a group of 8 positions is written: `out + c * out_plane` per channel, `lanes` lanes.
#[inline(always)]
unsafe fn store(out: *mut f32, v: __m256, lanes: usize) {
    if lanes == 8 {
        _mm256_storeu_ps(out, v);
    } else {
        let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let m = _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes as i32), idx);
        _mm256_maskstore_ps(out, m, v);
    }
}

#[inline(always)]
unsafe fn gather(plane: *const f32, idx: __m256i, mask: __m256) -> __m256 {
    crate::simd::load8_ps(plane, idx, mask)
}

/// The 8 lanes of an offset vector.
#[inline(always)]
unsafe fn lanes_of(v: __m256i) -> [i32; 8] {
    std::mem::transmute::<__m256i, [i32; 8]>(v)
}

use crate::simd::pairs;

#[inline(always)]
unsafe fn quad(plane: *const f32, o: i32) -> __m128 {
    _mm_loadu_ps(plane.add(o as usize))
}

/// Four adjacent values per lane (128-bit loads at `plane + o[lane]`), transposed: element i
/// of the result holds the i-th value of the 8 lanes.
#[inline(always)]
unsafe fn quads(plane: *const f32, o: &[i32; 8]) -> [__m256; 4] {
    let t0 = _mm256_set_m128(quad(plane, o[4]), quad(plane, o[0]));
    let t1 = _mm256_set_m128(quad(plane, o[5]), quad(plane, o[1]));
    let t2 = _mm256_set_m128(quad(plane, o[6]), quad(plane, o[2]));
    let t3 = _mm256_set_m128(quad(plane, o[7]), quad(plane, o[3]));
    let a = _mm256_unpacklo_ps(t0, t1);
    let b = _mm256_unpackhi_ps(t0, t1);
    let c = _mm256_unpacklo_ps(t2, t3);
    let d = _mm256_unpackhi_ps(t2, t3);
    [
        _mm256_shuffle_ps::<0b01_00_01_00>(a, c),
        _mm256_shuffle_ps::<0b11_10_11_10>(a, c),
        _mm256_shuffle_ps::<0b01_00_01_00>(b, d),
        _mm256_shuffle_ps::<0b11_10_11_10>(b, d),
    ]
}

/// The problem of one chunk: where its `c` input planes and output planes start.
#[derive(Clone, Copy)]
pub(crate) struct Planes {
    /// Channel 0 of the sample's input; channel `c` starts `c * in_plane` later.
    pub input: *const f32,
    pub in_plane: usize,
    /// Channel 0 of the output at the chunk's first position; channel `c` `c * out_plane` later.
    pub out: *mut f32,
    pub out_plane: usize,
    pub c: usize,
}

/// Forward of one chunk (positions 0..len, pixel coordinates `xs`, `ys`) for every channel.
///
/// # Safety
/// AVX2 and FMA are available; `planes` describes `c` readable input planes of the axes'
/// size and `c` writable output runs of `len` elements; `len <= CHUNK`.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn forward<const MODE: u8, const PAD: u8>(
    ax: &Axis<f32>,
    ay: &Axis<f32>,
    xs: &[f32; CHUNK],
    ys: &[f32; CHUNK],
    len: usize,
    pl: Planes,
) {
    let (vx, vy) = (VAxis::new(ax), VAxis::new(ay));
    let wrow = _mm256_set1_epi32(ay.stride as i32);
    let zero = _mm256_setzero_ps();
    if MODE == NEAREST && pl.c == 1 {
        // One channel: the chunk's offsets and masks go through memory (a pass that computes
        // them, then one that loads). Each offset is used once, and eight scalar reads of
        // offsets from memory cost less than extracting eight lanes from a register. Measured
        // on a Zen 4 against the one-pass loop below (5 rounds): case a (256x1x28x28) `gs fwd`
        // 0.88-0.94x the time, `fwd` 0.85-0.91x; case b (128x1x60x60) 0.76-0.89x and
        // 0.85-0.98x. With more channels the lanes are extracted once for all of them and the
        // one pass is faster (case d, 3 channels: two passes took about 1.05x its time). Not
        // measured on an AVX2-only CPU. The arrays stay uninitialized: the first pass writes
        // the entries of positions 0..len, the only ones the second reads (zeroing them took
        // 1.05x the time on case a's `gs fwd`).
        let mut offsets = std::mem::MaybeUninit::<[__m256i; CHUNK / 8]>::uninit();
        let mut masks = std::mem::MaybeUninit::<[__m256; CHUNK / 8]>::uninit();
        let (offsets, masks) = (offsets.as_mut_ptr() as *mut __m256i, masks.as_mut_ptr() as *mut __m256);
        let mut p = 0;
        while p < len {
            let x = _mm256_loadu_ps(xs.as_ptr().add(p));
            let y = _mm256_loadu_ps(ys.as_ptr().add(p));
            let (o, m) = nearest_tap::<PAD>(&vx, &vy, wrow, x, y);
            masks.add(p / 8).write(m);
            offsets.add(p / 8).write(o);
            p += 8;
        }
        let mut p = 0;
        while p < len {
            let v = gather(pl.input, offsets.add(p / 8).read(), masks.add(p / 8).read());
            store(pl.out.add(p), v, (len - p).min(8));
            p += 8;
        }
        return;
    }
    let mut p = 0;
    // CHUNK is a multiple of 8: the lanes past `len` read stale coordinates of the chunk
    // (any value is safe: offsets are clamped) and are not stored.
    while p < len {
        let lanes = (len - p).min(8);
        let x = _mm256_loadu_ps(xs.as_ptr().add(p));
        let y = _mm256_loadu_ps(ys.as_ptr().add(p));
        match MODE {
            NEAREST => {
                let (o, m) = nearest_tap::<PAD>(&vx, &vy, wrow, x, y);
                for c in 0..pl.c {
                    let v = gather(pl.input.add(c * pl.in_plane), o, m);
                    store(pl.out.add(c * pl.out_plane + p), v, lanes);
                }
            }
            LINEAR => {
                let t = linear_taps::<PAD, false>(&vx, &vy, wrow, x, y);
                let w = t.w;
                for c in 0..pl.c {
                    let v = linear_values(pl.input.add(c * pl.in_plane), &t);
                    let mut acc = _mm256_mul_ps(w[0], v[0]);
                    acc = _mm256_add_ps(acc, _mm256_mul_ps(w[1], v[1]));
                    acc = _mm256_add_ps(acc, _mm256_mul_ps(w[2], v[2]));
                    acc = _mm256_add_ps(acc, _mm256_mul_ps(w[3], v[3]));
                    store(pl.out.add(c * pl.out_plane + p), acc, lanes);
                }
            }
            _ => {
                let t = cubic_taps::<PAD>(&vx, &vy, wrow, x, y);
                for c in 0..pl.c {
                    let plane = pl.input.add(c * pl.in_plane);
                    let mut acc = zero;
                    for j in 0..4 {
                        let row = cubic_row(plane, &t, j);
                        for i in 0..4 {
                            let wv = _mm256_mul_ps(t.cy[j], t.cx[i]);
                            let term = _mm256_mul_ps(wv, row[i]);
                            acc = if j == 0 && i == 0 { term } else { _mm256_add_ps(acc, term) };
                        }
                    }
                    store(pl.out.add(c * pl.out_plane + p), acc, lanes);
                }
            }
        }
        p += 8;
    }
}

/// The 16 taps of bicubic interpolation at 8 positions.
struct CubicTaps {
    /// Fractional offsets along x and y.
    sx: __m256,
    sy: __m256,
    cx: [__m256; 4],
    cy: [__m256; 4],
    /// Offsets and masks per (row j, column i).
    o: [[__m256i; 4]; 4],
    m: [[__m256; 4]; 4],
    /// Every tap of every lane lies inside and the 4x4 taps are adjacent (rows of 4).
    inside: bool,
}

/// `coords::cubic_coefficients`' outer taps: `((a x - 5a) x + 8a) x - 4a`.
#[inline(always)]
unsafe fn cubic_far(x: __m256) -> __m256 {
    let a = CUBIC_A;
    let t = _mm256_sub_ps(_mm256_mul_ps(_mm256_set1_ps(a), x), _mm256_set1_ps(5.0 * a));
    let t = _mm256_add_ps(_mm256_mul_ps(t, x), _mm256_set1_ps(8.0 * a));
    _mm256_sub_ps(_mm256_mul_ps(t, x), _mm256_set1_ps(4.0 * a))
}

/// `coords::cubic_coefficients`' inner taps: `((a + 2) x - (a + 3)) x x + 1`.
#[inline(always)]
unsafe fn cubic_near(x: __m256) -> __m256 {
    let a = CUBIC_A;
    let t = _mm256_sub_ps(_mm256_mul_ps(_mm256_set1_ps(a + 2.0), x), _mm256_set1_ps(a + 3.0));
    _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(t, x), x), _mm256_set1_ps(1.0))
}

/// The bicubic convolution constant, as `coords` has it in f32.
const CUBIC_A: f32 = -0.75;

/// `coords::cubic_coefficients` of 8 fractional offsets (closures would lose the target
/// features, so every step is an inlined function).
#[inline(always)]
unsafe fn cubic_coefficients(s: __m256) -> [__m256; 4] {
    let (one, two) = (_mm256_set1_ps(1.0), _mm256_set1_ps(2.0));
    [
        cubic_far(_mm256_add_ps(s, one)),
        cubic_near(s),
        cubic_near(_mm256_sub_ps(one, s)),
        cubic_far(_mm256_sub_ps(two, s)),
    ]
}

/// `coords::cubic_derivatives` of 8 fractional offsets, the same operations in the same order.
#[inline(always)]
unsafe fn cubic_derivatives(s: __m256) -> [__m256; 4] {
    let a = CUBIC_A;
    let x0 = _mm256_sub_ps(splat(-1.0), s);
    let g0 = _mm256_sub_ps(
        _mm256_mul_ps(_mm256_sub_ps(_mm256_mul_ps(splat(-3.0 * a), x0), splat(10.0 * a)), x0),
        splat(8.0 * a),
    );
    let x1 = neg(s);
    let g1 =
        _mm256_mul_ps(_mm256_sub_ps(_mm256_mul_ps(splat(-3.0 * (a + 2.0)), x1), splat(2.0 * (a + 3.0))), x1);
    let x2 = _mm256_sub_ps(splat(1.0), s);
    let g2 =
        _mm256_mul_ps(_mm256_sub_ps(_mm256_mul_ps(splat(3.0 * (a + 2.0)), x2), splat(2.0 * (a + 3.0))), x2);
    let x3 = _mm256_sub_ps(splat(2.0), s);
    let g3 = _mm256_add_ps(
        _mm256_mul_ps(_mm256_sub_ps(_mm256_mul_ps(splat(3.0 * a), x3), splat(10.0 * a)), x3),
        splat(8.0 * a),
    );
    [neg(g0), neg(g1), neg(g2), neg(g3)]
}

/// The values of the 4 taps of row `j` in one plane (+0.0 outside).
#[inline(always)]
unsafe fn cubic_row(plane: *const f32, t: &CubicTaps, j: usize) -> [__m256; 4] {
    if t.inside {
        quads(plane, &lanes_of(t.o[j][0]))
    } else {
        let (o, m) = (&t.o[j], &t.m[j]);
        [
            gather(plane, o[0], m[0]),
            gather(plane, o[1], m[1]),
            gather(plane, o[2], m[2]),
            gather(plane, o[3], m[3]),
        ]
    }
}

#[inline(always)]
unsafe fn cubic_taps<const PAD: u8>(
    vx: &VAxis,
    vy: &VAxis,
    wrow: __m256i,
    x: __m256,
    y: __m256,
) -> CubicTaps {
    let (x0, y0) = (_mm256_floor_ps(x), _mm256_floor_ps(y));
    let (sx, sy) = (_mm256_sub_ps(x, x0), _mm256_sub_ps(y, y0));
    let (cx, cy) = (cubic_coefficients(sx), cubic_coefficients(sy));
    let mut qx = [_mm256_setzero_si256(); 4];
    let mut qy = [_mm256_setzero_si256(); 4];
    let mut mx = [_mm256_setzero_ps(); 4];
    let mut my = [_mm256_setzero_ps(); 4];
    for i in 0..4 {
        let d = _mm256_set1_ps(i as f32 - 1.0);
        let tx = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(
            vx.pad::<PAD>(_mm256_add_ps(x0, d)),
        );
        let ty = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(
            vy.pad::<PAD>(_mm256_add_ps(y0, d)),
        );
        mx[i] = vx.in_range(tx);
        my[i] = vy.in_range(ty);
        qx[i] = vx.index(tx);
        qy[i] = _mm256_mullo_epi32(vy.index(ty), wrow);
    }
    let mut o = [[_mm256_setzero_si256(); 4]; 4];
    let mut m = [[_mm256_setzero_ps(); 4]; 4];
    for j in 0..4 {
        for i in 0..4 {
            o[j][i] = _mm256_add_epi32(qy[j], qx[i]);
            m[j][i] = _mm256_and_ps(my[j], mx[i]);
        }
    }
    let all = _mm256_and_ps(_mm256_and_ps(mx[0], mx[3]), _mm256_and_ps(my[0], my[3]));
    let all = _mm256_and_ps(all, _mm256_and_ps(_mm256_and_ps(mx[1], mx[2]), _mm256_and_ps(my[1], my[2])));
    let mut inside = _mm256_movemask_ps(all) == 0xff;
    if inside {
        // Padding may fold taps onto each other: the quad loads need them adjacent.
        let mut adj = _mm256_set1_epi32(-1);
        for i in 1..4 {
            let dx = _mm256_sub_epi32(qx[i], qx[0]);
            let dy = _mm256_sub_epi32(qy[i], qy[0]);
            adj = _mm256_and_si256(adj, _mm256_cmpeq_epi32(dx, _mm256_set1_epi32(i as i32)));
            adj = _mm256_and_si256(
                adj,
                _mm256_cmpeq_epi32(dy, _mm256_mullo_epi32(_mm256_set1_epi32(i as i32), wrow)),
            );
        }
        inside = _mm256_movemask_epi8(adj) == -1;
    }
    CubicTaps { sx, sy, cx, cy, o, m, inside }
}

/// The problem of one backward chunk: the sample's input planes, its upstream gradient at the
/// chunk's first position, and (unless null) its input-gradient planes.
#[derive(Clone, Copy)]
pub(crate) struct BackwardPlanes {
    /// Channel 0 of the sample's input; channel `c` starts `c * in_plane` later.
    pub input: *const f32,
    pub in_plane: usize,
    /// Channel 0 of d(loss)/d(output) at the chunk's first position; channel `c` `c * out_plane` later.
    pub grad_out: *const f32,
    pub out_plane: usize,
    /// Channel 0 of the sample's d(loss)/d(input) (null: not wanted); `in_plane` apart.
    pub grad_input: *mut f32,
    pub c: usize,
}

/// Adds `prod` lane by lane at offsets `o` of `gin` where `m` is set, lanes in order (the
/// fixed order of `fast2d::scatter`: groups of 8 positions, tap by tap, position by position).
#[inline(always)]
unsafe fn scatter(gin: *mut f32, o: __m256i, m: __m256, prod: __m256) {
    let bits = _mm256_movemask_ps(m);
    if bits == 0 {
        return;
    }
    let o = lanes_of(o);
    let v = std::mem::transmute::<__m256, [f32; 8]>(prod);
    if bits == 0xff {
        for l in 0..8 {
            *gin.add(o[l] as usize) += v[l];
        }
    } else {
        for l in 0..8 {
            if bits >> l & 1 != 0 {
                *gin.add(o[l] as usize) += v[l];
            }
        }
    }
}

/// Backward of one chunk (positions 0..len, pixel coordinates `xs`, `ys`) for every channel:
/// the input-gradient scatter (if `pl.grad_input` is not null) and d(loss)/d(pixel coordinate)
/// into `g` (zeros unless `coord_grads`), as `fast2d::backward_block` computes them, bit for bit.
///
/// # Safety
/// AVX2 and FMA are available; `pl` describes `c` readable input planes of the axes' size,
/// `c` readable upstream runs of `len` elements and (unless null) `c` writable input-gradient
/// planes no other thread touches; `len <= CHUNK`.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn backward<const MODE: u8, const PAD: u8>(
    ax: &Axis<f32>,
    ay: &Axis<f32>,
    xs: &[f32; CHUNK],
    ys: &[f32; CHUNK],
    len: usize,
    pl: BackwardPlanes,
    coord_grads: bool,
    g: &mut [[f32; CHUNK]; 2],
) {
    let (vx, vy) = (VAxis::new(ax), VAxis::new(ay));
    let wrow = _mm256_set1_epi32(ay.stride as i32);
    let one = _mm256_set1_ps(1.0);
    let zero = _mm256_setzero_ps();
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let want_gin = !pl.grad_input.is_null();
    let mut p = 0;
    while p < len {
        let lanes = (len - p).min(8);
        // Lanes past `len` hold stale coordinates: their upstream values are not read (masked
        // load) and nothing is scattered from them.
        let live_i = _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes as i32), lane);
        let live = _mm256_castsi256_ps(live_i);
        let x = _mm256_loadu_ps(xs.as_ptr().add(p));
        let y = _mm256_loadu_ps(ys.as_ptr().add(p));
        let go_at = |c: usize| pl.grad_out.add(c * pl.out_plane + p);
        let (mut gx, mut gy) = (zero, zero);
        if MODE == NEAREST {
            let (o, m) = nearest_tap::<PAD>(&vx, &vy, wrow, x, y);
            let m = _mm256_and_ps(m, live);
            if want_gin {
                for c in 0..pl.c {
                    let gov = _mm256_maskload_ps(go_at(c), live_i);
                    scatter(pl.grad_input.add(c * pl.in_plane), o, m, _mm256_mul_ps(one, gov));
                }
            }
        } else if MODE == CUBIC {
            let t = cubic_taps::<PAD>(&vx, &vy, wrow, x, y);
            let (dx, dy) = if coord_grads {
                (cubic_derivatives(t.sx), cubic_derivatives(t.sy))
            } else {
                ([zero; 4], [zero; 4])
            };
            for c in 0..pl.c {
                let gov = _mm256_maskload_ps(go_at(c), live_i);
                if want_gin {
                    let gin = pl.grad_input.add(c * pl.in_plane);
                    for j in 0..4 {
                        for i in 0..4 {
                            let w = _mm256_mul_ps(t.cy[j], t.cx[i]);
                            scatter(gin, t.o[j][i], _mm256_and_ps(t.m[j][i], live), _mm256_mul_ps(w, gov));
                        }
                    }
                }
                if coord_grads {
                    let plane = pl.input.add(c * pl.in_plane);
                    let (mut sx, mut sy) = (zero, zero);
                    for j in 0..4 {
                        let v = cubic_row(plane, &t, j);
                        for i in 0..4 {
                            let tx = _mm256_mul_ps(v[i], _mm256_mul_ps(t.cy[j], dx[i]));
                            let ty = _mm256_mul_ps(v[i], _mm256_mul_ps(dy[j], t.cx[i]));
                            if j == 0 && i == 0 {
                                (sx, sy) = (tx, ty);
                            } else {
                                (sx, sy) = (_mm256_add_ps(sx, tx), _mm256_add_ps(sy, ty));
                            }
                        }
                    }
                    gx = _mm256_add_ps(gx, _mm256_mul_ps(sx, gov));
                    gy = _mm256_add_ps(gy, _mm256_mul_ps(sy, gov));
                }
            }
        } else {
            let t = linear_taps::<PAD, true>(&vx, &vy, wrow, x, y);
            for c in 0..pl.c {
                let gov = _mm256_maskload_ps(go_at(c), live_i);
                if want_gin {
                    let gin = pl.grad_input.add(c * pl.in_plane);
                    for k in 0..4 {
                        scatter(gin, t.o[k], _mm256_and_ps(t.m[k], live), _mm256_mul_ps(t.w[k], gov));
                    }
                }
                if coord_grads {
                    let v = linear_values(pl.input.add(c * pl.in_plane), &t);
                    let mut sx = _mm256_mul_ps(v[0], t.dw[0][0]);
                    let mut sy = _mm256_mul_ps(v[0], t.dw[1][0]);
                    for k in 1..4 {
                        sx = _mm256_add_ps(sx, _mm256_mul_ps(v[k], t.dw[0][k]));
                        sy = _mm256_add_ps(sy, _mm256_mul_ps(v[k], t.dw[1][k]));
                    }
                    gx = _mm256_add_ps(gx, _mm256_mul_ps(sx, gov));
                    gy = _mm256_add_ps(gy, _mm256_mul_ps(sy, gov));
                }
            }
        }
        // CHUNK is a multiple of 8, so the whole group fits in `g`.
        _mm256_storeu_ps(g[0].as_mut_ptr().add(p), gx);
        _mm256_storeu_ps(g[1].as_mut_ptr().add(p), gy);
        p += 8;
    }
}
