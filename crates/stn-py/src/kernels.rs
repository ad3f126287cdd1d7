//! The kernels on arrays: `affine_grid`, `grid_sample` and `warp_affine` (the two fused) over
//! buffers. The Python side (`stn_rs/kernels.py`) takes NumPy arrays, PyTorch tensors or
//! anything else with DLPack, makes them C-contiguous float32 or float64 and hands them here;
//! the results go back without a copy (a [`Buffer`]) with their shape, which it views as an
//! array of the input's kind. Every check is the kernels' own ([`stn_kernels::KernelError`]).

use std::os::raw::{c_int, c_void};

use pyo3::buffer::{Element, PyBuffer};
use pyo3::exceptions::{PyBufferError, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;
use stn_kernels::{Float, Interpolation, Padding, SampleOptions, Tensor, TensorRef};

use crate::value_error;

/// A result for Python: its elements (a [`Buffer`]) and its shape.
pub(crate) type Raw<'py> = (Bound<'py, Buffer>, Vec<usize>);

/// The elements of a C-contiguous buffer, read in place.
pub(crate) fn elements<'a, T: Element>(buf: &'a PyBuffer<T>, name: &str) -> PyResult<&'a [T]> {
    let ptr =
        buf.as_slice_ptr().ok_or_else(|| value_error(format!("{name}: the array is not C-contiguous")))?;
    // SAFETY: the buffer is held (so its memory is alive) for as long as the borrow of `buf`;
    // it is read only. A caller mutating the array from another thread during the call races,
    // as with any NumPy function that releases the GIL.
    Ok(unsafe { &*ptr.as_ptr() })
}

