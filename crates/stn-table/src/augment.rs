//! Augmented copies of an image table: every row K times, each copy's image warped by
//! [`stn::augment`] with the key (seed, copy, row), the warp recorded beside it.
//!
//! The output has the input's columns (the image column holding the augmented image, in the
//! input's convention and encoding) and three more: `stn_copy` (int32, 0 .. K-1),
//! `stn_augment` (the copy's [`Warp`] as JSON: its matrix, or its stages with the spline's
//! parameters; null where the row failed) and `stn_error` (null, or why the row has no image).
//! Rows come out in the input's order, each followed by its copies; a row that cannot be
//! decoded keeps its K rows, with a null image and its reason. The file's metadata records the
//! spec and the seed (`stn_augment_spec`, `stn_augment_seed`). Outputs are written under a
//! temporary name and renamed when complete; an existing output is never overwritten.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, Int32Array, RecordBatch, StringArray, UInt32Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use burn::tensor::{Device, Tensor, TensorData};
use parquet::arrow::ArrowWriter;
use stn::augment::{Augment, Key, Warp};
use stn_data::image_io::Encoding;
use stn_data::Image;

use crate::codec::{decode_column, encode_column, output_field, DecodeOptions, OutRow, DEFAULT_MAX_PIXELS};
use crate::convention::{detect, ImageColumn};
use crate::error::{Result, TableError};
use crate::rectify::{input_files, open, temp_name, writer_props, Partial};

/// The columns an augmented table adds, in order.
pub const AUGMENT_COLUMNS: [&str; 3] = ["stn_copy", "stn_augment", "stn_error"];

/// How to augment a table.
#[derive(Debug, Clone)]
pub struct AugmentTableOptions {
    /// The image column (None: detected from the schema).
    pub column: Option<String>,
    /// Copies per row (at least 1).
    pub copies: usize,
    /// The seed: copy k of table row r is warped with the key (seed, k, r).
    pub seed: u64,
    /// How encoded output images are encoded.
    pub encoding: Encoding,
    /// Rows read at a time.
    pub batch_size: usize,
    /// Largest image (pixels) a row may hold.
    pub max_pixels: u64,
}

impl Default for AugmentTableOptions {
    fn default() -> Self {
        AugmentTableOptions {
            column: None,
            copies: 1,
            seed: 0,
            encoding: Encoding::default(),
            batch_size: 256,
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }
}

/// What happened to one input file.
#[derive(Debug, Clone, PartialEq)]
pub struct AugmentReport {
    /// The input file.
    pub input: PathBuf,
    /// The output file.
    pub output: PathBuf,
    /// Rows read.
    pub rows_in: usize,
    /// Rows written (rows read x copies).
    pub rows_out: usize,
    /// Output rows without an image (their reason in `stn_error`).
    pub failed: usize,
}

/// Warps one image with one key (the image's own size out).
pub fn augment_image(aug: &Augment, image: &Image, key: Key, device: &Device) -> stn::Result<(Image, Warp)> {
    let (c, h, w) = (image.channels, image.height, image.width);
    let x = Tensor::<4>::from_data(TensorData::new(image.data.clone(), [1, c, h, w]), device);
    let out = aug.forward(x, &[key])?;
    let data = out
        .image
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| stn::StnError::Augment { op: "image".into(), message: format!("{e:?}") })?;
    let data = data.into_iter().map(|v| v.clamp(0.0, 1.0)).collect();
    let warp = out.warps.into_iter().next().unwrap_or_default();
    Ok((Image { data, channels: c, height: h, width: w }, warp))
}

fn output_schema(input: &Schema, col: &ImageColumn, aug: &Augment, seed: u64) -> Result<SchemaRef, String> {
    for name in AUGMENT_COLUMNS {
        if input.column_with_name(name).is_some() {
            return Err(format!("the table already has a column `{name}` (augmented already?)"));
        }
    }
    let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields[col.index] = output_field(col, col.field.name(), |h, w| [h, w]);
    fields.push(Field::new(AUGMENT_COLUMNS[0], DataType::Int32, false));
    fields.push(Field::new(AUGMENT_COLUMNS[1], DataType::Utf8, true));
    fields.push(Field::new(AUGMENT_COLUMNS[2], DataType::Utf8, true));
    let mut meta = input.metadata().clone();
    meta.insert("stn_augment_spec".into(), aug.to_string());
    meta.insert("stn_augment_seed".into(), seed.to_string());
    Ok(Arc::new(Schema::new_with_metadata(fields, meta)))
}

