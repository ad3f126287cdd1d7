//! Explicit AVX2 gathers for the 2-D fast path (x86-64). The compiler does not emit
//! gathers for the portable loops, so the interpolation of a chunk is written with
//! intrinsics here; it performs the same multiplies and adds in the same order as the
//! portable `fast2d::gather`, so the results are bitwise identical (tested).

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use crate::engine::CHUNK;

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
            let v = _mm256_mask_i32gather_ps::<4>(zero, plane, idx, mask);
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
            let v = _mm256_mask_i32gather_pd::<8>(zero, plane, idx, mask);
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
        for k in 0..K {
            let idx = _mm256_loadu_si256(o[k].as_ptr().add(p) as *const __m256i);
            let mask = _mm256_cmp_ps::<_CMP_NEQ_UQ>(_mm256_loadu_ps(m[k].as_ptr().add(p)), zero);
            vals[k] = _mm256_mask_i32gather_ps::<4>(zero, plane, idx, mask);
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
            vals[k] = _mm256_mask_i32gather_pd::<8>(zero, plane, idx, mask);
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
            let v = _mm512_mask_i32gather_ps::<4>(zero, mask, idx, plane as *const _);
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
            let v = _mm512_mask_i32gather_pd::<8>(zero, mask, idx, plane as *const _);
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
