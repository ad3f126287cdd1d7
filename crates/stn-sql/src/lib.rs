//! # stn-sql: a trained spatial transformer in SQL (DataFusion 55)
//!
//! Scalar functions over an image column of any convention `stn-table` reads, vectorized per
//! record batch through the rectification core:
//!
//! - `stn_rectify(image)`: the rectified image, in the convention of its input (PNG bytes for
//!   encoded columns, the same struct or tensor layout for decoded ones); null for a bad row;
//! - `stn_theta(image)`: the transformer's parameters, `fixed_size_list<float32>[P]`; null for a
//!   bad row;
//! - `stn_error(image)`: null when the row is good, else why it is not;
//! - `stn_rectified(image)`: all three in one pass, `struct<stn_image, stn_theta, stn_error>`
//!   (the others each run the model on their own: `SELECT stn_rectify(image), stn_theta(image)`
//!   localizes every image twice, `SELECT r['stn_image'], r['stn_theta'] FROM (SELECT
//!   stn_rectified(image) AS r ...)` once);
//! - `stn_explain(image)` or `stn_explain(theta)`: what the transformer did, theta decomposed
//!   (`stn::explain`): `struct<family, angle_deg, scale_x, scale_y, shear, tx, ty, zoom,
//!   reflection, singular, perspective_x, perspective_y, bending_energy, max_displacement>`
//!   (`stn_table::explain::explain_fields`); given a theta column (`stn_theta` of a rectified
//!   table, a list of float32 or float64) it decomposes it under the model's family without
//!   decoding images; null for a bad row.
//!
//! Each takes an optional second argument, a string literal of options that overrides the
//! session's [`SqlOptions`] for that call, so it travels with the query to wherever it runs:
//! `stn_rectify(image, 'format=jpeg, jpeg_quality=85, max_pixels=4000000, batch_size=32')`
//! (keys: `format` png|jpeg, `png_level` fast|0-9, `jpeg_quality` 1-100, `max_pixels`,
//! `batch_size`, `base_dir`).
//!
//! The model is a [`Model`]: loaded already, or loaded from a run folder the first time a
//! function needs it (a cluster's processes register the functions at start-up and load the
//! weights only when a query uses them).
//!
//! ```no_run
//! use std::sync::Arc;
//! use stn_models::rectify::Rectifier;
//!
//! let rectifier = Arc::new(Rectifier::from_run(std::path::Path::new("runs/rts-st"))?);
//! let ctx = stn_sql::context(rectifier, stn_sql::SqlOptions::default());
//! let batches = stn_sql::query(&ctx, "SELECT id, stn_theta(image) AS theta FROM 'in.parquet'")
//!     .map_err(|e| e.to_string())?;
//! println!("{}", stn_sql::format(&batches, false).map_err(|e| e.to_string())?);
//! # Ok::<(), String>(())
//! ```
#![warn(missing_docs)]

pub mod crypto;
pub mod store;

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, StructArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields};
use datafusion::common::{exec_err, plan_err, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion::prelude::{SessionConfig, SessionContext};
use stn_data::image_io::{Encoding, PngLevel};
use stn_models::rectify::Rectifier;
use stn_table::batch::{image_field, rectify_column, theta_column_of};
use stn_table::codec::{theta_field, DecodeOptions, DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_PIXELS};
use stn_table::convention::{convention_of, ImageColumn};
use stn_table::rectify::{RectifyOptions, ADDED_COLUMNS};

/// Options of the SQL functions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SqlOptions {
    /// How `stn_rectify` encodes images of encoded columns.
    pub encoding: Encoding,
    /// Largest image (pixels) a row may hold.
    pub max_pixels: u64,
    /// Where relative `path`s of Hugging Face rows are read from (default: the current folder).
    pub base_dir: Option<PathBuf>,
    /// Rows of a batch given to the model at once.
    pub batch_size: usize,
    /// Read Hugging Face `path`s outside `base_dir` too (absolute, `..`, symbolic links
    /// leading out); devices, FIFOs and oversize files are refused even then.
    pub allow_outside_paths: bool,
    /// Largest image file a `path` may name (bytes).
    pub max_file_bytes: u64,
}

