//! Explicit AVX2 gathers for the 2-D fast path (x86-64). The compiler does not emit
//! gathers for the portable loops, so the interpolation of a chunk is written with
//! intrinsics here; it performs the same multiplies and adds in the same order as the
//! portable `fast2d::gather`, so the results are bitwise identical (tested).

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use crate::engine::CHUNK;

/// The values at 8 offsets, +0.0 where `mask` is clear: what a masked `vgatherdps` returns,
/// read with eight scalar loads instead (every offset of the fast path is clamped into the
/// plane, so every lane may be read). Gathers are microcoded on AMD Zen 2 and earlier, where the
/// loads take half the time (measured: nearest sampling 0.73x); on AMD Zen 4 the loads still win
/// (nearest forward: 8-lane gathers 1.17-1.39x the time, 16-lane ones up to 1.74x).
///
/// # Safety
/// AVX2 is available; every lane of `idx` indexes inside `plane`.
#[inline(always)]
pub(crate) unsafe fn load8_ps(plane: *const f32, idx: __m256i, mask: __m256) -> __m256 {
    let o = std::mem::transmute::<__m256i, [i32; 8]>(idx);
    let v = _mm256_setr_ps(
        *plane.add(o[0] as usize),
        *plane.add(o[1] as usize),
        *plane.add(o[2] as usize),
        *plane.add(o[3] as usize),
        *plane.add(o[4] as usize),
        *plane.add(o[5] as usize),
        *plane.add(o[6] as usize),
        *plane.add(o[7] as usize),
    );
    _mm256_and_ps(v, mask)
}

/// [`load8_ps`] for 4 f64 values.
///
/// # Safety
/// As [`load8_ps`].
#[inline(always)]
pub(crate) unsafe fn load4_pd(plane: *const f64, idx: __m128i, mask: __m256d) -> __m256d {
    let o = std::mem::transmute::<__m128i, [i32; 4]>(idx);
    let v = _mm256_setr_pd(
        *plane.add(o[0] as usize),
        *plane.add(o[1] as usize),
        *plane.add(o[2] as usize),
        *plane.add(o[3] as usize),
    );
    _mm256_and_pd(v, mask)
}

/// Two adjacent values per lane (64-bit loads at `plane + o[lane]`), split into the left and
/// right values of the 8 lanes.
///
/// # Safety
/// AVX2 is available; `o[lane]` and `o[lane] + 1` index inside `plane`.
#[inline(always)]
pub(crate) unsafe fn pairs(plane: *const f32, o: &[i32; 8]) -> (__m256, __m256) {
    let at = |q: usize| plane.add(o[q] as usize) as *const f64;
    let a = _mm_castpd_ps(_mm_loadh_pd(_mm_load_sd(at(0)), at(1)));
    let b = _mm_castpd_ps(_mm_loadh_pd(_mm_load_sd(at(2)), at(3)));
    let c = _mm_castpd_ps(_mm_loadh_pd(_mm_load_sd(at(4)), at(5)));
    let d = _mm_castpd_ps(_mm_loadh_pd(_mm_load_sd(at(6)), at(7)));
    let x = _mm256_set_m128(c, a);
    let y = _mm256_set_m128(d, b);
    (_mm256_shuffle_ps::<0b10_00_10_00>(x, y), _mm256_shuffle_ps::<0b11_01_11_01>(x, y))
}

/// out[p] = sum_k w[k][p] * (m[k][p] != 0 ? plane[o[k][p]] : 0), f32, 8 positions at a time.
///
/// # Safety
/// AVX2 is available; every offset with a non-zero mask indexes inside `plane`.
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(crate) unsafe fn gather_f32<const K: usize>(
    o: &[[i32; CHUNK]; K],
    w: &[[f32; CHUNK]; K],
    m: &[[f32; CHUNK]; K],
    plane: *const f32,
    out: *mut f32,
    len: usize,
) {
    let zero = _mm256_setzero_ps();
    let mut p = 0;
    while p + 8 <= len {
        let mut acc = zero;
        for k in 0..K {
            let idx = _mm256_loadu_si256(o[k].as_ptr().add(p) as *const __m256i);
            let mask = _mm256_cmp_ps::<_CMP_NEQ_UQ>(_mm256_loadu_ps(m[k].as_ptr().add(p)), zero);
            let v = load8_ps(plane, idx, mask);
            if K == 1 {
                acc = v;
            } else {
                let wv = _mm256_mul_ps(_mm256_loadu_ps(w[k].as_ptr().add(p)), v);
                acc = if k == 0 { wv } else { _mm256_add_ps(acc, wv) };
            }
        }
        _mm256_storeu_ps(out.add(p), acc);
        p += 8;
    }
    scalar_tail(o, w, m, plane, out, p, len);
}

