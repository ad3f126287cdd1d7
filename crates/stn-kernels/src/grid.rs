//! Grid generators, each with its backward: affine 2-D / 3-D (PyTorch's `affine_grid`),
//! projective (homography), thin-plate spline.

use rayon::prelude::*;

use crate::error::{KernelError, Result};
use crate::float::Float;
use crate::tensor::{check_batch, check_shape_eq, check_tensor, checked_numel, zeros, Tensor, TensorRef};
use crate::tps::{basis, Tps};

/// Normalized coordinates of the output pixels along one axis, as PyTorch's base grid:
/// `linspace(-1, 1, n)`, scaled by `(n - 1) / n` when not aligning corners; `[0]` for n = 1.
pub fn base_coords<T: Float>(n: usize, align_corners: bool) -> Vec<T> {
    if n <= 1 {
        return vec![T::ZERO; n];
    }
    let step = T::from_f64(2.0) / T::from_usize(n - 1);
    let half = n / 2;
    (0..n)
        .map(|i| {
            let v = if i < half {
                -T::ONE + step * T::from_usize(i)
            } else {
                T::ONE - step * T::from_usize(n - i - 1)
            };
            if align_corners {
                v
            } else {
                v * T::from_usize(n - 1) / T::from_usize(n)
            }
        })
        .collect()
}

/// Validates a `size` argument (N, C, H, W) or (N, C, D, H, W).
pub(crate) fn check_size(size: &[usize], ranks: &[usize]) -> Result<()> {
    if !ranks.contains(&size.len()) {
        let what =
            if ranks == [4] { "4 sizes (N, C, H, W)" } else { "4 sizes (N, C, H, W) or 5 (N, C, D, H, W)" };
        return Err(KernelError::Rank {
            arg: "size",
            expected: what.into(),
            got: size.len(),
            shape: size.to_vec(),
        });
    }
    checked_numel::<u8>("size", size)?;
    Ok(())
}

/// Shape of the grid for `size`: (N, H, W, 2) or (N, D, H, W, 3).
fn grid_shape(size: &[usize]) -> Vec<usize> {
    let d = size.len() - 2;
    let mut s = vec![size[0]];
    s.extend_from_slice(&size[2..]);
    s.push(d);
    s
}

/// PyTorch's `affine_grid`: `theta` (N, 2, 3) with `size` (N, C, H, W), or (N, 3, 4) with
/// (N, C, D, H, W). Returns the grid (N, H, W, 2) or (N, D, H, W, 3).
pub fn affine_grid<T: Float>(
    theta: TensorRef<'_, T>,
    size: &[usize],
    align_corners: bool,
) -> Result<Tensor<T>> {
    T::affine_grid(theta, size, align_corners)
}

/// The body of [`affine_grid`], compiled here for `f32` and `f64` only ([`crate::entry`]).
pub(crate) fn affine_grid_in<T: Float>(
    theta: TensorRef<'_, T>,
    size: &[usize],
    align_corners: bool,
) -> Result<Tensor<T>> {
    check_size(size, &[4, 5])?;
    let d = size.len() - 2;
    check_tensor("theta", &theta, &[3], if d == 2 { "rank 3 (N, 2, 3)" } else { "rank 3 (N, 3, 4)" })?;
    check_batch("theta", theta.shape[0], "size", size[0])?;
    check_shape_eq("theta", theta.shape, &[size[0], d, d + 1])?;
    let gshape = grid_shape(size);
    checked_numel::<T>("grid", &gshape)?;
    let mut grid = zeros::<T>("grid", &gshape)?;
    let sp = &size[2..];
    let bases: Vec<Vec<T>> = (0..d).map(|a| base_coords::<T>(sp[d - 1 - a], align_corners)).collect();
    let per = grid.data.len() / size[0];
    grid.data.par_chunks_mut(per).enumerate().for_each(|(n, g)| {
        let th = &theta.data[n * d * (d + 1)..][..d * (d + 1)];
        for (p, pt) in g.chunks_exact_mut(d).enumerate() {
            let coord = point_coord(&bases, sp, p);
            for (r, out) in pt.iter_mut().enumerate() {
                let row = &th[r * (d + 1)..][..d + 1];
                let mut acc = coord[0] * row[0];
                for e in 1..d {
                    acc += coord[e] * row[e];
                }
                *out = acc + row[d];
            }
        }
    });
    Ok(grid)
}