impl Default for SqlOptions {
    fn default() -> Self {
        SqlOptions {
            encoding: Encoding::default(),
            max_pixels: DEFAULT_MAX_PIXELS,
            base_dir: None,
            batch_size: 64,
            allow_outside_paths: false,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
        }
    }
}

/// The `key=value` pairs of an option string: separated by commas; a value may be quoted with
/// double quotes (`base_dir="/data/a, b"`), inside which `\"` is a quote and `\\` a backslash.
pub fn parse_option_pairs(spec: &str) -> std::result::Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = spec.chars().peekable();
    loop {
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            key.push(c);
            chars.next();
        }
        let key = key.trim().to_string();
        match chars.next() {
            None if key.is_empty() => break,
            Some(',') if key.is_empty() => continue,
            Some('=') => {}
            _ => return Err(format!("option `{key}`: expected key=value")),
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '"' => {
                        closed = true;
                        break;
                    }
                    '\\' => match chars.next() {
                        Some(e @ ('"' | '\\')) => value.push(e),
                        _ => {
                            return Err(format!(
                                "option `{key}`: in a quoted value only \\\" and \\\\ are escapes"
                            ))
                        }
                    },
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(format!("option `{key}`: the quoted value has no closing quote"));
            }
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            match chars.next() {
                None | Some(',') => {}
                Some(c) => {
                    return Err(format!(
                        "option `{key}`: `{c}` after the quoted value (a comma separates options)"
                    ))
                }
            }
        } else {
            for c in chars.by_ref() {
                if c == ',' {
                    break;
                }
                value.push(c);
            }
            value = value.trim().to_string();
        }
        pairs.push((key, value));
    }
    Ok(pairs)
}

/// A value as an option string holds it: quoted when it has a comma, a quote, a backslash or
/// surrounding spaces ([`parse_option_pairs`] reads it back unchanged).
pub fn quote_option_value(v: &str) -> String {
    if v.is_empty() || v.contains([',', '"', '\\', '=']) || v.trim() != v {
        format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        v.to_string()
    }
}

impl SqlOptions {
    /// These options with the overrides of a function's option string, `key=value` pairs
    /// separated by commas ([`parse_option_pairs`]: a value with a comma is quoted): `format`
    /// (png, jpeg), `png_level` (fast, 0-9), `jpeg_quality` (1-100), `max_pixels`,
    /// `batch_size`, `base_dir` (where relative Hugging Face paths are read from and must stay
    /// inside), `allow_outside_paths` (true, false), `max_file_bytes`. An unknown key or a bad
    /// value is an error naming it.
    pub fn with_overrides(&self, spec: &str) -> std::result::Result<SqlOptions, String> {
        self.with_pairs(parse_option_pairs(spec)?)
    }

