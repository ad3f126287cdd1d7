//! The SQL functions for datafusion-python: `stn_rs.datafusion_functions(run_dir)` gives the
//! four functions of `stn-sql` (`stn_rectify`, `stn_theta`, `stn_error`, `stn_rectified`) as
//! objects with `__datafusion_scalar_udf__`, DataFusion's FFI capsule (datafusion-ffi), for
//! `ctx.register_udf(datafusion.udf(f))`. The capsule's layout changes between DataFusion
//! majors and a mismatch crashes the interpreter, so the installed datafusion's major is checked
//! against ours before any capsule is made.

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::logical_expr::ScalarUDF;
use datafusion_ffi::udf::FFI_ScalarUDF;
use pyo3::exceptions::{PyFileNotFoundError, PyImportError};
use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyDict};

use crate::value_error;

/// One SQL function, for `datafusion.udf(...)`.
#[pyclass(frozen, name = "StnFunction", module = "stn_rs._native")]
pub(crate) struct StnFunction {
    udf: Arc<ScalarUDF>,
}

/// The DataFusion major the capsules are made for.
fn our_major() -> u64 {
    datafusion_ffi::version()
}

/// An error unless the installed datafusion-python has our DataFusion major.
fn check_datafusion(py: Python<'_>) -> PyResult<()> {
    let ours = our_major();
    let module = py.import("datafusion").map_err(|e| {
        PyImportError::new_err(format!(
            "stn_rs's SQL functions are for datafusion-python {ours}: pip install 'datafusion>={ours},<{}' ({e})",
            ours + 1
        ))
    })?;
    let version: String = module.getattr("__version__")?.extract()?;
    let major = version.split('.').next().and_then(|m| m.trim().parse::<u64>().ok());
    if major != Some(ours) {
        return Err(PyImportError::new_err(format!(
            "datafusion {version} is installed, but stn_rs's SQL functions are built for DataFusion {ours} \
             (datafusion-python {ours}.x): the FFI layouts differ between majors and a mismatch would crash \
             the interpreter, so they are not handed over; pip install 'datafusion>={ours},<{}'",
            ours + 1
        )));
    }
    Ok(())
}

#[pymethods]
impl StnFunction {
    /// The function's SQL name.
    #[getter]
    fn name(&self) -> String {
        self.udf.name().to_string()
    }

    /// DataFusion's FFI capsule of the function (datafusion-python calls it).
    fn __datafusion_scalar_udf__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        check_datafusion(py)?;
        PyCapsule::new_with_value(py, FFI_ScalarUDF::from(self.udf.clone()), c"datafusion_scalar_udf")
    }

    fn __repr__(&self) -> String {
        format!("StnFunction({:?})", self.udf.name())
    }
}

/// The SQL functions bound to the model of `run_dir`, with `stn_rectify`'s options as keyword
/// arguments (defaults of every call; a query's second argument overrides them).
#[pyfunction]
#[pyo3(signature = (run_dir, **options))]
pub(crate) fn datafusion_functions(
    py: Python<'_>,
    run_dir: PathBuf,
    options: Option<&Bound<'_, PyDict>>,
) -> PyResult<Vec<StnFunction>> {
    check_datafusion(py)?;
    let opts = crate::options(options)?;
    if !run_dir.is_dir() {
        return Err(PyFileNotFoundError::new_err(format!(
            "{}: no such run folder (stn train's --out, or stn import-torch's)",
            run_dir.display()
        )));
    }
    let rectifier = stn_models::rectify::Rectifier::from_run(&run_dir).map_err(value_error)?;
    let model = stn_sql::Model::loaded(Arc::new(rectifier));
    Ok(stn_sql::functions(model, opts).into_iter().map(|f| StnFunction { udf: Arc::new(f) }).collect())
}
