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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, Int32Array, RecordBatch, StringArray, UInt32Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use burn::tensor::{Device, Tensor, TensorData};
use parquet::arrow::ArrowWriter;
use stn::augment::{Augment, Key, Warp};
use stn_data::image_io::{Encoding, ImageInfo};
use stn_data::Image;

use crate::codec::{
    build_column, decode_in_pieces, encode_rows, output_field, DecodeOptions, EncodedRow, OutRow,
    DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_PIXELS,
};
use crate::convention::{detect, ImageColumn};
use crate::crypto::{self, Keys, Protection};
use crate::error::{Result, TableError};
use crate::lineage::{InputId, Lineage, LINEAGE_KEY};
use crate::rectify::{
    check_output_protected, clean_partials, open_with, output_encryption, output_exists, output_targets,
    writer_props,
};

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
    /// Where `path` rows are read from and must stay inside (None: the table's folder).
    pub base_dir: Option<PathBuf>,
    /// Read `path`s outside it too.
    pub allow_outside_paths: bool,
    /// Largest image file a `path` may name (bytes).
    pub max_file_bytes: u64,
    /// The keys of encrypted inputs, and whether plaintext inputs get encrypted outputs
    /// ([`crate::crypto`]); an encrypted input's output is always encrypted.
    pub keys: Option<Keys>,
    /// The version of a Delta table input to read ([`crate::delta`]).
    pub delta_at: crate::delta::DeltaAt,
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
            base_dir: None,
            allow_outside_paths: false,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            keys: None,
            delta_at: crate::delta::DeltaAt::Latest,
        }
    }
}

