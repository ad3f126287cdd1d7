//! # stn-data: data for spatial transformer experiments
//!
//! - [`idx`]: the IDX format of MNIST and its relatives, raw or gzip, with validated headers (a
//!   truncated or corrupt file is an error that names it).
//! - [`Dataset`]: labelled gray images; the embedded 10,000-digit MNIST subset
//!   ([`Dataset::embedded_split`]: first 8,000 train, last 2,000 test, compiled into the
//!   binary, so nothing is downloaded), or any IDX pair by path or prefix (full MNIST,
//!   Fashion-MNIST, ...).
//! - [`Distortion`]: the paper's distorted-MNIST variants R, RTS, P, E, TC (and none), made
//!   with stn-kernels' sampler, deterministic by seed.
//! - [`Image`]: PNG and JPEG files, gray or colour, any size.
//!
//! ```
//! use stn_data::{Dataset, Distortion};
//!
//! let (train, test) = Dataset::embedded_split()?;
//! assert_eq!((train.len(), test.len()), (8000, 2000));
//! let rts = Distortion::Rts.apply(&test.subset(0..16)?, 7)?;
//! assert_eq!((rts.height, rts.width), (42, 42));
//! # Ok::<(), stn_data::DataError>(())
//! ```
#![warn(missing_docs)]

pub mod dataset;
pub mod distort;
pub mod error;
pub mod idx;
pub mod image_io;

pub use dataset::{Dataset, EMBEDDED_TRAIN};
pub use distort::Distortion;
pub use error::{DataError, Result};
pub use image_io::Image;
