//! Delta Lake tables (delta-rs 1.1) as inputs and outputs of the table commands.
//!
//! A folder or `s3://` prefix holding `_delta_log/` is a Delta table. Read, it is one part per
//! active data file of a version (the current one, `--version N` or `--timestamp T`), each read
//! through delta-rs's DataFusion scan of that one file, which applies what a plain Parquet
//! reader would miss: deletion vectors (deleted rows are not read), column mapping (physical
//! column names become the logical ones), partition values. Each part is then rectified like
//! a Parquet file, in the file's row order.
//!
//! Written ([`DeltaSink`]), the outputs are Parquet data files put in the table's folder by the
//! same writer as every other output (a temporary name renamed, or copied without overwriting,
//! when complete), then made visible by **one commit** at the end of the run: version 0 of a
//! new table (`--mode create`), or an append to an existing one (`--mode append`, through
//! delta-rs's conflict checker: a commit another writer made meanwhile is checked, and a
//! conflicting one is reported). A failed run commits nothing and removes the data files it
//! wrote.

use std::future::IntoFuture;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use deltalake_core::datafusion::common::ScalarValue;
use deltalake_core::datafusion::execution::SendableRecordBatchStream;
use deltalake_core::datafusion::prelude::{
    cast, ident, lit, when, DataFrame, Expr, ParquetReadOptions, SessionConfig, SessionContext,
};
use deltalake_core::delta_datafusion::FileSelection;
use deltalake_core::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake_core::kernel::{Action, Add};
use deltalake_core::protocol::{DeltaOperation, SaveMode};
use deltalake_core::{DeltaTable, DeltaTableBuilder};
use futures::{StreamExt, TryStreamExt};
use url::Url;

use crate::error::{Result, TableError};
use crate::remote;

/// The folder of a Delta table's transaction log.
pub const LOG_DIR: &str = "_delta_log";

/// Which version of a Delta table to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum DeltaAt {
    /// The latest version.
    #[default]
    Latest,
    /// Version N (`--version N`).
    Version(u64),
    /// The version current at a time (`--timestamp T`: RFC 3339, `2026-12-06T10:00:00Z`).
    Timestamp(String),
}

/// What a run does to a Delta table it writes (`--mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeltaMode {
    /// A new table: version 0 holds the outputs; an existing table is an error.
    Create,
    /// One more version of an existing table, with the same schema.
    Append,
}

/// Whether `path` (a folder, or an `s3://` prefix) holds a Delta table: its `_delta_log/`
/// exists.
pub fn is_delta(path: &Path) -> bool {
    if remote::is_remote(path) {
        let s = path.as_os_str().to_string_lossy();
        let log = PathBuf::from(format!("{}/{LOG_DIR}/", s.trim_end_matches('/')));
        remote::Location::parse(&log).and_then(|l| l.children()).is_ok_and(|c| !c.is_empty())
    } else {
        path.join(LOG_DIR).is_dir()
    }
}

/// The table's URL: `file:///abs/dir/` or `s3://bucket/prefix/`.
fn table_url(path: &Path) -> std::result::Result<Url, String> {
    let s = path.as_os_str().to_string_lossy();
    if remote::is_remote(path) {
        let s = s.trim_end_matches('/').replacen("s3a://", "s3://", 1);
        Url::parse(&format!("{s}/")).map_err(|e| format!("not a table URL: {e}"))
    } else {
        let abs = std::path::absolute(path).map_err(|e| format!("cannot resolve the path: {e}"))?;
        Url::from_directory_path(&abs).map_err(|()| "cannot make a URL of the path".to_string())
    }
}

/// The log store of a table in S3: delta-rs's default one (each commit a conditional put of
/// the next log file, so two writers can never both commit a version) over the project's
/// store. delta-rs only builds log stores for the schemes it has factories for; S3's comes
/// with its deltalake-aws crate, which this project does without.
struct S3LogStores;