/// [`gather_f32`] for bilinear taps (K = 4: (y0, x0), (y0, x1), (y1, x0), (y1, x1)): where all
/// four taps of 8 positions lie inside the plane, each row's two taps are adjacent in memory
/// and come in one 64-bit load (two loads per position instead of a 4-tap gather); where none
/// does, nothing is loaded; other blocks of 8 take the masked gathers. The same multiplies and adds in the
/// same order, so the results are bitwise those of [`gather_f32`].
///
/// # Safety
/// As [`gather_f32`]; offsets of inside taps satisfy o[1] = o[0] + 1 and o[3] = o[2] + 1.
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(crate) unsafe fn gather_f32_bilinear(
    o: &[[i32; CHUNK]; 4],
    w: &[[f32; CHUNK]; 4],
    m: &[[f32; CHUNK]; 4],
    plane: *const f32,
    out: *mut f32,
    len: usize,
) {
    let zero = _mm256_setzero_ps();
    let mut p = 0;
    while p + 8 <= len {
        // No closures here: a closure would not inherit the target features, and its
        // intrinsics would become calls.
        let mut mb = [zero; 4];
        for k in 0..4 {
            mb[k] = _mm256_cmp_ps::<_CMP_NEQ_UQ>(_mm256_loadu_ps(m[k].as_ptr().add(p)), zero);
        }
        let v: [__m256; 4] = if _mm256_movemask_ps(_mm256_and_ps(mb[0], mb[3])) == 0xff {
            // Rows y0 and y1: pairs (x0, x1) of positions p .. p + 8.
            let (l0, r0) = pairs(plane, &*(o[0].as_ptr().add(p) as *const [i32; 8]));
            let (l1, r1) = pairs(plane, &*(o[2].as_ptr().add(p) as *const [i32; 8]));
            [l0, r0, l1, r1]
        } else if _mm256_movemask_ps(_mm256_or_ps(_mm256_or_ps(mb[0], mb[3]), _mm256_or_ps(mb[1], mb[2])))
            == 0
        {
            // Every tap outside: zeros, no load (the same arithmetic follows).
            [zero; 4]
        } else {
            let mut v = [zero; 4];
            for k in 0..4 {
                let idx = _mm256_loadu_si256(o[k].as_ptr().add(p) as *const __m256i);
                v[k] = load8_ps(plane, idx, mb[k]);
            }
            v
        };
        let mut acc = _mm256_mul_ps(_mm256_loadu_ps(w[0].as_ptr().add(p)), v[0]);
        for k in 1..4 {
            acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_loadu_ps(w[k].as_ptr().add(p)), v[k]));
        }
        _mm256_storeu_ps(out.add(p), acc);
        p += 8;
    }
    scalar_tail(o, w, m, plane, out, p, len);
}

/// The f64 version, 4 positions at a time.
///
/// # Safety
/// As [`gather_f32`].
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(crate) unsafe fn gather_f64<const K: usize>(
    o: &[[i32; CHUNK]; K],
    w: &[[f64; CHUNK]; K],
    m: &[[f64; CHUNK]; K],
    plane: *const f64,
    out: *mut f64,
    len: usize,
) {
    let zero = _mm256_setzero_pd();
    let mut p = 0;
    while p + 4 <= len {
        let mut acc = zero;
        for k in 0..K {
            let idx = _mm_loadu_si128(o[k].as_ptr().add(p) as *const __m128i);
            let mask = _mm256_cmp_pd::<_CMP_NEQ_UQ>(_mm256_loadu_pd(m[k].as_ptr().add(p)), zero);
            let v = load4_pd(plane, idx, mask);
            if K == 1 {
                acc = v;
            } else {
                let wv = _mm256_mul_pd(_mm256_loadu_pd(w[k].as_ptr().add(p)), v);
                acc = if k == 0 { wv } else { _mm256_add_pd(acc, wv) };
            }
        }
        _mm256_storeu_pd(out.add(p), acc);
        p += 4;
    }
    scalar_tail(o, w, m, plane, out, p, len);
}

