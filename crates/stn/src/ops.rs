//! The differentiable ops on Burn tensors: grid sampling, fused warps (parameters straight into
//! the sampler) and grids from parameters.
//!
//! Every function validates its arguments first and returns a [`StnError`] naming the argument,
//! then routes: f32/f64 tensors on flex go to stn-kernels through [`StnBackend`], f32 tensors on
//! Burn's cube backends (wgpu, CUDA; the `gpu` feature) to the CubeCL kernels, both with a
//! hand-written backward under autodiff ([`has_native_sampler`]); anything else takes the
//! generic tensor-op path of [`crate::generic`], which Burn's autodiff differentiates.
//!
//! The numerical contract is PyTorch's (`torch.nn.functional.grid_sample` / `affine_grid`):
//! normalized coordinates in [-1, 1], last grid axis (x, y[, z]).

use burn::backend::{DType, Dispatch};
use burn::tensor::{Device, Tensor};
use stn_kernels::{Interpolation, KernelError, SampleOptions, Tps};

use crate::backend::{GridSpec, StnBackend, WarpKind, WarpSpec};
use crate::error::{Result, StnError};
use crate::generic;

/// Whether tensors on `device` run the native stn-kernels ops (flex, with or without autodiff),
/// convolution and pooling included. For sampling see [`has_native_sampler`].
pub fn has_native_kernel(device: &Device) -> bool {
    use burn::backend::DispatchDevice;
    matches!(device.as_dispatch().clone().inner(), DispatchDevice::Flex(_))
}

/// Which implementation a call may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// The native kernel where the backend and dtype have one, else the generic path.
    Auto,
    /// Always the generic tensor-op path.
    Generic,
}