    /// These options with the overrides `key = value` of [`with_overrides`](Self::with_overrides),
    /// given as pairs (the Python package's keyword arguments, say).
    pub fn with_pairs(
        &self,
        pairs: impl IntoIterator<Item = (String, String)>,
    ) -> std::result::Result<SqlOptions, String> {
        let mut o = self.clone();
        let (mut format, mut png, mut jpeg) = match o.encoding {
            Encoding::Png(l) => ("png", l, 90u8),
            Encoding::Jpeg(q) => ("jpeg", PngLevel::Fast, q),
        };
        for (key, value) in pairs {
            let (key, value) = (key.as_str(), value.as_str());
            let bad = |what: &str| format!("option `{key}`: {what}, got `{value}`");
            match key {
                "format" => {
                    format = match value {
                        "png" => "png",
                        "jpeg" | "jpg" => "jpeg",
                        _ => return Err(bad("png or jpeg")),
                    }
                }
                "png_level" => png = value.parse::<PngLevel>().map_err(|e| format!("option `{key}`: {e}"))?,
                "jpeg_quality" => {
                    jpeg = value.parse::<u8>().ok().filter(|q| (1..=100).contains(q)).ok_or_else(|| bad("1 to 100"))?
                }
                "max_pixels" => {
                    o.max_pixels = value.parse::<u64>().ok().filter(|&n| n > 0).ok_or_else(|| bad("a positive number"))?
                }
                "batch_size" => {
                    o.batch_size =
                        value.parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(|| bad("a positive number"))?
                }
                "base_dir" if !value.is_empty() => o.base_dir = Some(PathBuf::from(value)),
                "allow_outside_paths" => {
                    o.allow_outside_paths = match value {
                        "true" => true,
                        "false" => false,
                        _ => return Err(bad("true or false")),
                    }
                }
                "max_file_bytes" => {
                    o.max_file_bytes =
                        value.parse::<u64>().ok().filter(|&n| n > 0).ok_or_else(|| bad("a positive number"))?
                }
                _ => {
                    return Err(format!(
                        "unknown option `{key}` (known: format, png_level, jpeg_quality, max_pixels, batch_size, \
                         base_dir, allow_outside_paths, max_file_bytes)"
                    ))
                }
            }
        }
        o.encoding = if format == "png" { Encoding::Png(png) } else { Encoding::Jpeg(jpeg) };
        Ok(o)
    }
}

impl SqlOptions {
    /// How rows are read under these options.
    pub fn decode_options(&self) -> DecodeOptions {
        DecodeOptions {
            max_pixels: self.max_pixels,
            base_dir: self.base_dir.clone(),
            allow_outside_paths: self.allow_outside_paths,
            max_file_bytes: self.max_file_bytes,
        }
    }

    /// These options for a whole table (its image column `column`, or detected).
    pub fn table_options(&self, column: Option<String>) -> RectifyOptions {
        RectifyOptions {
            column,
            encoding: self.encoding,
            batch_size: self.batch_size,
            max_pixels: self.max_pixels,
            base_dir: self.base_dir.clone(),
            allow_outside_paths: self.allow_outside_paths,
            max_file_bytes: self.max_file_bytes,
            ..RectifyOptions::default()
        }
    }
}

/// The model the functions run: loaded already, or a run folder loaded on first use.
///
/// A lazy model is loaded the first time a function needs it, to plan (the output type depends
/// on the transformer's output size) or to run; a failed load is an error of that query, naming
/// the folder and the host, and is tried again by the next query.
#[derive(Debug, Clone)]
pub struct Model(Arc<ModelState>);

#[derive(Debug)]
enum ModelState {
    Loaded(Arc<Rectifier>),
    Lazy { dir: PathBuf, cell: OnceLock<Arc<Rectifier>>, loading: Mutex<()> },
}

impl Model {
    /// A model already loaded.
    pub fn loaded(rectifier: Arc<Rectifier>) -> Model {
        Model(Arc::new(ModelState::Loaded(rectifier)))
    }

    /// The model of a run folder written by `stn train`, loaded when first needed.
    pub fn lazy(dir: impl Into<PathBuf>) -> Model {
        Model(Arc::new(ModelState::Lazy { dir: dir.into(), cell: OnceLock::new(), loading: Mutex::new(()) }))
    }

    /// The run folder of a lazy model.
    pub fn dir(&self) -> Option<&Path> {
        match self.0.as_ref() {
            ModelState::Loaded(_) => None,
            ModelState::Lazy { dir, .. } => Some(dir),
        }
    }

    /// Whether the weights are in memory.
    pub fn is_loaded(&self) -> bool {
        match self.0.as_ref() {
            ModelState::Loaded(_) => true,
            ModelState::Lazy { cell, .. } => cell.get().is_some(),
        }
    }

