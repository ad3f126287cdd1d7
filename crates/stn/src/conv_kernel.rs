//! A 2-D convolution (groups 1) for the small images of localization nets and classifiers:
//! per chunk of images, one im2col buffer and one gemm for the forward, and one gemm each for
//! the weight and input gradients of the backward (col2im scatters the latter back).
//!
//! Burn flex's own convolution treats a 28x28 batch as a 3-D convolution, tiles each image, and
//! computes the weight gradient as a convolution whose kernel is the whole output; for the
//! localization nets and classifiers here that is most of a training step. This path packs a
//! chunk of images into one column matrix, so each gemm sees thousands of columns.
//!
//! Work is split over fixed chunks of images (a function of the shapes only, never of the
//! thread count) and the weight and bias gradients are summed over chunks in chunk order, so
//! results are identical for any number of threads.

use rayon::prelude::*;
use stn_kernels::Float;

/// Elements of one chunk's column matrix that the chunking aims for.
const COL_BUDGET: usize = 1 << 20;
/// Per-image column matrices above this many elements are left to Burn's convolution (it tiles).
pub(crate) const MAX_IMAGE_COLS: usize = 1 << 23;
/// Chunks a batch is cut into at most (enough for any core count this runs on to share).
const MAX_CHUNKS: usize = 16;

/// Shapes of one convolution: input (n, c, h, w), weight (o, c, kh, kw), output (n, o, oh, ow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConvGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kh: usize,
    pub kw: usize,
    pub oh: usize,
    pub ow: usize,
    /// Row and column stride.
    pub stride: [usize; 2],
    /// Zero padding before the first row and column (the end padding only shows in oh, ow).
    pub pad: [usize; 2],
    /// Row and column dilation.
    pub dilation: [usize; 2],
}

impl ConvGeom {
    /// Rows of the column matrix: c * kh * kw.
    fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// Output positions per image.
    fn p(&self) -> usize {
        self.oh * self.ow
    }

    /// No padding, unit stride, no dilation.
    fn is_dense(&self) -> bool {
        self.pad == [0, 0] && self.stride == [1, 1] && self.dilation == [1, 1]
    }

    fn image_len(&self) -> usize {
        self.c * self.h * self.w
    }

    /// Images per chunk.
    fn chunk(&self) -> usize {
        let per_image = (self.k() * self.p()).max(1);
        let by_mem = (COL_BUDGET / per_image).max(1);
        by_mem.min(self.n.div_ceil(MAX_CHUNKS)).max(1)
    }

    /// gemm may split its own work only when there is a single chunk to run.
    fn parallelism(&self, work: usize) -> gemm::Parallelism {
        if self.n <= self.chunk() && work >= 1 << 21 {
            gemm::Parallelism::Rayon(0)
        } else {
            gemm::Parallelism::None
        }
    }
}

/// The output indices `i < out` whose tap `i * stride + off` falls in `0..len`, as a range.
fn valid_range(off: isize, stride: usize, len: usize, out: usize) -> (usize, usize) {
    let lo = if off >= 0 { 0 } else { (off.unsigned_abs()).div_ceil(stride) };
    let room = len as isize - off;
    let hi = if room <= 0 { 0 } else { (room as usize).div_ceil(stride) };
    let hi = hi.min(out);
    (lo.min(hi), hi)
}

/// The unpadded, unit-stride, undilated case of [`for_each_tap`] (every convolution of the
/// models here): each column-matrix row segment covers a whole input row segment, so the loops
/// carry no range logic. `f(seg, start)`: the segment and where its input row segment starts.
fn dense_taps<T: Float>(g: &ConvGeom, nb: usize, col: &mut [T], mut f: impl FnMut(&mut [T], usize)) {
    let (p, r) = (g.p(), nb * g.p());
    for c in 0..g.c {
        for kh in 0..g.kh {
            for kw in 0..g.kw {
                let row = &mut col[((c * g.kh + kh) * g.kw + kw) * r..][..r];
                for b in 0..nb {
                    let plane = (b * g.c + c) * g.h * g.w;
                    for (oh, seg) in row[b * p..(b + 1) * p].chunks_exact_mut(g.ow).enumerate() {
                        f(seg, plane + (oh + kh) * g.w + kw);
                    }
                }
            }
        }
    }
}