/// Whether tensors of `dtype` on `device` sample with a native kernel: stn-kernels on flex
/// (f32, f64), the CubeCL kernels on Burn's cube backends (f32, with the `gpu` feature).
pub fn has_native_sampler(device: &Device, dtype: DType) -> bool {
    use burn::backend::DispatchDevice;
    match device.as_dispatch().clone().inner() {
        DispatchDevice::Flex(_) => matches!(dtype, DType::F32 | DType::F64),
        #[cfg(feature = "gpu")]
        DispatchDevice::Cube(_) => dtype == DType::F32,
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

impl Route {
    fn native<const D: usize>(self, t: &Tensor<D>) -> bool {
        self == Route::Auto && has_native_sampler(&t.device(), t.dtype())
    }
}

// ---------------------------------------------------------------- validation

fn rank_err(arg: &'static str, expected: &str, shape: &[usize]) -> StnError {
    KernelError::Rank { arg, expected: expected.into(), got: shape.len(), shape: shape.to_vec() }.into()
}

pub(crate) fn shape_err(arg: &'static str, expected: &[usize], got: &[usize]) -> StnError {
    let parts: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    KernelError::Shape { arg, expected: format!("({})", parts.join(", ")), got: got.to_vec() }.into()
}

/// Every size at least 1, and the element count (of `elem_bytes` elements) addressable.
pub(crate) fn check_sizes(arg: &'static str, shape: &[usize], elem_bytes: usize) -> Result<usize> {
    if let Some(dim) = shape.iter().position(|&s| s == 0) {
        return Err(KernelError::ZeroSize { arg, dim, shape: shape.to_vec() }.into());
    }
    let n = shape.iter().try_fold(1usize, |a, &s| a.checked_mul(s));
    match n.and_then(|n| n.checked_mul(elem_bytes).map(|b| (n, b))) {
        Some((n, b)) if b <= isize::MAX as usize => Ok(n),
        _ => Err(KernelError::TooLarge { arg, shape: shape.to_vec() }.into()),
    }
}

pub(crate) fn check_float<const D: usize>(arg: &'static str, t: &Tensor<D>) -> Result<usize> {
    let dt = t.dtype();
    if !dt.is_float() {
        return Err(StnError::DType { arg, expected: "use a float tensor", got: format!("{dt:?}") });
    }
    Ok(dt.size())
}

pub(crate) fn check_same_dtype<const A: usize, const B: usize>(
    a: &Tensor<A>,
    b_arg: &'static str,
    b: &Tensor<B>,
) -> Result<()> {
    if a.dtype() != b.dtype() {
        return Err(StnError::DType {
            arg: b_arg,
            expected: "it must have the dtype of `input`",
            got: format!("{:?} (input: {:?})", b.dtype(), a.dtype()),
        });
    }
    Ok(())
}

/// Checks an input (N, C, H, W) or (N, C, D, H, W); returns its dims.
fn check_input<const D: usize>(input: &Tensor<D>, options: &SampleOptions) -> Result<Vec<usize>> {
    let dims = input.dims().to_vec();
    if D != 4 && D != 5 {
        return Err(rank_err("input", "rank 4 (N, C, H, W) or rank 5 (N, C, D, H, W)", &dims));
    }
    let bytes = check_float("input", input)?;
    check_sizes("input", &dims, bytes)?;
    if D == 5 && options.mode == Interpolation::Bicubic {
        return Err(KernelError::Unsupported {
            arg: "mode",
            message: "bicubic interpolation is 2-D only (as in PyTorch); use bilinear (trilinear) or nearest for a 5-D input".into(),
        }
        .into());
    }
    Ok(dims)
}

/// Checks a spatial output size against the input's rank and the output's element count.
fn check_out_size(in_dims: &[usize], out_size: &[usize], elem_bytes: usize) -> Result<()> {
    let d = in_dims.len() - 2;
    if out_size.len() != d {
        let what = if d == 2 { "2 sizes (H_out, W_out)" } else { "3 sizes (D_out, H_out, W_out)" };
        return Err(rank_err("out_size", what, out_size));
    }
    check_sizes("out_size", out_size, 1)?;
    let mut out = in_dims[..2].to_vec();
    out.extend_from_slice(out_size);
    check_sizes("output", &out, elem_bytes)?;
    Ok(())
}

/// Checks parameters (N, rest...) against the batch `n` and the expected trailing shape.
fn check_params<const P: usize>(arg: &'static str, p: &Tensor<P>, n: usize, rest: &[usize]) -> Result<()> {
    let dims = p.dims();
    let mut expected = vec![n];
    expected.extend_from_slice(rest);
    check_float(arg, p)?;
    if dims[0] != n {
        return Err(KernelError::Batch { arg, other: "input", expected: n, got: dims[0] }.into());
    }
    if dims[..] != expected[..] {
        return Err(shape_err(arg, &expected, &dims));
    }
    Ok(())
}

// ---------------------------------------------------------------- sampling

/// Samples `input` (N, C, H, W) at `grid` (N, H_out, W_out, 2), or (N, C, D, H, W) at
/// (N, D_out, H_out, W_out, 3): PyTorch's `grid_sample`, with gradients to both.
pub fn grid_sample<const D: usize>(
    input: Tensor<D>,
    grid: Tensor<D>,
    options: SampleOptions,
) -> Result<Tensor<D>> {
    grid_sample_routed::<D>(Route::Auto, input, grid, options)
}

pub(crate) fn grid_sample_routed<const D: usize>(
    route: Route,
    input: Tensor<D>,
    grid: Tensor<D>,
    options: SampleOptions,
) -> Result<Tensor<D>> {
    let dims = check_input(&input, &options)?;
    let g = grid.dims();
    check_same_dtype(&input, "grid", &grid)?;
    check_sizes("grid", &g, input.dtype().size())?;
    if g[0] != dims[0] {
        return Err(KernelError::Batch { arg: "grid", other: "input", expected: dims[0], got: g[0] }.into());
    }
    if g[D - 1] != D - 2 {
        let mut expected = g.to_vec();
        expected[D - 1] = D - 2;
        return Err(shape_err("grid", &expected, &g));
    }
    check_out_size(&dims, &g[1..D - 1], input.dtype().size())?;
    if route.native(&input) {
        let out =
            <Dispatch as StnBackend>::stn_grid_sample(input.into_dispatch(), grid.into_dispatch(), options);
        return Ok(Tensor::from_dispatch(out));
    }
    Ok(generic::sample_unchecked(input, grid, &options))
}

fn warp_native<const D: usize, const P: usize>(
    input: Tensor<D>,
    params: Tensor<P>,
    spec: WarpSpec,
) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as StnBackend>::stn_warp(
        input.into_dispatch(),
        params.into_dispatch(),
        spec,
    ))
}

