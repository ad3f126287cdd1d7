//! Fused warps: sampling straight from transformation parameters. The grid is never stored;
//! coordinates are computed in input pixel space per output chunk, and the backward
//! accumulates d(parameters) directly.

use crate::error::Result;
use crate::float::Float;
use crate::grid::check_projective;
use crate::options::{GradRequest, SampleOptions};
use crate::sample::{check_grad_output, check_input, out_shape, plan, run_backward, run_forward, InputDims};
use crate::source::{MatAcc, MatrixSource, TpsSource};
use crate::tensor::{check_batch, check_shape_eq, check_tensor, checked_numel, reserve, Tensor, TensorRef};
use crate::tps::{basis, Tps};
use crate::KernelError;

/// Gradients of a fused warp; each is `None` unless requested.
#[derive(Debug, Clone, PartialEq)]
pub struct WarpGrads<T> {
    /// d(loss)/d(input), shape of the input.
    pub input: Option<Tensor<T>>,
    /// d(loss)/d(parameters), shape of the parameters.
    pub params: Option<Tensor<T>>,
}

/// Checks `out_size` and that the output it implies can be allocated, before any table
/// (column coordinates, spline basis) of that size is built.
fn check_out_size<T: Float>(dims: &InputDims, out_size: &[usize]) -> Result<()> {
    let d = dims.spatial.len();
    if out_size.len() != d {
        let what = if d == 2 {
            "2 sizes (H_out, W_out) for a 4-D input"
        } else {
            "3 sizes (D_out, H_out, W_out) for a 5-D input"
        };
        return Err(KernelError::Rank {
            arg: "out_size",
            expected: what.into(),
            got: out_size.len(),
            shape: out_size.to_vec(),
        });
    }
    checked_numel::<u8>("out_size", out_size)?;
    reserve::<T>("output", &out_shape(dims, out_size))?;
    Ok(())
}

/// (D+1)x(D+1) matrices from affine theta (N, D, D+1).
fn affine_mats<T: Float>(theta: &[T], d: usize) -> Vec<[[f64; 4]; 4]> {
    theta
        .chunks_exact(d * (d + 1))
        .map(|t| {
            let mut m = [[0.0; 4]; 4];
            for r in 0..d {
                for c in 0..=d {
                    m[r][c] = t[r * (d + 1) + c].to_f64();
                }
            }
            m[d][d] = 1.0;
            m
        })
        .collect()
}

fn projective_mats<T: Float>(params: &[T]) -> Vec<[[f64; 4]; 4]> {
    params
        .chunks_exact(8)
        .map(|h| {
            let h: Vec<f64> = h.iter().map(|v| v.to_f64()).collect();
            [[h[0], h[1], h[2], 0.0], [h[3], h[4], h[5], 0.0], [h[6], h[7], 1.0, 0.0], [0.0; 4]]
        })
        .collect()
}

fn sizes_xyz<const D: usize>(tensor_order: &[usize]) -> [usize; D] {
    std::array::from_fn(|d| tensor_order[D - 1 - d])
}

/// Per-sample parameter gradient from the per-block accumulators (blocks in order).
fn reduce<A, R>(accs: Vec<A>, n: usize, mut add: impl FnMut(&mut R, &A), zero: impl Fn() -> R) -> Vec<R> {
    let nb = accs.len().checked_div(n).unwrap_or(0);
    (0..n)
        .map(|i| {
            let mut r = zero();
            for a in &accs[i * nb..(i + 1) * nb] {
                add(&mut r, a);
            }
            r
        })
        .collect()
}

fn add_mat(r: &mut MatAcc, a: &MatAcc) {
    for (x, y) in r.iter_mut().zip(a) {
        *x += y;
    }
}

fn check_theta<T>(theta: &TensorRef<'_, T>, dims: &InputDims) -> Result<usize> {
    let d = dims.spatial.len();
    check_tensor("theta", theta, &[3], if d == 2 { "rank 3 (N, 2, 3)" } else { "rank 3 (N, 3, 4)" })?;
    check_batch("theta", theta.shape[0], "input", dims.n)?;
    check_shape_eq("theta", theta.shape, &[dims.n, d, d + 1])?;
    Ok(d)
}

/// Affine warp, fused: the same as [`crate::affine_grid`] then [`crate::grid_sample`] with
/// output spatial size `out_size` ((H_out, W_out) or (D_out, H_out, W_out)), without the grid.
/// `theta` is (N, 2, 3) for a 4-D input, (N, 3, 4) for a 5-D input.
pub fn affine_sample<T: Float>(
    input: TensorRef<'_, T>,
    theta: TensorRef<'_, T>,
    out_size: &[usize],
    opts: &SampleOptions,
) -> Result<Tensor<T>> {
    T::affine_sample(input, theta, out_size, opts)
}