impl deltalake_core::logstore::LogStoreFactory for S3LogStores {
    fn with_options(
        &self,
        prefixed_store: deltalake_core::logstore::ObjectStoreRef,
        root_store: deltalake_core::logstore::ObjectStoreRef,
        location: &Url,
        options: &deltalake_core::logstore::StorageConfig,
    ) -> deltalake_core::DeltaResult<Arc<dyn deltalake_core::logstore::LogStore>> {
        Ok(deltalake_core::logstore::default_logstore(prefixed_store, root_store, location, options))
    }
}

/// Registers [`S3LogStores`] for `s3://` (once).
fn register_s3() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(url) = Url::parse("s3://") {
            deltalake_core::logstore::logstore_factories().insert(url, Arc::new(S3LogStores));
        }
    });
}

/// A builder for the table at `path`: a table in S3 uses the project's store (the credential
/// chain and `AWS_ENDPOINT_URL` of [`remote::s3_store`]), so no other configuration is needed.
fn builder(path: &Path) -> std::result::Result<DeltaTableBuilder, String> {
    let url = table_url(path)?;
    let mut b = DeltaTableBuilder::from_url(url.clone()).map_err(|e| e.to_string())?;
    if remote::is_remote(path) {
        register_s3();
        let bucket = url.host_str().ok_or("no bucket named")?;
        b = b.with_storage_backend(remote::s3_store(bucket)?, url);
    }
    Ok(b)
}

/// delta-rs's error in few words (the store's, where it is one).
fn delta_message(e: &dyn std::fmt::Display) -> String {
    remote::store_message(&e.to_string())
}

/// One active data file of a table version: what a table command reads as one input.
#[derive(Debug, Clone)]
pub struct DeltaPart {
    /// The data file's path relative to the table (as its log names it).
    pub file: String,
    /// The data file as a path (the table's path joined with `file`): reports name it.
    pub path: PathBuf,
    /// Rows to read: the file's rows less those its deletion vector removes (None where the
    /// log has no statistics).
    pub rows: Option<usize>,
    /// The data file's size in bytes.
    pub bytes: u64,
    /// Rows its deletion vector removes.
    pub deleted: usize,
    /// Its partition values as the log writes them (column name to text; None: null).
    pub partitions: std::collections::HashMap<String, Option<String>>,
}

impl DeltaPart {
    /// Its identity in an output's lineage: the data file's name, the rows read (after its
    /// deletion vector) and its size, so a later deletion makes an output differ.
    pub fn input_id(&self) -> crate::lineage::InputId {
        crate::lineage::InputId {
            name: self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            rows: self.rows.unwrap_or(0) as u64,
            bytes: self.bytes,
        }
    }
}

/// A version of a Delta table, opened for reading.
pub struct DeltaInput {
    /// The table's path, as given.
    pub path: PathBuf,
    /// The version read.
    pub version: u64,
    /// The active data files, in the order of their paths.
    pub parts: Vec<DeltaPart>,
    /// The table's schema (logical column names).
    pub schema: SchemaRef,
    table: DeltaTable,
}

impl std::fmt::Debug for DeltaInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeltaInput")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("parts", &self.parts)
            .finish()
    }
}

impl DeltaInput {
    /// Opens the Delta table at `path` at version `at`: its log read, its active files listed
    /// with their deletion vectors' cardinalities. A version that does not exist, a timestamp
    /// before the table, a corrupt log or a missing bucket is an error naming the table.
    pub fn open(path: &Path, at: &DeltaAt) -> Result<DeltaInput> {
        // A corrupt log that makes delta-rs panic is this table's error, not a crash.
        crate::guard::guarded_anywhere("reading the Delta log", || Self::load(path, at))
            .unwrap_or_else(|message| Err(TableError::Io { path: path.to_path_buf(), message }))
    }