/// What a [`Buffer`] keeps alive.
enum Owner {
    F32(#[allow(dead_code)] Vec<f32>),
    F64(#[allow(dead_code)] Vec<f64>),
}

/// A result's elements, handed to Python without a copy: the bytes of a Rust vector through
/// the buffer protocol (writable), which `numpy.frombuffer` views as an array.
#[pyclass(frozen, module = "stn_rs._native")]
pub(crate) struct Buffer {
    ptr: *mut u8,
    len: usize,
    _owner: Owner,
}

// SAFETY: the pointer is into `_owner`'s heap allocation, which the struct owns and never touches
// again in Rust; Python writes through it only by the buffer protocol, as to any bytearray.
unsafe impl Send for Buffer {}
unsafe impl Sync for Buffer {}

/// Element types a [`Buffer`] can own.
pub(crate) trait Owned: Copy {
    /// The vector as a buffer (moved, not copied).
    fn into_buffer(v: Vec<Self>) -> Buffer;
}

impl Owned for f32 {
    fn into_buffer(mut v: Vec<f32>) -> Buffer {
        Buffer { ptr: v.as_mut_ptr().cast(), len: std::mem::size_of_val(v.as_slice()), _owner: Owner::F32(v) }
    }
}

impl Owned for f64 {
    fn into_buffer(mut v: Vec<f64>) -> Buffer {
        Buffer { ptr: v.as_mut_ptr().cast(), len: std::mem::size_of_val(v.as_slice()), _owner: Owner::F64(v) }
    }
}

/// `data` as a [`Buffer`] for Python (moved, not copied).
pub(crate) fn to_buffer<T: Owned>(py: Python<'_>, data: Vec<T>) -> PyResult<Bound<'_, Buffer>> {
    Bound::new(py, T::into_buffer(data))
}

#[pymethods]
impl Buffer {
    unsafe fn __getbuffer__(slf: Bound<'_, Self>, view: *mut ffi::Py_buffer, flags: c_int) -> PyResult<()> {
        if view.is_null() {
            return Err(PyBufferError::new_err("View is null"));
        }
        let (ptr, len) = (slf.get().ptr, slf.get().len);
        // SAFETY: `view` is the caller's (CPython's) to fill, as the buffer protocol says; the
        // bytes stay alive while the view holds a reference to `slf` (`obj`).
        unsafe {
            (*view).obj = slf.into_any().into_ptr();
            (*view).buf = ptr.cast::<c_void>();
            (*view).len = len as isize;
            (*view).readonly = 0;
            (*view).itemsize = 1;
            (*view).format = if (flags & ffi::PyBUF_FORMAT) == ffi::PyBUF_FORMAT {
                c"B".as_ptr().cast_mut()
            } else {
                std::ptr::null_mut()
            };
            (*view).ndim = 1;
            (*view).shape = if (flags & ffi::PyBUF_ND) == ffi::PyBUF_ND {
                &mut (*view).len
            } else {
                std::ptr::null_mut()
            };
            (*view).strides = if (flags & ffi::PyBUF_STRIDES) == ffi::PyBUF_STRIDES {
                &mut (*view).itemsize
            } else {
                std::ptr::null_mut()
            };
            (*view).suboffsets = std::ptr::null_mut();
            (*view).internal = std::ptr::null_mut();
        }
        Ok(())
    }

    fn __len__(&self) -> usize {
        self.len
    }
}

fn raw<T: Owned>(py: Python<'_>, t: Tensor<T>) -> PyResult<Raw<'_>> {
    Ok((to_buffer(py, t.data)?, t.shape))
}

pub(crate) fn options(mode: &str, padding_mode: &str, align_corners: bool) -> PyResult<SampleOptions> {
    let mode: Interpolation = mode.parse().map_err(|e| value_error(format!("mode: {e}")))?;
    let padding: Padding = padding_mode.parse().map_err(|e| value_error(format!("padding_mode: {e}")))?;
    Ok(SampleOptions::new(mode, padding, align_corners))
}

/// Runs `f` on the arrays `args` (all float32 or all float64, as the first) without the GIL.
fn call<'py>(
    py: Python<'py>,
    args: &[(&str, &Bound<'py, PyAny>)],
    f32: impl FnOnce(&[TensorRef<'_, f32>]) -> stn_kernels::Result<Tensor<f32>> + Send,
    f64: impl FnOnce(&[TensorRef<'_, f64>]) -> stn_kernels::Result<Tensor<f64>> + Send,
) -> PyResult<Raw<'py>> {
    fn typed<'py, T: Float + Element + Owned>(
        py: Python<'py>,
        args: &[(&str, &Bound<'py, PyAny>)],
        f: impl FnOnce(&[TensorRef<'_, T>]) -> stn_kernels::Result<Tensor<T>> + Send,
    ) -> PyResult<Raw<'py>> {
        let bufs = args
            .iter()
            .map(|(name, a)| {
                PyBuffer::<T>::get(a).map_err(|_| {
                    PyTypeError::new_err(format!("{name}: the same float type as the first array"))
                })
            })
            .collect::<PyResult<Vec<_>>>()?;
        let mut views = Vec::with_capacity(bufs.len());
        for (buf, (name, _)) in bufs.iter().zip(args) {
            views.push(TensorRef::new(elements(buf, name)?, buf.shape()));
        }
        let out = py.detach(|| f(&views)).map_err(value_error)?;
        raw(py, out)
    }
    let first = args[0].1;
    if PyBuffer::<f32>::get(first).is_ok() {
        typed(py, args, f32)
    } else if PyBuffer::<f64>::get(first).is_ok() {
        typed(py, args, f64)
    } else {
        Err(PyTypeError::new_err(format!("{}: float32 or float64 elements", args[0].0)))
    }
}

/// `torch.nn.functional.affine_grid(theta, size, align_corners)`.
#[pyfunction]
#[pyo3(name = "_affine_grid")]
pub(crate) fn affine_grid<'py>(
    py: Python<'py>,
    theta: &Bound<'py, PyAny>,
    size: Vec<usize>,
    align_corners: bool,
) -> PyResult<Raw<'py>> {
    call(
        py,
        &[("theta", theta)],
        |a| stn_kernels::affine_grid(a[0], &size, align_corners),
        |a| stn_kernels::affine_grid(a[0], &size, align_corners),
    )
}

/// `torch.nn.functional.grid_sample(input, grid, mode, padding_mode, align_corners)`.
#[pyfunction]
#[pyo3(name = "_grid_sample")]
pub(crate) fn grid_sample<'py>(
    py: Python<'py>,
    input: &Bound<'py, PyAny>,
    grid: &Bound<'py, PyAny>,
    mode: &str,
    padding_mode: &str,
    align_corners: bool,
) -> PyResult<Raw<'py>> {
    let opts = options(mode, padding_mode, align_corners)?;
    call(
        py,
        &[("input", input), ("grid", grid)],
        |a| stn_kernels::grid_sample(a[0], a[1], &opts),
        |a| stn_kernels::grid_sample(a[0], a[1], &opts),
    )
}

/// `grid_sample(input, affine_grid(theta, size), ...)` in one pass, without the grid; `size`
/// is the output's spatial size.
#[pyfunction]
#[pyo3(name = "_warp_affine")]
pub(crate) fn warp_affine<'py>(
    py: Python<'py>,
    input: &Bound<'py, PyAny>,
    theta: &Bound<'py, PyAny>,
    size: Vec<usize>,
    mode: &str,
    padding_mode: &str,
    align_corners: bool,
) -> PyResult<Raw<'py>> {
    let opts = options(mode, padding_mode, align_corners)?;
    call(
        py,
        &[("input", input), ("theta", theta)],
        |a| stn_kernels::affine_sample(a[0], a[1], &size, &opts),
        |a| stn_kernels::affine_sample(a[0], a[1], &size, &opts),
    )
}