/// Base-grid coordinate (x, y[, z]) of flat output position `p`.
#[inline]
fn point_coord<T: Float>(bases: &[Vec<T>], sp: &[usize], p: usize) -> [T; 3] {
    let d = bases.len();
    let w = sp[d - 1];
    let h = sp[d - 2];
    let mut c = [T::ZERO; 3];
    c[0] = bases[0][p % w];
    c[1] = bases[1][(p / w) % h];
    if d == 3 {
        c[2] = bases[2][p / (w * h)];
    }
    c
}

/// Backward of [`affine_grid`]: d(loss)/d(theta) (N, 2, 3) or (N, 3, 4) from d(loss)/d(grid).
pub fn affine_grid_backward<T: Float>(grad_grid: TensorRef<'_, T>, align_corners: bool) -> Result<Tensor<T>> {
    T::affine_grid_backward(grad_grid, align_corners)
}

/// The body of [`affine_grid_backward`], compiled here for `f32` and `f64` only ([`crate::entry`]).
pub(crate) fn affine_grid_backward_in<T: Float>(
    grad_grid: TensorRef<'_, T>,
    align_corners: bool,
) -> Result<Tensor<T>> {
    check_tensor("grad_grid", &grad_grid, &[4, 5], "rank 4 (N, H, W, 2) or rank 5 (N, D, H, W, 3)")?;
    let d = grad_grid.shape.len() - 2;
    let gs = grad_grid.shape;
    if gs[d + 1] != d {
        let mut e = gs.to_vec();
        e[d + 1] = d;
        return Err(KernelError::Shape {
            arg: "grad_grid",
            expected: crate::tensor::fmt_shape(&e),
            got: gs.to_vec(),
        });
    }
    let sp = &gs[1..=d];
    let bases: Vec<Vec<T>> = (0..d).map(|a| base_coords::<T>(sp[d - 1 - a], align_corners)).collect();
    let mut out = zeros::<T>("grad_theta", &[gs[0], d, d + 1])?;
    let per = grad_grid.data.len() / gs[0];
    out.data.par_chunks_mut(d * (d + 1)).enumerate().for_each(|(n, th)| {
        let g = &grad_grid.data[n * per..][..per];
        let mut acc = [[0.0f64; 4]; 3];
        for (p, gp) in g.chunks_exact(d).enumerate() {
            let coord = point_coord(&bases, sp, p);
            for r in 0..d {
                let gr = gp[r].to_f64();
                for e in 0..d {
                    acc[r][e] += gr * coord[e].to_f64();
                }
                acc[r][d] += gr;
            }
        }
        for r in 0..d {
            for e in 0..=d {
                th[r * (d + 1) + e] = T::from_f64(acc[r][e]);
            }
        }
    });
    Ok(out)
}

/// Number of projective parameters: h11 h12 h13 h21 h22 h23 h31 h32 (h33 = 1).
pub const PROJECTIVE_PARAMS: usize = 8;

/// Identity parameters of the projective family.
pub const PROJECTIVE_IDENTITY: [f64; 8] = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0];

/// Checks projective parameters (N, 8) against the batch size `n` of argument `other`.
pub(crate) fn check_projective<T>(params: &TensorRef<'_, T>, other: &'static str, n: usize) -> Result<()> {
    check_tensor("params", params, &[2], "rank 2 (N, 8)")?;
    check_batch("params", params.shape[0], other, n)?;
    check_shape_eq("params", params.shape, &[n, PROJECTIVE_PARAMS])
}

/// Projective (homography) grid: for output point (x, y),
/// `((h11 x + h12 y + h13) / w, (h21 x + h22 y + h23) / w)` with `w = h31 x + h32 y + 1`.
/// `params` (N, 8), `size` (N, C, H, W); returns (N, H, W, 2).
pub fn projective_grid<T: Float>(
    params: TensorRef<'_, T>,
    size: &[usize],
    align_corners: bool,
) -> Result<Tensor<T>> {
    T::projective_grid(params, size, align_corners)
}