/// The body of [`affine_sample`], compiled here for `f32` and `f64` only ([`crate::entry`]).
pub(crate) fn affine_sample_in<T: Float>(
    input: TensorRef<'_, T>,
    theta: TensorRef<'_, T>,
    out_size: &[usize],
    opts: &SampleOptions,
) -> Result<Tensor<T>> {
    let dims = check_input(&input, opts)?;
    let d = check_theta(&theta, &dims)?;
    check_out_size::<T>(&dims, out_size)?;
    let shape = out_shape(&dims, out_size);
    let mats = affine_mats(theta.data, d);
    let data = if d == 2 {
        let plan = plan::<T, 2>(&dims, out_size, opts.align_corners);
        let src = MatrixSource::<T, 2, false>::new(
            &mats,
            sizes_xyz(&dims.spatial),
            sizes_xyz(out_size),
            opts.align_corners,
        );
        run_forward(&plan, &src, input.data, &shape, opts)?
    } else {
        let plan = plan::<T, 3>(&dims, out_size, opts.align_corners);
        let src = MatrixSource::<T, 3, false>::new(
            &mats,
            sizes_xyz(&dims.spatial),
            sizes_xyz(out_size),
            opts.align_corners,
        );
        run_forward(&plan, &src, input.data, &shape, opts)?
    };
    Ok(Tensor { data, shape })
}

/// A (D+1)x(D+1) matrix, row-major, padded to 4x4.
type Mat4 = [[f64; 4]; 4];
/// Input gradient and per-sample d(loss)/d(H), each if requested.
type MatrixGrads<T> = (Option<Vec<T>>, Option<Vec<Mat4>>);

fn matrix_backward<T: Float, const D: usize, const PROJ: bool>(
    grad_output: TensorRef<'_, T>,
    input: TensorRef<'_, T>,
    dims: &InputDims,
    mats: &[[[f64; 4]; 4]],
    out_size: &[usize],
    opts: &SampleOptions,
    req: GradRequest,
) -> Result<MatrixGrads<T>> {
    let plan = plan::<T, D>(dims, out_size, opts.align_corners);
    let src = MatrixSource::<T, D, PROJ>::new(
        mats,
        sizes_xyz(&dims.spatial),
        sizes_xyz(out_size),
        opts.align_corners,
    );
    let res = run_backward(&plan, &src, input, grad_output.data, opts, req)?;
    let dh = req.params.then(|| {
        reduce(res.accs, dims.n, add_mat, || [0.0; 16]).iter().map(|dg| src.chain_to_h(dg)).collect()
    });
    Ok((res.grad_input, dh))
}

/// Gradients of [`affine_sample`]: to the input and to theta, as requested.
pub fn affine_sample_backward<T: Float>(
    grad_output: TensorRef<'_, T>,
    input: TensorRef<'_, T>,
    theta: TensorRef<'_, T>,
    opts: &SampleOptions,
    req: GradRequest,
) -> Result<WarpGrads<T>> {
    T::affine_sample_backward(grad_output, input, theta, opts, req)
}

/// The body of [`affine_sample_backward`], compiled here for `f32` and `f64` only ([`crate::entry`]).
pub(crate) fn affine_sample_backward_in<T: Float>(
    grad_output: TensorRef<'_, T>,
    input: TensorRef<'_, T>,
    theta: TensorRef<'_, T>,
    opts: &SampleOptions,
    req: GradRequest,
) -> Result<WarpGrads<T>> {
    let dims = check_input(&input, opts)?;
    let d = check_theta(&theta, &dims)?;
    check_tensor("grad_output", &grad_output, &[d + 2], &format!("rank {}", d + 2))?;
    let out_size = grad_output.shape[2..].to_vec();
    check_out_size::<T>(&dims, &out_size)?;
    check_grad_output(&grad_output, &out_shape(&dims, &out_size))?;
    let mats = affine_mats(theta.data, d);
    let (gin, dh) = if d == 2 {
        matrix_backward::<T, 2, false>(grad_output, input, &dims, &mats, &out_size, opts, req)?
    } else {
        matrix_backward::<T, 3, false>(grad_output, input, &dims, &mats, &out_size, opts, req)?
    };
    let params = dh.map(|dh| {
        let data = dh
            .iter()
            .flat_map(|m| (0..d).flat_map(move |r| (0..=d).map(move |c| T::from_f64(m[r][c]))))
            .collect();
        Tensor { data, shape: theta.shape.to_vec() }
    });
    Ok(WarpGrads { input: gin.map(|data| Tensor { data, shape: input.shape.to_vec() }), params })
}