    /// The rectifier, loading it first if needed.
    pub fn get(&self) -> std::result::Result<&Arc<Rectifier>, String> {
        match self.0.as_ref() {
            ModelState::Loaded(r) => Ok(r),
            ModelState::Lazy { dir, cell, loading } => {
                if let Some(r) = cell.get() {
                    return Ok(r);
                }
                let _one_at_a_time = loading.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(r) = cell.get() {
                    return Ok(r);
                }
                let r = Rectifier::from_run(dir).map_err(|e| {
                    format!("cannot load the model from {} on host {}: {e}", dir.display(), host())
                })?;
                Ok(cell.get_or_init(|| Arc::new(r)))
            }
        }
    }
}

/// This machine's name, for errors that may come from another machine of a cluster.
fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "(unknown)".into())
}

/// Which function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Rectify,
    Theta,
    Error,
    All,
    Explain,
}

/// One of the image functions, bound to a model.
#[derive(Debug)]
struct ImageUdf {
    kind: Kind,
    model: Model,
    options: SqlOptions,
    signature: Signature,
}

impl PartialEq for ImageUdf {
    fn eq(&self, o: &Self) -> bool {
        self.kind == o.kind && Arc::ptr_eq(&self.model.0, &o.model.0) && self.options == o.options
    }
}

impl Eq for ImageUdf {}

impl Hash for ImageUdf {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.kind.hash(h);
        (Arc::as_ptr(&self.model.0) as usize).hash(h);
        self.options.hash(h);
    }
}

/// The option string of a call's second argument (a string literal), if any.
fn option_string(name: &str, value: Option<&ScalarValue>) -> Result<Option<String>> {
    match value {
        None => Ok(None),
        Some(ScalarValue::Utf8(s) | ScalarValue::LargeUtf8(s) | ScalarValue::Utf8View(s)) => Ok(s.clone()),
        Some(v) => {
            plan_err!("{name}: the second argument is a string of options such as 'format=jpeg', got {v:?}")
        }
    }
}

/// The option string of a second argument that arrives as an array: through DataFusion's FFI
/// (datafusion-python) a literal comes as an array repeating it. Anything that varies from row
/// to row is refused.
fn constant_option_string(name: &str, a: &ArrayRef) -> Result<Option<String>> {
    if a.is_empty() {
        return Ok(None);
    }
    let first = ScalarValue::try_from_array(a, 0)?;
    for i in 1..a.len() {
        if ScalarValue::try_from_array(a, i)? != first {
            return exec_err!(
                "{name}: the options (second argument) must be a string literal, the same on every row"
            );
        }
    }
    option_string(name, Some(&first))
}

impl ImageUdf {
    fn rectifier(&self) -> Result<&Arc<Rectifier>> {
        match self.model.get() {
            Ok(r) => Ok(r),
            Err(e) => exec_err!("{}: {e}", self.name()),
        }
    }

    fn options_with(&self, spec: Option<&str>) -> Result<SqlOptions> {
        match spec {
            None => Ok(self.options.clone()),
            Some(s) => self.options.with_overrides(s).or_else(|e| plan_err!("{}: {e}", self.name())),
        }
    }

    /// Whether `stn_explain` is given a theta column (a list of numbers) rather than images.
    fn explains_theta(&self, field: &Field) -> bool {
        self.kind == Kind::Explain && stn_table::explain::is_theta_type(field.data_type())
    }

    fn column(&self, field: &Field) -> Result<ImageColumn> {
        match convention_of(field) {
            Ok(Some(convention)) => Ok(ImageColumn { index: 0, field: field.clone(), convention }),
            Ok(None) => plan_err!(
                "{}: the argument `{}` has type {}, which holds no images (binary PNG/JPEG bytes, a \
                 Hugging Face struct<bytes, path>, a Daft, Ray or Spark image, or a fixed-shape uint8 tensor)",
                self.name(),
                field.name(),
                field.data_type()
            ),
            Err(e) => plan_err!("{}: {e}", self.name()),
        }
    }