#[inline(always)]
unsafe fn scalar_tail<T: crate::float::Float, const K: usize>(
    o: &[[i32; CHUNK]; K],
    w: &[[T; CHUNK]; K],
    m: &[[T; CHUNK]; K],
    plane: *const T,
    out: *mut T,
    from: usize,
    len: usize,
) {
    for p in from..len {
        let mut acc = T::ZERO;
        for k in 0..K {
            let raw = *plane.add(o[k][p] as usize);
            let v = if m[k][p] != T::ZERO { raw } else { T::ZERO };
            acc = if K == 1 {
                v
            } else if k == 0 {
                w[k][p] * v
            } else {
                acc + w[k][p] * v
            };
        }
        out.add(p).write(acc);
    }
}

/// Coordinate gradients of one channel: for each position p,
/// g[d][p] += (sum_k dw[d][k][p] * value_k) * go[p], values read as in [`gather_f32`];
/// the same operations in the same order as the portable loop of `fast2d`.
///
/// # Safety
/// As [`gather_f32`]; `go` holds at least `len` values.
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(crate) unsafe fn coord_grads_f32<const K: usize>(
    o: &[[i32; CHUNK]; K],
    m: &[[f32; CHUNK]; K],
    dw: &[[[f32; CHUNK]; K]; 2],
    plane: *const f32,
    go: &[f32],
    g: &mut [[f32; CHUNK]; 2],
    len: usize,
) {
    let zero = _mm256_setzero_ps();
    let mut p = 0;
    while p + 8 <= len {
        let mut vals = [zero; K];
        let inside = K == 4 && {
            let m0 = _mm256_cmp_ps::<_CMP_NEQ_UQ>(_mm256_loadu_ps(m[0].as_ptr().add(p)), zero);
            let m3 = _mm256_cmp_ps::<_CMP_NEQ_UQ>(_mm256_loadu_ps(m[K - 1].as_ptr().add(p)), zero);
            _mm256_movemask_ps(_mm256_and_ps(m0, m3)) == 0xff
        };
        if inside {
            // Bilinear, every tap inside: each row's two taps are adjacent (see
            // `gather_f32_bilinear`); the same values as the loads below.
            let row = |k: usize| &*(o[k].as_ptr().add(p) as *const [i32; 8]);
            (vals[0], vals[1]) = pairs(plane, row(0));
            (vals[2], vals[3]) = pairs(plane, row(2));
        } else {
            for k in 0..K {
                let idx = _mm256_loadu_si256(o[k].as_ptr().add(p) as *const __m256i);
                let mask = _mm256_cmp_ps::<_CMP_NEQ_UQ>(_mm256_loadu_ps(m[k].as_ptr().add(p)), zero);
                vals[k] = load8_ps(plane, idx, mask);
            }
        }
        let gov = _mm256_loadu_ps(go.as_ptr().add(p));
        for d in 0..2 {
            let mut s = _mm256_mul_ps(vals[0], _mm256_loadu_ps(dw[d][0].as_ptr().add(p)));
            for k in 1..K {
                s = _mm256_add_ps(s, _mm256_mul_ps(vals[k], _mm256_loadu_ps(dw[d][k].as_ptr().add(p))));
            }
            let gp = g[d].as_mut_ptr().add(p);
            _mm256_storeu_ps(gp, _mm256_add_ps(_mm256_loadu_ps(gp), _mm256_mul_ps(s, gov)));
        }
        p += 8;
    }
    crate::fast2d::coord_grads_tail(o, m, dw, plane, go, g, p, len);
}

