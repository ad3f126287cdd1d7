//! The digest of a rectified table: what it holds, not how it is stored, so that two machines
//! (or a local run and a cluster) can be compared by one hex string.
//!
//! `output_digest` is the SHA-256, in hex, of every row of the outputs in order (files in the
//! order given, rows in file order), each row as:
//!
//! - a failed row (null `stn_image` or `stn_theta`): the byte `0`;
//! - else the byte `1`, then `stn_theta`'s values as little-endian `f32`, then the rectified
//!   image (`stn_image`, decoded) as its height, width and channels (little-endian `u32`) and
//!   its pixels as interleaved 8-bit values, row by row (`HWC`).
//!
//! PNG level, Parquet compression, row groups and file metadata change nothing; a JPEG output
//! has the pixels its decoder gives back.

use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::Float32Type;
use arrow_array::Array;
use parquet::arrow::ProjectionMask;
use sha2::{Digest, Sha256};

use crate::codec::{decode_row, DecodeOptions};
use crate::convention::detect;
use crate::crypto::Keys;
use crate::error::{Result, TableError};
use crate::guard::{guarded, GuardedBatches};
use crate::rectify::open_with;

/// A rectified row as the digest sees it.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    /// The transformation's parameters.
    pub theta: &'a [f32],
    /// The image's height, width and channels.
    pub dims: [u32; 3],
    /// Its pixels, interleaved 8-bit values, row by row.
    pub pixels: &'a [u8],
}

/// A running digest of rectified rows (see the module's documentation).
#[derive(Debug, Clone, Default)]
pub struct OutputDigest {
    hash: Sha256,
    rows: u64,
}

impl OutputDigest {
    /// An empty digest.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a row: its theta and rectified pixels (`None` for a failed row).
    pub fn add_row(&mut self, row: Option<Row<'_>>) {
        self.rows += 1;
        match row {
            None => self.hash.update([0u8]),
            Some(r) => {
                self.hash.update([1u8]);
                for v in r.theta {
                    self.hash.update(v.to_le_bytes());
                }
                for d in r.dims {
                    self.hash.update(d.to_le_bytes());
                }
                self.hash.update(r.pixels);
            }
        }
    }

    /// Adds every row of the rectified table file `path` (its `stn_image` and `stn_theta`).
    pub fn add_file(&mut self, path: &Path, keys: Option<&Keys>) -> Result<()> {
        let column = |message: String| TableError::Column { path: path.to_path_buf(), message };
        let mut image = None;
        let (batches, at) = read_rectified(path, keys, |schema| {
            let i = detect(schema, Some("stn_image"))?;
            let index = i.index;
            image = Some(i);
            Ok(vec![index])
        })?;
        let image = image.ok_or_else(|| column("no `stn_image` column".into()))?;
        let (image_at, theta_at) = (at[0], at[1]);
        let opts = DecodeOptions::default();
        for batch in batches {
            let batch = batch?;
            let (images, thetas) = (batch.column(image_at), batch.column(theta_at));
            // A fixed-size list, or a list where the table format has none (Delta).
            let (fixed, list) = (thetas.as_fixed_size_list_opt(), thetas.as_list_opt::<i32>());
            if fixed.is_none() && list.is_none() {
                return Err(column(format!("`stn_theta` is {}, not a list", thetas.data_type())));
            }
            for i in 0..batch.num_rows() {
                let row = self.rows as usize;
                let bad = |reason: String| TableError::Row { path: path.to_path_buf(), row, reason };
                if thetas.is_null(i) || images.is_null(i) {
                    self.add_row(None);
                    continue;
                }
                let theta = match (fixed, list) {
                    (Some(f), _) => f.value(i),
                    (_, Some(l)) => l.value(i),
                    _ => return Err(bad("`stn_theta` is not a list".into())),
                };
                let theta = theta
                    .as_primitive_opt::<Float32Type>()
                    .ok_or_else(|| bad("`stn_theta` does not hold f32 values".into()))?;
                let decoded = decode_row(&image.convention, images.as_ref(), i, &opts).map_err(bad)?;
                let img = &decoded.image;
                let dims = |v: usize| u32::try_from(v).map_err(|_| bad(format!("a dimension of {v}")));
                let (h, w, c) = (dims(img.height)?, dims(img.width)?, dims(img.channels)?);
                let pixels = img.to_interleaved_u8();
                self.add_row(Some(Row { theta: theta.values(), dims: [h, w, c], pixels: &pixels }));
            }
        }
        Ok(())
    }

    /// Rows added so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The digest, in hex.
    pub fn finish(self) -> String {
        self.hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The digest of the rectified table files `outputs`, in that order.
pub fn output_digest(outputs: &[PathBuf], keys: Option<&Keys>) -> Result<String> {
    let mut d = OutputDigest::new();
    for f in outputs {
        d.add_file(f, keys)?;
    }
    Ok(d.finish())
}

/// The batches (1,024 rows) of the rectified table file `path`, read with `keys`: only the
/// root columns `pick` chooses from its schema, then `stn_theta` (an error where there is
/// none: not a rectified table). Returns where each chosen column, then `stn_theta`, sits in
/// the batches (a projection keeps the file's column order). Shared by the digest and the
/// explanation summary ([`crate::explain::Summary::add_file`]).
pub(crate) fn read_rectified(
    path: &Path,
    keys: Option<&Keys>,
    pick: impl FnOnce(&arrow_schema::SchemaRef) -> std::result::Result<Vec<usize>, String>,
) -> Result<(GuardedBatches<parquet::arrow::arrow_reader::ParquetRecordBatchReader>, Vec<usize>)> {
    let (builder, _) = open_with(path, keys)?;
    let column = |message: String| TableError::Column { path: path.to_path_buf(), message };
    let mut roots = pick(builder.schema()).map_err(column)?;
    let (theta, _) = builder
        .schema()
        .column_with_name("stn_theta")
        .ok_or_else(|| column("no `stn_theta` column: not a rectified table".into()))?;
    roots.push(theta);
    let mut sorted = roots.clone();
    sorted.sort_unstable();
    sorted.dedup();
    let at = roots.iter().map(|r| sorted.iter().position(|s| s == r).unwrap_or(0)).collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), sorted);
    let reader = guarded(path, || {
        builder
            .with_projection(mask)
            .with_batch_size(1024)
            .build()
            .map_err(|e| TableError::Parquet { path: path.to_path_buf(), message: e.to_string() })
    })?;
    Ok((GuardedBatches::new(path, reader), at))
}