    fn out_field(&self, col: &ImageColumn) -> Result<Field> {
        let name = self.name();
        Ok(match self.kind {
            Kind::Rectify => image_field(self.rectifier()?, col, name),
            Kind::Theta => theta_field(name, self.rectifier()?.num_params()),
            Kind::Error => Field::new(name, DataType::Utf8, true),
            Kind::All => Field::new(name, DataType::Struct(self.all_fields(col)?), true),
            Kind::Explain => stn_table::explain::explain_field(name),
        })
    }

    /// The fields of `stn_rectified`'s struct: the three columns a rectified table adds.
    fn all_fields(&self, col: &ImageColumn) -> Result<Fields> {
        let r = self.rectifier()?;
        Ok(Fields::from(vec![
            image_field(r, col, ADDED_COLUMNS[0]),
            theta_field(ADDED_COLUMNS[1], r.num_params()),
            Field::new(ADDED_COLUMNS[2], DataType::Utf8, true),
        ]))
    }

    /// One slice of the column through the function.
    fn run(&self, col: &ImageColumn, a: &dyn Array, o: &SqlOptions) -> std::result::Result<ArrayRef, String> {
        let decode = o.decode_options();
        let rectifier = || self.model.get();
        match self.kind {
            Kind::Rectify => Ok(rectify_column(rectifier()?, col, a, &decode, o.encoding)?.image),
            Kind::Theta => Ok(theta_column_of(rectifier()?, col, a, &decode)?.0),
            // The whole rectification: a row can also fail in the warp or the encoding, and
            // `stn_error` says what `stn_rectified` would.
            Kind::Error => Ok(rectify_column(rectifier()?, col, a, &decode, o.encoding)?.error),
            Kind::All => {
                let r = rectify_column(rectifier()?, col, a, &decode, o.encoding)?;
                let fields = self.all_fields(col).map_err(|e| e.to_string())?;
                let s = StructArray::try_new(fields, vec![r.image, r.theta, r.error], None)
                    .map_err(|e| e.to_string())?;
                Ok(Arc::new(s))
            }
            Kind::Explain => {
                let r = rectifier()?;
                let (theta, _) = theta_column_of(r, col, a, &decode)?;
                stn_table::explain::explain_column(r.transform(), theta.as_ref())
            }
        }
    }
}

