//! Sources of sample points for the engine: a dense grid, a matrix (affine or projective,
//! evaluated in pixel space so the grid is never stored), and a thin-plate spline.

use std::sync::Arc;

use crate::coords::Axis;
use crate::engine::{Source, SyncPtr, CHUNK};
use crate::float::Float;

/// A dense grid of normalized coordinates, shape (N, positions, D).
pub(crate) struct GridSource<'a, T, const D: usize> {
    pub grid: &'a [T],
    pub axes: [Axis<T>; D],
    pub out_plane: usize,
    /// Where the backward writes d(loss)/d(grid), same shape as the grid.
    pub grad: Option<SyncPtr<T>>,
}

impl<T: Float, const D: usize> Source<T, D> for GridSource<'_, T, D> {
    type Acc = ();
    fn new_acc(&self) {}
    #[inline(always)]
    fn coords(&self, n: usize, p0: usize, len: usize, xs: &mut [[T; CHUNK]; D]) {
        let g = &self.grid[(n * self.out_plane + p0) * D..][..len * D];
        for i in 0..len {
            for d in 0..D {
                xs[d][i] = self.axes[d].unnormalize(g[i * D + d]);
            }
        }
    }
    #[inline(always)]
    fn backward(
        &self,
        n: usize,
        p0: usize,
        len: usize,
        _xs: &[[T; CHUNK]; D],
        g: &[[T; CHUNK]; D],
        _acc: &mut (),
    ) {
        if let Some(ptr) = self.grad {
            let base = (n * self.out_plane + p0) * D;
            for i in 0..len {
                for d in 0..D {
                    // SAFETY: positions p0..p0+len of sample n belong to this block alone.
                    unsafe { *ptr.at(base + i * D + d) = g[d][i] * self.axes[d].scale };
                }
            }
        }
    }
}

/// One output axis: normalized coordinate = `a * (index + h) + b`, as PyTorch's base grid.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutAxis {
    pub size: usize,
    pub a: f64,
    pub b: f64,
    pub h: f64,
}

impl OutAxis {
    pub fn new(size: usize, align: bool) -> Self {
        if align {
            if size <= 1 {
                OutAxis { size, a: 0.0, b: 0.0, h: 0.0 }
            } else {
                OutAxis { size, a: 2.0 / (size - 1) as f64, b: -1.0, h: 0.0 }
            }
        } else {
            OutAxis { size, a: 2.0 / size as f64, b: -1.0, h: 0.5 }
        }
    }
}

/// Input pixel per output index along a pair of axes, `scale_in * a_out`, as one exact ratio
/// (so equal sizes give exactly 1 and the identity transform reproduces the input bit for bit).
fn exact_ratio(in_size: usize, out: &OutAxis, align: bool) -> f64 {
    if align {
        if out.size <= 1 {
            0.0
        } else {
            (in_size - 1) as f64 / (out.size - 1) as f64
        }
    } else {
        in_size as f64 / out.size as f64
    }
}

/// Input un-normalization in f64: pixel = s * normalized + o.
fn in_scale_offset(size: usize, align: bool) -> (f64, f64) {
    let o = (size - 1) as f64 / 2.0;
    if align {
        (o, o)
    } else {
        (size as f64 / 2.0, o)
    }
}

/// The constants that take a (D+1)x(D+1) transform `H` in normalized coordinates to pixel space:
/// `G = S_in · H · T_out`, where output index `j` (plus `out_h`) maps to the normalized
/// coordinate `out_a * (j + out_h) + out_b` and a normalized input coordinate `x` to the pixel
/// `scale * x + offset`. `ratio[d][e]` is `scale[d] * out_a[e]` as one exact ratio, so equal
/// sizes give exactly 1 and identity parameters reproduce the input bit for bit. Axes in x, y, z
/// order. The matrix sources of the CPU kernels and the GPU kernels both use it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PixelMap {
    /// Number of spatial axes (2 or 3).
    pub dims: usize,
    /// `scale[d] * out_a[e]`, exactly.
    pub ratio: [[f64; 3]; 3],
    /// Input un-normalization scale per axis.
    pub scale: [f64; 3],
    /// Input un-normalization offset per axis.
    pub offset: [f64; 3],
    /// Output normalization slope per axis.
    pub out_a: [f64; 3],
    /// Output normalization intercept per axis.
    pub out_b: [f64; 3],
    /// Offset added to an output index (0.5 without corner alignment, else 0).
    pub out_h: f64,
}

