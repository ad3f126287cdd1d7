//! The register-held path of [`crate::fused`] with AVX-512: the forward of nearest and bilinear
//! sampling for few channels, 16 positions per vector instead of 8 (bicubic and the backward
//! stay on the AVX2 path on every CPU). Run only when asked for (`STN_KERNELS_AVX512=1`): on
//! the AVX-512 CPU measured (AMD Zen 4) the gathers made it up to 1.74x slower than the AVX2
//! path's scalar loads, never faster (`fast2d::simd_level`).
//!
//! The masked loads are AVX-512 gathers (masked-off lanes read nothing and give +0.0, as
//! `simd::load8_ps`); where every bilinear tap of the 16 positions lies inside the plane, each
//! row's two adjacent taps come as one 64-bit element of a gather, as in
//! `simd::gather_f32_bilinear_512`. The operations are those of [`crate::fused`] (and so of the
//! portable `fast2d::build` and `fast2d::gather`) in the same order, so the results are bitwise
//! identical to theirs: `tests/determinism.rs` compares the builds, on an AVX-512 CPU or on an
//! emulated one (`tools/emu/avx512.sh`).

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use crate::coords::{Axis, PAD_BORDER, PAD_REFLECTION};
use crate::engine::CHUNK;
use crate::fast2d::{LINEAR, NEAREST};
use crate::fused::Planes;
use crate::simd::{gather16_ps as gather, pairs16 as pairs};

// A chunk is a whole number of 16-lane vectors: the lanes past `len` read coordinates of the
// chunk (stale, but clamped into the plane) and are not stored.
const _: () = assert!(CHUNK.is_multiple_of(16));

/// The constants of one input axis, broadcast to 16 lanes.
#[derive(Clone, Copy)]
struct VAxis {
    size: __m512,
    max: __m512,
    low: __m512,
    twice_span: __m512,
    empty: bool,
}

impl VAxis {
    #[inline(always)]
    unsafe fn new(a: &Axis<f32>) -> Self {
        VAxis {
            size: _mm512_set1_ps(a.size_t),
            max: _mm512_set1_ps(a.max_val),
            low: _mm512_set1_ps(a.low),
            twice_span: _mm512_set1_ps(a.twice_span),
            empty: a.empty,
        }
    }

    /// `Axis::clip`: max(x, 0) then min(., size - 1); NaN becomes 0 (vmaxps returns its second
    /// operand on NaN, as the portable `if x > 0 { x } else { 0 }`).
    #[inline(always)]
    unsafe fn clip(&self, x: __m512) -> __m512 {
        _mm512_min_ps(_mm512_max_ps(x, _mm512_setzero_ps()), self.max)
    }

    /// `Axis::reflect`.
    #[inline(always)]
    unsafe fn reflect(&self, x: __m512) -> __m512 {
        if self.empty {
            return _mm512_setzero_ps();
        }
        let a = _mm512_abs_ps(_mm512_sub_ps(x, self.low));
        let q = _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(_mm512_div_ps(
            a,
            self.twice_span,
        ));
        let extra = _mm512_sub_ps(a, _mm512_mul_ps(q, self.twice_span));
        let other = _mm512_sub_ps(self.twice_span, extra);
        // vminps returns its second operand unless the first is smaller: NaN keeps `extra`.
        _mm512_add_ps(_mm512_min_ps(other, extra), self.low)
    }

    /// `Axis::pad` (forward).
    #[inline(always)]
    unsafe fn pad<const PAD: u8>(&self, x: __m512) -> __m512 {
        match PAD {
            PAD_BORDER => self.clip(x),
            PAD_REFLECTION => self.clip(self.reflect(x)),
            _ => x,
        }
    }

    /// `Axis::in_range` of integral values: set where -1 < i < size (clear for NaN).
    #[inline(always)]
    unsafe fn in_range(&self, i: __m512) -> __mmask16 {
        _mm512_cmp_ps_mask::<_CMP_GT_OQ>(i, _mm512_set1_ps(-1.0))
            & _mm512_cmp_ps_mask::<_CMP_LT_OQ>(i, self.size)
    }

    /// `fast2d::clamp_index`: the index clamped into the axis (NaN to 0).
    #[inline(always)]
    unsafe fn index(&self, v: __m512) -> __m512i {
        _mm512_cvttps_epi32(self.clip(v))
    }
}

/// Stores the first `lanes` lanes of `v` at `out`.
#[inline(always)]
unsafe fn store(out: *mut f32, v: __m512, lanes: usize) {
    if lanes == 16 {
        _mm512_storeu_ps(out, v);
    } else {
        _mm512_mask_storeu_ps(out, ((1u32 << lanes) - 1) as __mmask16, v);
    }
}

