//! Where the kernels are compiled: once, here, for `f32` and `f64`.
//!
//! The public entry points ([`crate::grid_sample`], the fused warps, the grids and their
//! backwards) are generic over [`crate::Float`], and Rust compiles a generic function in every
//! crate that calls it with a concrete type: without this module the whole kernel tree (every
//! mode x padding x SIMD path, and rayon's jobs around them) would be compiled again in the
//! Burn library, in every test program and in every binary that reaches it, and again after
//! every edit here. The entry points call [`Kernels`] instead, which is implemented for `f32`
//! and `f64` in this crate, so the kernels are compiled here only and every caller links to
//! the same machine code (docs/performance.md#build-cost).

use crate::{GradRequest, Result, SampleGrads, SampleOptions, Tensor, TensorRef, Tps, WarpGrads};

/// The kernel entry points of one element type, compiled in this crate (sealed: a supertrait
/// of [`crate::Float`], which only `f32` and `f64` implement).
pub trait Kernels: Sized {
    /// [`crate::grid_sample`] for this type.
    fn grid_sample(
        input: TensorRef<'_, Self>,
        grid: TensorRef<'_, Self>,
        opts: &SampleOptions,
    ) -> Result<Tensor<Self>>;
    /// [`crate::grid_sample_backward`] for this type.
    fn grid_sample_backward(
        grad_output: TensorRef<'_, Self>,
        input: TensorRef<'_, Self>,
        grid: TensorRef<'_, Self>,
        opts: &SampleOptions,
        req: GradRequest,
    ) -> Result<SampleGrads<Self>>;
    /// [`crate::affine_sample`] for this type.
    fn affine_sample(
        input: TensorRef<'_, Self>,
        theta: TensorRef<'_, Self>,
        out_size: &[usize],
        opts: &SampleOptions,
    ) -> Result<Tensor<Self>>;
    /// [`crate::affine_sample_backward`] for this type.
    fn affine_sample_backward(
        grad_output: TensorRef<'_, Self>,
        input: TensorRef<'_, Self>,
        theta: TensorRef<'_, Self>,
        opts: &SampleOptions,
        req: GradRequest,
    ) -> Result<WarpGrads<Self>>;
    /// [`crate::projective_sample`] for this type.
    fn projective_sample(
        input: TensorRef<'_, Self>,
        params: TensorRef<'_, Self>,
        out_size: &[usize],
        opts: &SampleOptions,
    ) -> Result<Tensor<Self>>;
    /// [`crate::projective_sample_backward`] for this type.
    fn projective_sample_backward(
        grad_output: TensorRef<'_, Self>,
        input: TensorRef<'_, Self>,
        params: TensorRef<'_, Self>,
        opts: &SampleOptions,
        req: GradRequest,
    ) -> Result<WarpGrads<Self>>;
    /// [`crate::tps_sample`] for this type.
    fn tps_sample(
        input: TensorRef<'_, Self>,
        theta: TensorRef<'_, Self>,
        tps: &Tps,
        out_size: &[usize],
        opts: &SampleOptions,
    ) -> Result<Tensor<Self>>;
    /// [`crate::tps_sample_backward`] for this type.
    fn tps_sample_backward(
        grad_output: TensorRef<'_, Self>,
        input: TensorRef<'_, Self>,
        theta: TensorRef<'_, Self>,
        tps: &Tps,
        opts: &SampleOptions,
        req: GradRequest,
    ) -> Result<WarpGrads<Self>>;
    /// [`crate::affine_grid`] for this type.
    fn affine_grid(theta: TensorRef<'_, Self>, size: &[usize], align_corners: bool) -> Result<Tensor<Self>>;
    /// [`crate::affine_grid_backward`] for this type.
    fn affine_grid_backward(grad_grid: TensorRef<'_, Self>, align_corners: bool) -> Result<Tensor<Self>>;
    /// [`crate::projective_grid`] for this type.
    fn projective_grid(
        params: TensorRef<'_, Self>,
        size: &[usize],
        align_corners: bool,
    ) -> Result<Tensor<Self>>;
    /// [`crate::projective_grid_backward`] for this type.
    fn projective_grid_backward(
        grad_grid: TensorRef<'_, Self>,
        params: TensorRef<'_, Self>,
        align_corners: bool,
    ) -> Result<Tensor<Self>>;
    /// [`crate::tps_grid`] for this type.
    fn tps_grid(
        theta: TensorRef<'_, Self>,
        tps: &Tps,
        size: &[usize],
        align_corners: bool,
    ) -> Result<Tensor<Self>>;
    /// [`crate::tps_grid_backward`] for this type.
    fn tps_grid_backward(
        grad_grid: TensorRef<'_, Self>,
        tps: &Tps,
        align_corners: bool,
    ) -> Result<Tensor<Self>>;
}

macro_rules! compiled_here {
    ($($t:ty),*) => {$(
        impl Kernels for $t {
            fn grid_sample(input: TensorRef<'_, $t>, grid: TensorRef<'_, $t>, opts: &SampleOptions) -> Result<Tensor<$t>> {
                crate::sample::grid_sample_in(input, grid, opts)
            }
            fn grid_sample_backward(grad_output: TensorRef<'_, $t>, input: TensorRef<'_, $t>, grid: TensorRef<'_, $t>, opts: &SampleOptions, req: GradRequest) -> Result<SampleGrads<$t>> {
                crate::sample::grid_sample_backward_in(grad_output, input, grid, opts, req)
            }
            fn affine_sample(input: TensorRef<'_, $t>, theta: TensorRef<'_, $t>, out_size: &[usize], opts: &SampleOptions) -> Result<Tensor<$t>> {
                crate::warp::affine_sample_in(input, theta, out_size, opts)
            }
            fn affine_sample_backward(grad_output: TensorRef<'_, $t>, input: TensorRef<'_, $t>, theta: TensorRef<'_, $t>, opts: &SampleOptions, req: GradRequest) -> Result<WarpGrads<$t>> {
                crate::warp::affine_sample_backward_in(grad_output, input, theta, opts, req)
            }
            fn projective_sample(input: TensorRef<'_, $t>, params: TensorRef<'_, $t>, out_size: &[usize], opts: &SampleOptions) -> Result<Tensor<$t>> {
                crate::warp::projective_sample_in(input, params, out_size, opts)
            }
            fn projective_sample_backward(grad_output: TensorRef<'_, $t>, input: TensorRef<'_, $t>, params: TensorRef<'_, $t>, opts: &SampleOptions, req: GradRequest) -> Result<WarpGrads<$t>> {
                crate::warp::projective_sample_backward_in(grad_output, input, params, opts, req)
            }
            fn tps_sample(input: TensorRef<'_, $t>, theta: TensorRef<'_, $t>, tps: &Tps, out_size: &[usize], opts: &SampleOptions) -> Result<Tensor<$t>> {
                crate::warp::tps_sample_in(input, theta, tps, out_size, opts)
            }
            fn tps_sample_backward(grad_output: TensorRef<'_, $t>, input: TensorRef<'_, $t>, theta: TensorRef<'_, $t>, tps: &Tps, opts: &SampleOptions, req: GradRequest) -> Result<WarpGrads<$t>> {
                crate::warp::tps_sample_backward_in(grad_output, input, theta, tps, opts, req)
            }
            fn affine_grid(theta: TensorRef<'_, $t>, size: &[usize], align_corners: bool) -> Result<Tensor<$t>> {
                crate::grid::affine_grid_in(theta, size, align_corners)
            }
            fn affine_grid_backward(grad_grid: TensorRef<'_, $t>, align_corners: bool) -> Result<Tensor<$t>> {
                crate::grid::affine_grid_backward_in(grad_grid, align_corners)
            }
            fn projective_grid(params: TensorRef<'_, $t>, size: &[usize], align_corners: bool) -> Result<Tensor<$t>> {
                crate::grid::projective_grid_in(params, size, align_corners)
            }
            fn projective_grid_backward(grad_grid: TensorRef<'_, $t>, params: TensorRef<'_, $t>, align_corners: bool) -> Result<Tensor<$t>> {
                crate::grid::projective_grid_backward_in(grad_grid, params, align_corners)
            }
            fn tps_grid(theta: TensorRef<'_, $t>, tps: &Tps, size: &[usize], align_corners: bool) -> Result<Tensor<$t>> {
                crate::grid::tps_grid_in(theta, tps, size, align_corners)
            }
            fn tps_grid_backward(grad_grid: TensorRef<'_, $t>, tps: &Tps, align_corners: bool) -> Result<Tensor<$t>> {
                crate::grid::tps_grid_backward_in(grad_grid, tps, align_corners)
            }
        }
    )*};
}

compiled_here!(f32, f64);