impl ScalarUDFImpl for ImageUdf {
    fn name(&self) -> &str {
        match self.kind {
            Kind::Rectify => "stn_rectify",
            Kind::Theta => "stn_theta",
            Kind::Error => "stn_error",
            Kind::All => "stn_rectified",
            Kind::Explain => "stn_explain",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        let field = Field::new("image", arg_types.first().cloned().unwrap_or(DataType::Null), true);
        if self.explains_theta(&field) {
            return Ok(DataType::Struct(stn_table::explain::explain_fields()));
        }
        Ok(self.out_field(&self.column(&field)?)?.data_type().clone())
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let Some(arg) = args.arg_fields.first() else {
            return plan_err!("{} takes the image column and an optional string of options", self.name());
        };
        let spec = option_string(self.name(), args.scalar_arguments.get(1).copied().flatten())?;
        if args.arg_fields.len() > 1 && args.scalar_arguments.get(1).copied().flatten().is_none() {
            return plan_err!("{}: the options (second argument) must be a string literal", self.name());
        }
        self.options_with(spec.as_deref())?;
        if self.explains_theta(arg) {
            return Ok(Arc::new(stn_table::explain::explain_field(self.name())));
        }
        Ok(Arc::new(self.out_field(&self.column(arg)?)?))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let (Some(value), Some(field)) = (args.args.first(), args.arg_fields.first()) else {
            return exec_err!("{} takes the image column and an optional string of options", self.name());
        };
        let spec = match args.args.get(1) {
            None => None,
            Some(ColumnarValue::Scalar(v)) => option_string(self.name(), Some(v))?,
            Some(ColumnarValue::Array(a)) => constant_option_string(self.name(), a)?,
        };
        let options = self.options_with(spec.as_deref())?;
        let array = value.to_array(args.number_rows)?;
        if self.explains_theta(field) {
            // A theta column: decomposed under the model's family, no images decoded.
            return match stn_table::explain::explain_column(self.rectifier()?.transform(), array.as_ref()) {
                Ok(a) => Ok(ColumnarValue::Array(a)),
                Err(e) => exec_err!("{}: {e}", self.name()),
            };
        }
        let col = self.column(field)?;
        let step = options.batch_size.max(1);
        let mut parts = Vec::new();
        let mut start = 0;
        while start < array.len() {
            let len = step.min(array.len() - start);
            match self.run(&col, array.slice(start, len).as_ref(), &options) {
                Ok(a) => parts.push(a),
                Err(e) => return exec_err!("{}: {e}", self.name()),
            }
            start += len;
        }
        if parts.is_empty() {
            return Ok(ColumnarValue::Array(datafusion::arrow::array::new_empty_array(
                args.return_field.data_type(),
            )));
        }
        let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
        let out = datafusion::arrow::compute::concat(&refs)?;
        // The output's nested field names follow the declared return type.
        if out.data_type() != args.return_field.data_type() {
            return exec_err!(
                "{}: produced {} where {} was declared",
                self.name(),
                out.data_type(),
                args.return_field.data_type()
            );
        }
        Ok(ColumnarValue::Array(out))
    }
}

/// The names of the functions, as [`functions`] returns them.
pub const FUNCTION_NAMES: [&str; 5] =
    ["stn_rectify", "stn_theta", "stn_error", "stn_rectified", "stn_explain"];

/// The five functions (`stn_rectify`, `stn_theta`, `stn_error`, `stn_rectified`,
/// `stn_explain`) bound to `model` (a [`Model`], or an `Arc<Rectifier>`).
pub fn functions(model: impl Into<Model>, options: SqlOptions) -> Vec<ScalarUDF> {
    let model = model.into();
    [Kind::Rectify, Kind::Theta, Kind::Error, Kind::All, Kind::Explain]
        .into_iter()
        .map(|kind| {
            ScalarUDF::new_from_impl(ImageUdf {
                kind,
                model: model.clone(),
                options: options.clone(),
                signature: Signature::one_of(
                    vec![TypeSignature::Any(1), TypeSignature::Any(2)],
                    Volatility::Immutable,
                ),
            })
        })
        .collect()
}

impl From<Arc<Rectifier>> for Model {
    fn from(r: Arc<Rectifier>) -> Model {
        Model::loaded(r)
    }
}

/// Registers the functions on a session.
pub fn register(ctx: &SessionContext, model: impl Into<Model>, options: SqlOptions) {
    for f in functions(model, options) {
        ctx.register_udf(f);
    }
}

/// The session options under which files keep their declared types (binary, not DataFusion's
/// default binary_view) and their field metadata (the extension types of Daft, Ray and
/// arrow.fixed_shape_tensor), so a function's output follows the convention of the column as
/// the tool wrote it. A cluster's client sets them on its session too.
pub fn configure(config: SessionConfig) -> SessionConfig {
    crypto::with_settings(config)
        .set_bool("datafusion.execution.parquet.schema_force_view_types", false)
        .set_bool("datafusion.execution.parquet.skip_metadata", false)
}

/// A session with the functions registered, where a quoted file or folder path is a table
/// (`SELECT ... FROM 'in.parquet'`), a Delta table when it holds `_delta_log/` ([`with_url_tables`]).
pub fn context(model: impl Into<Model>, options: SqlOptions) -> SessionContext {
    let config = configure(SessionConfig::new().with_information_schema(false));
    let ctx = with_url_tables(SessionContext::new_with_config(config));
    register(&ctx, model, options);
    ctx
}

/// `ctx` where a quoted path or URL is a table: a Delta table (a folder or prefix holding
/// `_delta_log/`, its latest version, or another as [`delta_reference`] reads, by delta-rs: deletion
/// vectors and column mapping applied) or else Parquet and the other files DataFusion reads
/// (its `enable_url_table`).
pub fn with_url_tables(ctx: SessionContext) -> SessionContext {
    use datafusion::catalog::{DynamicFileCatalog, UrlTableFactory};
    use datafusion::datasource::dynamic_file::DynamicListTableFactory;
    let current = Arc::clone(ctx.state().catalog_list());
    let files = Arc::new(DynamicListTableFactory::new(datafusion_session::SessionStore::new()));
    let factory = Arc::new(DeltaOrFiles { files: Arc::clone(&files) }) as Arc<dyn UrlTableFactory>;
    let session_id = ctx.session_id();
    let ctx: SessionContext = ctx
        .into_state_builder()
        .with_session_id(session_id)
        .with_catalog_list(Arc::new(DynamicFileCatalog::new(current, factory)))
        .build()
        .into();
    files.session_store().with_state(ctx.state_weak_ref());
    ctx
}

/// The Delta tables a statement names by quoted path (a folder or `s3://` prefix holding
/// `_delta_log/`, with or without a version: [`delta_reference`]), as the statement writes them.
pub fn delta_tables_in(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut parts = sql.split('\'');
    // Every other piece between single quotes is a literal (`''` inside one splits it in two
    // pieces, neither of which names a table).
    parts.next();
    while let Some(literal) = parts.next() {
        if delta_reference(literal).is_some() {
            out.push(literal.to_string());
        }
        parts.next();
    }
    out
}

/// The Delta table a quoted table name refers to, and which version, with time travel as
/// Databricks SQL writes it: `'path@v12'` is version 12, `'path@20261206103000000'`
/// (`yyyyMMddHHmmssSSS`, UTC) the version current at that time, `'path'` the latest. None
/// where the path holds no Delta table.
pub fn delta_reference(name: &str) -> Option<(std::path::PathBuf, stn_table::delta::DeltaAt)> {
    use stn_table::delta::DeltaAt;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (base, at) = match name.rsplit_once('@') {
        Some((base, v)) if v.strip_prefix('v').is_some_and(digits) => {
            (base, v[1..].parse().ok().map(DeltaAt::Version))
        }
        Some((base, t)) if t.len() == 17 && digits(t) => {
            let rfc = format!(
                "{}-{}-{}T{}:{}:{}.{}Z",
                &t[0..4],
                &t[4..6],
                &t[6..8],
                &t[8..10],
                &t[10..12],
                &t[12..14],
                &t[14..17]
            );
            (base, Some(DeltaAt::Timestamp(rfc)))
        }
        _ => (name, Some(DeltaAt::Latest)),
    };
    let path = std::path::Path::new(base);
    if base.is_empty() || !stn_table::delta::is_delta(path) {
        return None;
    }
    Some((path.to_path_buf(), at?))
}

/// The URL tables of [`with_url_tables`].
#[derive(Debug)]
struct DeltaOrFiles {
    files: Arc<datafusion::datasource::dynamic_file::DynamicListTableFactory>,
}

#[async_trait::async_trait]
impl datafusion::catalog::UrlTableFactory for DeltaOrFiles {
    async fn try_new(
        &self,
        url: &str,
    ) -> datafusion::error::Result<Option<Arc<dyn datafusion::catalog::TableProvider>>> {
        if let Some((path, at)) = delta_reference(url) {
            let table = stn_table::delta::DeltaInput::open(&path, &at)
                .map_err(|e| datafusion::error::DataFusionError::Plan(e.to_string()))?;
            let provider =
                table.provider().map_err(|e| datafusion::error::DataFusionError::Plan(e.to_string()))?;
            return Ok(Some(provider));
        }
        self.files.try_new(url).await
    }
}

/// Runs one SQL statement to the end (a query's rows, or `COPY ... TO`'s count) on a runtime of
/// its own. The Parquet reader panics on some corrupt files; such a panic is the query's error
/// ([`stn_table::guard::guarded_anywhere`]). Tables and `COPY` targets may be `s3://` URLs
/// ([`store`]); a `COPY` never overwrites an existing object.
pub fn query(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
    query_with(ctx, sql, false)
}

/// [`query`], in a session that may have keys ([`crypto::use_keys`]): there a `COPY ... TO`
/// writes Parquet encrypted and checks every file it wrote; a `COPY` to another format (which
/// would be plaintext) is refused unless `allow_plaintext_output`, and so are encryption
/// options in the statement (keys never go in SQL).
pub fn query_with(ctx: &SessionContext, sql: &str, allow_plaintext_output: bool) -> Result<Vec<RecordBatch>> {
    use datafusion::error::DataFusionError;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    let keys = crypto::session_keys(ctx);
    store::register_for(ctx, sql)?;
    stn_table::guard::guarded_anywhere("reading the query's tables", || {
        rt.block_on(async {
            let df = match ctx.sql(sql).await {
                Ok(df) => df,
                // A table in S3 that cannot be read is only "not found" to DataFusion.
                Err(e) => return Err(store::why_unreadable(ctx, sql).await.unwrap_or(e)),
            };
            prepare_copy(ctx, df.logical_plan()).await?;
            let check = crypto::CopyCheck::before(df.logical_plan(), keys.as_ref(), allow_plaintext_output)?;
            let out = df.collect().await?;
            if let Some(check) = check {
                check.after()?;
            }
            Ok(out)
        })
    })
    .unwrap_or_else(|e| Err(DataFusionError::Execution(e)))
}

/// Before a `COPY ... TO` (nothing for another statement), here or on a cluster: an object
/// store target that exists is refused ([`store::refuse_existing`]); a local target's stale
/// staging files are removed ([`remove_stale_uploads`]).
pub async fn prepare_copy(ctx: &SessionContext, plan: &datafusion::logical_expr::LogicalPlan) -> Result<()> {
    if let datafusion::logical_expr::LogicalPlan::Copy(c) = plan {
        if store::is_object_store(&c.output_url) {
            store::refuse_existing(ctx, &c.output_url).await?;
        } else {
            remove_stale_uploads(&c.output_url)?;
        }
    }
    Ok(())
}

/// The staging files (`NAME#N`) that a `COPY ... TO` killed before it finished left where it
/// writes `output_url` (a local file, or a folder), removed before the statement writes there
/// again: object_store writes each local file under such a name and renames it when complete,
/// so the target itself is never half-written, but a killed writer's staging file would stay.
/// Returns what was removed. Not a local path: nothing to do.
pub fn remove_stale_uploads(output_url: &str) -> Result<Vec<PathBuf>> {
    let path = match output_url.strip_prefix("file://") {
        Some(p) => PathBuf::from(p),
        None if output_url.contains("://") => return Ok(Vec::new()),
        None => PathBuf::from(output_url),
    };
    let (dir, only) = if output_url.ends_with('/') || path.is_dir() {
        (path.clone(), None)
    } else {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        (
            path.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
            name,
        )
    };
    let mut removed = Vec::new();
    let Ok(rd) = std::fs::read_dir(&dir) else { return Ok(removed) };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((base, n)) = name.rsplit_once('#') else { continue };
        if n.is_empty()
            || !n.bytes().all(|b| b.is_ascii_digit())
            || only.as_deref().is_some_and(|o| o != base)
        {
            continue;
        }
        if e.file_type().is_ok_and(|t| t.is_file()) && std::fs::remove_file(e.path()).is_ok() {
            removed.push(e.path());
        }
    }
    Ok(removed)
}

/// The rows as a text table, or (`json`) as JSON lines.
pub fn format(batches: &[RecordBatch], json: bool) -> Result<String> {
    if json {
        let mut w = datafusion::arrow::json::LineDelimitedWriter::new(Vec::new());
        for b in batches {
            w.write(b)?;
        }
        w.finish()?;
        Ok(String::from_utf8_lossy(&w.into_inner()).into_owned())
    } else {
        Ok(datafusion::arrow::util::pretty::pretty_format_batches(batches)?.to_string())
    }
}