    fn load(path: &Path, at: &DeltaAt) -> Result<DeltaInput> {
        let err = |message: String| TableError::Io { path: path.to_path_buf(), message };
        let mut b = builder(path).map_err(err)?;
        b = match at {
            DeltaAt::Latest => b,
            DeltaAt::Version(v) => b.with_version(*v),
            DeltaAt::Timestamp(t) => b.with_datestring(t).map_err(|e| {
                err(format!("--timestamp {t}: {} (an RFC 3339 time is expected)", delta_message(&e)))
            })?,
        };
        let which = match at {
            DeltaAt::Latest => "the Delta table".to_string(),
            DeltaAt::Version(v) => format!("version {v} of the Delta table"),
            DeltaAt::Timestamp(t) => format!("the Delta table as of --timestamp {t}"),
        };
        let table = remote::block(b.load())
            .map_err(|e| err(format!("cannot read {which}: {}", delta_message(&e))))?;
        let version = table.version().unwrap_or(0);
        let snapshot = table.snapshot().map_err(|e| err(delta_message(&e)))?;
        if let DeltaAt::Timestamp(t) = at {
            // delta-rs reads version 0 for a time before the table: refuse it, as Spark does.
            let asked = chrono::DateTime::parse_from_rfc3339(t).map(|d| d.timestamp_millis()).ok();
            let first = snapshot.version_timestamp(0);
            if let (Some(asked), Some(first)) = (asked, first) {
                if asked < first {
                    let when = chrono::DateTime::from_timestamp_millis(first)
                        .map_or(first.to_string(), |d| d.to_rfc3339());
                    return Err(err(format!(
                        "--timestamp {t} is before the table's first version (committed {when})"
                    )));
                }
            }
        }
        let log_store = table.log_store();
        let views: Vec<_> =
            remote::block(snapshot.snapshot().file_views(log_store.as_ref(), None).try_collect::<Vec<_>>())
                .map_err(|e| err(format!("cannot list the table's files: {}", delta_message(&e))))?;
        let mut parts: Vec<DeltaPart> = views
            .iter()
            .map(|v| {
                let file = v.path().into_owned();
                let deleted = v.deletion_vector_descriptor().map_or(0, |d| d.cardinality.max(0) as usize);
                DeltaPart {
                    path: join(path, &file),
                    rows: v.num_records().map(|n| n.saturating_sub(deleted)),
                    bytes: v.size().max(0) as u64,
                    deleted,
                    partitions: v.partition_values_map(),
                    file,
                }
            })
            .collect();
        // In the order of their paths: the same order (so the same outputs and digests) on
        // every run, whatever order the log lists them in.
        parts.sort_by(|a, b| a.file.cmp(&b.file));
        // A log is input like any other: a data file outside the table's folder (an absolute
        // path or URL, `..`) is refused, as a `path` row leaving its folder is.
        if let Some(p) = parts.iter().find(|p| outside(&p.file)) {
            return Err(err(format!(
                "the log names a data file outside the table: {} (absolute paths and `..` are not read)",
                p.file
            )));
        }
        let provider = remote::block(table.table_provider().into_future())
            .map_err(|e| err(format!("cannot scan the Delta table: {}", delta_message(&e))))?;
        let schema = plain_schema(&provider.schema());
        Ok(DeltaInput { path: path.to_path_buf(), version, parts, schema, table })
    }

    /// A DataFusion table of this version, every data file (for SQL).
    pub fn provider(&self) -> Result<Arc<dyn deltalake_core::datafusion::catalog::TableProvider>> {
        remote::block(self.table.table_provider().into_future()).map_err(|e| TableError::Io {
            path: self.path.clone(),
            message: format!("cannot scan the Delta table: {}", delta_message(&e)),
        })
    }

