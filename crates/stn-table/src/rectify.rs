//! Rectifying Parquet image tables, streaming: row group by row group, batch by batch, every
//! input column passed through, three columns added (`stn_image`, `stn_theta`, `stn_error`).
//!
//! A bad row gets nulls and its reason and every other row is processed (or, with
//! [`OnError::Fail`], the first bad row aborts the file and no output is left). Outputs are
//! written to a temporary name beside the target and renamed when complete; an existing output
//! is never overwritten, and a re-run on a folder skips the files whose output is complete.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
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
use crate::codec::{theta_field, DecodeOptions, DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_PIXELS};
use crate::convention::{detect, hf_image_columns, Convention, ImageColumn, HF_METADATA};
use crate::crypto::{self, Keys, Protection};
use crate::delta::{DeltaAt, DeltaInput, DeltaMode, DeltaSink};
use crate::error::{Result, TableError};
use crate::guard::{guarded, GuardedBatches, TableSource};
use crate::lineage::{InputId, Lineage, LINEAGE_KEY};

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
    /// Where `path` rows are read from and must stay inside (None: each table file's folder).
    pub base_dir: Option<PathBuf>,
    /// Read `path`s outside it too (absolute, `..`, symbolic links leading out).
    pub allow_outside_paths: bool,
    /// Largest image file a `path` may name (bytes).
    pub max_file_bytes: u64,
    /// The keys of encrypted inputs, and whether plaintext inputs get encrypted outputs
    /// ([`crate::crypto`]); an encrypted input's output is always encrypted.
    pub keys: Option<Keys>,
    /// The version of a Delta table input to read ([`crate::delta`]).
    pub delta_at: DeltaAt,
    /// Write the outputs as a Delta table (`--mode create|append`) rather than Parquet files.
    pub delta_mode: Option<DeltaMode>,
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
            base_dir: None,
            allow_outside_paths: false,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            keys: None,
            delta_at: DeltaAt::Latest,
            delta_mode: None,
        }
    }
}