/// Samples `input` through affine matrices `theta` — (N, 2, 3) for (N, C, H, W), (N, 3, 4) for
/// (N, C, D, H, W) — to spatial size `out_size`, without storing a grid. Equals
/// `grid_sample(input, affine_grid(theta, ..))`.
pub fn affine_sample<const D: usize>(
    input: Tensor<D>,
    theta: Tensor<3>,
    out_size: &[usize],
    options: SampleOptions,
) -> Result<Tensor<D>> {
    affine_sample_routed(Route::Auto, input, theta, out_size, options)
}

pub(crate) fn affine_sample_routed<const D: usize>(
    route: Route,
    input: Tensor<D>,
    theta: Tensor<3>,
    out_size: &[usize],
    options: SampleOptions,
) -> Result<Tensor<D>> {
    let dims = check_input(&input, &options)?;
    let d = D - 2;
    check_params("theta", &theta, dims[0], &[d, d + 1])?;
    check_same_dtype(&input, "theta", &theta)?;
    check_out_size(&dims, out_size, input.dtype().size())?;
    if route.native(&input) {
        let spec = WarpSpec { kind: WarpKind::Affine, out_size: out_size.to_vec(), options };
        return Ok(warp_native(input, theta, spec));
    }
    let grid =
        generic::affine_grid_unchecked::<D>(theta, &out_size_full(&dims, out_size), options.align_corners);
    Ok(generic::sample_unchecked(input, grid, &options))
}

fn out_size_full(dims: &[usize], out_size: &[usize]) -> Vec<usize> {
    let mut s = dims[..2].to_vec();
    s.extend_from_slice(out_size);
    s
}

/// Samples `input` (N, C, H, W) through homographies `params` (N, 8) — the row-major 3x3 matrix
/// without `h33 = 1` — to spatial size `out_size`.
pub fn projective_sample(
    input: Tensor<4>,
    params: Tensor<2>,
    out_size: [usize; 2],
    options: SampleOptions,
) -> Result<Tensor<4>> {
    projective_sample_routed(Route::Auto, input, params, out_size, options)
}

pub(crate) fn projective_sample_routed(
    route: Route,
    input: Tensor<4>,
    params: Tensor<2>,
    out_size: [usize; 2],
    options: SampleOptions,
) -> Result<Tensor<4>> {
    let dims = check_input(&input, &options)?;
    check_params("params", &params, dims[0], &[8])?;
    check_same_dtype(&input, "params", &params)?;
    check_out_size(&dims, &out_size, input.dtype().size())?;
    if route.native(&input) {
        let spec = WarpSpec { kind: WarpKind::Projective, out_size: out_size.to_vec(), options };
        return Ok(warp_native(input, params, spec));
    }
    let grid =
        generic::projective_grid_unchecked(params, &out_size_full(&dims, &out_size), options.align_corners);
    Ok(generic::sample_unchecked(input, grid, &options))
}

/// Samples `input` (N, C, H, W) through a thin-plate spline: `theta` (N, K, 2) holds where the
/// K control points of `tps` land in the input (identity: [`Tps::control_points`]).
pub fn tps_sample(
    input: Tensor<4>,
    theta: Tensor<3>,
    tps: Tps,
    out_size: [usize; 2],
    options: SampleOptions,
) -> Result<Tensor<4>> {
    tps_sample_routed(Route::Auto, input, theta, tps, out_size, options)
}

pub(crate) fn tps_sample_routed(
    route: Route,
    input: Tensor<4>,
    theta: Tensor<3>,
    tps: Tps,
    out_size: [usize; 2],
    options: SampleOptions,
) -> Result<Tensor<4>> {
    let dims = check_input(&input, &options)?;
    check_params("theta", &theta, dims[0], &[tps.num_points(), 2])?;
    check_same_dtype(&input, "theta", &theta)?;
    check_out_size(&dims, &out_size, input.dtype().size())?;
    if route.native(&input) {
        let spec = WarpSpec { kind: WarpKind::Tps(tps), out_size: out_size.to_vec(), options };
        return Ok(warp_native(input, theta, spec));
    }
    let grid =
        generic::tps_grid_unchecked(theta, tps, &out_size_full(&dims, &out_size), options.align_corners)?;
    Ok(generic::sample_unchecked(input, grid, &options))
}

