//! Rectifying Parquet image tables, streaming: row group by row group, batch by batch, every
//! input column passed through, three columns added (`stn_image`, `stn_theta`, `stn_error`).
//!
//! A bad row gets nulls and its reason and every other row is processed (or, with
//! [`OnError::Fail`], the first bad row aborts the file and no output is left). Outputs are
//! written to a temporary name beside the target and renamed when complete; an existing output
//! is never overwritten, and a re-run on a folder skips the files whose output is complete.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use stn_data::image_io::Encoding;
use stn_models::rectify::Rectifier;

use crate::batch::{image_field, rectify_column, Timings};
use crate::codec::{theta_field, DecodeOptions, DEFAULT_MAX_PIXELS};
use crate::convention::{detect, hf_image_columns, Convention, ImageColumn, HF_METADATA};
use crate::error::{Result, TableError};

/// The columns a rectified table adds, in order.
pub const ADDED_COLUMNS: [&str; 3] = ["stn_image", "stn_theta", "stn_error"];

/// What to do with a bad row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Nulls and the reason in `stn_error`; every other row is processed.
    #[default]
    Null,
    /// Abort the file at the first bad row, leaving no output for it.
    Fail,
}

/// How to rectify a table.
#[derive(Debug, Clone)]
pub struct RectifyOptions {
    /// The image column (None: detected from the schema).
    pub column: Option<String>,
    /// How encoded output images are encoded (decoded conventions store pixels).
    pub encoding: Encoding,
    /// What to do with a bad row.
    pub on_error: OnError,
    /// Rows per batch through the model.
    pub batch_size: usize,
    /// Largest image (pixels) a row may hold.
    pub max_pixels: u64,
    /// An output row group is closed at the end of each input row group, or once its buffered
    /// data passes this many bytes.
    pub max_row_group_bytes: usize,
}

impl Default for RectifyOptions {
    fn default() -> Self {
        RectifyOptions {
            column: None,
            encoding: Encoding::default(),
            on_error: OnError::Null,
            batch_size: 64,
            max_pixels: DEFAULT_MAX_PIXELS,
            max_row_group_bytes: 128 << 20,
        }
    }
}

/// What happened to one input file.
#[derive(Debug, Clone, PartialEq)]
pub struct FileReport {
    /// The input file.
    pub input: PathBuf,
    /// The output file.
    pub output: PathBuf,
    /// Rows read.
    pub rows: usize,
    /// Rows that failed (null image, their reason in `stn_error`).
    pub failed: usize,
    /// The output was already complete, nothing was done.
    pub skipped: bool,
    /// Where the time went.
    pub timings: Timings,
    /// Reading the input and writing the output.
    pub io: Duration,
}

/// Progress of a run, as it happens.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    /// The run starts: this many files and rows in all.
    Start {
        /// Input files.
        files: usize,
        /// Rows in all files.
        rows: usize,
    },
    /// A batch is done; `rows` rows of the whole run so far.
    Rows {
        /// Rows done so far in the run.
        rows: usize,
    },
    /// A row failed.
    RowFailed {
        /// The file.
        file: &'a Path,
        /// The row's index in the file.
        row: usize,
        /// Why.
        reason: &'a str,
    },
    /// A file is finished (or skipped).
    FileDone(&'a FileReport),
}

