//! stn
#![warn(missing_docs)]

pub mod backend;
pub mod compose;
pub mod error;
pub mod generic;
pub mod localization;
pub mod ops;
pub mod persist;
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