/// Visits every (column-matrix row segment, input row segment) pair of `nb` images: `f(seg,
/// src, ow_lo, ow_hi, col_off)` where `seg` is the output row's part of column-matrix row `k`
/// and `src` the input row it reads (None where the tap row lies in the padding).
fn for_each_tap<T: Float>(
    g: &ConvGeom,
    nb: usize,
    col: &mut [T],
    mut f: impl FnMut(&mut [T], Option<(usize, usize)>, usize, usize, isize),
) {
    let (p, r) = (g.p(), nb * g.p());
    let ([sh, sw], [ph, pw], [dh, dw]) = (g.stride, g.pad, g.dilation);
    for c in 0..g.c {
        for kh in 0..g.kh {
            for kw in 0..g.kw {
                let k = (c * g.kh + kh) * g.kw + kw;
                let row = &mut col[k * r..(k + 1) * r];
                let off_w = (kw * dw) as isize - pw as isize;
                let (lo, hi) = valid_range(off_w, sw, g.w, g.ow);
                for b in 0..nb {
                    let plane = (b * g.c + c) * g.h * g.w;
                    for oh in 0..g.oh {
                        let seg = &mut row[b * p + oh * g.ow..][..g.ow];
                        let ih = (oh * sh + kh * dh) as isize - ph as isize;
                        let src = (ih >= 0 && (ih as usize) < g.h).then(|| (plane + ih as usize * g.w, g.w));
                        f(seg, src, lo, hi, off_w);
                    }
                }
            }
        }
    }
}

/// `dst.copy_from_slice(src)` for the short rows of small images, in 8-element blocks the
/// compiler keeps in registers (a `memcpy` call per 20-element row costs more than the copy).
#[inline(always)]
fn copy_short<T: Float>(dst: &mut [T], src: &[T]) {
    let mut d = dst.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (d, s) in (&mut d).zip(&mut s) {
        let block: [T; 8] = s.try_into().expect("8-element block");
        d.copy_from_slice(&block);
    }
    for (d, s) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *d = *s;
    }
}

/// Column matrix (k rows of nb * p) of `nb` images `x`.
fn im2col<T: Float>(x: &[T], g: &ConvGeom, nb: usize, col: &mut [T]) {
    if g.is_dense() {
        return dense_taps(g, nb, col, |seg, start| copy_short(seg, &x[start..start + seg.len()]));
    }
    let sw = g.stride[1];
    for_each_tap(g, nb, col, |seg, src, lo, hi, off| match src {
        None => seg.fill(T::ZERO),
        Some((start, len)) => {
            let src = &x[start..start + len];
            seg[..lo].fill(T::ZERO);
            seg[hi..].fill(T::ZERO);
            if sw == 1 {
                let s0 = (lo as isize + off) as usize;
                copy_short(&mut seg[lo..hi], &src[s0..s0 + (hi - lo)]);
            } else {
                for (i, v) in seg[lo..hi].iter_mut().enumerate() {
                    *v = src[(((lo + i) * sw) as isize + off) as usize];
                }
            }
        }
    });
}

/// Adds the column-matrix gradient `dcol` back onto the input gradient `dx` of `nb` images.
fn col2im<T: Float>(dcol: &mut [T], g: &ConvGeom, nb: usize, dx: &mut [T]) {
    if g.is_dense() {
        return dense_taps(g, nb, dcol, |seg, start| {
            for (d, s) in dx[start..start + seg.len()].iter_mut().zip(seg.iter()) {
                *d += *s;
            }
        });
    }
    let sw = g.stride[1];
    for_each_tap(g, nb, dcol, |seg, src, lo, hi, off| {
        if let Some((start, len)) = src {
            let dst = &mut dx[start..start + len];
            if sw == 1 {
                let s0 = (lo as isize + off) as usize;
                for (d, s) in dst[s0..s0 + (hi - lo)].iter_mut().zip(&seg[lo..hi]) {
                    *d += *s;
                }
            } else {
                for (i, s) in seg[lo..hi].iter().enumerate() {
                    dst[(((lo + i) * sw) as isize + off) as usize] += *s;
                }
            }
        }
    });
}