impl RectifyOptions {
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
    /// A temporary file left by an interrupted run was removed.
    PartialRemoved(&'a Path),
    /// A file's job was lost on a cluster (an executor went away while it ran or held its
    /// results): the file is rectified again from its first row (the rows of the lost attempt
    /// are taken back from the progress; their [`Event::RowFailed`] come again).
    Retry {
        /// The file.
        file: &'a Path,
        /// The attempt about to start (2 is the first retry).
        attempt: usize,
        /// Attempts allowed in all.
        attempts: usize,
        /// What was lost, in words.
        reason: &'a str,
    },
}

/// The Parquet files of a folder (sorted by name; hidden files and Spark/Hadoop markers
/// starting with `_` or `.` are not tables), or the file itself.
pub fn input_files(input: &Path) -> Result<Vec<PathBuf>> {
    if crate::remote::is_remote(input) {
        return crate::remote::table_files(input)
            .map_err(|message| TableError::Io { path: input.to_path_buf(), message });
    }
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
/// naming it, and so is an encrypted one (see [`open_with`]).
pub fn open(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<TableSource>> {
    open_with(path, None).map(|(b, _)| b)
}

/// What to do about an encrypted file without keys.
const GIVE_KEYS: &str = "give its master keys with --keys FILE or the STN_KEYS environment variable (a JSON \
                         object of master-key ID to base64 key)";

/// Opens a Parquet file for reading with `keys` (an encrypted file's data keys are unwrapped
/// by their KMS, [`crate::crypto`]), and says how it is protected. A file that is missing, not
/// Parquet or corrupt is an error naming it; so is an encrypted file without keys, or with
/// keys that do not open it.
pub fn open_with(
    path: &Path,
    keys: Option<&Keys>,
) -> Result<(ParquetRecordBatchReaderBuilder<TableSource>, Protection)> {
    let file = TableSource::open(path)
        .map_err(|e| TableError::Io { path: path.to_path_buf(), message: format!("cannot open: {e}") })?;
    let (meta, protection) = load_footer(path, &file, keys)?;
    Ok((ParquetRecordBatchReaderBuilder::new_with_metadata(file, meta), protection))
}

/// The footer of the Parquet file `source` (at `path`), decrypted with `keys` when it is
/// encrypted and checked ([`check_chunks`]), and how the file is protected: the rules of
/// [`open_with`].
fn load_footer(
    path: &Path,
    source: &TableSource,
    keys: Option<&Keys>,
) -> Result<(ArrowReaderMetadata, Protection)> {
    let io =
        |e: std::io::Error| TableError::Io { path: path.to_path_buf(), message: format!("cannot open: {e}") };
    let encrypted_footer = crypto::has_encrypted_footer(path).map_err(io)?;
    let keys_err = |message: String| TableError::Keys { path: path.to_path_buf(), message };
    if encrypted_footer && keys.is_none() {
        return Err(keys_err(format!(
            "is encrypted (Parquet modular encryption, encrypted footer): {GIVE_KEYS}"
        )));
    }
    let (options, log) = match keys {
        Some(k) => {
            let (props, log) = k.decryption();
            (ArrowReaderOptions::new().with_file_decryption_properties(props), Some(log))
        }
        None => (ArrowReaderOptions::new(), None),
    };
    let meta = guarded(path, || {
        ArrowReaderMetadata::load(source, options).map_err(|e| {
            if encrypted_footer {
                keys_err(format!("cannot decrypt it: {}", crypto::reader_message(&e)))
            } else {
                TableError::Parquet { path: path.to_path_buf(), message: crypto::reader_message(&e) }
            }
        })
    })?;
    check_chunks(path, meta.metadata(), parquet::file::reader::Length::len(source))?;
    if let TableSource::Remote(r) = source {
        r.set_row_groups(meta.metadata());
    }
    let protection = crypto::protection(path, meta.metadata(), log.as_ref()).map_err(io)?;
    if protection.encrypted() && keys.is_none() {
        return Err(keys_err(format!(
            "its columns {} are encrypted (Parquet modular encryption, plaintext footer): {GIVE_KEYS}",
            protection.encrypted_columns.join(", ")
        )));
    }
    Ok((meta, protection))
}

/// Checks that every column chunk the footer names lies inside the file (and that no count is
/// negative): the Parquet reader trusts a corrupt footer's sizes and spent seconds on one that
/// claimed chunks past the end of the file (found by fuzzing), where this is a clear error at
/// once.
pub fn check_chunks(
    path: &Path,
    meta: &parquet::file::metadata::ParquetMetaData,
    file_len: u64,
) -> Result<()> {
    let bad = |m: String| {
        Err(TableError::Parquet { path: path.to_path_buf(), message: format!("corrupt file: {m}") })
    };
    if meta.file_metadata().num_rows() < 0 {
        return bad(format!("the footer claims {} rows", meta.file_metadata().num_rows()));
    }
    for (g, rg) in meta.row_groups().iter().enumerate() {
        if rg.num_rows() < 0 {
            return bad(format!("row group {g} claims {} rows", rg.num_rows()));
        }
        for (c, col) in rg.columns().iter().enumerate() {
            let start = col.dictionary_page_offset().unwrap_or(col.data_page_offset());
            let len = col.compressed_size();
            let end = (start >= 0 && len >= 0).then(|| (start as u64).checked_add(len as u64)).flatten();
            if end.is_none_or(|e| e > file_len) {
                return bad(format!(
                    "row group {g} column {c} claims bytes {start}..{start}+{len}, beyond the file's {file_len}"
                ));
            }
        }
    }
    Ok(())
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
    fields.push(Field::new(ADDED_COLUMNS[2], DataType::Utf8, true));
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

pub(crate) fn writer_props(
    meta: &HashMap<String, String>,
    encryption: Option<Arc<parquet::encryption::encrypt::FileEncryptionProperties>>,
) -> WriterProperties {
    // The schema's metadata also goes into the footer's key-value metadata, as pyarrow writes
    // it, so engines that read only the footer (DuckDB, Spark) see it too.
    let mut kv: Vec<KeyValue> = meta
        .iter()
        .filter(|(k, _)| k.as_str() != "ARROW:schema")
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
        .collect();
    kv.sort_by(|a, b| a.key.cmp(&b.key));
    let b = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_key_value_metadata(if kv.is_empty() { None } else { Some(kv) })
        // arrow-rs writes bloom filters in plaintext, even for encrypted columns.
        .set_bloom_filter_enabled(false);
    match encryption {
        Some(e) => b.with_file_encryption_properties(e).build(),
        None => b.build(),
    }
}

/// The encryption of an output whose input is protected as `plan` says, or None when it may be
/// plaintext: a fresh data key wrapped under the output master key ([`crypto::output_encryption`]).
pub(crate) fn output_encryption(
    output: &Path,
    protect: Option<&str>,
    keys: Option<&Keys>,
) -> Result<Option<Arc<parquet::encryption::encrypt::FileEncryptionProperties>>> {
    let err = |message: String| TableError::Keys { path: output.to_path_buf(), message };
    match (protect, keys) {
        (None, _) => Ok(None),
        (Some(id), Some(k)) => crypto::output_encryption(k.kms().as_ref(), id)
            .map(Some)
            .map_err(|e| err(format!("cannot encrypt the output: {e}"))),
        (Some(_), None) => Err(err("must be encrypted, and no keys were given".into())),
    }
}

/// After an encrypted output is written to its temporary file: reopens it and checks it is
/// protected ([`crypto::check_protected`]); an error leaves nothing behind (the temporary file
/// goes with `partial`).
pub(crate) fn check_output_protected(
    partial: &stn_fs::Partial,
    file: &File,
    output: &Path,
    protect: Option<&str>,
    keys: Option<&Keys>,
) -> Result<()> {
    let (Some(_), Some(k)) = (protect, keys) else { return Ok(()) };
    let err = |message: String| TableError::Keys {
        path: output.to_path_buf(),
        message: format!("the written file is not protected as it must be ({message}); nothing was written"),
    };
    file.sync_data().map_err(|e| err(e.to_string()))?;
    crypto::check_protected(partial.temp_path(), k).map_err(err)
}

/// The lineage of a rectification with `opts` by `rectifier` (not yet of one input): the
/// model's content hash and every option that changes what is written.
pub fn rectify_lineage(rectifier: &Rectifier, opts: &RectifyOptions) -> Lineage {
    let mut o = BTreeMap::new();
    let encoding = match opts.encoding {
        Encoding::Png(stn_data::image_io::PngLevel::Fast) => "png fast".to_string(),
        Encoding::Png(stn_data::image_io::PngLevel::Level(l)) => format!("png {l}"),
        Encoding::Jpeg(q) => format!("jpeg {q}"),
    };
    o.insert("encoding".into(), encoding);
    o.insert("on_error".into(), format!("{:?}", opts.on_error).to_lowercase());
    crate::lineage::add_read_options(&mut o, opts.column.as_deref(), &opts.read_rules());
    Lineage::new("rectify", Some(rectifier.model_id().unwrap_or(crate::lineage::UNKNOWN_MODEL)), o)
}

/// What a run does with an output that exists: keep it (a complete output with the same
/// lineage: `Ok(true)`) or refuse to go on, saying how it differs (never overwritten).
pub fn check_existing(input: &Path, output: &Path, lineage: &Lineage, keys: Option<&Keys>) -> Result<bool> {
    let refuse = refuse_existing(output);
    let (i, o) = match (open_with(input, keys), open_with(output, keys)) {
        (Ok((i, ip)), Ok((o, op))) => {
            if crypto::output_master_key(keys, &[(input.to_path_buf(), ip)])
                .map_err(|e| refuse(e.0))?
                .is_some()
                && !op.encrypted_footer
            {
                return Err(refuse("is not encrypted, where its input is (or --encrypt asks for it)".into()));
            }
            (i, o)
        }
        (_, Err(e)) => return Err(refuse(format!("is not a readable Parquet file ({e})"))),
        (Err(e), _) => return Err(e),
    };
    let rows = i.metadata().file_metadata().num_rows().max(0) as u64;
    check_output_of(InputId::of(input, rows), &o, lineage).map_err(refuse)
}

/// The error refusing the existing output `output`, saying `why`.
fn refuse_existing(output: &Path) -> impl Fn(String) -> TableError + '_ {
    move |why: String| TableError::Output {
        path: output.to_path_buf(),
        message: format!(
            "exists and {why}; an output is never overwritten: remove it, or choose another --out"
        ),
    }
}

/// Whether the opened output `o` is a complete rectification, made as `lineage` says, of the
/// input `id`: Ok, or how it differs.
fn check_output_of(
    id: InputId,
    o: &ParquetRecordBatchReaderBuilder<TableSource>,
    lineage: &Lineage,
) -> std::result::Result<bool, String> {
    let rows = id.rows;
    let want = lineage.clone().with_input(id);
    crate::lineage::check_made_as(o.schema().metadata(), &want)?;
    if o.metadata().file_metadata().num_rows() as u64 != rows
        || !ADDED_COLUMNS.iter().all(|c| o.schema().column_with_name(c).is_some())
    {
        return Err("is not a complete rectification of the input".into());
    }
    Ok(true)
}

/// [`check_existing`] for the output of a part of a Delta table input.
fn check_existing_part(
    part: &DeltaRef,
    output: &Path,
    lineage: &Lineage,
    keys: Option<&Keys>,
) -> Result<bool> {
    let refuse = refuse_existing(output);
    let (o, _) =
        open_with(output, keys).map_err(|e| refuse(format!("is not a readable Parquet file ({e})")))?;
    check_output_of(part.input_id(), &o, lineage).map_err(refuse)
}

/// Whether `output` is a complete rectification of `input` made as `lineage` says.
pub fn is_complete(input: &Path, output: &Path, lineage: &Lineage, keys: Option<&Keys>) -> bool {
    check_existing(input, output, lineage, keys).unwrap_or(false)
}

/// Removes the temporary files that killed runs left in the output's folder (their process no
/// longer runs; [`stn_fs::clean_stale_partials`]) and returns them.
pub fn clean_partials(output: &Path) -> Result<Vec<PathBuf>> {
    if crate::remote::is_remote(output) {
        let is_file = output.extension().is_some_and(|e| e == "parquet");
        let dir = if is_file {
            output.parent().map_or_else(|| output.to_path_buf(), Path::to_path_buf)
        } else {
            output.to_path_buf()
        };
        return crate::remote::clean_stale_partials(&dir)
            .map_err(|message| TableError::Output { path: dir.clone(), message });
    }
    let dir = if output.is_dir() {
        output.to_path_buf()
    } else {
        output
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    };
    stn_fs::clean_stale_partials(&dir).map_err(|e| TableError::Output {
        path: dir.clone(),
        message: format!("cannot remove the temporary files of an interrupted run: {e}"),
    })
}

/// A file about to be rectified: its footer, its image column and the output's schema.
pub struct FilePlan {
    /// The input file (for a part of a Delta table, its data file).
    pub input: PathBuf,
    /// The input's schema (a Delta table's logical column names).
    pub input_schema: SchemaRef,
    /// The image column.
    pub column: ImageColumn,
    /// The output's schema: the input's fields and metadata, then [`ADDED_COLUMNS`].
    pub out_schema: SchemaRef,
    /// How the input is protected.
    pub protection: Protection,
    /// The master key the output is encrypted with (None: plaintext), from the input's
    /// protection and `--encrypt` ([`crypto::output_master_key`]).
    pub protect: Option<String>,
    rows: Option<usize>,
    source: PlanSource,
}

/// Where a plan's rows come from.
enum PlanSource {
    /// A Parquet file and its footer, parsed once (files with many small row groups, as Ray
    /// writes them, would otherwise pay for it once per row group).
    Parquet { meta: ArrowReaderMetadata, source: TableSource },
    /// A data file of a Delta table, read through delta-rs ([`crate::delta`]).
    Delta(DeltaRef),
}

/// A part of a Delta table input: the opened table version and which of its data files.
#[derive(Debug, Clone)]
pub struct DeltaRef {
    /// The table version.
    pub table: Arc<DeltaInput>,
    /// The index of the data file in its parts.
    pub part: usize,
}

impl PartialEq for DeltaRef {
    fn eq(&self, other: &Self) -> bool {
        self.table.path == other.table.path
            && self.table.version == other.table.version
            && self.part == other.part
    }
}

impl DeltaRef {
    /// The data file.
    pub fn part(&self) -> &crate::delta::DeltaPart {
        &self.table.parts[self.part]
    }

    /// The identity its outputs' lineage records ([`crate::delta::DeltaPart::input_id`]).
    fn input_id(&self) -> InputId {
        self.part().input_id()
    }
}

impl FilePlan {
    /// Opens `input`, detects its image column (`opts.column`, or from the schema) and makes
    /// the output's schema for `rectifier`.
    pub fn new(rectifier: &Rectifier, input: &Path, opts: &RectifyOptions) -> Result<FilePlan> {
        if opts.batch_size == 0 {
            return Err(TableError::Model("--batch-size must be at least 1".into()));
        }
        let source = TableSource::open(input).map_err(|e| TableError::Io {
            path: input.to_path_buf(),
            message: format!("cannot open: {e}"),
        })?;
        let (meta, protection) = load_footer(input, &source, opts.keys.as_ref())?;
        let protect =
            crypto::output_master_key(opts.keys.as_ref(), &[(input.to_path_buf(), protection.clone())])
                .map_err(|e| TableError::Keys { path: input.to_path_buf(), message: e.0 })?;
        let rows = meta.metadata().file_metadata().num_rows().max(0) as u64;
        let lineage = rectify_lineage(rectifier, opts).with_input(InputId::of(input, rows));
        let (column, out_schema) = plan_schema(rectifier, meta.schema(), opts, &lineage)
            .map_err(|message| TableError::Column { path: input.to_path_buf(), message })?;
        Ok(FilePlan {
            input: input.to_path_buf(),
            input_schema: meta.schema().clone(),
            column,
            out_schema: for_output(out_schema, opts),
            protection,
            protect,
            rows: Some(rows as usize),
            source: PlanSource::Parquet { meta, source },
        })
    }

    /// The plan of a task: its Parquet file, or its part of a Delta table.
    pub fn of_task(rectifier: &Rectifier, task: &FileTask, opts: &RectifyOptions) -> Result<FilePlan> {
        match &task.delta {
            None => FilePlan::new(rectifier, &task.input, opts),
            Some(d) => FilePlan::delta(rectifier, d, opts),
        }
    }

    /// The plan of a data file of a Delta table (never encrypted: delta-rs has no Parquet
    /// encryption; `--encrypt` still encrypts the outputs).
    pub fn delta(rectifier: &Rectifier, d: &DeltaRef, opts: &RectifyOptions) -> Result<FilePlan> {
        if opts.batch_size == 0 {
            return Err(TableError::Model("--batch-size must be at least 1".into()));
        }
        let part = d.part();
        let protection =
            Protection { encrypted_footer: false, encrypted_columns: Vec::new(), footer_master_key: None };
        let protect =
            crypto::output_master_key(opts.keys.as_ref(), &[(part.path.clone(), protection.clone())])
                .map_err(|e| TableError::Keys { path: part.path.clone(), message: e.0 })?;
        let lineage = rectify_lineage(rectifier, opts).with_input(d.input_id());
        let (column, out_schema) = plan_schema(rectifier, &d.table.schema, opts, &lineage)
            .map_err(|message| TableError::Column { path: part.path.clone(), message })?;
        Ok(FilePlan {
            input: part.path.clone(),
            input_schema: d.table.schema.clone(),
            column,
            out_schema: for_output(out_schema, opts),
            protection,
            protect,
            rows: part.rows,
            source: PlanSource::Delta(d.clone()),
        })
    }

    /// Rows in the file (for a Delta data file, less those its deletion vector removes; 0
    /// where its log has no statistics).
    pub fn rows(&self) -> usize {
        self.rows.unwrap_or(0)
    }

    /// Where relative Hugging Face `path`s of this file are read from: its folder (a Delta
    /// table's folder for its data files).
    pub fn base_dir(&self) -> PathBuf {
        if let PlanSource::Delta(d) = &self.source {
            return d.table.path.clone();
        }
        self.input.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    }

    /// How this file's rows are decoded under `opts`: its limits, and `path` rows read from
    /// `opts.base_dir` or else the file's folder.
    pub fn decode_options(&self, opts: &RectifyOptions) -> DecodeOptions {
        let rules = opts.read_rules();
        DecodeOptions { base_dir: Some(rules.base_dir.clone().unwrap_or_else(|| self.base_dir())), ..rules }
    }

    /// The file's batches rectified here, through the core: read `opts.batch_size` rows at a
    /// time, each through [`rectify_column`].
    pub fn local_batches<'a>(
        &'a self,
        rectifier: &'a Rectifier,
        opts: &'a RectifyOptions,
    ) -> Result<Box<dyn Iterator<Item = Result<RectifiedBatch>> + 'a>> {
        let parquet_err = |e: &dyn std::fmt::Display| TableError::Parquet {
            path: self.input.clone(),
            message: e.to_string(),
        };
        let batches: Box<dyn Iterator<Item = Result<RecordBatch>> + 'a> = match &self.source {
            PlanSource::Parquet { meta, source } => {
                let handle = source.try_clone().map_err(|e| TableError::Io {
                    path: self.input.clone(),
                    message: format!("cannot read: {e}"),
                })?;
                let reader = guarded(&self.input, || {
                    ParquetRecordBatchReaderBuilder::new_with_metadata(handle, meta.clone())
                        .with_batch_size(opts.batch_size)
                        .build()
                        .map_err(|e| parquet_err(&e))
                })?;
                Box::new(GuardedBatches::new(&self.input, reader))
            }
            PlanSource::Delta(d) => Box::new(d.table.batches(d.part, opts.batch_size)?),
        };
        let decode = self.decode_options(opts);
        Ok(Box::new(batches.map(move |batch| {
            let batch = batch?;
            let r = rectify_column(
                rectifier,
                &self.column,
                batch.column(self.column.index).as_ref(),
                &decode,
                opts.encoding,
            )
            .map_err(TableError::Model)?;
            Ok(RectifiedBatch {
                input: batch,
                added: [r.image, r.theta, r.error],
                failures: r.failures,
                timings: r.timings,
            })
        })))
    }