    /// The rows of part `i`, `batch_size` at a time, in the data file's order, with deleted
    /// rows left out and logical column names.
    pub fn batches(&self, i: usize, batch_size: usize) -> Result<DeltaBatches> {
        let part = &self.parts[i];
        let err = |message: String| TableError::Io { path: part.path.clone(), message };
        // One partition, no repartitioned file ranges: the file's rows in order.
        let mut config = SessionConfig::new()
            .with_batch_size(batch_size.max(1))
            .with_target_partitions(1)
            .with_repartition_file_scans(false);
        config.options_mut().execution.parquet.schema_force_view_types = false;
        let ctx = SessionContext::new_with_config(config);
        self.table.update_datafusion_session(&ctx.state()).map_err(|e| err(delta_message(&e)))?;
        let selection = FileSelection::from_file_paths([part.file.clone()]);
        let table = &self.table;
        let stream = remote::block(async {
            let provider = table.table_provider().with_file_selection(selection).await?;
            let df = ctx.read_table(provider)?;
            df.execute_stream().await.map_err(deltalake_core::DeltaTableError::from)
        })
        .map_err(|e| err(format!("cannot read: {}", delta_message(&e))))?;
        Ok(DeltaBatches { stream, path: part.path.clone(), schema: self.schema.clone() })
    }
}

/// The most rows a data file's deletion vector may remove for it to be read as plain Parquet
/// ([`DeltaInput::plain_frame`]): each deleted position travels in the plan sent to every
/// executor, whose messages are limited in size.
pub const PLAIN_MAX_DELETED: usize = 200_000;

/// The column a plain scan numbers rows in (1-based, the file's order) to leave deleted rows
/// out.
const ROW_COLUMN: &str = "__stn_delta_row";

impl DeltaInput {
    /// Part `i` as a plain Parquet scan planned in `ctx`: the data file read by a Parquet
    /// reader that knows nothing of Delta (the executors of a cluster, which are sent plans,
    /// not logs), with what the log says applied by relational operators any scheduler can
    /// ship: rows the deletion vector removes filtered out by their position in the file
    /// (`row_number()` over the file's one partition), physical column names (column
    /// mapping, nested fields too) renamed to the logical ones, partition values added as
    /// constants, every column cast to the table's type. The rows are those of
    /// [`DeltaInput::batches`], in the same order and with the same columns. `ctx` must read
    /// each file as one partition (no repartitioned file ranges), as a table run's does.
    ///
    /// Refused, naming the part: a deletion vector removing more than [`PLAIN_MAX_DELETED`]
    /// rows, and column mapping inside lists or maps.
    pub async fn plain_frame(&self, ctx: &SessionContext, i: usize) -> Result<DataFrame> {
        let part = &self.parts[i];
        let err = |message: String| TableError::Io { path: part.path.clone(), message };
        let snapshot = self.table.snapshot().map_err(|e| err(delta_message(&e)))?;
        let metadata = snapshot.metadata();
        let mapped = metadata.configuration().get("delta.columnMapping.mode").is_some_and(|m| m != "none");
        let partition_columns = metadata.partition_columns().to_vec();
        let kernel = snapshot.schema();
        let deleted = self.deleted_rows(i).await?;
        if deleted.len() > PLAIN_MAX_DELETED {
            return Err(err(format!(
                "its deletion vector removes {} rows, more than the {PLAIN_MAX_DELETED} a plan sent to the \
                 executors carries: rewrite the table (OPTIMIZE, or REORG ... APPLY (PURGE)) or run without --cluster",
                deleted.len()
            )));
        }
        let file = if remote::is_remote(&part.path) {
            part.path.to_string_lossy().into_owned()
        } else {
            std::path::absolute(&part.path)
                .map_err(|e| err(format!("cannot resolve the path: {e}")))?
                .to_string_lossy()
                .into_owned()
        };
        let mut exprs = Vec::with_capacity(self.schema.fields().len());
        for f in self.schema.fields() {
            let e = if partition_columns.contains(f.name()) {
                let value = part.partitions.get(f.name()).cloned().flatten();
                cast(lit(ScalarValue::Utf8(value)), f.data_type().clone())
            } else {
                let k = kernel
                    .fields()
                    .find(|k| &k.name == f.name())
                    .ok_or_else(|| err(format!("the column {} is not in the table's schema", f.name())))?;
                let physical = if mapped { physical_name(k) } else { k.name.clone() };
                plain_column(f, k, ident(physical), mapped).map_err(err)?
            };
            exprs.push(e.alias(f.name()));
        }
        let frame = async {
            let mut df = ctx.read_parquet(file.as_str(), ParquetReadOptions::default()).await?;
            if !deleted.is_empty() {
                use deltalake_core::datafusion::functions_window::expr_fn::row_number;
                df = df.window(vec![row_number().alias(ROW_COLUMN)])?;
                let positions: Vec<Expr> = deleted.iter().map(|&r| lit(r + 1)).collect();
                df = df.filter(ident(ROW_COLUMN).in_list(positions, true))?;
            }
            df.select(exprs)
        };
        frame.await.map_err(|e| err(format!("cannot plan a read of the data file: {}", delta_message(&e))))
    }