/// `count` chunks of `chunk` elements of an optional output buffer, to zip with a parallel
/// iterator: the buffer's chunks where it was asked for (non-empty), else `count` Nones.
fn optional_chunks<U>(buf: &mut [U], chunk: usize, count: usize) -> Vec<Option<&mut [U]>> {
    if buf.is_empty() {
        (0..count).map(|_| None).collect()
    } else {
        buf.chunks_mut(chunk).map(Some).collect()
    }
}

/// The longest k a gemm call is given: gemm 0.19 splits a longer k into blocks sized from the
/// CPU's L1 cache (512 on an 8-way L1d, 1024 on a 12-way 48 KiB one), which changes the order
/// of the sums and so the bits; a call with k at most 512 is one block on every CPU.
pub(crate) const K_SLICE: usize = 512;

/// The k slices of a product: `ceil(k / K_SLICE)` slices of (nearly) equal length, in order.
pub(crate) fn k_slices(k: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let count = k.div_ceil(K_SLICE).max(1);
    let len = k.div_ceil(count).max(1);
    (0..count).map(move |i| (i * len).min(k)..((i + 1) * len).min(k)).filter(move |r| !r.is_empty() || k == 0)
}

/// `dst (m x n) = lhs (m x k) * rhs (k x n)`; each matrix given as (pointer, row stride, column
/// stride). k is cut into fixed slices ([`k_slices`]), each one gemm call added to `dst` in
/// order, so the result is the same on every CPU (gemm's own k blocking depends on the cache).
///
/// # Safety
/// Every (row, column) index of the three matrices must be in bounds of its buffer, and `dst`
/// must not overlap the others.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul<T: Float>(
    m: usize,
    n: usize,
    k: usize,
    dst: (*mut T, isize, isize),
    lhs: (*const T, isize, isize),
    rhs: (*const T, isize, isize),
    parallelism: gemm::Parallelism,
) {
    for (i, r) in k_slices(k).enumerate() {
        let start = r.start as isize;
        // SAFETY: forwarded from the caller; the slice's columns of lhs and rows of rhs are in
        // bounds. T is f32 or f64 (stn_kernels::Float is sealed), which gemm supports. The
        // first slice writes dst, the next ones add to it (alpha 1, read_dst).
        unsafe {
            gemm::gemm(
                m,
                n,
                r.len(),
                dst.0,
                dst.2,
                dst.1,
                i > 0,
                lhs.0.offset(start * lhs.2),
                lhs.2,
                lhs.1,
                rhs.0.offset(start * rhs.1),
                rhs.2,
                rhs.1,
                if i > 0 { T::ONE } else { T::ZERO },
                T::ONE,
                false,
                false,
                false,
                parallelism,
            )
        }
    }
}

/// Forward: `x` (n, c, h, w), `w` (o, c, kh, kw), `bias` (o) → (n, o, oh, ow). Sizes must
/// already be validated (the caller checks them; `g` must describe the buffers).
pub(crate) fn forward<T: Float>(x: &[T], w: &[T], bias: &[T], g: &ConvGeom) -> Vec<T> {
    let (k, p, nb) = (g.k(), g.p(), g.chunk());
    assert_eq!(x.len(), g.n * g.image_len(), "conv input buffer");
    assert_eq!(w.len(), g.o * k, "conv weight buffer");
    assert_eq!(bias.len(), g.o, "conv bias buffer");
    let mut out = vec![T::ZERO; g.n * g.o * p];
    out.par_chunks_mut(nb * g.o * p).enumerate().for_each(|(ci, out_c)| {
        let nbc = out_c.len() / (g.o * p);
        let r = nbc * p;
        let xs = &x[ci * nb * g.image_len()..][..nbc * g.image_len()];
        let mut col = vec![T::ZERO; k * r];
        im2col(xs, g, nbc, &mut col);
        let mut tmp = vec![T::ZERO; g.o * r];
        // SAFETY: tmp is o x r (row stride r), w is o x k (row stride k), col is k x r.
        unsafe {
            matmul(
                g.o,
                r,
                k,
                (tmp.as_mut_ptr(), r as isize, 1),
                (w.as_ptr(), k as isize, 1),
                (col.as_ptr(), r as isize, 1),
                g.parallelism(g.o * r * k),
            )
        };
        for b in 0..nbc {
            for (oc, &bv) in bias.iter().enumerate() {
                let dst = &mut out_c[(b * g.o + oc) * p..][..p];
                for (d, s) in dst.iter_mut().zip(&tmp[oc * r + b * p..][..p]) {
                    *d = *s + bv;
                }
            }
        }
    });
    out
}

