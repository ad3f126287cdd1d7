//! # stn: Spatial Transformer Networks for Burn
//!
//! A spatial transformer (Jaderberg et al., NIPS 2015) lets a network warp its own input: a
//! localization net regresses transformation parameters theta, a transform family turns theta
//! into sampling coordinates, and a differentiable sampler reads the input there, for inputs of
//! any size and an output of a chosen size. This crate is that module for
//! [Burn](https://burn.dev) 0.22, on its pure-Rust `flex` CPU backend by default:
//!
//! - [`ops`]: `grid_sample`, the fused warps `affine_sample` / `projective_sample` /
//!   `tps_sample` (parameters straight into the sampler, no grid stored) and the grids
//!   `affine_grid` / `projective_grid` / `tps_grid`, with PyTorch's numerics (modes nearest,
//!   bilinear, bicubic; padding zeros, border, reflection; `align_corners`; 2-D and 3-D). On flex
//!   they run the [`stn_kernels`] kernels through a Burn backend extension ([`backend`]), with a
//!   hand-written backward under `Autodiff`; other backends take a generic tensor-op path
//!   ([`generic`]), tested equal to the native one.
//! - [`Transform`]: the families translation, attention, similarity, affine, projective,
//!   thin-plate spline (K points), affine 3-D and dense grid; each knows its parameter count and
//!   identity, warps, makes its grid, and (matrix families) gives its matrix for composition.
//! - [`LocalizationNet`]: a configurable conv stack and FC head (or FC-only, for ST-FCN) whose
//!   regression layer starts at the identity transform.
//! - [`conv`]: `conv2d` and `max_pool2d` as Burn ops with their own backwards on flex (im2col +
//!   gemm per chunk of images; branch-free pooling), drop-ins for the `Conv2d` / `MaxPool2d`
//!   modules' `forward`; the localization nets use them. Burn flex's own convolution spent most
//!   of a small-image training step; other backends and cases take Burn's ops.
//! - [`SpatialTransformer`]: localization net + family + sampler, built from a
//!   [`SpatialTransformerConfig`] (`#[derive(Config)]`), returning the output and theta;
//!   [`ParallelTransformers`] (outputs concatenated on channels) and [`SeriesTransformers`]
//!   (matrices composed, the input sampled once); one-file save and load with the config.
//!
//! Errors are values: every op and constructor validates its arguments and returns a
//! [`StnError`] naming the argument (the `forward` methods panic with that message; use
//! `try_forward` to handle it).
//!
//! ## Example: a transformer in a training step
//!
//! ```
//! use burn::optim::{AdamConfig, GradientsParams};
//! use burn::tensor::{Device, Distribution, Tensor};
//! use stn::{LocalizationNetConfig, SpatialTransformerConfig, Transform};
//!
//! # fn main() -> stn::Result<()> {
//! let device = Device::flex().autodiff();
//! // The PyTorch tutorial's localization net on 1 x 28 x 28 inputs; an affine transformer
//! // with a 28 x 28 output, its localization net learning 10x slower (for SGD; see the docs of
//! // `SpatialTransformerConfig` for Adam).
//! let config = SpatialTransformerConfig::new(LocalizationNetConfig::tutorial(1), Transform::Affine, vec![28, 28])
//!     .with_loc_grad_scale(0.1);
//! let mut stn = config.init(&device)?;
//!
//! // A new transformer is the identity: the output equals the input.
//! let x = Tensor::<4>::random([8, 1, 28, 28], Distribution::Default, &device);
//! let out = stn.try_forward(x.clone())?;
//! assert_eq!(out.output.dims(), [8, 1, 28, 28]);
//! assert_eq!(out.theta.dims(), [8, 6]);
//!
//! // Train it to shift images right by a quarter of their width.
//! let target = stn::ops::affine_sample(
//!     x.clone(),
//!     Tensor::from_data([[[1.0f32, 0.0, -0.5], [0.0, 1.0, 0.0]]], &device).repeat_dim(0, 8),
//!     &[28, 28],
//!     config.sample_options(),
//! )?;
//! let mut optim = AdamConfig::new().init();
//! let out = stn.try_forward(x)?;
//! let loss = (out.output - target).powi_scalar(2).mean() + out.penalty;
//! let grads = stn.scale_grads(GradientsParams::from_grads(loss.backward(), &stn));
//! stn = optim.step(1e-3, stn, grads);
//!
//! // Save with its config; another program loads it without knowing the config.
//! let path = std::env::temp_dir().join("stn-doc-example.stn");
//! stn.save(&path)?;
//! let again = stn::SpatialTransformer::load(&path, &device)?;
//! assert_eq!(again.transform(), Transform::Affine);
//! # std::fs::remove_file(path).ok();
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

pub mod augment;
pub mod backend;
pub mod compose;
pub mod conv;
mod conv_kernel;
pub mod device;
pub mod error;
pub mod explain;
pub mod generic;
#[cfg(feature = "gpu")]
mod gpu;
pub mod localization;
pub mod ops;
pub mod persist;
pub mod repro;
pub mod transform;
pub mod transformer;

pub use compose::{
    MultiOutput, ParallelTransformers, ParallelTransformersConfig, SeriesOutput, SeriesTransformers,
    SeriesTransformersConfig,
};
pub use error::{Result, StnError};
pub use localization::{ConvBlockConfig, LocalizationNet, LocalizationNetConfig};
pub use stn_kernels::{Interpolation, Padding, SampleOptions, Tps};
pub use transform::{warp_matrix, Transform};
pub use transformer::{
    InterpolationMode, PaddingMode, SpatialTransformer, SpatialTransformerConfig, StnOutput,
};