    /// The positions in part `i`'s data file (0-based, ascending) of the rows its deletion
    /// vector removes, as delta-rs reads the vector.
    async fn deleted_rows(&self, i: usize) -> Result<Vec<u64>> {
        let part = &self.parts[i];
        if part.deleted == 0 {
            return Ok(Vec::new());
        }
        let err = |message: String| TableError::Io { path: part.path.clone(), message };
        let ctx = SessionContext::new();
        self.table.update_datafusion_session(&ctx.state()).map_err(|e| err(delta_message(&e)))?;
        let selection = FileSelection::from_file_paths([part.file.clone()]);
        let masks = async {
            let scan = self.table.table_provider().with_file_selection(selection).build().await?;
            scan.deletion_vectors(&ctx.state()).await
        }
        .await
        .map_err(|e| err(format!("cannot read its deletion vector: {}", delta_message(&e))))?;
        let deleted: Vec<u64> = masks
            .iter()
            .flat_map(|m| m.keep_mask.iter().enumerate().filter(|(_, keep)| !**keep).map(|(r, _)| r as u64))
            .collect();
        if deleted.len() != part.deleted {
            return Err(err(format!(
                "its deletion vector removes {} rows where the log says {}",
                deleted.len(),
                part.deleted
            )));
        }
        Ok(deleted)
    }
}

/// The name a column has in the data files of a column-mapped table.
fn physical_name(k: &deltalake_core::kernel::StructField) -> String {
    use deltalake_core::kernel::MetadataValue;
    match k.metadata.get("delta.columnMapping.physicalName") {
        Some(MetadataValue::String(p)) => p.clone(),
        _ => k.name.clone(),
    }
}

/// The expression reading the logical column `f` from `base`, the file's column of the table
/// field `k`: under column mapping a struct is rebuilt with its fields' logical names (null
/// where the file's struct is null); everything is cast to the table's type.
fn plain_column(
    f: &Field,
    k: &deltalake_core::kernel::StructField,
    base: Expr,
    mapped: bool,
) -> std::result::Result<Expr, String> {
    use deltalake_core::datafusion::functions::core::expr_fn::{get_field, named_struct};
    use deltalake_core::kernel::DataType as K;
    match (f.data_type(), &k.data_type) {
        (DataType::Struct(fields), K::Struct(st)) if mapped => {
            let mut args = Vec::with_capacity(2 * fields.len());
            for child in fields {
                let kc = st.fields().find(|kc| &kc.name == child.name()).ok_or_else(|| {
                    format!("the field {}.{} is not in the table's schema", f.name(), child.name())
                })?;
                args.push(lit(child.name().as_str()));
                args.push(plain_column(child, kc, get_field(base.clone(), physical_name(kc)), mapped)?);
            }
            let null = ScalarValue::try_from(f.data_type()).map_err(|e| e.to_string())?;
            when(base.is_null(), lit(null)).otherwise(named_struct(args)).map_err(|e| e.to_string())
        }
        (_, K::Array(_) | K::Map(_)) if mapped && nested_struct(&k.data_type) => Err(format!(
            "the column {} holds structs inside a list or map under column mapping, which a plain \
             scan cannot rename: run without --cluster",
            f.name()
        )),
        (DataType::Struct(_), _) => Ok(base),
        (t, _) => Ok(cast(base, t.clone())),
    }
}

