//! # stn-table: image tables for stn
//!
//! Parquet/Arrow tables whose image column follows any of the conventions of the tools users
//! have ([`convention`]: Hugging Face `Image()`, plain binary PNG/JPEG, Daft, Ray Data, Spark,
//! fixed-shape tensors), detected from the schema once.
//!
//! - [`rectify`]: a trained transformer over a whole table (a file or a folder of files),
//!   streaming row group by row group, every input column passed through, `stn_image`,
//!   `stn_theta` and `stn_error` added; a bad row gets its own error and never costs the table.
//! - [`batch`]: one batch of an image column through the rectification core
//!   ([`stn_models::rectify::Rectifier`]); the table writer and the SQL functions both call it.
//! - [`crypto`]: encrypted tables (Parquet modular encryption): keys through a KMS, outputs
//!   never less protected than their inputs.
//! - [`remote`]: tables in object stores (`s3://`), read with ranged GETs and written with
//!   uploads that appear complete or not at all, never overwriting.
//! - [`digest`]: a rectified table's content as one hex string, whatever its encoding, to compare
//!   machines and runs.
//! - [`dataset`]: labelled training and test sets from tables; [`export`]: the embedded digits
//!   as a table.
//!
//! ```no_run
//! use std::path::Path;
//! use stn_models::rectify::Rectifier;
//! use stn_table::rectify::{rectify_table, RectifyOptions};
//!
//! let rectifier = Rectifier::from_run(Path::new("runs/rts-st")).map_err(stn_table::TableError::Model)?;
//! let reports = rectify_table(&rectifier, Path::new("in.parquet"), Path::new("out.parquet"),
//!                             &RectifyOptions::default(), &mut |_| {})?;
//! println!("{} rows, {} failed", reports[0].rows, reports[0].failed);
//! # Ok::<(), stn_table::TableError>(())
//! ```
#![warn(missing_docs)]

pub mod arrays;
pub mod augment;
pub mod batch;
pub mod codec;
pub mod convention;
pub mod crypto;
pub mod dataset;
pub mod delta;
pub mod digest;
pub mod error;
pub mod explain;
pub mod export;
pub mod guard;
pub mod lineage;
pub mod memory;
pub mod rectify;
pub mod remote;

pub use convention::{detect, Convention, ImageColumn};
pub use error::{Result, TableError};