/// Gradients of a convolution; each present where it was asked for.
pub(crate) struct ConvGrads<T> {
    /// To the input, (n, c, h, w).
    pub x: Option<Vec<T>>,
    /// To the weight, (o, c, kh, kw).
    pub w: Option<Vec<T>>,
    /// To the bias, (o).
    pub b: Option<Vec<T>>,
}

/// Backward of [`forward`] for the output gradient `gout` (n, o, oh, ow).
pub(crate) fn backward<T: Float>(
    gout: &[T],
    x: &[T],
    w: &[T],
    g: &ConvGeom,
    need: [bool; 3],
) -> ConvGrads<T> {
    let [need_x, need_w, need_b] = need;
    let (k, p, nb) = (g.k(), g.p(), g.chunk());
    assert_eq!(gout.len(), g.n * g.o * p, "conv output-gradient buffer");
    assert_eq!(x.len(), g.n * g.image_len(), "conv input buffer");
    assert_eq!(w.len(), g.o * k, "conv weight buffer");
    let chunks = g.n.div_ceil(nb);
    let mut dx = if need_x { vec![T::ZERO; g.n * g.image_len()] } else { Vec::new() };
    let dx_chunks = optional_chunks(&mut dx, nb * g.image_len(), chunks);
    let partials: Vec<(Vec<T>, Vec<T>)> = dx_chunks
        .into_par_iter()
        .enumerate()
        .map(|(ci, dx_c)| {
            let b0 = ci * nb;
            let nbc = nb.min(g.n - b0);
            let r = nbc * p;
            // The output gradient as an o x r matrix (image-major columns).
            let mut gt = vec![T::ZERO; g.o * r];
            for b in 0..nbc {
                for oc in 0..g.o {
                    gt[oc * r + b * p..][..p].copy_from_slice(&gout[((b0 + b) * g.o + oc) * p..][..p]);
                }
            }
            let db = if need_b {
                (0..g.o).map(|oc| gt[oc * r..][..r].iter().fold(T::ZERO, |a, &v| a + v)).collect()
            } else {
                Vec::new()
            };
            let mut dw = Vec::new();
            if need_w {
                let mut col = vec![T::ZERO; k * r];
                im2col(&x[b0 * g.image_len()..][..nbc * g.image_len()], g, nbc, &mut col);
                dw = vec![T::ZERO; g.o * k];
                // SAFETY: dw is o x k, gt is o x r, col read as its transpose (r x k).
                unsafe {
                    matmul(
                        g.o,
                        k,
                        r,
                        (dw.as_mut_ptr(), k as isize, 1),
                        (gt.as_ptr(), r as isize, 1),
                        (col.as_ptr(), 1, r as isize),
                        g.parallelism(g.o * r * k),
                    )
                };
            }
            if let Some(dx_c) = dx_c {
                let mut dcol = vec![T::ZERO; k * r];
                // SAFETY: dcol is k x r, w read as its transpose (k x o), gt is o x r.
                unsafe {
                    matmul(
                        k,
                        r,
                        g.o,
                        (dcol.as_mut_ptr(), r as isize, 1),
                        (w.as_ptr(), 1, k as isize),
                        (gt.as_ptr(), r as isize, 1),
                        g.parallelism(g.o * r * k),
                    )
                };
                col2im(&mut dcol, g, nbc, dx_c);
            }
            (dw, db)
        })
        .collect();
    let (dws, dbs): (Vec<Vec<T>>, Vec<Vec<T>>) = partials.into_iter().unzip();
    let sum = |parts: Vec<Vec<T>>, len: usize| {
        let mut acc = vec![T::ZERO; len];
        for part in &parts {
            for (a, &v) in acc.iter_mut().zip(part) {
                *a += v;
            }
        }
        acc
    };
    ConvGrads {
        x: need_x.then_some(dx),
        w: need_w.then(|| sum(dws, g.o * k)),
        b: need_b.then(|| sum(dbs, g.o)),
    }
}

