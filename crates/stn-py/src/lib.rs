//! # stn-py: the `stn_rs` Python package's native module
//!
//! Converts only: Python arguments and Arrow data in (zero-copy, through the Arrow PyCapsule
//! interface, so pyarrow, pandas, polars, Daft, DuckDB and anything else that speaks it), pyarrow
//! out; every rule (conventions, per-row errors, memory budget, paths that stay inside) is the
//! stn crates' own. The work runs with the GIL released, in the instance's own thread pool.
//!
//! Built by maturin (`crates/stn-py/pyproject.toml`); the Python side is `python/stn_rs/`.

use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{Field, Schema, SchemaRef};
use pyo3::exceptions::{PyFileNotFoundError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyTuple};
use pyo3_arrow::input::{AnyArray, AnyRecordBatch};
use pyo3_arrow::PyTable;
use stn_sql::SqlOptions;
use stn_table::rectify::{plan_schema, rectify_batch, rectify_lineage};

mod augment;
mod kernels;
mod sql;

/// The native module: `stn_rs._native`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Rectifier>()?;
    m.add_function(wrap_pyfunction!(rectifier_from_torch, m)?)?;
    m.add_class::<sql::StnFunction>()?;
    m.add_class::<kernels::Buffer>()?;
    m.add_function(wrap_pyfunction!(sql::datafusion_functions, m)?)?;
    m.add_function(wrap_pyfunction!(kernels::affine_grid, m)?)?;
    m.add_function(wrap_pyfunction!(kernels::grid_sample, m)?)?;
    m.add_function(wrap_pyfunction!(kernels::warp_affine, m)?)?;
    m.add_function(wrap_pyfunction!(augment::augment_batch, m)?)?;
    m.add_function(wrap_pyfunction!(keep_freed_memory, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

/// A trained spatial transformer applied to images and image tables.
///
/// Built from a run folder (`stn train`'s output, or `stn import-torch`'s); `threads` sets the
/// size of this instance's own thread pool (default: every core), so several instances in one
/// process (Ray or Daft actors on one node) share the machine as told. Picklable: a copy is
/// rebuilt from the folder and the thread count.
#[pyclass(frozen, module = "stn_rs._native")]
struct Rectifier {
    inner: stn_models::rectify::Rectifier,
    pool: rayon::ThreadPool,
    source: Source,
    threads: Option<usize>,
}

/// Where a rectifier's model came from: what a pickled copy is rebuilt from.
#[derive(Debug, Clone)]
enum Source {
    Run(PathBuf),
    Torch { path: PathBuf, arch: String, normalize: Option<[f64; 2]> },
}

fn thread_pool(threads: Option<usize>) -> PyResult<rayon::ThreadPool> {
    if threads == Some(0) {
        return Err(value_error("threads: at least 1 (or None for every core)"));
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.unwrap_or(0))
        .thread_name(|i| format!("stn-rs-{i}"))
        .build()
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start the thread pool: {e}")))
}

/// A rectifier of PyTorch weights (`Rectifier.from_torch`; also what unpickling one calls).
#[pyfunction]
#[pyo3(signature = (path, arch="tutorial", normalize=Some([0.1307, 0.3081]), threads=None))]
fn rectifier_from_torch(
    path: PathBuf,
    arch: &str,
    normalize: Option<[f64; 2]>,
    threads: Option<usize>,
) -> PyResult<Rectifier> {
    if !path.is_file() {
        return Err(PyFileNotFoundError::new_err(format!("{}: no such file", path.display())));
    }
    let pool = thread_pool(threads)?;
    let torch_arch: stn_models::torch::TorchArch = arch.parse().map_err(value_error)?;
    let inner = stn_models::torch::rectifier(&path, torch_arch, normalize).map_err(value_error)?;
    let source = Source::Torch { path, arch: arch.to_string(), normalize };
    Ok(Rectifier { inner, pool, source, threads })
}

/// Makes this process's allocator (glibc's malloc) keep freed memory for reuse instead of giving
/// every large buffer back to the system, as the `stn` program does at start: repeated calls on
/// large batches (augmentation, warps, rectification) then stop paying first-touch page faults
/// on each new output (measured: `augment` of 32 x 3 x 256 x 256 batches 2x faster). The cost is
/// that the process keeps its peak memory until it exits, so it is opt-in. Returns whether it
/// applied (Linux with glibc only).
#[pyfunction]
fn keep_freed_memory() -> bool {
    stn_kernels::alloc::keep_freed_memory()
}

fn value_error(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// The options of a Python call: the keyword arguments are `stn_rectify`'s options, with the
/// same names, meanings and checks ([`SqlOptions::with_pairs`]); a bool is `true`/`false`, a
/// path or a number its text.
fn options(kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<SqlOptions> {
    let mut pairs = Vec::new();
    for (key, value) in kwargs.into_iter().flat_map(|d| d.iter()) {
        let key: String = key.extract()?;
        let text = if let Ok(b) = value.cast::<PyBool>() {
            b.is_true().to_string()
        } else if let Ok(p) = value.extract::<PathBuf>() {
            p.to_str().ok_or_else(|| value_error(format!("{key}: a path that is not UTF-8")))?.to_string()
        } else {
            value.str()?.to_str()?.to_string()
        };
        pairs.push((key, text));
    }
    SqlOptions::default().with_pairs(pairs).map_err(value_error)
}

impl Rectifier {
    /// `batches` (one schema) rectified: every column, then `stn_image`, `stn_theta` and
    /// `stn_error`. Runs without the GIL, in this instance's pool.
    fn run(
        &self,
        py: Python<'_>,
        schema: SchemaRef,
        batches: Box<dyn arrow_array::RecordBatchReader + Send>,
        column: Option<String>,
        opts: &SqlOptions,
    ) -> PyResult<PyTable> {
        let table = opts.table_options(column);
        let lineage = rectify_lineage(&self.inner, &table);
        let (column, out_schema) =
            plan_schema(&self.inner, &schema, &table, &lineage).map_err(value_error)?;
        let decode = opts.decode_options();
        let out = self.in_pieces(py, batches, opts.batch_size, |piece| {
            rectify_batch(&self.inner, &column, &out_schema, piece, &decode, opts.encoding).map(|(b, _)| b)
        });
        PyTable::try_new(out?, out_schema)
    }

    /// `f` on every `batch_size` rows of `batches` (the model takes that many at a time, as
    /// `stn rectify --table` does), without the GIL, in this instance's pool.
    fn in_pieces(
        &self,
        py: Python<'_>,
        batches: Box<dyn arrow_array::RecordBatchReader + Send>,
        batch_size: usize,
        f: impl Fn(&RecordBatch) -> Result<RecordBatch, String> + Sync,
    ) -> PyResult<Vec<RecordBatch>> {
        let out: Result<Vec<RecordBatch>, String> = py.detach(|| {
            self.pool.install(|| {
                let mut out = Vec::new();
                for batch in batches {
                    let batch = batch.map_err(|e| e.to_string())?;
                    for offset in (0..batch.num_rows()).step_by(batch_size.max(1)) {
                        out.push(f(&batch.slice(offset, batch_size.min(batch.num_rows() - offset)))?);
                    }
                }
                Ok(out)
            })
        });
        out.map_err(value_error)
    }
}

#[pymethods]
impl Rectifier {
    #[new]
    #[pyo3(signature = (run_dir, threads=None))]
    fn new(run_dir: PathBuf, threads: Option<usize>) -> PyResult<Self> {
        if !run_dir.is_dir() {
            return Err(PyFileNotFoundError::new_err(format!(
                "{}: no such run folder (stn train's --out, or stn import-torch's)",
                run_dir.display()
            )));
        }
        let pool = thread_pool(threads)?;
        let inner = stn_models::rectify::Rectifier::from_run(&run_dir).map_err(value_error)?;
        Ok(Rectifier { inner, pool, source: Source::Run(run_dir), threads })
    }

    /// A rectifier of PyTorch-trained weights: the official tutorial's network (`arch`
    /// `"tutorial"`; `"tutorial-cnn"` has no transformer and cannot rectify), its `state_dict`
    /// saved with `torch.save` (`.pt`, `.pth`) or as `.safetensors`. `normalize` is the
    /// `(mean, std)` the weights were trained on (the tutorial's by default; None for raw
    /// pixels): give raw pixels in [0, 1], get PyTorch's theta. No PyTorch needed.
    #[staticmethod]
    #[pyo3(signature = (path, arch="tutorial", normalize=Some([0.1307, 0.3081]), threads=None))]
    fn from_torch(
        path: PathBuf,
        arch: &str,
        normalize: Option<[f64; 2]>,
        threads: Option<usize>,
    ) -> PyResult<Self> {
        rectifier_from_torch(path, arch, normalize, threads)
    }

    /// Rebuilt from its arguments when unpickled (Ray and Daft ship actors that way).
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let py = slf.py();
        let me = slf.get();
        match &me.source {
            Source::Run(dir) => {
                let args = (dir.clone(), me.threads).into_pyobject(py)?;
                PyTuple::new(py, [slf.get_type().into_any(), args.into_any()])
            }
            Source::Torch { path, arch, normalize } => {
                let f = py.import("stn_rs._native")?.getattr("rectifier_from_torch")?;
                let args = (path.clone(), arch.clone(), *normalize, me.threads).into_pyobject(py)?;
                PyTuple::new(py, [f, args.into_any()])
            }
        }
    }

    fn __repr__(&self) -> String {
        let from = match &self.source {
            Source::Run(dir) => format!("{:?}", dir.display().to_string()),
            Source::Torch { path, arch, .. } => format!("from_torch {:?} {arch}", path.display().to_string()),
        };
        format!(
            "Rectifier({}, threads={}) # {} parameters per image, localization {}x{}",
            from,
            self.threads.map_or("None".to_string(), |t| t.to_string()),
            self.inner.num_params(),
            self.inner.localization_size()[0],
            self.inner.localization_size()[1],
        )
    }

    /// Parameters per image (6 for an affine transformer).
    #[getter]
    fn num_params(&self) -> usize {
        self.inner.num_params()
    }

    /// The threads of this instance's pool.
    #[getter]
    fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// The content hash of the model file (`sha256:...`), as tables' lineage records it.
    #[getter]
    fn model_id(&self) -> Option<String> {
        self.inner.model_id().map(str::to_string)
    }

    /// Rectifies a table: every column kept, plus `stn_image` (in the image column's own
    /// convention), `stn_theta` and `stn_error` (null, or why the row failed). Takes anything
    /// with `__arrow_c_stream__` or `__arrow_c_array__` (pyarrow, pandas, polars, DuckDB, Daft);
    /// returns a `pyarrow.Table`. Keyword options as `stn_rectify`'s: `format`, `png_level`,
    /// `jpeg_quality`, `max_pixels`, `batch_size`, `base_dir`, `allow_outside_paths`,
    /// `max_file_bytes`.
    #[pyo3(signature = (table, column=None, **options))]
    fn rectify_table<'py>(
        &self,
        py: Python<'py>,
        table: AnyRecordBatch,
        column: Option<String>,
        options: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let opts = self::options(options)?;
        let schema = table.schema()?;
        let reader = table.into_reader()?;
        self.run(py, schema, reader, column, &opts)?.into_pyarrow(py)
    }

    /// Rectifies an image column (any convention; anything with `__arrow_c_array__` or
    /// `__arrow_c_stream__`: a pyarrow array, a pandas or polars Series, a Daft Series):
    /// a `pyarrow.Table` of `stn_image`, `stn_theta` and `stn_error`, a row per image. The
    /// options of [`rectify_table`](Self::rectify_table).
    #[pyo3(signature = (images, **options))]
    fn rectify<'py>(
        &self,
        py: Python<'py>,
        images: AnyArray,
        options: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let opts = self::options(options)?;
        let (schema, reader) = column_batches(images)?;
        let table = self.run(py, schema, reader, None, &opts)?;
        // The image column itself is the caller's already: only the three added ones go back.
        let (batches, schema) = table.into_inner();
        let keep: Vec<usize> = (1..schema.fields().len()).collect();
        let schema = Arc::new(schema.project(&keep).map_err(value_error)?);
        let batches =
            batches.iter().map(|b| b.project(&keep)).collect::<Result<Vec<_>, _>>().map_err(value_error)?;
        PyTable::try_new(batches, schema)?.into_pyarrow(py)
    }

    /// The transformer's parameters for each image of an image column (localization only, no
    /// warp): a `pyarrow.Table` of `stn_theta` (`fixed_size_list<float32>[P]`, nulls where the
    /// row failed) and `stn_error`. The reading options of [`rectify_table`](Self::rectify_table).
    #[pyo3(signature = (images, **options))]
    fn theta<'py>(
        &self,
        py: Python<'py>,
        images: AnyArray,
        options: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let opts = self::options(options)?;
        let (schema, reader) = column_batches(images)?;
        let column = stn_table::detect(&schema, None).map_err(value_error)?;
        let decode = opts.decode_options();
        let out_schema = Arc::new(Schema::new(vec![
            stn_table::codec::theta_field("stn_theta", self.inner.num_params()),
            Field::new("stn_error", arrow_schema::DataType::Utf8, true),
        ]));
        let batches = self.in_pieces(py, reader, opts.batch_size, |piece| {
            let (theta, failures) =
                stn_table::batch::theta_column_of(&self.inner, &column, piece.column(0).as_ref(), &decode)?;
            let mut errors: Vec<Option<String>> = vec![None; piece.num_rows()];
            for (i, why) in failures {
                errors[i] = Some(why);
            }
            let errors: ArrayRef = Arc::new(arrow_array::StringArray::from(errors));
            RecordBatch::try_new(out_schema.clone(), vec![theta, errors]).map_err(|e| e.to_string())
        })?;
        PyTable::try_new(batches, out_schema)?.into_pyarrow(py)
    }

    /// What the transformer did, theta decomposed (the conventions of `stn::explain`: rotation
    /// in degrees, scales, shear, translation, zoom, reflection and singular flags, perspective
    /// terms of projective maps, bending energy and largest control-point displacement of
    /// splines), for an image column (its theta computed first) or a theta column (a list of
    /// floats per row, such as a rectified table's `stn_theta`): a `pyarrow.Table` with a
    /// column per quantity and a row per input, null where a row failed. The reading options of
    /// [`rectify_table`](Self::rectify_table).
    #[pyo3(signature = (images_or_theta, **options))]
    fn explain<'py>(
        &self,
        py: Python<'py>,
        images_or_theta: AnyArray,
        options: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let opts = self::options(options)?;
        let (schema, reader) = column_batches(images_or_theta)?;
        let theta_given = stn_table::explain::is_theta_type(schema.field(0).data_type());
        let column =
            if theta_given { None } else { Some(stn_table::detect(&schema, None).map_err(value_error)?) };
        let decode = opts.decode_options();
        let transform = self.inner.transform();
        let out_schema = Arc::new(Schema::new(stn_table::explain::explain_fields()));
        let batches = self.in_pieces(py, reader, opts.batch_size, |piece| {
            let theta = match &column {
                None => piece.column(0).clone(),
                Some(c) => {
                    stn_table::batch::theta_column_of(&self.inner, c, piece.column(0).as_ref(), &decode)?.0
                }
            };
            let explained = stn_table::explain::explain_column(transform, theta.as_ref())?;
            let s = explained.as_any().downcast_ref::<arrow_array::StructArray>().ok_or("not a struct")?;
            // A failed row is null in every column (the struct's fields are null there too).
            RecordBatch::try_new(out_schema.clone(), s.columns().to_vec()).map_err(|e| e.to_string())
        })?;
        PyTable::try_new(batches, out_schema)?.into_pyarrow(py)
    }
}

/// An image column as a one-column table.
fn column_batches(images: AnyArray) -> PyResult<(SchemaRef, Box<dyn arrow_array::RecordBatchReader + Send>)> {
    let field = images.field()?;
    let name = if field.name().is_empty() { "image" } else { field.name().as_str() };
    let field =
        Arc::new(Field::new(name, field.data_type().clone(), true).with_metadata(field.metadata().clone()));
    let schema = Arc::new(Schema::new(vec![field.as_ref().clone()]));
    let reader = images.into_reader()?;
    let s = schema.clone();
    let batches = reader
        .map(move |a: Result<ArrayRef, arrow_schema::ArrowError>| RecordBatch::try_new(s.clone(), vec![a?]));
    Ok((schema.clone(), Box::new(arrow_array::RecordBatchIterator::new(batches, schema))))
}