/// The f64 version of [`coord_grads_f32`], 4 positions at a time.
///
/// # Safety
/// As [`coord_grads_f32`].
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(crate) unsafe fn coord_grads_f64<const K: usize>(
    o: &[[i32; CHUNK]; K],
    m: &[[f64; CHUNK]; K],
    dw: &[[[f64; CHUNK]; K]; 2],
    plane: *const f64,
    go: &[f64],
    g: &mut [[f64; CHUNK]; 2],
    len: usize,
) {
    let zero = _mm256_setzero_pd();
    let mut p = 0;
    while p + 4 <= len {
        let mut vals = [zero; K];
        for k in 0..K {
            let idx = _mm_loadu_si128(o[k].as_ptr().add(p) as *const __m128i);
            let mask = _mm256_cmp_pd::<_CMP_NEQ_UQ>(_mm256_loadu_pd(m[k].as_ptr().add(p)), zero);
            vals[k] = load4_pd(plane, idx, mask);
        }
        let gov = _mm256_loadu_pd(go.as_ptr().add(p));
        for d in 0..2 {
            let mut s = _mm256_mul_pd(vals[0], _mm256_loadu_pd(dw[d][0].as_ptr().add(p)));
            for k in 1..K {
                s = _mm256_add_pd(s, _mm256_mul_pd(vals[k], _mm256_loadu_pd(dw[d][k].as_ptr().add(p))));
            }
            let gp = g[d].as_mut_ptr().add(p);
            _mm256_storeu_pd(gp, _mm256_add_pd(_mm256_loadu_pd(gp), _mm256_mul_pd(s, gov)));
        }
        p += 4;
    }
    crate::fast2d::coord_grads_tail(o, m, dw, plane, go, g, p, len);
}

/// The masked 16-lane gather of single values (`vgatherdps`): `plane[idx[lane]]` where `mask`
/// is set, +0.0 elsewhere (nothing is read there). Every AVX-512 path reads single values here.
///
/// Built with `--cfg stn_emu` (only by `tools/emu/avx512.sh`), the same instruction comes from
/// inline assembly that keeps the index in zmm0-15: Bochs 2.7 raises #UD for a VSIB index in
/// zmm16-31, which the architecture allows and LLVM uses.
///
/// # Safety
/// AVX-512F is available; every lane with a set mask indexes inside `plane`.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
pub(crate) unsafe fn gather16_ps(plane: *const f32, idx: __m512i, mask: __mmask16) -> __m512 {
    #[cfg(not(stn_emu))]
    {
        _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), mask, idx, plane as *const _)
    }
    #[cfg(stn_emu)]
    {
        let out: __m512;
        std::arch::asm!(
            "vmovdqa64 {t:z}, {i}",
            "vpxord {d}, {d}, {d}",
            "kmovw {k}, {m:e}",
            "vgatherdps {d}{{{k}}}, [{b} + {t:z}*4]",
            i = in(zmm_reg) idx,
            m = in(reg) mask as u32,
            b = in(reg) plane,
            t = out(ymm_reg) _,
            d = out(zmm_reg) out,
            k = out(kreg) _,
            options(nostack, readonly, preserves_flags),
        );
        out
    }
}

/// The masked 8-lane gather of 64-bit elements (`vgatherdpd`) at byte offsets `SCALE *
/// idx[lane]` from `base`, 0 where `mask` is clear. `SCALE` is 8 to read f64 values, 4 to read
/// pairs of adjacent f32 values at f32 offsets. As [`gather16_ps`] under `--cfg stn_emu` (a
/// 256-bit index is in ymm0-15 already).
///
/// # Safety
/// AVX-512F is available; every lane with a set mask addresses 8 readable bytes.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
pub(crate) unsafe fn gather8_pd<const SCALE: i32>(base: *const f64, idx: __m256i, mask: __mmask8) -> __m512d {
    #[cfg(not(stn_emu))]
    {
        _mm512_mask_i32gather_pd::<SCALE>(_mm512_setzero_pd(), mask, idx, base as *const _)
    }
    #[cfg(stn_emu)]
    {
        let out: __m512d;
        std::arch::asm!(
            "vpxord {d}, {d}, {d}",
            "kmovw {k}, {m:e}",
            "vgatherdpd {d}{{{k}}}, [{b} + {i:y}*{s}]",
            i = in(ymm_reg) idx,
            m = in(reg) mask as u32,
            b = in(reg) base,
            s = const SCALE,
            d = out(zmm_reg) out,
            k = out(kreg) _,
            options(nostack, readonly, preserves_flags),
        );
        out
    }
}

