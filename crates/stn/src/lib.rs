//! stn
#![warn(missing_docs)]

pub mod backend;
pub mod error;
pub mod generic;
pub mod ops;

pub use error::{Result, StnError};
pub use stn_kernels::{Interpolation, Padding, SampleOptions, Tps};