fn check_2d(dims: &InputDims, what: &'static str) -> Result<()> {
    if dims.spatial.len() != 2 {
        return Err(KernelError::Unsupported {
            arg: "input",
            message: format!("{what} warps 2-D inputs (N, C, H, W) only"),
        });
    }
    Ok(())
}

/// Projective warp, fused: `params` (N, 8) as in [`crate::projective_grid`], sampled into
/// (N, C, H_out, W_out) without storing the grid.
pub fn projective_sample<T: Float>(
    input: TensorRef<'_, T>,
    params: TensorRef<'_, T>,
    out_size: &[usize],
    opts: &SampleOptions,
) -> Result<Tensor<T>> {
    T::projective_sample(input, params, out_size, opts)
}

/// The body of [`projective_sample`], compiled here for `f32` and `f64` only ([`crate::entry`]).
pub(crate) fn projective_sample_in<T: Float>(
    input: TensorRef<'_, T>,
    params: TensorRef<'_, T>,
    out_size: &[usize],
    opts: &SampleOptions,
) -> Result<Tensor<T>> {
    let dims = check_input(&input, opts)?;
    check_2d(&dims, "the projective family")?;
    check_projective(&params, "input", dims.n)?;
    check_out_size::<T>(&dims, out_size)?;
    let shape = out_shape(&dims, out_size);
    let plan = plan::<T, 2>(&dims, out_size, opts.align_corners);
    let src = MatrixSource::<T, 2, true>::new(
        &projective_mats(params.data),
        sizes_xyz(&dims.spatial),
        sizes_xyz(out_size),
        opts.align_corners,
    );
    let data = run_forward(&plan, &src, input.data, &shape, opts)?;
    Ok(Tensor { data, shape })
}

/// Gradients of [`projective_sample`]: to the input and to the 8 parameters, as requested.
pub fn projective_sample_backward<T: Float>(
    grad_output: TensorRef<'_, T>,
    input: TensorRef<'_, T>,
    params: TensorRef<'_, T>,
    opts: &SampleOptions,
    req: GradRequest,
) -> Result<WarpGrads<T>> {
    T::projective_sample_backward(grad_output, input, params, opts, req)
}

/// The body of [`projective_sample_backward`], compiled here for `f32` and `f64` only ([`crate::entry`]).
pub(crate) fn projective_sample_backward_in<T: Float>(
    grad_output: TensorRef<'_, T>,
    input: TensorRef<'_, T>,
    params: TensorRef<'_, T>,
    opts: &SampleOptions,
    req: GradRequest,
) -> Result<WarpGrads<T>> {
    let dims = check_input(&input, opts)?;
    check_2d(&dims, "the projective family")?;
    check_projective(&params, "input", dims.n)?;
    check_tensor("grad_output", &grad_output, &[4], "rank 4 (N, C, H_out, W_out)")?;
    let out_size = grad_output.shape[2..].to_vec();
    check_out_size::<T>(&dims, &out_size)?;
    check_grad_output(&grad_output, &out_shape(&dims, &out_size))?;
    let (gin, dh) = matrix_backward::<T, 2, true>(
        grad_output,
        input,
        &dims,
        &projective_mats(params.data),
        &out_size,
        opts,
        req,
    )?;
    let params_grad = dh.map(|dh| {
        let data = dh
            .iter()
            .flat_map(|m| [m[0][0], m[0][1], m[0][2], m[1][0], m[1][1], m[1][2], m[2][0], m[2][1]])
            .map(T::from_f64)
            .collect();
        Tensor { data, shape: params.shape.to_vec() }
    });
    Ok(WarpGrads { input: gin.map(|data| Tensor { data, shape: input.shape.to_vec() }), params: params_grad })
}