impl PixelMap {
    /// The map from `out_sizes` to `in_sizes` (x, y[, z] order, 2 or 3 axes).
    pub fn new(in_sizes: &[usize], out_sizes: &[usize], align: bool) -> Self {
        let dims = in_sizes.len();
        assert!(dims == out_sizes.len() && (2..=3).contains(&dims), "PixelMap: 2 or 3 axes");
        let mut m = PixelMap {
            dims,
            ratio: [[0.0; 3]; 3],
            scale: [0.0; 3],
            offset: [0.0; 3],
            out_a: [0.0; 3],
            out_b: [0.0; 3],
            out_h: OutAxis::new(out_sizes[0], align).h,
        };
        for d in 0..dims {
            let out = OutAxis::new(out_sizes[d], align);
            (m.scale[d], m.offset[d]) = in_scale_offset(in_sizes[d], align);
            (m.out_a[d], m.out_b[d]) = (out.a, out.b);
            for e in 0..dims {
                m.ratio[d][e] = exact_ratio(in_sizes[d], &OutAxis::new(out_sizes[e], align), align);
            }
        }
        m
    }

    /// `G = S_in · H · T_out` for one row-major transform (rows: the D coordinates, then the
    /// denominator).
    pub fn coefficients(&self, hm: &[[f64; 4]; 4]) -> [[f64; 4]; 4] {
        let dd = self.dims;
        let mut g = [[0.0; 4]; 4];
        let den_b: f64 = (0..dd).map(|e| hm[dd][e] * self.out_b[e]).sum::<f64>() + hm[dd][dd];
        for d in 0..dd {
            let (s, o) = (self.scale[d], self.offset[d]);
            for e in 0..dd {
                g[d][e] = hm[d][e] * self.ratio[d][e] + hm[dd][e] * (o * self.out_a[e]);
            }
            let mut num_b = 0.0;
            for e in 0..dd {
                num_b += hm[d][e] * self.out_b[e];
            }
            g[d][dd] = s * (num_b + hm[d][dd]) + o * den_b;
        }
        for e in 0..dd {
            g[dd][e] = hm[dd][e] * self.out_a[e];
        }
        g[dd][dd] = den_b;
        g
    }
}

/// A matrix source: pixel coordinates are a (projective if `PROJ`) function of the output
/// index, with coefficients `G = S_in · H · T_out` per sample (rows: D coordinates, then the
/// denominator). `H` is the (D+1)x(D+1) transform in normalized coordinates.
pub(crate) struct MatrixSource<T, const D: usize, const PROJ: bool> {
    pub coefs: Vec<[[T; 4]; 4]>,
    pub out: [OutAxis; D],
    pub in_sizes: [usize; D],
    pub align: bool,
    h: T,
    /// `index + h` of every output column, so rows vectorize.
    us: Vec<T>,
}

/// Partial sums of d(loss)/d(G), row-major 4x4.
pub(crate) type MatAcc = [f64; 16];

impl<T: Float, const D: usize, const PROJ: bool> MatrixSource<T, D, PROJ> {
    /// Builds the source from one (D+1)x(D+1) row-major matrix per sample.
    pub fn new(h_mats: &[[[f64; 4]; 4]], in_sizes: [usize; D], out_sizes: [usize; D], align: bool) -> Self {
        let out: [OutAxis; D] = std::array::from_fn(|d| OutAxis::new(out_sizes[d], align));
        let coefs = h_mats
            .iter()
            .map(|hm| {
                let g = Self::pixel_coefficients(hm, &in_sizes, &out, align);
                std::array::from_fn(|r| std::array::from_fn(|c| T::from_f64(g[r][c])))
            })
            .collect();
        let h = T::from_f64(out[0].h);
        let us = (0..out[0].size).map(|j| T::from_usize(j) + h).collect();
        MatrixSource { coefs, out, in_sizes, align, h, us }
    }