impl AugmentTableOptions {
    /// The rules rows are read by (base_dir as given: None for each file's folder).
    pub fn read_rules(&self) -> DecodeOptions {
        DecodeOptions {
            max_pixels: self.max_pixels,
            base_dir: self.base_dir.clone(),
            allow_outside_paths: self.allow_outside_paths,
            max_file_bytes: self.max_file_bytes,
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
    /// The output was already complete (same lineage), nothing was done.
    pub skipped: bool,
}

/// Most copies of one row: each is a whole image written out.
pub const MAX_COPIES: usize = 10_000;

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

/// The lineage of an augmentation: the spec, the seed, the copies and every option that
/// changes what is written.
pub fn augment_lineage(aug: &Augment, opts: &AugmentTableOptions) -> Lineage {
    let mut o = BTreeMap::new();
    o.insert("spec".into(), aug.to_string());
    o.insert("seed".into(), opts.seed.to_string());
    o.insert("copies".into(), opts.copies.to_string());
    o.insert("encoding".into(), format!("{:?}", opts.encoding));
    crate::lineage::add_read_options(&mut o, opts.column.as_deref(), &opts.read_rules());
    Lineage::new("augment", None, o)
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
/// folder `output` (same file names). An output that exists is kept (and its file skipped) when
/// the same spec, seed and options made it from the same input, and is an error saying how it
/// differs otherwise: never overwritten. `first_row` numbers the rows
/// across files in name order, so a row's key does not depend on how the table is split.
pub fn augment_table(
    aug: &Augment,
    input: &Path,
    output: &Path,
    opts: &AugmentTableOptions,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<AugmentReport>> {
    if opts.copies == 0 || opts.copies > MAX_COPIES || opts.batch_size == 0 {
        return Err(TableError::Model(format!(
            "--copies must be from 1 to {MAX_COPIES} and the batch size at least 1 (got {} and {})",
            opts.copies, opts.batch_size
        )));
    }
    let lineage = augment_lineage(aug, opts);
    let files = crate::dataset::sources(input, &opts.delta_at)?;
    if let Some(crate::dataset::Source::Delta(t, _)) = files.first() {
        detect(&t.schema, opts.column.as_deref())
            .map_err(|message| TableError::Column { path: input.to_path_buf(), message })?;
    }
    let mut opened = Vec::with_capacity(files.len());
    for f in &files {
        if let crate::dataset::Source::File(path) = f {
            let (b, _) = open_with(path, opts.keys.as_ref())?;
            detect(b.schema(), opts.column.as_deref())
                .map_err(|message| TableError::Column { path: path.clone(), message })?;
        }
        opened.push(f.identity(opts.keys.as_ref())?);
    }
    let mut targets = Vec::with_capacity(files.len());
    for ((f, (rows, id)), target) in
        files.iter().zip(&opened).zip(output_targets(input, output, files.len())?)
    {
        let target = target.unwrap_or_else(|| output.join(f.path().file_name().unwrap_or_default()));
        let done = output_exists(&target)
            && existing_augmented(f, &target, &lineage.clone().with_input(id.clone()), *rows, opts)?;
        targets.push((target, done));
    }
    clean_partials(output)?;
    let mut reports = Vec::with_capacity(files.len());
    let mut first_row = 0usize;
    for ((f, (rows, id)), (target, done)) in files.iter().zip(&opened).zip(&targets) {
        let r = if *done {
            let rows = *rows as usize;
            AugmentReport {
                input: f.path(),
                output: target.clone(),
                rows_in: rows,
                rows_out: rows * opts.copies,
                failed: 0,
                skipped: true,
            }
        } else {
            augment_file(aug, f, (*rows, id.clone()), target, opts, &lineage, first_row, progress)?
        };
        first_row += r.rows_in;
        reports.push(r);
    }
    Ok(reports)
}

/// Whether an existing augmented output was made with `lineage` from its input (kept, and the
/// file skipped), or the error saying how it differs (never overwritten).
fn existing_augmented(
    input: &crate::dataset::Source,
    target: &Path,
    lineage: &Lineage,
    rows: u64,
    opts: &AugmentTableOptions,
) -> Result<bool> {
    let refuse = |why: String| TableError::Output {
        path: target.to_path_buf(),
        message: format!(
            "exists and {why}; an output is never overwritten: remove it, or choose another --out"
        ),
    };
    let ip = match input {
        crate::dataset::Source::File(f) => open_with(f, opts.keys.as_ref())?.1,
        crate::dataset::Source::Delta(..) => Protection::default(),
    };
    let (o, op) = open_with(target, opts.keys.as_ref())
        .map_err(|e| refuse(format!("is not a readable Parquet file ({e})")))?;
    let protect =
        crypto::output_master_key(opts.keys.as_ref(), &[(input.path(), ip)]).map_err(|e| refuse(e.0))?;
    if protect.is_some() && !op.encrypted_footer {
        return Err(refuse("is not encrypted, where its input is (or --encrypt asks for it)".into()));
    }
    crate::lineage::check_made_as(o.schema().metadata(), lineage).map_err(refuse)?;
    let copies: u64 = lineage.options.get("copies").and_then(|c| c.parse().ok()).unwrap_or(1);
    if o.metadata().file_metadata().num_rows() as u64 != rows * copies {
        return Err(refuse("is not a complete augmentation of the input".into()));
    }
    Ok(true)
}

#[allow(clippy::too_many_arguments)]
fn augment_file(
    aug: &Augment,
    source: &crate::dataset::Source,
    (rows, id): (u64, InputId),
    output: &Path,
    opts: &AugmentTableOptions,
    lineage: &Lineage,
    first_row: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<AugmentReport> {
    let out_io =
        |e: &dyn std::fmt::Display| TableError::Output { path: output.to_path_buf(), message: e.to_string() };
    let input_path = source.path();
    let input = input_path.as_path();
    let (in_schema, protection, batches) = source.read(opts.keys.as_ref(), opts.batch_size)?;
    let protect = crypto::output_master_key(opts.keys.as_ref(), &[(input.to_path_buf(), protection)])
        .map_err(|e| TableError::Keys { path: input.to_path_buf(), message: e.0 })?;
    let col = detect(&in_schema, opts.column.as_deref())
        .map_err(|message| TableError::Column { path: input.to_path_buf(), message })?;
    let schema = output_schema(&in_schema, &col, aug, opts.seed).map_err(|e| out_io(&e))?;
    let mut meta = schema.metadata().clone();
    meta.insert(LINEAGE_KEY.into(), lineage.clone().with_input(id).to_json());
    let schema = Arc::new(schema.as_ref().clone().with_metadata(meta));
    if protect.is_some() && crate::remote::is_remote(output) {
        return Err(TableError::Keys {
            path: output.to_path_buf(),
            message: "must be encrypted, and encrypted outputs are written to local paths only (each is \
                      reopened and checked after writing): choose a local --out"
                .into(),
        });
    }
    let encryption = output_encryption(output, protect.as_deref(), opts.keys.as_ref())?;
    let file = crate::remote::OutputFile::create(output).map_err(|e| out_io(&e))?;
    let mut writer =
        ArrowWriter::try_new(file, schema.clone(), Some(writer_props(schema.metadata(), encryption)))
            .map_err(|e| out_io(&e))?;
    let rules = opts.read_rules();
    let base = rules.base_dir.clone().unwrap_or_else(|| source.base_dir());
    let decode = DecodeOptions { base_dir: Some(base), ..rules };
    let device = Device::flex();
    let k = opts.copies;
    let field = &schema.fields()[col.index];
    let mut report = AugmentReport {
        input: input.to_path_buf(),
        output: output.to_path_buf(),
        rows_in: 0,
        rows_out: 0,
        failed: 0,
        skipped: false,
    };
    for batch in batches {
        let batch = batch?;
        let n = batch.num_rows();
        // Row-major: row i's copies 0..k follow each other.
        let mut encoded: Vec<Option<EncodedRow>> = (0..n * k).map(|_| None).collect();
        let mut warps: Vec<Option<String>> = vec![None; n * k];
        let mut errors: Vec<Option<String>> = vec![None; n * k];
        let per_copy = |info: &ImageInfo| {
            let v = info.pixels() * info.channels as u64;
            k as u64 * 9 * v
        };
        let first = first_row + report.rows_in;
        decode_in_pieces(
            &col.convention,
            batch.column(col.index).as_ref(),
            &decode,
            &per_copy,
            &mut |piece| {
                let mut images: Vec<Option<Image>> = Vec::with_capacity(piece.len() * k);
                let mut at: Vec<(usize, usize)> = Vec::with_capacity(piece.len() * k);
                for (pos, (i, d)) in piece.iter().enumerate() {
                    let row = (first + i) as u64;
                    for copy in 0..k {
                        let j = i * k + copy;
                        at.push((j, pos));
                        let done = d.as_ref().map_err(Clone::clone).and_then(|d| {
                            augment_image(aug, &d.image, Key::new(opts.seed, copy as u64, row), &device)
                                .map_err(|e| e.to_string())
                        });
                        match done {
                            Ok((im, w)) => {
                                images.push(Some(im));
                                warps[j] = Some(serde_json::to_string(&w).map_err(|e| e.to_string())?);
                            }
                            Err(e) => {
                                images.push(None);
                                errors[j] = Some(e);
                            }
                        }
                    }
                }
                let rows: Vec<Option<OutRow<'_>>> = images
                    .iter()
                    .zip(&at)
                    .map(|(im, &(_, pos))| match (im, &piece[pos].1) {
                        (Some(image), Ok(input)) => Some(OutRow { image, input }),
                        _ => None,
                    })
                    .collect();
                for (r, &(j, _)) in encode_rows(&col, &rows, opts.encoding).into_iter().zip(&at) {
                    match r {
                        Some(Ok(r)) => encoded[j] = Some(r),
                        Some(Err(e)) => {
                            errors[j] = Some(e);
                            warps[j] = None;
                        }
                        None => {}
                    }
                }
                Ok(())
            },
        )
        .map_err(TableError::Model)?;
        let image_col = build_column(&col, field, &encoded).map_err(TableError::Model)?;
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
    if report.rows_in as u64 != rows {
        return Err(TableError::Model(format!(
            "{}: {} rows were read of the input's {rows}; no output written",
            input.display(),
            report.rows_in
        )));
    }
    let file = writer.into_inner().map_err(|e| out_io(&e))?;
    if let crate::remote::OutputFile::Local(partial, f) = &file {
        check_output_protected(partial, f, output, protect.as_deref(), opts.keys.as_ref())?;
    }
    file.commit().map_err(|e| out_io(&e))?;
    Ok(report)
}