fn tps_source<T: Float>(
    dims: &InputDims,
    theta: &[T],
    tps: &Tps,
    out_size: &[usize],
    align: bool,
) -> Result<TpsSource<T>> {
    let ident = [[[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0; 4]]];
    let in_xy = sizes_xyz::<2>(&dims.spatial);
    let ident = MatrixSource::<T, 2, false>::new(&ident, in_xy, sizes_xyz(out_size), align);
    let k = tps.num_points();
    let b = basis::<T>(tps, out_size[0], out_size[1], align)?;
    let ctrl = tps.control_points();
    let mut disp = Vec::with_capacity(theta.len());
    for th in theta.chunks_exact(2 * k) {
        disp.extend((0..k).map(|j| th[2 * j] - T::from_f64(ctrl[j][0])));
        disp.extend((0..k).map(|j| th[2 * j + 1] - T::from_f64(ctrl[j][1])));
    }
    let scale = [ident_axis_scale(in_xy[0], align), ident_axis_scale(in_xy[1], align)];
    Ok(TpsSource { ident, basis: b, disp, k, scale })
}

fn ident_axis_scale<T: Float>(size: usize, align: bool) -> T {
    crate::coords::Axis::<T>::new(size, 1, align).scale
}

/// Thin-plate-spline warp, fused: `theta` (N, K, 2) as in [`crate::tps_grid`], sampled into
/// (N, C, H_out, W_out). Works in pixel space, so identity parameters reproduce the input exactly.
pub fn tps_sample<T: Float>(
    input: TensorRef<'_, T>,
    theta: TensorRef<'_, T>,
    tps: &Tps,
    out_size: &[usize],
    opts: &SampleOptions,
) -> Result<Tensor<T>> {
    T::tps_sample(input, theta, tps, out_size, opts)
}

/// The body of [`tps_sample`], compiled here for `f32` and `f64` only ([`crate::entry`]).
pub(crate) fn tps_sample_in<T: Float>(
    input: TensorRef<'_, T>,
    theta: TensorRef<'_, T>,
    tps: &Tps,
    out_size: &[usize],
    opts: &SampleOptions,
) -> Result<Tensor<T>> {
    let dims = check_input(&input, opts)?;
    check_2d(&dims, "the thin-plate-spline family")?;
    crate::grid::check_tps(&theta, tps, "input", dims.n)?;
    check_out_size::<T>(&dims, out_size)?;
    let shape = out_shape(&dims, out_size);
    let plan = plan::<T, 2>(&dims, out_size, opts.align_corners);
    let src = tps_source(&dims, theta.data, tps, out_size, opts.align_corners)?;
    let data = run_forward(&plan, &src, input.data, &shape, opts)?;
    Ok(Tensor { data, shape })
}

/// Gradients of [`tps_sample`]: to the input and to theta, as requested.
pub fn tps_sample_backward<T: Float>(
    grad_output: TensorRef<'_, T>,
    input: TensorRef<'_, T>,
    theta: TensorRef<'_, T>,
    tps: &Tps,
    opts: &SampleOptions,
    req: GradRequest,
) -> Result<WarpGrads<T>> {
    T::tps_sample_backward(grad_output, input, theta, tps, opts, req)
}

/// The body of [`tps_sample_backward`], compiled here for `f32` and `f64` only ([`crate::entry`]).
pub(crate) fn tps_sample_backward_in<T: Float>(
    grad_output: TensorRef<'_, T>,
    input: TensorRef<'_, T>,
    theta: TensorRef<'_, T>,
    tps: &Tps,
    opts: &SampleOptions,
    req: GradRequest,
) -> Result<WarpGrads<T>> {
    let dims = check_input(&input, opts)?;
    check_2d(&dims, "the thin-plate-spline family")?;
    crate::grid::check_tps(&theta, tps, "input", dims.n)?;
    check_tensor("grad_output", &grad_output, &[4], "rank 4 (N, C, H_out, W_out)")?;
    let out_size = grad_output.shape[2..].to_vec();
    check_out_size::<T>(&dims, &out_size)?;
    check_grad_output(&grad_output, &out_shape(&dims, &out_size))?;
    let plan = plan::<T, 2>(&dims, &out_size, opts.align_corners);
    let src = tps_source(&dims, theta.data, tps, &out_size, opts.align_corners)?;
    let res = run_backward(&plan, &src, input, grad_output.data, opts, req)?;
    let k = src.k;
    let params = req.params.then(|| {
        let per = reduce(
            res.accs,
            dims.n,
            |r: &mut Vec<f64>, a: &Vec<f64>| r.iter_mut().zip(a).for_each(|(x, y)| *x += y),
            || vec![0.0; 2 * k],
        );
        let data = per
            .iter()
            .flat_map(|a| (0..k).flat_map(move |j| [T::from_f64(a[j]), T::from_f64(a[k + j])]))
            .collect();
        Tensor { data, shape: theta.shape.to_vec() }
    });
    Ok(WarpGrads { input: res.grad_input.map(|data| Tensor { data, shape: input.shape.to_vec() }), params })
}