/// Forward of one chunk (positions 0..len, pixel coordinates `xs`, `ys`) for every channel,
/// nearest (`MODE` = [`NEAREST`]) or bilinear ([`LINEAR`]).
///
/// # Safety
/// AVX-512F, AVX2 and FMA are available; `MODE` is [`NEAREST`] or [`LINEAR`]; `pl` describes
/// `c` readable input planes of the axes' size and `c` writable output runs of `len` elements;
/// `len <= CHUNK`.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(crate) unsafe fn forward<const MODE: u8, const PAD: u8>(
    ax: &Axis<f32>,
    ay: &Axis<f32>,
    xs: &[f32; CHUNK],
    ys: &[f32; CHUNK],
    len: usize,
    pl: Planes,
) {
    debug_assert!(MODE == NEAREST || MODE == LINEAR);
    let (vx, vy) = (VAxis::new(ax), VAxis::new(ay));
    let wrow = _mm512_set1_epi32(ay.stride as i32);
    let one = _mm512_set1_ps(1.0);
    let mut p = 0;
    while p < len {
        let lanes = (len - p).min(16);
        let x = _mm512_loadu_ps(xs.as_ptr().add(p));
        let y = _mm512_loadu_ps(ys.as_ptr().add(p));
        if MODE == NEAREST {
            let rx =
                _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(vx.pad::<PAD>(x));
            let ry =
                _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(vy.pad::<PAD>(y));
            let m = vx.in_range(rx) & vy.in_range(ry);
            let o = _mm512_add_epi32(_mm512_mullo_epi32(vy.index(ry), wrow), vx.index(rx));
            for c in 0..pl.c {
                let v = gather(pl.input.add(c * pl.in_plane), o, m);
                store(pl.out.add(c * pl.out_plane + p), v, lanes);
            }
        } else {
            let (x, y) = (vx.pad::<PAD>(x), vy.pad::<PAD>(y));
            let x0 = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(x);
            let y0 = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(y);
            let (fx, fy) = (_mm512_sub_ps(x, x0), _mm512_sub_ps(y, y0));
            let (x1, y1) = (_mm512_add_ps(x0, one), _mm512_add_ps(y0, one));
            let (mx0, mx1) = (vx.in_range(x0), vx.in_range(x1));
            let (my0, my1) = (vy.in_range(y0), vy.in_range(y1));
            let (cx0, cx1) = (vx.index(x0), vx.index(x1));
            let (ry0, ry1) = (_mm512_mullo_epi32(vy.index(y0), wrow), _mm512_mullo_epi32(vy.index(y1), wrow));
            let (wx0, wy0) = (_mm512_sub_ps(one, fx), _mm512_sub_ps(one, fy));
            let w = [
                _mm512_mul_ps(wy0, wx0),
                _mm512_mul_ps(wy0, fx),
                _mm512_mul_ps(fy, wx0),
                _mm512_mul_ps(fy, fx),
            ];
            let m = [my0 & mx0, my0 & mx1, my1 & mx0, my1 & mx1];
            let o = [
                _mm512_add_epi32(ry0, cx0),
                _mm512_add_epi32(ry0, cx1),
                _mm512_add_epi32(ry1, cx0),
                _mm512_add_epi32(ry1, cx1),
            ];
            // All four taps inside for every lane: each row's two taps are adjacent. None
            // inside: nothing to load.
            let inside = m[0] & m[3] == 0xffff;
            let outside = !inside && m[0] | m[1] | m[2] | m[3] == 0;
            for c in 0..pl.c {
                let plane = pl.input.add(c * pl.in_plane);
                let v = if inside {
                    let (l0, r0) = pairs(plane, o[0]);
                    let (l1, r1) = pairs(plane, o[2]);
                    [l0, r0, l1, r1]
                } else if outside {
                    [_mm512_setzero_ps(); 4]
                } else {
                    [
                        gather(plane, o[0], m[0]),
                        gather(plane, o[1], m[1]),
                        gather(plane, o[2], m[2]),
                        gather(plane, o[3], m[3]),
                    ]
                };
                let mut acc = _mm512_mul_ps(w[0], v[0]);
                acc = _mm512_add_ps(acc, _mm512_mul_ps(w[1], v[1]));
                acc = _mm512_add_ps(acc, _mm512_mul_ps(w[2], v[2]));
                acc = _mm512_add_ps(acc, _mm512_mul_ps(w[3], v[3]));
                store(pl.out.add(c * pl.out_plane + p), acc, lanes);
            }
        }
        p += 16;
    }
}