    fn pixel_coefficients(
        hm: &[[f64; 4]; 4],
        in_sizes: &[usize; D],
        out: &[OutAxis; D],
        align: bool,
    ) -> [[f64; 4]; 4] {
        let out_sizes: [usize; D] = std::array::from_fn(|e| out[e].size);
        PixelMap::new(in_sizes, &out_sizes, align).coefficients(hm)
    }

    /// d(loss)/d(H) of one sample from the reduced d(loss)/d(G): `S_in^T · dG · T_out^T`.
    pub fn chain_to_h(&self, dg: &MatAcc) -> [[f64; 4]; 4] {
        let dd = D;
        let mut s = [[0.0; 4]; 4];
        let mut t = [[0.0; 4]; 4];
        for d in 0..D {
            let (sc, o) = in_scale_offset(self.in_sizes[d], self.align);
            s[d][d] = sc;
            s[d][dd] = o;
            t[d][d] = self.out[d].a;
            t[d][dd] = self.out[d].b;
        }
        s[dd][dd] = 1.0;
        t[dd][dd] = 1.0;
        let mut dh = [[0.0; 4]; 4];
        for (i, dhi) in dh.iter_mut().enumerate().take(D + 1) {
            for (j, dhij) in dhi.iter_mut().enumerate().take(D + 1) {
                let mut acc = 0.0;
                for k in 0..=D {
                    for l in 0..=D {
                        acc += s[k][i] * dg[k * 4 + l] * t[j][l];
                    }
                }
                *dhij = acc;
            }
        }
        dh
    }

    #[inline(always)]
    fn row_consts(&self, g: &[[T; 4]; 4], v: T, w: T) -> [T; 4] {
        let mut rc = [T::ZERO; 4];
        let rows = if PROJ { D + 1 } else { D };
        for r in 0..rows {
            rc[r] = if D == 2 { g[r][1] * v + g[r][2] } else { (g[r][1] * v + g[r][2] * w) + g[r][3] };
        }
        rc
    }

    /// Output index (j, i, k) of flat position `p`.
    #[inline(always)]
    fn split(&self, p: usize) -> (usize, usize, usize) {
        let wo = self.out[0].size;
        let ho = if D > 1 { self.out[1].size } else { 1 };
        (p % wo, (p / wo) % ho, p / (wo * ho))
    }

    /// Walks positions p0..p0+len calling `f(t, u, v, w, row constants)`.
    #[inline(always)]
    fn walk(&self, g: &[[T; 4]; 4], p0: usize, len: usize, mut f: impl FnMut(usize, T, T, T, &[T; 4])) {
        let (mut j, mut i, mut k) = self.split(p0);
        let wo = self.out[0].size;
        let ho = if D > 1 { self.out[1].size } else { 1 };
        let mut v = T::from_usize(i) + self.h;
        let mut w = T::from_usize(k) + self.h;
        let mut rc = self.row_consts(g, v, w);
        for t in 0..len {
            let u = T::from_usize(j) + self.h;
            f(t, u, v, w, &rc);
            j += 1;
            if j == wo {
                j = 0;
                i += 1;
                if i == ho {
                    i = 0;
                    k += 1;
                    w = T::from_usize(k) + self.h;
                }
                v = T::from_usize(i) + self.h;
                rc = self.row_consts(g, v, w);
            }
        }
    }
}