/// The body of [`projective_grid`], compiled here for `f32` and `f64` only ([`crate::entry`]).
pub(crate) fn projective_grid_in<T: Float>(
    params: TensorRef<'_, T>,
    size: &[usize],
    align_corners: bool,
) -> Result<Tensor<T>> {
    check_size(size, &[4])?;
    check_projective(&params, "size", size[0])?;
    let gshape = grid_shape(size);
    let mut grid = zeros::<T>("grid", &gshape)?;
    let (h, w) = (size[2], size[3]);
    let xs = base_coords::<T>(w, align_corners);
    let ys = base_coords::<T>(h, align_corners);
    grid.data.par_chunks_mut(h * w * 2).enumerate().for_each(|(n, g)| {
        let hp = &params.data[n * 8..][..8];
        for (p, pt) in g.chunks_exact_mut(2).enumerate() {
            let (x, y) = (xs[p % w], ys[p / w]);
            let den = hp[6] * x + hp[7] * y + T::ONE;
            pt[0] = (hp[0] * x + hp[1] * y + hp[2]) / den;
            pt[1] = (hp[3] * x + hp[4] * y + hp[5]) / den;
        }
    });
    Ok(grid)
}

/// Backward of [`projective_grid`]: d(loss)/d(params) (N, 8).
pub fn projective_grid_backward<T: Float>(
    grad_grid: TensorRef<'_, T>,
    params: TensorRef<'_, T>,
    align_corners: bool,
) -> Result<Tensor<T>> {
    T::projective_grid_backward(grad_grid, params, align_corners)
}

/// The body of [`projective_grid_backward`], compiled here for `f32` and `f64` only ([`crate::entry`]).
pub(crate) fn projective_grid_backward_in<T: Float>(
    grad_grid: TensorRef<'_, T>,
    params: TensorRef<'_, T>,
    align_corners: bool,
) -> Result<Tensor<T>> {
    check_tensor("grad_grid", &grad_grid, &[4], "rank 4 (N, H, W, 2)")?;
    let gs = grad_grid.shape;
    check_shape_eq("grad_grid", gs, &[gs[0], gs[1], gs[2], 2])?;
    check_projective(&params, "grad_grid", gs[0])?;
    let (h, w) = (gs[1], gs[2]);
    let xs = base_coords::<T>(w, align_corners);
    let ys = base_coords::<T>(h, align_corners);
    let mut out = zeros::<T>("grad_params", &[gs[0], 8])?;
    out.data.par_chunks_mut(8).enumerate().for_each(|(n, dp)| {
        let hp: Vec<f64> = params.data[n * 8..][..8].iter().map(|v| v.to_f64()).collect();
        let g = &grad_grid.data[n * h * w * 2..][..h * w * 2];
        let mut acc = [0.0f64; 8];
        for (p, gp) in g.chunks_exact(2).enumerate() {
            let (x, y) = (xs[p % w].to_f64(), ys[p / w].to_f64());
            let r = 1.0 / (hp[6] * x + hp[7] * y + 1.0);
            let (gx, gy) = (gp[0].to_f64() * r, gp[1].to_f64() * r);
            let px = (hp[0] * x + hp[1] * y + hp[2]) * r;
            let py = (hp[3] * x + hp[4] * y + hp[5]) * r;
            let q = -(gx * px + gy * py);
            for (a, v) in acc.iter_mut().zip([gx * x, gx * y, gx, gy * x, gy * y, gy, q * x, q * y]) {
                *a += v;
            }
        }
        for (o, a) in dp.iter_mut().zip(acc) {
            *o = T::from_f64(a);
        }
    });
    Ok(out)
}

/// Checks TPS parameters (N, K, 2) against the batch size `n` of argument `other`.
pub(crate) fn check_tps<T>(theta: &TensorRef<'_, T>, tps: &Tps, other: &'static str, n: usize) -> Result<()> {
    check_tensor("theta", theta, &[3], "rank 3 (N, K, 2)")?;
    check_batch("theta", theta.shape[0], other, n)?;
    check_shape_eq("theta", theta.shape, &[n, tps.num_points(), 2])
}

/// Thin-plate-spline grid: `theta` (N, K, 2) holds where the K control points of `tps`
/// land in the input (normalized); `size` (N, C, H, W); returns (N, H, W, 2).
/// With `theta` equal to the control points the grid is PyTorch's identity base grid.
pub fn tps_grid<T: Float>(
    theta: TensorRef<'_, T>,
    tps: &Tps,
    size: &[usize],
    align_corners: bool,
) -> Result<Tensor<T>> {
    T::tps_grid(theta, tps, size, align_corners)
}