// ---------------------------------------------------------------- grids

fn check_grid_size(size: &[usize], ranks: &[usize], elem_bytes: usize) -> Result<()> {
    if !ranks.contains(&size.len()) {
        let what =
            if ranks == [4] { "4 sizes (N, C, H, W)" } else { "4 sizes (N, C, H, W) or 5 (N, C, D, H, W)" };
        return Err(rank_err("size", what, size));
    }
    let d = size.len() - 2;
    let mut g = vec![size[0]];
    g.extend_from_slice(&size[2..]);
    g.push(d);
    check_sizes("size", size, 1)?;
    check_sizes("grid", &g, elem_bytes)?;
    Ok(())
}

fn grid_native<const P: usize, const G: usize>(params: Tensor<P>, spec: GridSpec) -> Tensor<G> {
    Tensor::from_dispatch(<Dispatch as StnBackend>::stn_param_grid(params.into_dispatch(), spec))
}

/// PyTorch's `affine_grid`: `theta` (N, 2, 3) and `size` (N, C, H, W) give a grid (N, H, W, 2)
/// (`G = 4`); (N, 3, 4) and (N, C, D, H, W) give (N, D, H, W, 3) (`G = 5`).
pub fn affine_grid<const G: usize>(
    theta: Tensor<3>,
    size: &[usize],
    align_corners: bool,
) -> Result<Tensor<G>> {
    affine_grid_routed(Route::Auto, theta, size, align_corners)
}

pub(crate) fn affine_grid_routed<const G: usize>(
    route: Route,
    theta: Tensor<3>,
    size: &[usize],
    align_corners: bool,
) -> Result<Tensor<G>> {
    let bytes = check_float("theta", &theta)?;
    check_grid_size(size, &[4, 5], bytes)?;
    if size.len() != G {
        return Err(rank_err("size", &format!("{G} sizes for a rank-{G} grid"), size));
    }
    let d = G - 2;
    check_params("theta", &theta, size[0], &[d, d + 1])?;
    if route.native(&theta) {
        return Ok(grid_native(
            theta,
            GridSpec { kind: WarpKind::Affine, size: size.to_vec(), align_corners },
        ));
    }
    Ok(generic::affine_grid_unchecked::<G>(theta, size, align_corners))
}

/// The grid (N, H, W, 2) of homographies `params` (N, 8) for `size` (N, C, H, W).
pub fn projective_grid(params: Tensor<2>, size: [usize; 4], align_corners: bool) -> Result<Tensor<4>> {
    projective_grid_routed(Route::Auto, params, size, align_corners)
}

pub(crate) fn projective_grid_routed(
    route: Route,
    params: Tensor<2>,
    size: [usize; 4],
    align_corners: bool,
) -> Result<Tensor<4>> {
    let bytes = check_float("params", &params)?;
    check_grid_size(&size, &[4], bytes)?;
    check_params("params", &params, size[0], &[8])?;
    if route.native(&params) {
        let spec = GridSpec { kind: WarpKind::Projective, size: size.to_vec(), align_corners };
        return Ok(grid_native(params, spec));
    }
    Ok(generic::projective_grid_unchecked(params, &size, align_corners))
}

/// The grid (N, H, W, 2) of thin-plate splines `theta` (N, K, 2) for `size` (N, C, H, W).
pub fn tps_grid(theta: Tensor<3>, tps: Tps, size: [usize; 4], align_corners: bool) -> Result<Tensor<4>> {
    tps_grid_routed(Route::Auto, theta, tps, size, align_corners)
}

pub(crate) fn tps_grid_routed(
    route: Route,
    theta: Tensor<3>,
    tps: Tps,
    size: [usize; 4],
    align_corners: bool,
) -> Result<Tensor<4>> {
    let bytes = check_float("theta", &theta)?;
    check_grid_size(&size, &[4], bytes)?;
    check_params("theta", &theta, size[0], &[tps.num_points(), 2])?;
    if route.native(&theta) {
        let spec = GridSpec { kind: WarpKind::Tps(tps), size: size.to_vec(), align_corners };
        return Ok(grid_native(theta, spec));
    }
    generic::tps_grid_unchecked(theta, tps, &size, align_corners)
}