/// Shapes of a max pooling without padding or dilation: input (n, c, h, w) → (n, c, oh, ow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PoolGeom {
    /// Planes: n * c.
    pub planes: usize,
    pub h: usize,
    pub w: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub oh: usize,
    pub ow: usize,
}

/// Planes per parallel task.
fn pool_chunk(plane_len: usize, planes: usize) -> usize {
    (COL_BUDGET / 8 / plane_len.max(1)).clamp(1, planes.div_ceil(MAX_CHUNKS).max(1))
}

/// Max pooling forward; with `want_idx`, also the position in its input plane of each output's
/// maximum (the first maximum; a NaN wins and propagates, as in PyTorch).
pub(crate) fn max_pool_forward<T: Float>(x: &[T], g: &PoolGeom, want_idx: bool) -> (Vec<T>, Vec<u32>) {
    let (plane_in, plane_out) = (g.h * g.w, g.oh * g.ow);
    assert_eq!(x.len(), g.planes * plane_in, "pool input buffer");
    let pc = pool_chunk(plane_in, g.planes);
    let mut out = vec![T::ZERO; g.planes * plane_out];
    let mut idx = if want_idx { vec![0u32; g.planes * plane_out] } else { Vec::new() };
    let idx_chunks = optional_chunks(&mut idx, pc * plane_out, g.planes.div_ceil(pc));
    out.par_chunks_mut(pc * plane_out).zip(idx_chunks).enumerate().for_each(|(ci, (out_c, idx_c))| {
        let planes = &x[ci * pc * plane_in..][..out_c.len() / plane_out * plane_in];
        match idx_c {
            Some(idx_c) => pool_planes::<T, true>(planes, g, out_c, idx_c),
            None => pool_planes::<T, false>(planes, g, out_c, &mut []),
        }
    });
    (out, idx)
}

/// Whether `v` replaces the running maximum `m` (a NaN wins once); branch-free, since which
/// value wins is data-dependent and unpredictable.
#[inline(always)]
fn wins<T: Float>(v: T, m: T) -> bool {
    (v > m) | (v.is_nan() & !m.is_nan())
}

/// One output row of a 2x2, stride-2 pooling from input rows `a` and `b`: the window's four
/// values in reading order, first maximum wins; with `IDX`, `idx[j]` = `base` + the winner's
/// offset in the plane (row width `w`).
#[inline(always)]
fn pool2x2_row<T: Float, const IDX: bool>(
    a: &[T],
    b: &[T],
    out: &mut [T],
    idx: &mut [u32],
    base: u32,
    w: u32,
) {
    let n = out.len();
    let (a, b) = (&a[..2 * n], &b[..2 * n]);
    for j in 0..n {
        let (v0, v1, v2, v3) = (a[2 * j], a[2 * j + 1], b[2 * j], b[2 * j + 1]);
        let t = wins(v1, v0);
        let (m, k) = (if t { v1 } else { v0 }, if t { 1 } else { 0 });
        let t = wins(v2, m);
        let (m, k) = (if t { v2 } else { m }, if t { w } else { k });
        let t = wins(v3, m);
        let (m, k) = (if t { v3 } else { m }, if t { w + 1 } else { k });
        out[j] = m;
        if IDX {
            idx[j] = base + 2 * j as u32 + k;
        }
    }
}