/// Whether a Delta type holds a struct somewhere inside.
fn nested_struct(t: &deltalake_core::kernel::DataType) -> bool {
    use deltalake_core::kernel::DataType as K;
    match t {
        K::Struct(_) => true,
        K::Array(a) => nested_struct(a.element_type()),
        K::Map(m) => nested_struct(m.key_type()) || nested_struct(m.value_type()),
        _ => false,
    }
}

/// Whether a data file's path (as a log gives it) leaves the table's folder.
fn outside(file: &str) -> bool {
    file.contains("://")
        || file.starts_with('/')
        || file.starts_with('\\')
        || file.split(['/', '\\']).any(|seg| seg == ".." || seg.is_empty())
}

/// `table` joined with a data file's relative path.
fn join(table: &Path, file: &str) -> PathBuf {
    if remote::is_remote(table) {
        PathBuf::from(format!("{}/{file}", table.as_os_str().to_string_lossy().trim_end_matches('/')))
    } else {
        table.join(file)
    }
}

/// The batches of one part ([`DeltaInput::batches`]), read as they are asked for.
pub struct DeltaBatches {
    stream: SendableRecordBatchStream,
    path: PathBuf,
    schema: SchemaRef,
}

impl Iterator for DeltaBatches {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        let path = self.path.clone();
        let next = match crate::guard::guarded(&path, || Ok(remote::block(self.stream.next()))) {
            Ok(next) => next?,
            Err(e) => return Some(Err(e)),
        };
        let err = |message: String| TableError::Parquet { path: self.path.clone(), message };
        Some(next.map_err(|e| err(delta_message(&e))).and_then(|b| {
            if b.schema().fields() == self.schema.fields() {
                return Ok(b);
            }
            // View types where the table's are plain: the same values, cast.
            let columns = b
                .columns()
                .iter()
                .zip(self.schema.fields())
                .map(|(c, f)| arrow_cast::cast(c, f.data_type()))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| err(e.to_string()))?;
            RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| err(e.to_string()))
        }))
    }
}