/// Augments a Parquet file into the file `output`, or a folder of Parquet files into the
/// folder `output` (same file names). Outputs must not exist. `first_row` numbers the rows
/// across files in name order, so a row's key does not depend on how the table is split.
pub fn augment_table(
    aug: &Augment,
    input: &Path,
    output: &Path,
    opts: &AugmentTableOptions,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<AugmentReport>> {
    if opts.copies == 0 || opts.copies > i32::MAX as usize || opts.batch_size == 0 {
        return Err(TableError::Model("--copies and the batch size must be at least 1".into()));
    }
    let files = input_files(input)?;
    let folder = input.is_dir();
    let mut targets = Vec::with_capacity(files.len());
    for f in &files {
        let b = open(f)?;
        detect(b.schema(), opts.column.as_deref())
            .map_err(|message| TableError::Column { path: f.clone(), message })?;
        let target = if folder || output.is_dir() {
            output.join(f.file_name().expect("a file has a name"))
        } else {
            output.to_path_buf()
        };
        if target.exists() {
            return Err(TableError::Output {
                path: target,
                message: "exists; an output is never overwritten (remove it, or choose another --out)".into(),
            });
        }
        targets.push(target);
    }
    if folder {
        std::fs::create_dir_all(output).map_err(|e| TableError::Output {
            path: output.to_path_buf(),
            message: format!("cannot create the folder: {e}"),
        })?;
    }
    let mut reports = Vec::with_capacity(files.len());
    let mut first_row = 0usize;
    for (f, target) in files.iter().zip(&targets) {
        let r = augment_file(aug, f, target, opts, first_row, progress)?;
        first_row += r.rows_in;
        reports.push(r);
    }
    Ok(reports)
}

fn augment_file(
    aug: &Augment,
    input: &Path,
    output: &Path,
    opts: &AugmentTableOptions,
    first_row: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<AugmentReport> {
    let parquet_err =
        |e: &dyn std::fmt::Display| TableError::Parquet { path: input.to_path_buf(), message: e.to_string() };
    let out_io =
        |e: &dyn std::fmt::Display| TableError::Output { path: output.to_path_buf(), message: e.to_string() };
    let builder = open(input)?;
    let col = detect(builder.schema(), opts.column.as_deref())
        .map_err(|message| TableError::Column { path: input.to_path_buf(), message })?;
    let schema = output_schema(builder.schema(), &col, aug, opts.seed).map_err(|e| out_io(&e))?;
    let reader = builder.with_batch_size(opts.batch_size).build().map_err(|e| parquet_err(&e))?;
    let partial = Partial { tmp: temp_name(output), done: false };
    let file = File::create(&partial.tmp)
        .map_err(|e| out_io(&format!("cannot create {}: {e}", partial.tmp.display())))?;
    let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(writer_props(schema.metadata())))
        .map_err(|e| out_io(&e))?;
    let decode = DecodeOptions {
        max_pixels: opts.max_pixels,
        base_dir: Some(input.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf)),
    };
    let device = Device::flex();
    let k = opts.copies;
    let field = &schema.fields()[col.index];
    let mut report = AugmentReport {
        input: input.to_path_buf(),
        output: output.to_path_buf(),
        rows_in: 0,
        rows_out: 0,
        failed: 0,
    };
    for batch in reader {
        let batch = batch.map_err(|e| parquet_err(&e))?;
        let n = batch.num_rows();
        let decoded = decode_column(&col.convention, batch.column(col.index).as_ref(), &decode);
        // Row-major: row i's copies 0..k follow each other.
        let mut images: Vec<Option<Image>> = Vec::with_capacity(n * k);
        let mut warps: Vec<Option<String>> = Vec::with_capacity(n * k);
        let mut errors: Vec<Option<String>> = Vec::with_capacity(n * k);
        for (i, d) in decoded.iter().enumerate() {
            let row = (first_row + report.rows_in + i) as u64;
            for copy in 0..k {
                let done = d.as_ref().map_err(Clone::clone).and_then(|d| {
                    augment_image(aug, &d.image, Key::new(opts.seed, copy as u64, row), &device)
                        .map_err(|e| e.to_string())
                });
                match done {
                    Ok((im, w)) => {
                        images.push(Some(im));
                        warps.push(Some(serde_json::to_string(&w).map_err(|e| out_io(&e))?));
                        errors.push(None);
                    }
                    Err(e) => {
                        images.push(None);
                        warps.push(None);
                        errors.push(Some(e));
                    }
                }
            }
        }
        let rows: Vec<Option<OutRow<'_>>> = images
            .iter()
            .enumerate()
            .map(|(j, im)| match (im, &decoded[j / k]) {
                (Some(image), Ok(input)) => Some(OutRow { image, input }),
                _ => None,
            })
            .collect();
        let (image_col, encode_errors) =
            encode_column(&col, field, &rows, opts.encoding).map_err(TableError::Model)?;
        for (j, e) in encode_errors.into_iter().enumerate() {
            if let Some(e) = e {
                errors[j] = Some(e);
                warps[j] = None;
            }
        }
        let take = UInt32Array::from_iter_values((0..n as u32).flat_map(|i| std::iter::repeat_n(i, k)));
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        for (c, a) in batch.columns().iter().enumerate() {
            columns.push(if c == col.index {
                image_col.clone()
            } else {
                arrow_select::take::take(a.as_ref(), &take, None).map_err(|e| out_io(&e))?
            });
        }
        columns.push(Arc::new(Int32Array::from_iter_values((0..n).flat_map(|_| 0..k as i32))));
        columns.push(Arc::new(StringArray::from_iter(warps.iter().map(|w| w.as_deref()))));
        columns.push(Arc::new(StringArray::from_iter(errors.iter().map(|e| e.as_deref()))));
        report.failed += errors.iter().filter(|e| e.is_some()).count();
        let out = RecordBatch::try_new(schema.clone(), columns).map_err(|e| out_io(&e))?;
        writer.write(&out).map_err(|e| out_io(&e))?;
        report.rows_in += n;
        report.rows_out += n * k;
        progress(report.rows_in);
    }
    let file = writer.into_inner().map_err(|e| out_io(&e))?;
    file.sync_all().map_err(|e| out_io(&e))?;
    drop(file);
    if output.exists() {
        return Err(out_io(&"appeared while writing; not overwritten"));
    }
    std::fs::rename(&partial.tmp, output)
        .map_err(|e| out_io(&format!("cannot rename the finished file: {e}")))?;
    let mut partial = partial;
    partial.done = true;
    Ok(report)
}