impl<T: Float, const D: usize, const PROJ: bool> Source<T, D> for MatrixSource<T, D, PROJ> {
    type Acc = MatAcc;
    fn new_acc(&self) -> MatAcc {
        [0.0; 16]
    }
    #[inline(always)]
    fn coords(&self, n: usize, p0: usize, len: usize, xs: &mut [[T; CHUNK]; D]) {
        let g = &self.coefs[n];
        let wo = self.out[0].size;
        let ho = if D > 1 { self.out[1].size } else { 1 };
        let (mut j, mut i, mut k) = self.split(p0);
        let mut t = 0;
        // Row segments: inside one the coordinates are affine in the column, a simple loop.
        while t < len {
            let seg = (wo - j).min(len - t);
            let rc = self.row_consts(g, T::from_usize(i) + self.h, T::from_usize(k) + self.h);
            let us = &self.us[j..j + seg];
            if PROJ {
                for (s, &u) in us.iter().enumerate() {
                    let den = g[D][0] * u + rc[D];
                    for d in 0..D {
                        xs[d][t + s] = (g[d][0] * u + rc[d]) / den;
                    }
                }
            } else {
                for d in 0..D {
                    let (a, r) = (g[d][0], rc[d]);
                    for (x, &u) in xs[d][t..t + seg].iter_mut().zip(us) {
                        *x = a * u + r;
                    }
                }
            }
            t += seg;
            j += seg;
            if j == wo {
                j = 0;
                i += 1;
                if i == ho {
                    i = 0;
                    k += 1;
                }
            }
        }
    }
    #[inline(always)]
    fn backward(
        &self,
        n: usize,
        p0: usize,
        len: usize,
        xs: &[[T; CHUNK]; D],
        gr: &[[T; CHUNK]; D],
        acc: &mut MatAcc,
    ) {
        let g = &self.coefs[n];
        self.walk(g, p0, len, |t, u, v, w, rc| {
            let coord = [u.to_f64(), v.to_f64(), w.to_f64()];
            let r = if PROJ { 1.0 / (g[D][0] * u + rc[D]).to_f64() } else { 1.0 };
            let mut q = 0.0;
            for d in 0..D {
                let gd = gr[d][t].to_f64() * r;
                for e in 0..D {
                    acc[d * 4 + e] += gd * coord[e];
                }
                acc[d * 4 + D] += gd;
                q -= gd * xs[d][t].to_f64();
            }
            if PROJ {
                for e in 0..D {
                    acc[D * 4 + e] += q * coord[e];
                }
                acc[D * 4 + D] += q;
            }
        });
    }
}

/// A thin-plate-spline source: the identity in pixel space plus the spline's displacement,
/// `pixel = identity(p) + scale * sum_k M[p, k] * (target_k - control_k)`.
pub(crate) struct TpsSource<T> {
    pub ident: MatrixSource<T, 2, false>,
    pub basis: Arc<crate::tps::Basis<T>>,
    /// Per sample: x displacements of the K points, then y displacements.
    pub disp: Vec<T>,
    pub k: usize,
    pub scale: [T; 2],
}

impl<T: Float> Source<T, 2> for TpsSource<T> {
    type Acc = Vec<f64>;
    fn new_acc(&self) -> Vec<f64> {
        vec![0.0; 2 * self.k]
    }
    fn coords(&self, n: usize, p0: usize, len: usize, xs: &mut [[T; CHUNK]; 2]) {
        self.ident.coords(0, p0, len, xs);
        let k = self.k;
        let (dx, dy) = self.disp[n * 2 * k..][..2 * k].split_at(k);
        self.basis.with_rows(p0, len, |t, row| {
            let mut sx = T::ZERO;
            let mut sy = T::ZERO;
            for j in 0..k {
                sx += row[j] * dx[j];
                sy += row[j] * dy[j];
            }
            xs[0][t] += self.scale[0] * sx;
            xs[1][t] += self.scale[1] * sy;
        });
    }
    fn backward(
        &self,
        _n: usize,
        p0: usize,
        len: usize,
        _xs: &[[T; CHUNK]; 2],
        g: &[[T; CHUNK]; 2],
        acc: &mut Vec<f64>,
    ) {
        let k = self.k;
        self.basis.with_rows(p0, len, |t, row| {
            let gx = (g[0][t] * self.scale[0]).to_f64();
            let gy = (g[1][t] * self.scale[1]).to_f64();
            for j in 0..k {
                let m = row[j].to_f64();
                acc[j] += m * gx;
                acc[k + j] += m * gy;
            }
        });
    }
}