/// `schema` with plain binary, string and list types where it has their view forms (the
/// types every table command reads and writes).
fn plain_schema(schema: &Schema) -> SchemaRef {
    fn plain(t: &DataType) -> DataType {
        let field =
            |f: &arrow_schema::FieldRef| Arc::new(f.as_ref().clone().with_data_type(plain(f.data_type())));
        match t {
            DataType::BinaryView => DataType::Binary,
            DataType::Utf8View => DataType::Utf8,
            DataType::ListView(f) | DataType::List(f) => DataType::List(field(f)),
            DataType::LargeListView(f) | DataType::LargeList(f) => DataType::LargeList(field(f)),
            DataType::FixedSizeList(f, n) => DataType::FixedSizeList(field(f), *n),
            DataType::Struct(fs) => DataType::Struct(fs.iter().map(field).collect()),
            other => other.clone(),
        }
    }
    let fields: Vec<Field> =
        schema.fields().iter().map(|f| f.as_ref().clone().with_data_type(plain(f.data_type()))).collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `schema` as a Delta table can hold it: fixed-size lists (`stn_theta`) become lists, the
/// one Arrow type of the outputs Delta has no counterpart for, and the input table's own
/// Delta field metadata (column mapping IDs and physical names) is left out: the new table
/// has its own.
pub fn delta_schema(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema.fields().iter().map(|f| delta_field(f)).collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

fn delta_field(f: &Field) -> Field {
    let data_type = match f.data_type() {
        DataType::FixedSizeList(item, _) | DataType::List(item) => {
            DataType::List(Arc::new(delta_field(item)))
        }
        DataType::Struct(fs) => DataType::Struct(fs.iter().map(|f| Arc::new(delta_field(f))).collect()),
        other => other.clone(),
    };
    let metadata = f
        .metadata()
        .iter()
        .filter(|(k, _)| !k.starts_with("delta."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    f.clone().with_data_type(data_type).with_metadata(metadata)
}

/// Where a run's outputs go when they form a Delta table: data files written into the table's
/// folder, then one commit ([`DeltaSink::commit`]).
pub struct DeltaSink {
    path: PathBuf,
    mode: DeltaMode,
    table: DeltaTable,
    written: Vec<(PathBuf, Add)>,
    /// The folder was made by this run (a new table's): removed again, if empty, on failure.
    made_folder: bool,
}

impl std::fmt::Debug for DeltaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeltaSink").field("path", &self.path).field("mode", &self.mode).finish()
    }
}

impl DeltaSink {
    /// Prepares to write the table at `path`: for [`DeltaMode::Create`] there must be no table
    /// there yet, for [`DeltaMode::Append`] there must be one (its latest version is the one
    /// appended to, and `schema`, the outputs' schema, must be its schema).
    pub fn open(path: &Path, mode: DeltaMode, schema: &Schema) -> Result<DeltaSink> {
        let out = |message: String| TableError::Output { path: path.to_path_buf(), message };
        let exists = is_delta(path);
        let made_folder = mode == DeltaMode::Create && !remote::is_remote(path) && !path.exists();
        let table = match mode {
            DeltaMode::Create if exists => {
                return Err(out("is a Delta table already: --mode append adds a version to it".into()))
            }
            DeltaMode::Create => {
                if !remote::is_remote(path) {
                    std::fs::create_dir_all(path)
                        .map_err(|e| out(format!("cannot create the folder: {e}")))?;
                }
                builder(path).and_then(|b| b.build().map_err(|e| e.to_string())).map_err(out)?
            }
            DeltaMode::Append if !exists => {
                return Err(out("is not a Delta table (no _delta_log/): --mode create makes one".into()))
            }
            DeltaMode::Append => {
                let b = builder(path).map_err(&out)?;
                let table = remote::block(b.load())
                    .map_err(|e| out(format!("cannot read the Delta table: {}", delta_message(&e))))?;
                let theirs = table.snapshot().map_err(|e| out(delta_message(&e)))?.snapshot().arrow_schema();
                let config =
                    &table.snapshot().map_err(|e| out(delta_message(&e)))?.metadata().configuration().clone();
                if config.get("delta.columnMapping.mode").is_some_and(|m| m != "none") {
                    return Err(out("uses column mapping: appending to such a table is not supported; --mode create writes a new one".into()));
                }
                let ours = delta_schema(schema);
                let names = |s: &Schema| {
                    s.fields().iter().map(|f| format!("{}: {}", f.name(), f.data_type())).collect::<Vec<_>>()
                };
                let same =
                    theirs.fields().len() == ours.fields().len()
                        && theirs.fields().iter().zip(ours.fields()).all(|(a, b)| {
                            a.name() == b.name() && a.data_type().equals_datatype(b.data_type())
                        });
                if !same {
                    return Err(out(format!(
                        "has other columns than the outputs: the table has [{}], the outputs [{}]",
                        names(&theirs).join(", "),
                        names(&ours).join(", ")
                    )));
                }
                table
            }
        };
        Ok(DeltaSink { path: path.to_path_buf(), mode, table, written: Vec::new(), made_folder })
    }

    /// The path of a new data file for the outputs of `input` (a name no other run uses).
    pub fn data_file(&self, input: &Path) -> PathBuf {
        let stem = input.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let stem: String = stem
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
            .take(80)
            .collect();
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let name = format!("part-stn-{stem}-{}-{nanos:x}.parquet", std::process::id());
        join(&self.path, &name)
    }

    /// Records a data file written at `file` ([`DeltaSink::data_file`]) with `rows` rows, to be
    /// committed.
    pub fn add(&mut self, file: &Path, rows: usize) -> Result<()> {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let size = remote::file_size(file).ok_or_else(|| TableError::Output {
            path: file.to_path_buf(),
            message: "the data file just written cannot be found".into(),
        })?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let add = Add {
            path: name,
            size: size as i64,
            modification_time: now,
            data_change: true,
            stats: Some(format!("{{\"numRecords\":{rows}}}")),
            ..Default::default()
        };
        self.written.push((file.to_path_buf(), add));
        Ok(())
    }

    /// Removes the data files written so far (a failed run): nothing of it stays, not even
    /// the folder a new table was to be created in, when it is left empty.
    pub fn abandon(self) {
        for (file, _) in &self.written {
            if remote::is_remote(file) {
                let _ = remote::delete(file);
            } else {
                let _ = std::fs::remove_file(file);
            }
        }
        if self.made_folder {
            // Only an empty folder is removed.
            let _ = std::fs::remove_dir(&self.path);
        }
    }

    /// Commits every data file written as one version: version 0 of a new table with the
    /// outputs' `schema` ([`delta_schema`]), or the next version of the appended table. On
    /// error (another writer created the table meanwhile, a conflicting commit, the store
    /// failing) nothing is committed, the data files are removed, and the error names the
    /// table. Returns the version committed.
    pub fn commit(self, schema: &Schema, lineage: &str) -> Result<u64> {
        let out = |message: String| TableError::Output { path: self.path.clone(), message };
        let actions: Vec<Action> = self.written.iter().map(|(_, a)| Action::Add(a.clone())).collect();
        let app = std::collections::HashMap::from([(
            "stn".to_string(),
            serde_json::from_str(lineage).unwrap_or(serde_json::Value::String(lineage.to_string())),
        )]);
        let result: std::result::Result<u64, String> = match self.mode {
            DeltaMode::Create => {
                let fields = delta_kernel_fields(&delta_schema(schema));
                match fields {
                    Err(e) => Err(e),
                    Ok(fields) => remote::block(
                        self.table
                            .clone()
                            .create()
                            .with_columns(fields)
                            .with_actions(actions)
                            .with_save_mode(SaveMode::ErrorIfExists)
                            .with_commit_properties(CommitProperties::default().with_metadata(app))
                            .into_future(),
                    )
                    .map(|t| t.version().unwrap_or(0))
                    .map_err(|e| format!("cannot create the Delta table: {}", delta_message(&e))),
                }
            }
            DeltaMode::Append => match self.table.snapshot() {
                Err(e) => Err(delta_message(&e)),
                Ok(snapshot) => {
                    let op =
                        DeltaOperation::Write { mode: SaveMode::Append, partition_by: None, predicate: None };
                    remote::block(
                        CommitBuilder::default()
                            .with_actions(actions)
                            .with_app_metadata(app)
                            .build(Some(snapshot), self.table.log_store(), op)
                            .into_future(),
                    )
                    .map(|c| c.version())
                    .map_err(|e| format!("the commit failed, nothing was added: {}", delta_message(&e)))
                }
            },
        };
        match result {
            Ok(v) => Ok(v),
            Err(message) => {
                let e = out(message);
                self.abandon();
                Err(e)
            }
        }
    }
}

/// The Delta schema fields of an Arrow schema.
fn delta_kernel_fields(
    schema: &Schema,
) -> std::result::Result<Vec<deltalake_core::kernel::StructField>, String> {
    use deltalake_core::kernel::engine::arrow_conversion::TryFromArrow;
    let st = deltalake_core::kernel::StructType::try_from_arrow(schema)
        .map_err(|e| format!("a column has no Delta type: {e}"))?;
    Ok(st.fields().cloned().collect())
}