/// Pools whole planes; with `IDX`, also writes each maximum's position in its plane.
fn pool_planes<T: Float, const IDX: bool>(x: &[T], g: &PoolGeom, out: &mut [T], idx: &mut [u32]) {
    let (plane_in, plane_out) = (g.h * g.w, g.oh * g.ow);
    for (pi, out_p) in out.chunks_mut(plane_out).enumerate() {
        let plane = &x[pi * plane_in..][..plane_in];
        for oh in 0..g.oh {
            let out_row = &mut out_p[oh * g.ow..][..g.ow];
            let r0 = oh * g.stride[0];
            if g.kernel == [2, 2] && g.stride == [2, 2] {
                // The common case: a straight-line, vectorizable loop over the output row.
                let (a, b) = (&plane[r0 * g.w..][..g.w], &plane[(r0 + 1) * g.w..][..g.w]);
                let at = pi * plane_out + oh * g.ow;
                let idx_row = if IDX { &mut idx[at..at + g.ow] } else { &mut [][..] };
                pool2x2_row::<T, IDX>(a, b, out_row, idx_row, (r0 * g.w) as u32, g.w as u32);
                continue;
            }
            for (ow, o) in out_row.iter_mut().enumerate() {
                let c0 = ow * g.stride[1];
                let mut best = r0 * g.w + c0;
                let mut m = plane[best];
                for r in r0..r0 + g.kernel[0] {
                    for (c, &v) in plane[r * g.w + c0..][..g.kernel[1]].iter().enumerate() {
                        let t = wins(v, m);
                        m = if t { v } else { m };
                        best = if t { r * g.w + c0 + c } else { best };
                    }
                }
                *o = m;
                if IDX {
                    idx[pi * plane_out + oh * g.ow + ow] = best as u32;
                }
            }
        }
    }
}