/// The Parquet files of a folder (sorted by name; hidden files and Spark/Hadoop markers
/// starting with `_` or `.` are not tables), or the file itself.
pub fn input_files(input: &Path) -> Result<Vec<PathBuf>> {
    let io = |e: std::io::Error| TableError::Io {
        path: input.to_path_buf(),
        message: format!("cannot open: {e}"),
    };
    let meta = std::fs::metadata(input).map_err(io)?;
    if !meta.is_dir() {
        return Ok(vec![input.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(input).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if path.is_file() && !name.starts_with('.') && !name.starts_with('_') && name.ends_with(".parquet") {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(TableError::Io {
            path: input.to_path_buf(),
            message: "the folder holds no .parquet files".into(),
        });
    }
    Ok(files)
}

/// Opens a Parquet file for reading; a file that is missing, not Parquet or corrupt is an error
/// naming it.
pub fn open(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>> {
    let file = File::open(path)
        .map_err(|e| TableError::Io { path: path.to_path_buf(), message: format!("cannot open: {e}") })?;
    ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| TableError::Parquet { path: path.to_path_buf(), message: e.to_string() })
}

/// The schema of the output: the input's fields and metadata, then the added columns. The
/// Hugging Face `huggingface` metadata also marks `stn_image` as an `Image()` when the input
/// column is one, so `datasets` decodes it.
pub fn output_schema(input: &Schema, rectifier: &Rectifier, col: &ImageColumn) -> Result<SchemaRef, String> {
    for name in ADDED_COLUMNS {
        if input.column_with_name(name).is_some() {
            return Err(format!("the table already has a column `{name}` (rectified already?)"));
        }
    }
    let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(image_field(rectifier, col, ADDED_COLUMNS[0]));
    fields.push(theta_field(ADDED_COLUMNS[1], rectifier.num_params()));
    fields.push(Field::new(ADDED_COLUMNS[2], arrow_schema::DataType::Utf8, true));
    let mut meta = input.metadata().clone();
    if col.convention == Convention::HfImage && hf_image_columns(&meta).contains(col.field.name()) {
        if let Some(json) = meta.get(HF_METADATA) {
            if let Ok(mut v) = serde_json::from_str::<serde_json::Value>(json) {
                if let Some(f) = v.pointer_mut("/info/features").and_then(|f| f.as_object_mut()) {
                    f.insert(ADDED_COLUMNS[0].into(), serde_json::json!({"_type": "Image"}));
                    meta.insert(HF_METADATA.into(), v.to_string());
                }
            }
        }
    }
    Ok(Arc::new(Schema::new_with_metadata(fields, meta)))
}

fn writer_props(meta: &HashMap<String, String>) -> WriterProperties {
    // The schema's metadata also goes into the footer's key-value metadata, as pyarrow writes
    // it, so engines that read only the footer (DuckDB, Spark) see it too.
    let mut kv: Vec<KeyValue> = meta
        .iter()
        .filter(|(k, _)| k.as_str() != "ARROW:schema")
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
        .collect();
    kv.sort_by(|a, b| a.key.cmp(&b.key));
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_key_value_metadata(if kv.is_empty() { None } else { Some(kv) })
        .build()
}

/// A temporary output file, removed unless committed.
pub(crate) struct Partial {
    pub(crate) tmp: PathBuf,
    pub(crate) done: bool,
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// The temporary name an output is written under, beside it, before the rename.
pub(crate) fn temp_name(target: &Path) -> PathBuf {
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    target.with_file_name(format!(".{name}.stn-partial-{}", std::process::id()))
}

/// Whether `output` is a complete rectification of `input`: a readable Parquet file with the
/// input's row count and the added columns.
pub fn is_complete(input: &Path, output: &Path) -> bool {
    let (Ok(i), Ok(o)) = (open(input), open(output)) else { return false };
    i.metadata().file_metadata().num_rows() == o.metadata().file_metadata().num_rows()
        && ADDED_COLUMNS.iter().all(|c| o.schema().column_with_name(c).is_some())
}

/// Rectifies one Parquet file into `output` (which must not exist).
pub fn rectify_file(
    rectifier: &Rectifier,
    input: &Path,
    output: &Path,
    opts: &RectifyOptions,
    rows_before: usize,
    events: &mut dyn FnMut(Event<'_>),
) -> Result<FileReport> {
    if opts.batch_size == 0 {
        return Err(TableError::Model("--batch-size must be at least 1".into()));
    }
    // The footer is parsed once: files with many small row groups (Ray writes one per block)
    // would otherwise parse it once per row group.
    let source = File::open(input)
        .map_err(|e| TableError::Io { path: input.to_path_buf(), message: format!("cannot open: {e}") })?;
    let meta = ArrowReaderMetadata::load(&source, ArrowReaderOptions::default())
        .map_err(|e| TableError::Parquet { path: input.to_path_buf(), message: e.to_string() })?;
    let schema = meta.schema().clone();
    let col = detect(&schema, opts.column.as_deref())
        .map_err(|message| TableError::Column { path: input.to_path_buf(), message })?;
    let out_schema = output_schema(&schema, rectifier, &col)
        .map_err(|message| TableError::Column { path: input.to_path_buf(), message })?;
    let row_groups = meta.metadata().num_row_groups();
    if output.exists() {
        return Err(TableError::Output {
            path: output.to_path_buf(),
            message: "exists; an output is never overwritten (remove it, or choose another --out)".into(),
        });
    }
    let partial = Partial { tmp: temp_name(output), done: false };
    let out_io =
        |e: &dyn std::fmt::Display| TableError::Output { path: output.to_path_buf(), message: e.to_string() };
    let file = File::create(&partial.tmp)
        .map_err(|e| out_io(&format!("cannot create {}: {e}", partial.tmp.display())))?;
    let mut writer =
        ArrowWriter::try_new(file, out_schema.clone(), Some(writer_props(out_schema.metadata())))
            .map_err(|e| out_io(&e))?;
    let decode = DecodeOptions {
        max_pixels: opts.max_pixels,
        base_dir: Some(input.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf)),
    };
    let mut report = FileReport {
        input: input.to_path_buf(),
        output: output.to_path_buf(),
        rows: 0,
        failed: 0,
        skipped: false,
        timings: Timings::default(),
        io: Duration::ZERO,
    };
    let parquet_err =
        |e: &dyn std::fmt::Display| TableError::Parquet { path: input.to_path_buf(), message: e.to_string() };
    for rg in 0..row_groups {
        let handle = source.try_clone().map_err(|e| TableError::Io {
            path: input.to_path_buf(),
            message: format!("cannot read: {e}"),
        })?;
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(handle, meta.clone())
            .with_row_groups(vec![rg])
            .with_batch_size(opts.batch_size)
            .build()
            .map_err(|e| parquet_err(&e))?;
        let mut t_io = Instant::now();
        for batch in reader {
            let batch = batch.map_err(|e| parquet_err(&e))?;
            report.io += t_io.elapsed();
            let r = rectify_column(rectifier, &col, batch.column(col.index).as_ref(), &decode, opts.encoding)
                .map_err(TableError::Model)?;
            report.timings.add(&r.timings);
            for (i, reason) in &r.failures {
                let row = report.rows + i;
                if opts.on_error == OnError::Fail {
                    return Err(TableError::Row { path: input.to_path_buf(), row, reason: reason.clone() });
                }
                events(Event::RowFailed { file: input, row, reason });
            }
            report.failed += r.failures.len();
            report.rows += batch.num_rows();
            t_io = Instant::now();
            let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
            columns.extend([r.image, r.theta, r.error]);
            let out = RecordBatch::try_new(out_schema.clone(), columns).map_err(|e| out_io(&e))?;
            writer.write(&out).map_err(|e| out_io(&e))?;
            if writer.in_progress_size() > opts.max_row_group_bytes {
                writer.flush().map_err(|e| out_io(&e))?;
            }
            report.io += t_io.elapsed();
            events(Event::Rows { rows: rows_before + report.rows });
            t_io = Instant::now();
        }
        writer.flush().map_err(|e| out_io(&e))?;
    }
    let t_io = Instant::now();
    let file = writer.into_inner().map_err(|e| out_io(&e))?;
    file.sync_all().map_err(|e| out_io(&e))?;
    drop(file);
    if output.exists() {
        return Err(TableError::Output {
            path: output.to_path_buf(),
            message: "appeared while writing; not overwritten".into(),
        });
    }
    std::fs::rename(&partial.tmp, output)
        .map_err(|e| out_io(&format!("cannot rename the finished file: {e}")))?;
    let mut partial = partial;
    partial.done = true;
    report.io += t_io.elapsed();
    Ok(report)
}

/// Rectifies a Parquet file into the file `output`, or a folder of Parquet files into the
/// folder `output` (created; one output file of the same name per input file; files whose
/// output is already complete are skipped). `events` sees the progress.
pub fn rectify_table(
    rectifier: &Rectifier,
    input: &Path,
    output: &Path,
    opts: &RectifyOptions,
    events: &mut dyn FnMut(Event<'_>),
) -> Result<Vec<FileReport>> {
    let files = input_files(input)?;
    let folder = input.is_dir();
    let mut total = 0usize;
    for f in &files {
        let b = open(f)?;
        total += b.metadata().file_metadata().num_rows().max(0) as usize;
        detect(b.schema(), opts.column.as_deref())
            .map_err(|message| TableError::Column { path: f.clone(), message })?;
    }
    if folder || output.is_dir() {
        std::fs::create_dir_all(output).map_err(|e| TableError::Output {
            path: output.to_path_buf(),
            message: format!("cannot create the folder: {e}"),
        })?;
    } else if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            return Err(TableError::Output {
                path: output.to_path_buf(),
                message: "its folder does not exist".into(),
            });
        }
    }
    events(Event::Start { files: files.len(), rows: total });
    let mut reports = Vec::new();
    let mut done = 0usize;
    for f in &files {
        let target = if folder || output.is_dir() {
            output.join(f.file_name().expect("a file has a name"))
        } else {
            output.to_path_buf()
        };
        if folder && target.exists() {
            if is_complete(f, &target) {
                let rows = open(f)?.metadata().file_metadata().num_rows().max(0) as usize;
                let r = FileReport {
                    input: f.clone(),
                    output: target,
                    rows,
                    failed: 0,
                    skipped: true,
                    timings: Timings::default(),
                    io: Duration::ZERO,
                };
                done += rows;
                events(Event::FileDone(&r));
                events(Event::Rows { rows: done });
                reports.push(r);
                continue;
            }
            return Err(TableError::Output {
                path: target,
                message:
                    "exists but is not a complete output of this input; not overwritten (remove it to redo)"
                        .into(),
            });
        }
        let r = rectify_file(rectifier, f, &target, opts, done, events)?;
        done += r.rows;
        events(Event::FileDone(&r));
        reports.push(r);
    }
    Ok(reports)
}
