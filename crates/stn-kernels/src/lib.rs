//! # stn-kernels
//!
//! Framework-free numerics of spatial transformer networks: grid generation and grid
//! sampling, forward and backward, in `f32` and `f64` from the same generic code, exact to
//! PyTorch's CPU `affine_grid` / `grid_sample` and deterministic for any thread count.
//!
//! - **Sampling** ([`grid_sample`], [`grid_sample_backward`]): 2-D (N, C, H, W) and 3-D
//!   (N, C, D, H, W) inputs, any output size; nearest, bilinear (trilinear) and bicubic
//!   (2-D); zeros, border and reflection padding; both `align_corners` conventions.
//! - **Grid generators**, each with its backward: [`affine_grid`] (2-D and 3-D),
//!   [`projective_grid`], [`tps_grid`], and the restricted families of [`AffineFamily`]
//!   (translation, attention, similarity) mapped to the affine matrix.
//! - **Fused warps** ([`affine_sample`], [`projective_sample`], [`tps_sample`] and their
//!   backwards): parameters go straight into the sampler and the grid is never stored.
//!
//! Work is split over (sample, block of output positions) with rayon; every reduction runs
//! in a fixed order, so outputs and gradients are bitwise identical for any thread count.
//! Every entry point validates its arguments and returns a [`KernelError`] instead of panicking.
//!
//! ```
//! use stn_kernels::{affine_sample, affine_sample_backward, GradRequest, SampleOptions, TensorRef};
//!
//! // One 1-channel 4x4 image, warped by the identity into a 4x4 output.
//! let image: Vec<f32> = (0..16).map(|v| v as f32).collect();
//! let theta = [1.0f32, 0.0, 0.0, 0.0, 1.0, 0.0];
//! let opts = SampleOptions { align_corners: true, ..Default::default() };
//! let out = affine_sample(
//!     TensorRef::new(&image, &[1, 1, 4, 4]),
//!     TensorRef::new(&theta, &[1, 2, 3]),
//!     &[4, 4],
//!     &opts,
//! )?;
//! assert_eq!(out.data, image); // identity parameters reproduce the input exactly
//!
//! // Gradients to the input and to theta of sum(output).
//! let ones = vec![1.0f32; 16];
//! let grads = affine_sample_backward(
//!     TensorRef::new(&ones, &out.shape),
//!     TensorRef::new(&image, &[1, 1, 4, 4]),
//!     TensorRef::new(&theta, &[1, 2, 3]),
//!     &opts,
//!     GradRequest::ALL,
//! )?;
//! assert_eq!(grads.params.unwrap().shape, vec![1, 2, 3]);
//! # Ok::<(), stn_kernels::KernelError>(())
//! ```

#![warn(missing_docs)]
// Index loops over several parallel arrays (taps, axes, channels) read better than zips here.
#![allow(clippy::needless_range_loop)]

pub mod alloc;
pub mod bench;
mod channels_last;
mod coords;
mod engine;
mod entry;
mod error;
mod fast2d;
mod float;
mod fused;
mod fused512;
mod grid;
mod options;
mod params;
mod sample;
mod simd;
mod source;
mod tensor;
mod tps;
mod warp;

pub use error::{KernelError, Result};
pub use float::Float;
pub use grid::{
    affine_grid, affine_grid_backward, base_coords, homography, projective_grid, projective_grid_backward,
    tps_grid, tps_grid_backward, PROJECTIVE_IDENTITY, PROJECTIVE_PARAMS,
};
pub use options::{GradRequest, Interpolation, Padding, SampleOptions};
pub use params::AffineFamily;
pub use sample::{grid_sample, grid_sample_backward, SampleGrads};
pub use source::PixelMap;
pub use tensor::{Tensor, TensorRef};
pub use tps::{tps_basis_matrix, Tps, TpsMap};
pub use warp::{
    affine_sample, affine_sample_backward, projective_sample, projective_sample_backward, tps_sample,
    tps_sample_backward, WarpGrads,
};