/// Max pooling backward: each output gradient goes to its maximum's input position.
pub(crate) fn max_pool_backward<T: Float>(gout: &[T], idx: &[u32], g: &PoolGeom) -> Vec<T> {
    let (plane_in, plane_out) = (g.h * g.w, g.oh * g.ow);
    assert_eq!(gout.len(), g.planes * plane_out, "pool output-gradient buffer");
    assert_eq!(idx.len(), gout.len(), "pool indices");
    let pc = pool_chunk(plane_in, g.planes);
    let mut gx = vec![T::ZERO; g.planes * plane_in];
    gx.par_chunks_mut(pc * plane_in).enumerate().for_each(|(ci, gx_c)| {
        for (pi, gx_p) in gx_c.chunks_mut(plane_in).enumerate() {
            let o0 = (ci * pc + pi) * plane_out;
            for (&i, &v) in idx[o0..o0 + plane_out].iter().zip(&gout[o0..o0 + plane_out]) {
                gx_p[i as usize] += v;
            }
        }
    });
    gx
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A product as one fused multiply-add chain per element, in increasing k from 0 within each
    /// of [`k_slices`], the slices' sums added in order: what every CPU with FMA computes,
    /// written in portable Rust (`mul_add` is correctly rounded everywhere).
    fn fma_chains(m: usize, n: usize, k: usize, lhs: &[f32], rhs: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut total: Option<f32> = None;
                for r in k_slices(k) {
                    let mut acc = 0.0f32;
                    for kk in r {
                        acc = lhs[i * k + kk].mul_add(rhs[kk * n + j], acc);
                    }
                    total = Some(total.map_or(acc, |t| t + acc));
                }
                out[i * n + j] = total.unwrap_or(0.0);
            }
        }
        out
    }

    #[test]
    fn products_are_fma_chains_in_fixed_k_slices_on_every_cpu() {
        // The k of the conv weight gradients at 42x42 (900) and 60x60 (2304), which gemm alone
        // would block by the L1 cache; and a short k. m * n above 256 (no horizontal kernel).
        for (m, n, k) in [(20, 50, 900), (32, 100, 2304), (70, 90, 1100), (64, 64, 300), (17, 33, 513)] {
            let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ (k as u64);
            let mut next = || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            };
            let lhs: Vec<f32> = (0..m * k).map(|_| next()).collect();
            let rhs: Vec<f32> = (0..k * n).map(|_| next()).collect();
            let mut dst = vec![f32::NAN; m * n];
            // SAFETY: dst is m x n, lhs m x k, rhs k x n, all row-major and in bounds.
            unsafe {
                matmul(
                    m,
                    n,
                    k,
                    (dst.as_mut_ptr(), n as isize, 1),
                    (lhs.as_ptr(), k as isize, 1),
                    (rhs.as_ptr(), n as isize, 1),
                    gemm::Parallelism::Rayon(2),
                )
            };
            let want = fma_chains(m, n, k, &lhs, &rhs);
            let same = dst.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{m}x{n}x{k}: gemm's product is not the portable FMA chains");
        }
        assert_eq!(k_slices(900).collect::<Vec<_>>(), [0..450, 450..900]);
        assert_eq!(k_slices(512).map(|r| (r.start, r.end)).collect::<Vec<_>>(), [(0, 512)]);
        assert_eq!(k_slices(2304).map(|r| r.len()).collect::<Vec<_>>(), [461, 461, 461, 461, 460]);
    }

    /// The convolution by its definition, in f64.
    fn naive(x: &[f64], w: &[f64], bias: &[f64], g: &ConvGeom) -> Vec<f64> {
        let mut out = vec![0.0; g.n * g.o * g.p()];
        for b in 0..g.n {
            for o in 0..g.o {
                for oh in 0..g.oh {
                    for ow in 0..g.ow {
                        let mut acc = bias[o];
                        for c in 0..g.c {
                            for kh in 0..g.kh {
                                for kw in 0..g.kw {
                                    let ih =
                                        (oh * g.stride[0] + kh * g.dilation[0]) as isize - g.pad[0] as isize;
                                    let iw =
                                        (ow * g.stride[1] + kw * g.dilation[1]) as isize - g.pad[1] as isize;
                                    if ih < 0 || iw < 0 || ih as usize >= g.h || iw as usize >= g.w {
                                        continue;
                                    }
                                    acc += x[((b * g.c + c) * g.h + ih as usize) * g.w + iw as usize]
                                        * w[((o * g.c + c) * g.kh + kh) * g.kw + kw];
                                }
                            }
                        }
                        out[((b * g.o + o) * g.oh + oh) * g.ow + ow] = acc;
                    }
                }
            }
        }
        out
    }

    fn values(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 33) as f64 / (1u64 << 31) as f64) - 0.5
            })
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn geom(
        n: usize,
        c: usize,
        hw: [usize; 2],
        o: usize,
        k: [usize; 2],
        s: [usize; 2],
        pad: [usize; 2],
        d: [usize; 2],
    ) -> ConvGeom {
        let out = |i: usize| (hw[i] + 2 * pad[i] - d[i] * (k[i] - 1) - 1) / s[i] + 1;
        ConvGeom {
            n,
            c,
            h: hw[0],
            w: hw[1],
            o,
            kh: k[0],
            kw: k[1],
            oh: out(0),
            ow: out(1),
            stride: s,
            pad,
            dilation: d,
        }
    }

    #[test]
    fn forward_and_backward_match_the_definition() {
        let cases = [
            geom(3, 2, [9, 8], 4, [3, 3], [1, 1], [0, 0], [1, 1]),
            geom(40, 1, [12, 12], 3, [5, 5], [1, 1], [0, 0], [1, 1]),
            geom(2, 3, [11, 10], 2, [3, 2], [2, 3], [1, 2], [1, 1]),
            geom(2, 2, [10, 9], 3, [3, 3], [1, 2], [2, 1], [2, 2]),
        ];
        for g in cases {
            let x = values(g.n * g.image_len(), 1);
            let w = values(g.o * g.k(), 2);
            let bias = values(g.o, 3);
            let got = forward(&x, &w, &bias, &g);
            let want = naive(&x, &w, &bias, &g);
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-12, "{g:?}: forward {a} vs {b}");
            }
            // Gradients of sum(gout * conv(x, w, b)) by the linearity of the convolution:
            // d/dx_i = conv applied to the unit vector, checked against the adjoint identity.
            let gout = values(g.n * g.o * g.p(), 4);
            let grads = backward(&gout, &x, &w, &g, [true, true, true]);
            let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(u, v)| u * v).sum::<f64>();
            let zero_b = vec![0.0; g.o];
            // <gout, conv(dx_dir, w)> == <grad_x, dx_dir> for a random direction.
            let dir = values(x.len(), 5);
            let lhs = dot(&gout, &naive(&dir, &w, &zero_b, &g));
            assert!(
                (lhs - dot(grads.x.as_ref().unwrap(), &dir)).abs() < 1e-10 * (1.0 + lhs.abs()),
                "{g:?} dx"
            );
            let wdir = values(w.len(), 6);
            let lhs = dot(&gout, &naive(&x, &wdir, &zero_b, &g));
            assert!(
                (lhs - dot(grads.w.as_ref().unwrap(), &wdir)).abs() < 1e-10 * (1.0 + lhs.abs()),
                "{g:?} dw"
            );
            let bdir = values(g.o, 7);
            let lhs = dot(&gout, &naive(&vec![0.0; x.len()], &w, &bdir, &g));
            assert!(
                (lhs - dot(grads.b.as_ref().unwrap(), &bdir)).abs() < 1e-10 * (1.0 + lhs.abs()),
                "{g:?} db"
            );
            // Partial requests give the same values.
            let only_w = backward(&gout, &x, &w, &g, [false, true, false]);
            assert!(only_w.x.is_none() && only_w.b.is_none());
            assert_eq!(only_w.w, grads.w);
        }
    }

    #[test]
    fn valid_range_covers_exactly_the_taps_inside() {
        for off in -7isize..7 {
            for stride in 1..4 {
                for len in 1..9 {
                    for out in 1..9 {
                        let (lo, hi) = valid_range(off, stride, len, out);
                        for i in 0..out {
                            let t = (i * stride) as isize + off;
                            assert_eq!(
                                (lo..hi).contains(&i),
                                t >= 0 && t < len as isize,
                                "{off} {stride} {len} {out} {i}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn max_pool_takes_the_first_maximum_and_routes_its_gradient() {
        // 2 planes of 5 x 6, kernel 2 x 3, stride 2 x 2 → 2 x 2 outputs; ties and a NaN.
        let g = PoolGeom { planes: 2, h: 5, w: 6, kernel: [2, 3], stride: [2, 2], oh: 2, ow: 2 };
        let mut x = values(60, 9);
        x[0] = 1.0;
        x[1] = 1.0; // tie in the first window: the first one wins
        x[30 + 2 * 6 + 2] = f64::NAN; // plane 1, row 2, col 2: in windows (1, 0) and (1, 1)
        let (out, idx) = max_pool_forward(&x, &g, true);
        for p in 0..2 {
            for oh in 0..2 {
                for ow in 0..2 {
                    let mut best = None::<(usize, f64)>;
                    for r in oh * 2..oh * 2 + 2 {
                        for c in ow * 2..ow * 2 + 3 {
                            let v = x[p * 30 + r * 6 + c];
                            let take = match best {
                                None => true,
                                Some((_, m)) => v > m || (v.is_nan() && !m.is_nan()),
                            };
                            if take {
                                best = Some((r * 6 + c, v));
                            }
                        }
                    }
                    let (bi, bv) = best.unwrap();
                    let o = p * 4 + oh * 2 + ow;
                    assert_eq!(idx[o] as usize, bi);
                    assert!(out[o] == bv || (out[o].is_nan() && bv.is_nan()));
                }
            }
        }
        assert_eq!(idx[0], 0);
        assert!(out[4 + 2].is_nan() && out[4 + 3].is_nan());
        let (no_idx_out, no_idx) = max_pool_forward(&x, &g, false);
        assert!(no_idx.is_empty());
        assert_eq!(format!("{no_idx_out:?}"), format!("{out:?}"));
        let gout = values(8, 10);
        let gx = max_pool_backward(&gout, &idx, &g);
        let mut want = vec![0.0; 60];
        for (o, &i) in idx.iter().enumerate() {
            want[(o / 4) * 30 + i as usize] += gout[o];
        }
        assert_eq!(gx, want);
    }
}