    /// The rows of the input's row groups, in order (none for a Delta data file: its output's
    /// row groups are closed by size only).
    fn row_groups(&self) -> Vec<usize> {
        match &self.source {
            PlanSource::Parquet { meta, .. } => {
                meta.metadata().row_groups().iter().map(|rg| rg.num_rows().max(0) as usize).collect()
            }
            PlanSource::Delta(_) => Vec::new(),
        }
    }
}

/// The output schema as the output is written: as a Delta table holds it
/// ([`crate::delta::delta_schema`]) when it is one.
fn for_output(schema: SchemaRef, opts: &RectifyOptions) -> SchemaRef {
    if opts.delta_mode.is_some() {
        crate::delta::delta_schema(&schema)
    } else {
        schema
    }
}

/// One batch of a file, rectified: the input columns as read, and the added columns.
#[derive(Debug, Clone)]
pub struct RectifiedBatch {
    /// The input rows, every column.
    pub input: RecordBatch,
    /// `stn_image`, `stn_theta` and `stn_error` for those rows.
    pub added: [ArrayRef; 3],
    /// The rows that failed (index in the batch, reason), in order.
    pub failures: Vec<(usize, String)>,
    /// Where the time went (zero where the batch was rectified elsewhere).
    pub timings: Timings,
}

