//! # stn-cli: the `stn` program's library
//!
//! The models and runs live in `stn-models` (re-exported here as [`models`] and [`run`]).
//! [`augment`](mod@augment): `stn augment` on image files and `stn bench --augment`.
//! [`viz`]: the paper's figure and training curves. [`demo`]: `stn demo`. [`rectify`]: a trained
//! transformer applied to image files of any size, through the rectification core
//! ([`stn_models::rectify::Rectifier`]). [`bench`](mod@bench): `stn bench`. [`report`]: the page
//! `stn explain` and `stn demo` write.
#![warn(missing_docs)]

pub mod augment;
pub mod bench;
pub mod demo;
pub mod rectify;
pub mod report;
pub mod viz;

pub use stn_models::{models, run};