/// The body of [`tps_grid`], compiled here for `f32` and `f64` only ([`crate::entry`]).
pub(crate) fn tps_grid_in<T: Float>(
    theta: TensorRef<'_, T>,
    tps: &Tps,
    size: &[usize],
    align_corners: bool,
) -> Result<Tensor<T>> {
    check_size(size, &[4])?;
    check_tps(&theta, tps, "size", size[0])?;
    let gshape = grid_shape(size);
    // The grid first: an impossible size is an error before any table is built.
    let mut grid = zeros::<T>("grid", &gshape)?;
    let (h, w) = (size[2], size[3]);
    let b = basis::<T>(tps, h, w, align_corners)?;
    let xs = base_coords::<T>(w, align_corners);
    let ys = base_coords::<T>(h, align_corners);
    let k = tps.num_points();
    let ctrl = tps.control_points();
    grid.data.par_chunks_mut(h * w * 2).enumerate().for_each(|(n, g)| {
        let th = &theta.data[n * k * 2..][..k * 2];
        let dx: Vec<T> = (0..k).map(|j| th[2 * j] - T::from_f64(ctrl[j][0])).collect();
        let dy: Vec<T> = (0..k).map(|j| th[2 * j + 1] - T::from_f64(ctrl[j][1])).collect();
        b.with_rows(0, h * w, |p, row| {
            let (mut sx, mut sy) = (T::ZERO, T::ZERO);
            for j in 0..k {
                sx += row[j] * dx[j];
                sy += row[j] * dy[j];
            }
            g[2 * p] = xs[p % w] + sx;
            g[2 * p + 1] = ys[p / w] + sy;
        });
    });
    Ok(grid)
}

/// Backward of [`tps_grid`]: d(loss)/d(theta) (N, K, 2). The grid is linear in theta, so
/// theta itself is not needed.
pub fn tps_grid_backward<T: Float>(
    grad_grid: TensorRef<'_, T>,
    tps: &Tps,
    align_corners: bool,
) -> Result<Tensor<T>> {
    T::tps_grid_backward(grad_grid, tps, align_corners)
}

/// The body of [`tps_grid_backward`], compiled here for `f32` and `f64` only ([`crate::entry`]).
pub(crate) fn tps_grid_backward_in<T: Float>(
    grad_grid: TensorRef<'_, T>,
    tps: &Tps,
    align_corners: bool,
) -> Result<Tensor<T>> {
    check_tensor("grad_grid", &grad_grid, &[4], "rank 4 (N, H, W, 2)")?;
    let gs = grad_grid.shape;
    check_shape_eq("grad_grid", gs, &[gs[0], gs[1], gs[2], 2])?;
    let (h, w) = (gs[1], gs[2]);
    let b = basis::<T>(tps, h, w, align_corners)?;
    let k = tps.num_points();
    let mut out = zeros::<T>("grad_theta", &[gs[0], k, 2])?;
    out.data.par_chunks_mut(2 * k).enumerate().for_each(|(n, dt)| {
        let g = &grad_grid.data[n * h * w * 2..][..h * w * 2];
        let mut acc = vec![0.0f64; 2 * k];
        b.with_rows(0, h * w, |p, row| {
            let (gx, gy) = (g[2 * p].to_f64(), g[2 * p + 1].to_f64());
            for j in 0..k {
                let m = row[j].to_f64();
                acc[2 * j] += m * gx;
                acc[2 * j + 1] += m * gy;
            }
        });
        for (o, a) in dt.iter_mut().zip(acc) {
            *o = T::from_f64(a);
        }
    });
    Ok(out)
}

/// The homography (8 parameters, h33 = 1) mapping each `from[k]` to `to[k]` (4 points).
pub fn homography(from: &[[f64; 2]], to: &[[f64; 2]]) -> Vec<f64> {
    // Unknowns h11 h12 h13 h21 h22 h23 h31 h32; two equations per point.
    let mut a = [[0.0f64; 9]; 8];
    for k in 0..4 {
        let ([x, y], [u, v]) = (from[k], to[k]);
        a[2 * k] = [x, y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y, u];
        a[2 * k + 1] = [0.0, 0.0, 0.0, x, y, 1.0, -v * x, -v * y, v];
    }
    // Gaussian elimination with partial pivoting.
    for col in 0..8 {
        let piv = (col..8).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs())).expect("rows");
        a.swap(col, piv);
        let p = a[col][col];
        for row in 0..8 {
            if row != col && p != 0.0 {
                let f = a[row][col] / p;
                let pivot_row = a[col];
                for (x, &q) in a[row][col..].iter_mut().zip(&pivot_row[col..]) {
                    *x -= f * q;
                }
            }
        }
    }
    (0..8).map(|i| if a[i][i] != 0.0 { a[i][8] / a[i][i] } else { 0.0 }).collect()
}