/// The output of `plan` written to `output` (which must not exist) from its rectified
/// `batches`, in the file's row order: one output row group per input row group (or every
/// `opts.max_row_group_bytes`), a temporary file renamed when complete, nothing left behind on
/// error. The batches may come from anywhere (the core here, a cluster): an array whose type
/// differs from the output schema's only in nested field metadata is taken as the schema's.
pub fn write_file(
    plan: &FilePlan,
    output: &Path,
    opts: &RectifyOptions,
    rows_before: usize,
    events: &mut dyn FnMut(Event<'_>),
    batches: &mut dyn Iterator<Item = Result<RectifiedBatch>>,
) -> Result<FileReport> {
    let input = plan.input.as_path();
    let out_schema = &plan.out_schema;
    let out_io =
        |e: &dyn std::fmt::Display| TableError::Output { path: output.to_path_buf(), message: e.to_string() };
    if plan.protect.is_some() && crate::remote::is_remote(output) {
        return Err(TableError::Keys {
            path: output.to_path_buf(),
            message: "must be encrypted, and encrypted outputs are written to local paths only (each is \
                      reopened and checked after writing): choose a local --out"
                .into(),
        });
    }
    let file = crate::remote::OutputFile::create(output).map_err(|e| out_io(&e))?;
    let encryption = output_encryption(output, plan.protect.as_deref(), opts.keys.as_ref())?;
    let mut writer =
        ArrowWriter::try_new(file, out_schema.clone(), Some(writer_props(out_schema.metadata(), encryption)))
            .map_err(|e| out_io(&e))?;
    // Output row groups end where the input's do.
    let mut ends = plan.row_groups().into_iter().scan(0usize, |end, rows| {
        *end += rows;
        Some(*end)
    });
    let mut next_end = ends.next();
    let mut report = FileReport {
        input: input.to_path_buf(),
        output: output.to_path_buf(),
        rows: 0,
        failed: 0,
        skipped: false,
        timings: Timings::default(),
        io: Duration::ZERO,
    };
    let mut t_io = Instant::now();
    for batch in batches {
        let batch = batch?;
        let work = batch.timings.decode + batch.timings.localize + batch.timings.warp + batch.timings.encode;
        report.io += t_io.elapsed().saturating_sub(work);
        report.timings.add(&batch.timings);
        let n = batch.input.num_rows();
        if batch.added.iter().any(|a| a.len() != n) {
            return Err(TableError::Model(format!(
                "{}: a batch of {n} rows came back with {} / {} / {} added values",
                input.display(),
                batch.added[0].len(),
                batch.added[1].len(),
                batch.added[2].len()
            )));
        }
        for (i, reason) in &batch.failures {
            let row = report.rows + i;
            if opts.on_error == OnError::Fail {
                return Err(TableError::Row { path: input.to_path_buf(), row, reason: reason.clone() });
            }
            events(Event::RowFailed { file: input, row, reason });
        }
        report.failed += batch.failures.len();
        t_io = Instant::now();
        let out = output_batch(out_schema, &batch.input, &batch.added).map_err(|e| out_io(&e))?;
        let mut offset = 0;
        while offset < n {
            while next_end.is_some_and(|e| e <= report.rows) {
                next_end = ends.next();
            }
            let take = match next_end {
                Some(end) if end > report.rows => (end - report.rows).min(n - offset),
                _ => n - offset,
            };
            writer.write(&out.slice(offset, take)).map_err(|e| out_io(&e))?;
            offset += take;
            report.rows += take;
            if next_end == Some(report.rows) {
                writer.flush().map_err(|e| out_io(&e))?;
                next_end = ends.next();
            } else if writer.in_progress_size() > opts.max_row_group_bytes {
                writer.flush().map_err(|e| out_io(&e))?;
            }
        }
        report.io += t_io.elapsed();
        events(Event::Rows { rows: rows_before + report.rows });
        t_io = Instant::now();
    }
    if plan.rows.is_some_and(|rows| rows != report.rows) {
        return Err(TableError::Model(format!(
            "{}: {} rows were rectified of the file's {}; no output written",
            input.display(),
            report.rows,
            plan.rows()
        )));
    }
    let t_io = Instant::now();
    let file = writer.into_inner().map_err(|e| out_io(&e))?;
    if let crate::remote::OutputFile::Local(partial, f) = &file {
        check_output_protected(partial, f, output, plan.protect.as_deref(), opts.keys.as_ref())?;
    }
    file.commit().map_err(|e| out_io(&e))?;
    report.io += t_io.elapsed();
    Ok(report)
}

/// The image column of a table with `schema` (`opts.column`, or detected) and the schema of
/// its rectified output, which records `lineage` in its metadata.
pub fn plan_schema(
    rectifier: &Rectifier,
    schema: &Schema,
    opts: &RectifyOptions,
    lineage: &Lineage,
) -> std::result::Result<(ImageColumn, SchemaRef), String> {
    let column = detect(schema, opts.column.as_deref())?;
    let out_schema = output_schema(schema, rectifier, &column)?;
    let mut with_lineage = out_schema.metadata().clone();
    with_lineage.insert(LINEAGE_KEY.into(), lineage.to_json());
    Ok((column, Arc::new(out_schema.as_ref().clone().with_metadata(with_lineage))))
}

/// An output batch: the input's columns, then the added ones, each as `out_schema` types it
/// ([`as_type`]: an engine that moved the arrays may have changed them losslessly).
pub fn output_batch(
    out_schema: &SchemaRef,
    input: &RecordBatch,
    added: &[ArrayRef; 3],
) -> std::result::Result<RecordBatch, String> {
    let mut columns: Vec<ArrayRef> = input.columns().to_vec();
    columns.extend(added.iter().cloned());
    if columns.len() != out_schema.fields().len() {
        return Err(format!(
            "a batch has {} columns where the output has {}",
            columns.len(),
            out_schema.fields().len()
        ));
    }
    let columns = columns
        .into_iter()
        .zip(out_schema.fields())
        .map(|(a, f)| as_type(a, f.data_type()).map_err(|e| format!("column `{}` {e}", f.name())))
        .collect::<std::result::Result<Vec<_>, String>>()?;
    RecordBatch::try_new(out_schema.clone(), columns).map_err(|e| e.to_string())
}

/// Rectifies one batch of an in-memory table (Arrow data from another library, say, rather
/// than a Parquet file): the batch's columns, then `stn_image`, `stn_theta` and `stn_error`,
/// as `out_schema` ([`output_schema`] of the batch's schema) says; a bad row gets nulls and
/// its reason, returned with its index.
pub fn rectify_batch(
    rectifier: &Rectifier,
    column: &ImageColumn,
    out_schema: &SchemaRef,
    batch: &RecordBatch,
    decode: &DecodeOptions,
    encoding: Encoding,
) -> std::result::Result<(RecordBatch, Vec<(usize, String)>), String> {
    let r = rectify_column(rectifier, column, batch.column(column.index).as_ref(), decode, encoding)?;
    let out = output_batch(out_schema, batch, &[r.image, r.theta, r.error])?;
    Ok((out, r.failures))
}

/// `array` as `data_type`, where the two differ at most in nested field names, nullability
/// or metadata, or in the width of offsets (list / large list, string / large string, binary /
/// large binary, and their views), which an engine that moved the array may have changed
/// (Ballista returns a nested large list as a list): a lossless change. Anything else is an
/// error.
fn as_type(array: ArrayRef, data_type: &DataType) -> std::result::Result<ArrayRef, String> {
    if array.data_type() == data_type {
        return Ok(array);
    }
    if array.data_type().equals_datatype(data_type) {
        let data =
            array.to_data().into_builder().data_type(data_type.clone()).build().map_err(|e| e.to_string())?;
        return Ok(arrow_array::make_array(data));
    }
    if offsets_free(array.data_type()).equals_datatype(&offsets_free(data_type)) {
        return arrow_cast::cast(&array, data_type).map_err(|e| e.to_string());
    }
    // A fixed-size list written where a list is (a Delta table's `stn_theta`).
    if let (DataType::FixedSizeList(a, _), DataType::List(b)) = (array.data_type(), data_type) {
        if a.data_type() == b.data_type() {
            return arrow_cast::cast(&array, data_type).map_err(|e| e.to_string());
        }
    }
    Err(format!("came back as {} where {} was expected", array.data_type(), data_type))
}

/// `t` with every offset width made the same (lists, strings and binaries as their 32-bit
/// forms), for comparing layouts.
fn offsets_free(t: &DataType) -> DataType {
    let field =
        |f: &arrow_schema::FieldRef| Arc::new(f.as_ref().clone().with_data_type(offsets_free(f.data_type())));
    match t {
        DataType::LargeList(f) | DataType::List(f) | DataType::ListView(f) | DataType::LargeListView(f) => {
            DataType::List(field(f))
        }
        DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
        DataType::LargeBinary | DataType::BinaryView => DataType::Binary,
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(field(f), *n),
        DataType::Struct(fs) => DataType::Struct(fs.iter().map(field).collect()),
        other => other.clone(),
    }
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
    let plan = FilePlan::new(rectifier, input, opts)?;
    let mut batches = plan.local_batches(rectifier, opts)?;
    write_file(&plan, output, opts, rows_before, events, &mut batches)
}

/// Rectifies the input of `task` (a Parquet file or a part of a Delta table) into `output`
/// (which must not exist).
pub fn rectify_task(
    rectifier: &Rectifier,
    task: &FileTask,
    output: &Path,
    opts: &RectifyOptions,
    rows_before: usize,
    events: &mut dyn FnMut(Event<'_>),
) -> Result<FileReport> {
    let plan = FilePlan::of_task(rectifier, task, opts)?;
    let mut batches = plan.local_batches(rectifier, opts)?;
    write_file(&plan, output, opts, rows_before, events, &mut batches)
}

/// One input file of a run and where its output goes.
#[derive(Debug, Clone, PartialEq)]
pub struct FileTask {
    /// The input file.
    pub input: PathBuf,
    /// Its output file.
    pub output: PathBuf,
    /// Rows in the input.
    pub rows: usize,
    /// The output exists and is complete (a re-run on a folder skips it).
    pub complete: bool,
    /// The part of a Delta table this input is (None: a Parquet file).
    pub delta: Option<DeltaRef>,
}

/// The files of a run: a Parquet file into the file `output`, or a folder of Parquet files
/// into the folder `output` (created; one output file of the same name per input file). Every
/// input is opened and its image column detected first, so a bad file stops the run before
/// anything is written; an output that exists is marked to be skipped when it is complete and
/// was made with the same `lineage` (model and options), and is an error saying how it
/// differs otherwise (never overwritten).
pub fn plan_table(
    input: &Path,
    output: &Path,
    opts: &RectifyOptions,
    lineage: &Lineage,
) -> Result<Vec<FileTask>> {
    if crate::delta::is_delta(input) {
        return plan_delta(input, output, opts, lineage);
    }
    let files = input_files(input)?;
    let mut rows = Vec::with_capacity(files.len());
    for f in &files {
        let (b, _) = open_with(f, opts.keys.as_ref())?;
        rows.push(b.metadata().file_metadata().num_rows().max(0) as usize);
        detect(b.schema(), opts.column.as_deref())
            .map_err(|message| TableError::Column { path: f.clone(), message })?;
    }
    if opts.delta_mode.is_some() {
        // Data files of the output table, named when they are written ([`rectify_table`]).
        return Ok(files
            .into_iter()
            .zip(rows)
            .map(|(f, rows)| FileTask {
                input: f,
                output: PathBuf::new(),
                rows,
                complete: false,
                delta: None,
            })
            .collect());
    }
    let targets = output_targets(input, output, files.len())?;
    let mut tasks = Vec::with_capacity(files.len());
    for ((f, rows), target) in files.into_iter().zip(rows).zip(targets) {
        let target = target.unwrap_or_else(|| output.join(f.file_name().unwrap_or_default()));
        let complete = output_exists(&target) && check_existing(&f, &target, lineage, opts.keys.as_ref())?;
        tasks.push(FileTask { input: f, output: target, rows, complete, delta: None });
    }
    Ok(tasks)
}

/// [`plan_table`] of a Delta table: one task per data file of the version read, into the
/// folder `output` under the data file's name (or into the output table).
fn plan_delta(
    input: &Path,
    output: &Path,
    opts: &RectifyOptions,
    lineage: &Lineage,
) -> Result<Vec<FileTask>> {
    let table = Arc::new(DeltaInput::open(input, &opts.delta_at)?);
    detect(&table.schema, opts.column.as_deref())
        .map_err(|message| TableError::Column { path: input.to_path_buf(), message })?;
    if table.parts.is_empty() {
        return Err(TableError::Io {
            path: input.to_path_buf(),
            message: format!("version {} of the Delta table has no data files", table.version),
        });
    }
    let n = table.parts.len();
    let targets = if opts.delta_mode.is_some() { vec![None; n] } else { output_targets(input, output, n)? };
    let mut tasks = Vec::with_capacity(n);
    for (i, target) in targets.into_iter().enumerate() {
        let d = DeltaRef { table: table.clone(), part: i };
        let part = d.part();
        let name = part.path.file_name().unwrap_or_default().to_os_string();
        let (target, complete) = if opts.delta_mode.is_some() {
            (PathBuf::new(), false)
        } else {
            let target = target.unwrap_or_else(|| output.join(&name));
            let complete =
                output_exists(&target) && check_existing_part(&d, &target, lineage, opts.keys.as_ref())?;
            (target, complete)
        };
        tasks.push(FileTask {
            input: part.path.clone(),
            output: target,
            rows: part.rows.unwrap_or(0),
            complete,
            delta: Some(d),
        });
    }
    Ok(tasks)
}

/// Whether the outputs of `input` (a file or a folder of `files` files) go into the folder
/// `output` (created when local; `Some(None)` for each: the input's file name there) or are
/// the file `output` itself (`Some(Some(output))`). In a store there are no folders: the output
/// is a prefix when the input is a folder or prefix, or when it ends with `/`. A local output
/// file's folder must exist.
pub fn output_targets(input: &Path, output: &Path, files: usize) -> Result<Vec<Option<PathBuf>>> {
    let folder = if crate::remote::is_remote(input) {
        crate::remote::is_prefix(input)
            .map_err(|message| TableError::Io { path: input.to_path_buf(), message })?
    } else {
        input.is_dir()
    };
    let remote_out = crate::remote::is_remote(output);
    let out_folder = if remote_out {
        folder || output.as_os_str().to_string_lossy().ends_with('/')
    } else {
        folder || output.is_dir()
    };
    if out_folder && !remote_out {
        std::fs::create_dir_all(output).map_err(|e| TableError::Output {
            path: output.to_path_buf(),
            message: format!("cannot create the folder: {e}"),
        })?;
    } else if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty() && !remote_out) {
        if !parent.is_dir() {
            return Err(TableError::Output {
                path: output.to_path_buf(),
                message: "its folder does not exist".into(),
            });
        }
    }
    Ok((0..files).map(|_| (!out_folder).then(|| output.to_path_buf())).collect())
}

/// Whether an output file (or object) exists at `target`.
pub fn output_exists(target: &Path) -> bool {
    if crate::remote::is_remote(target) {
        crate::remote::file_size(target).is_some()
    } else {
        target.exists()
    }
}

impl FileTask {
    /// The report of a file skipped because its output is complete.
    pub fn skipped_report(&self) -> FileReport {
        FileReport {
            input: self.input.clone(),
            output: self.output.clone(),
            rows: self.rows,
            failed: 0,
            skipped: true,
            timings: Timings::default(),
            io: Duration::ZERO,
        }
    }
}

/// Rectifies a Parquet file into the file `output`, or a folder of Parquet files into the
/// folder `output` (see [`plan_table`]; files whose output is already complete are skipped).
/// `events` sees the progress.
pub fn rectify_table(
    rectifier: &Rectifier,
    input: &Path,
    output: &Path,
    opts: &RectifyOptions,
    events: &mut dyn FnMut(Event<'_>),
) -> Result<Vec<FileReport>> {
    let lineage = rectify_lineage(rectifier, opts);
    let tasks = plan_table(input, output, opts, &lineage)?;
    if let Some(mode) = opts.delta_mode {
        return rectify_into_delta(rectifier, &tasks, output, mode, opts, &lineage, events);
    }
    for p in clean_partials(output)? {
        events(Event::PartialRemoved(&p));
    }
    events(Event::Start { files: tasks.len(), rows: tasks.iter().map(|t| t.rows).sum() });
    let mut reports = Vec::new();
    let mut done = 0usize;
    for t in &tasks {
        let r = if t.complete {
            let r = t.skipped_report();
            events(Event::FileDone(&r));
            events(Event::Rows { rows: done + r.rows });
            r
        } else {
            let r = rectify_task(rectifier, t, &t.output, opts, done, events)?;
            events(Event::FileDone(&r));
            r
        };
        done += r.rows;
        reports.push(r);
    }
    Ok(reports)
}

/// [`rectify_table`] into a Delta table (`mode`): every task's outputs written as a data file
/// of the table, then one commit; on any error nothing is committed and the data files
/// written are removed. The reports name the data files.
fn rectify_into_delta(
    rectifier: &Rectifier,
    tasks: &[FileTask],
    output: &Path,
    mode: DeltaMode,
    opts: &RectifyOptions,
    lineage: &Lineage,
    events: &mut dyn FnMut(Event<'_>),
) -> Result<Vec<FileReport>> {
    let Some(first) = tasks.first() else {
        return Err(TableError::Io { path: output.to_path_buf(), message: "no input files".into() });
    };
    let schema = FilePlan::of_task(rectifier, first, opts)?.out_schema;
    let mut sink = DeltaSink::open(output, mode, &schema)?;
    events(Event::Start { files: tasks.len(), rows: tasks.iter().map(|t| t.rows).sum() });
    let mut reports = Vec::new();
    let mut done = 0usize;
    for t in tasks {
        let file = sink.data_file(&t.input);
        let r = FilePlan::of_task(rectifier, t, opts).and_then(|plan| {
            let same = plan.out_schema.fields() == schema.fields();
            if !same {
                return Err(TableError::Column {
                    path: t.input.clone(),
                    message: "has other columns than the run's first input: one Delta table holds one schema"
                        .into(),
                });
            }
            let mut batches = plan.local_batches(rectifier, opts)?;
            write_file(&plan, &file, opts, done, events, &mut batches)
        });
        let r = match r.and_then(|r| sink.add(&file, r.rows).map(|()| r)) {
            Ok(r) => r,
            Err(e) => {
                sink.abandon();
                return Err(e);
            }
        };
        events(Event::FileDone(&r));
        done += r.rows;
        reports.push(r);
    }
    sink.commit(&schema, &lineage.to_json())?;
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Array, Float64Array, ListArray, StructArray};

    #[test]
    fn arrays_come_back_to_the_output_type_only_losslessly() {
        let list = ListArray::from_iter_primitive::<arrow_array::types::UInt8Type, _, _>(vec![
            Some(vec![Some(1), Some(2)]),
            None,
            Some(vec![Some(3)]),
        ]);
        let item = Arc::new(Field::new("data", list.data_type().clone(), true));
        let s: ArrayRef =
            Arc::new(StructArray::new(vec![item].into(), vec![Arc::new(list) as ArrayRef], None));
        let large = DataType::Struct(
            vec![Field::new(
                "data",
                DataType::LargeList(Arc::new(Field::new("item", DataType::UInt8, true))),
                true,
            )]
            .into(),
        );
        let back = as_type(s.clone(), &large).unwrap();
        assert_eq!(back.data_type(), &large);
        assert_eq!(arrow_cast::cast(&back, s.data_type()).unwrap().to_data(), s.to_data(), "same values");
        let f: ArrayRef = Arc::new(Float64Array::from(vec![1.0, 2.5]));
        let e = as_type(f, &DataType::Float32).unwrap_err();
        assert!(e.contains("came back as Float64 where Float32 was expected"), "{e}");
    }
}