/// Two adjacent f32 values per lane (`plane[o]`, `plane[o + 1]`) for 16 offsets, as the left and
/// right values of the 16 lanes: two gathers of 8 64-bit elements and a permute each.
///
/// # Safety
/// AVX-512F is available; `o[lane]` and `o[lane] + 1` index inside `plane`.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
pub(crate) unsafe fn pairs16(plane: *const f32, o: __m512i) -> (__m512, __m512) {
    let left = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let right = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let at = plane as *const f64;
    let lo = _mm512_castpd_ps(gather8_pd::<4>(at, _mm512_castsi512_si256(o), 0xff));
    let hi = _mm512_castpd_ps(gather8_pd::<4>(at, _mm512_extracti64x4_epi64::<1>(o), 0xff));
    (_mm512_permutex2var_ps(lo, left, hi), _mm512_permutex2var_ps(lo, right, hi))
}

/// [`gather_f32`] with AVX-512: 16 positions at a time.
///
/// # Safety
/// AVX-512F is available; as [`gather_f32`] otherwise.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
pub(crate) unsafe fn gather_f32_512<const K: usize>(
    o: &[[i32; CHUNK]; K],
    w: &[[f32; CHUNK]; K],
    m: &[[f32; CHUNK]; K],
    plane: *const f32,
    out: *mut f32,
    len: usize,
) {
    let zero = _mm512_setzero_ps();
    let mut p = 0;
    while p + 16 <= len {
        let mut acc = zero;
        for k in 0..K {
            let idx = _mm512_loadu_si512(o[k].as_ptr().add(p) as *const _);
            let mask = _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(_mm512_loadu_ps(m[k].as_ptr().add(p)), zero);
            let v = gather16_ps(plane, idx, mask);
            if K == 1 {
                acc = v;
            } else {
                let wv = _mm512_mul_ps(_mm512_loadu_ps(w[k].as_ptr().add(p)), v);
                acc = if k == 0 { wv } else { _mm512_add_ps(acc, wv) };
            }
        }
        _mm512_storeu_ps(out.add(p), acc);
        p += 16;
    }
    scalar_tail(o, w, m, plane, out, p, len);
}

/// [`gather_f32_bilinear`] with AVX-512, 16 positions at a time: where all four taps of the
/// 16 positions lie inside the plane, each row's two adjacent taps come as one 64-bit element
/// of a gather (8 pairs per gather, 4 gathers of 8 instead of 4 of 16), split into left and
/// right values by one permute each; where no tap does, nothing is loaded; other blocks take
/// masked 16-lane gathers. The same multiplies and adds in the same order as [`gather_f32`],
/// so the results are bitwise the same.
///
/// # Safety
/// AVX-512F is available; as [`gather_f32_bilinear`] otherwise.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
pub(crate) unsafe fn gather_f32_bilinear_512(
    o: &[[i32; CHUNK]; 4],
    w: &[[f32; CHUNK]; 4],
    m: &[[f32; CHUNK]; 4],
    plane: *const f32,
    out: *mut f32,
    len: usize,
) {
    let zero = _mm512_setzero_ps();
    let mut p = 0;
    while p + 16 <= len {
        let mut mb = [0u16; 4];
        for k in 0..4 {
            mb[k] = _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(_mm512_loadu_ps(m[k].as_ptr().add(p)), zero);
        }
        let mut v = [zero; 4];
        if mb[0] & mb[3] == 0xffff {
            // Rows y0 (taps 0, 1) and y1 (taps 2, 3): pairs at the offsets o[0] and o[2].
            for r in 0..2 {
                let idx = _mm512_loadu_si512(o[2 * r].as_ptr().add(p) as *const _);
                (v[2 * r], v[2 * r + 1]) = pairs16(plane, idx);
            }
        } else if mb[0] | mb[1] | mb[2] | mb[3] != 0 {
            for k in 0..4 {
                let idx = _mm512_loadu_si512(o[k].as_ptr().add(p) as *const _);
                v[k] = gather16_ps(plane, idx, mb[k]);
            }
        }
        // (Every tap outside: zeros, no load; the same arithmetic follows.)
        let mut acc = _mm512_mul_ps(_mm512_loadu_ps(w[0].as_ptr().add(p)), v[0]);
        for k in 1..4 {
            acc = _mm512_add_ps(acc, _mm512_mul_ps(_mm512_loadu_ps(w[k].as_ptr().add(p)), v[k]));
        }
        _mm512_storeu_ps(out.add(p), acc);
        p += 16;
    }
    scalar_tail(o, w, m, plane, out, p, len);
}

