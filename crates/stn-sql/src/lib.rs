//! # stn-sql: a trained spatial transformer in SQL (DataFusion 55)
//!
//! Scalar functions over an image column of any convention `stn-table` reads, vectorized per
//! record batch through the rectification core:
//!
//! - `stn_rectify(image)`: the rectified image, in the convention of its input (PNG bytes for
//!   encoded columns, the same struct or tensor layout for decoded ones); null for a bad row;
//! - `stn_theta(image)`: the transformer's parameters, `fixed_size_list<float32>[P]`; null for a
//!   bad row;
//! - `stn_error(image)`: null when the row is good, else why it is not.
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

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{exec_err, plan_err, Result};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::{SessionConfig, SessionContext};
use stn_data::image_io::Encoding;
use stn_models::rectify::Rectifier;
use stn_table::batch::{image_field, rectify_column, theta_column_of};
use stn_table::codec::{decode_column, theta_field, DecodeOptions, DEFAULT_MAX_PIXELS};
use stn_table::convention::{convention_of, ImageColumn};

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
}

impl Default for SqlOptions {
    fn default() -> Self {
        SqlOptions {
            encoding: Encoding::default(),
            max_pixels: DEFAULT_MAX_PIXELS,
            base_dir: None,
            batch_size: 64,
        }
    }
}

/// Which function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Rectify,
    Theta,
    Error,
}

/// One of the image functions, bound to a rectifier.
#[derive(Debug)]
struct ImageUdf {
    kind: Kind,
    rectifier: Arc<Rectifier>,
    options: SqlOptions,
    signature: Signature,
}

impl PartialEq for ImageUdf {
    fn eq(&self, o: &Self) -> bool {
        self.kind == o.kind && Arc::ptr_eq(&self.rectifier, &o.rectifier) && self.options == o.options
    }
}

impl Eq for ImageUdf {}

impl Hash for ImageUdf {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.kind.hash(h);
        (Arc::as_ptr(&self.rectifier) as usize).hash(h);
        self.options.hash(h);
    }
}

impl ImageUdf {
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

    fn decode_options(&self) -> DecodeOptions {
        DecodeOptions { max_pixels: self.options.max_pixels, base_dir: self.options.base_dir.clone() }
    }

    fn out_field(&self, col: &ImageColumn) -> Field {
        let name = self.name();
        match self.kind {
            Kind::Rectify => image_field(&self.rectifier, col, name),
            Kind::Theta => theta_field(name, self.rectifier.num_params()),
            Kind::Error => Field::new(name, DataType::Utf8, true),
        }
    }

    /// One slice of the column through the function.
    fn run(&self, col: &ImageColumn, a: &dyn Array) -> std::result::Result<ArrayRef, String> {
        match self.kind {
            Kind::Rectify => {
                Ok(rectify_column(&self.rectifier, col, a, &self.decode_options(), self.options.encoding)?
                    .image)
            }
            Kind::Theta => Ok(theta_column_of(&self.rectifier, col, a, &self.decode_options())?.0),
            Kind::Error => {
                // Decoding is what can fail; a decodable row also rectifies.
                let d = decode_column(&col.convention, a, &self.decode_options());
                let errs = d.iter().map(|r| r.as_ref().err().map(String::as_str));
                Ok(Arc::new(datafusion::arrow::array::StringArray::from_iter(errs)))
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
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        let field = Field::new("image", arg_types.first().cloned().unwrap_or(DataType::Null), true);
        Ok(self.out_field(&self.column(&field)?).data_type().clone())
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let Some(arg) = args.arg_fields.first() else {
            return plan_err!("{} takes one argument, the image column", self.name());
        };
        Ok(Arc::new(self.out_field(&self.column(arg)?)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let (Some(value), Some(field)) = (args.args.first(), args.arg_fields.first()) else {
            return exec_err!("{} takes one argument, the image column", self.name());
        };
        let col = self.column(field)?;
        let array = value.to_array(args.number_rows)?;
        let step = self.options.batch_size.max(1);
        let mut parts = Vec::new();
        let mut start = 0;
        while start < array.len() {
            let len = step.min(array.len() - start);
            match self.run(&col, array.slice(start, len).as_ref()) {
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

/// The three functions (`stn_rectify`, `stn_theta`, `stn_error`) bound to `rectifier`.
pub fn functions(rectifier: Arc<Rectifier>, options: SqlOptions) -> Vec<ScalarUDF> {
    [Kind::Rectify, Kind::Theta, Kind::Error]
        .into_iter()
        .map(|kind| {
            ScalarUDF::new_from_impl(ImageUdf {
                kind,
                rectifier: rectifier.clone(),
                options: options.clone(),
                signature: Signature::any(1, Volatility::Immutable),
            })
        })
        .collect()
}

/// Registers the functions on a session.
pub fn register(ctx: &SessionContext, rectifier: Arc<Rectifier>, options: SqlOptions) {
    for f in functions(rectifier, options) {
        ctx.register_udf(f);
    }
}

/// A session with the functions registered, where a quoted file or folder path is a table
/// (`SELECT ... FROM 'in.parquet'`).
pub fn context(rectifier: Arc<Rectifier>, options: SqlOptions) -> SessionContext {
    // Files keep their declared types (binary, not DataFusion's default binary_view) and their
    // field metadata (the extension types of Daft, Ray and arrow.fixed_shape_tensor), so a
    // function's output follows the convention of the column as the tool wrote it.
    let config = SessionConfig::new()
        .with_information_schema(false)
        .set_bool("datafusion.execution.parquet.schema_force_view_types", false)
        .set_bool("datafusion.execution.parquet.skip_metadata", false);
    let ctx = SessionContext::new_with_config(config).enable_url_table();
    register(&ctx, rectifier, options);
    ctx
}

/// Runs one SQL statement to the end (a query's rows, or `COPY ... TO`'s count) on a runtime of
/// its own.
pub fn query(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
    rt.block_on(async { ctx.sql(sql).await?.collect().await })
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