/// [`gather_f64`] with AVX-512: 8 positions at a time.
///
/// # Safety
/// AVX-512F is available; as [`gather_f32`] otherwise.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
pub(crate) unsafe fn gather_f64_512<const K: usize>(
    o: &[[i32; CHUNK]; K],
    w: &[[f64; CHUNK]; K],
    m: &[[f64; CHUNK]; K],
    plane: *const f64,
    out: *mut f64,
    len: usize,
) {
    let zero = _mm512_setzero_pd();
    let mut p = 0;
    while p + 8 <= len {
        let mut acc = zero;
        for k in 0..K {
            let idx = _mm256_loadu_si256(o[k].as_ptr().add(p) as *const __m256i);
            let mask = _mm512_cmp_pd_mask::<_CMP_NEQ_UQ>(_mm512_loadu_pd(m[k].as_ptr().add(p)), zero);
            let v = gather8_pd::<8>(plane, idx, mask);
            if K == 1 {
                acc = v;
            } else {
                let wv = _mm512_mul_pd(_mm512_loadu_pd(w[k].as_ptr().add(p)), v);
                acc = if k == 0 { wv } else { _mm512_add_pd(acc, wv) };
            }
        }
        _mm512_storeu_pd(out.add(p), acc);
        p += 8;
    }
    scalar_tail(o, w, m, plane, out, p, len);
}

/// The input-gradient scatter of one chunk and channel, f32: `plane[o[k][p]] += w[k][p] * go[p]`
/// where `m[k][p]` is set, in the order of `engine::SCATTER_GROUP` (groups of 8 positions, tap
/// by tap, position by position) as the portable `fast2d::scatter`, so the sums are bitwise
/// the same. The 8 products of a tap are one vector multiply; the adds stay scalar (no scatter
/// instruction), led by the mask bits.
///
/// # Safety
/// AVX2 is available; offsets with a set mask index inside `plane`, which no other thread
/// touches; `go` holds at least `len` values.
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(crate) unsafe fn scatter_f32<const K: usize>(
    o: &[[i32; CHUNK]; K],
    w: &[[f32; CHUNK]; K],
    m: &[[f32; CHUNK]; K],
    go: &[f32],
    plane: *mut f32,
    len: usize,
) {
    let zero = _mm256_setzero_ps();
    let mut p = 0;
    while p + 8 <= len {
        let gov = _mm256_loadu_ps(go.as_ptr().add(p));
        for k in 0..K {
            let bits =
                _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_NEQ_UQ>(_mm256_loadu_ps(m[k].as_ptr().add(p)), zero));
            if bits == 0 {
                continue;
            }
            let prod = std::mem::transmute::<__m256, [f32; 8]>(_mm256_mul_ps(
                _mm256_loadu_ps(w[k].as_ptr().add(p)),
                gov,
            ));
            let ok = &o[k][p..p + 8];
            if bits == 0xff {
                for l in 0..8 {
                    *plane.add(ok[l] as usize) += prod[l];
                }
            } else {
                for l in 0..8 {
                    if bits >> l & 1 != 0 {
                        *plane.add(ok[l] as usize) += prod[l];
                    }
                }
            }
        }
        p += 8;
    }
    // The last partial group: tap by tap, position by position, as above.
    for k in 0..K {
        for q in p..len {
            if m[k][q] != 0.0 {
                *plane.add(o[k][q] as usize) += w[k][q] * go[q];
            }
        }
    }
}
