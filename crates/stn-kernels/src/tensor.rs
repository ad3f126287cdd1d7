//! Borrowed and owned dense tensors (row-major, contiguous), and the checks every entry point runs.

use crate::error::{KernelError, Result};
use crate::float::Float;

/// A borrowed, contiguous, row-major tensor: a data slice and its shape.
///
/// Construction does not validate; every kernel entry point checks rank, sizes and length
/// and returns a [`KernelError`] naming the argument.
#[derive(Debug, Clone, Copy)]
pub struct TensorRef<'a, T> {
    /// The elements, row-major.
    pub data: &'a [T],
    /// The extent of each dimension.
    pub shape: &'a [usize],
}

impl<'a, T> TensorRef<'a, T> {
    /// Pairs a data slice with its shape.
    pub fn new(data: &'a [T], shape: &'a [usize]) -> Self {
        Self { data, shape }
    }
}

/// An owned, contiguous, row-major tensor returned by the kernels.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor<T> {
    /// The elements, row-major.
    pub data: Vec<T>,
    /// The extent of each dimension.
    pub shape: Vec<usize>,
}

impl<T> Tensor<T> {
    /// Borrows this tensor as a [`TensorRef`].
    pub fn view(&self) -> TensorRef<'_, T> {
        TensorRef { data: &self.data, shape: &self.shape }
    }
}

/// Product of `shape`, checked: no zero, no overflow, bytes within `isize::MAX`.
pub(crate) fn checked_numel<T>(arg: &'static str, shape: &[usize]) -> Result<usize> {
    if let Some(dim) = shape.iter().position(|&s| s == 0) {
        return Err(KernelError::ZeroSize { arg, dim, shape: shape.to_vec() });
    }
    let too_large = || KernelError::TooLarge { arg, shape: shape.to_vec() };
    let n = shape.iter().try_fold(1usize, |acc, &s| acc.checked_mul(s)).ok_or_else(too_large)?;
    match n.checked_mul(std::mem::size_of::<T>().max(1)) {
        Some(bytes) if bytes <= isize::MAX as usize => Ok(n),
        _ => Err(too_large()),
    }
}

/// Checks rank (one of `ranks`), sizes and buffer length of a tensor argument.
pub(crate) fn check_tensor<T>(
    arg: &'static str,
    t: &TensorRef<'_, T>,
    ranks: &[usize],
    what: &str,
) -> Result<usize> {
    if !ranks.contains(&t.shape.len()) {
        return Err(KernelError::Rank {
            arg,
            expected: what.to_string(),
            got: t.shape.len(),
            shape: t.shape.to_vec(),
        });
    }
    let n = checked_numel::<T>(arg, t.shape)?;
    if t.data.len() != n {
        return Err(KernelError::Length { arg, shape: t.shape.to_vec(), expected: n, got: t.data.len() });
    }
    Ok(n)
}

/// Requires `shape == expected`, naming `arg` otherwise.
pub(crate) fn check_shape_eq(arg: &'static str, shape: &[usize], expected: &[usize]) -> Result<()> {
    if shape != expected {
        return Err(KernelError::Shape { arg, expected: fmt_shape(expected), got: shape.to_vec() });
    }
    Ok(())
}

/// Requires the leading (batch) dimension of `arg` to equal that of `other`.
pub(crate) fn check_batch(arg: &'static str, got: usize, other: &'static str, expected: usize) -> Result<()> {
    if got != expected {
        return Err(KernelError::Batch { arg, other, expected, got });
    }
    Ok(())
}

/// `(a, b, c)` for messages.
pub(crate) fn fmt_shape(shape: &[usize]) -> String {
    let parts: Vec<String> = shape.iter().map(|s| s.to_string()).collect();
    format!("({})", parts.join(", "))
}

/// An empty vector with room for `shape`'s elements, or [`KernelError::Alloc`] when memory
/// runs out (instead of aborting the process).
pub(crate) fn reserve<T: Float>(arg: &'static str, shape: &[usize]) -> Result<Vec<T>> {
    let len = checked_numel::<T>(arg, shape)?;
    let mut v: Vec<T> = Vec::new();
    v.try_reserve_exact(len).map_err(|_| KernelError::Alloc {
        arg,
        shape: shape.to_vec(),
        bytes: len.saturating_mul(std::mem::size_of::<T>()),
    })?;
    Ok(v)
}

/// A zero-filled buffer for a result, or [`KernelError::Alloc`] when memory runs out
/// (instead of aborting the process).
pub(crate) fn zeroed<T: Float>(arg: &'static str, shape: &[usize]) -> Result<Vec<T>> {
    // Probe first so that an impossible size is an error, not an abort; then take zeroed
    // memory from the allocator (fresh pages need no memset).
    let len = reserve::<T>(arg, shape)?.capacity();
    Ok(vec![T::ZERO; len])
}

/// A result buffer that `fill` writes completely through the raw pointer it gets, without
/// zeroing it first (the pointer addresses `numel(shape)` uninitialized elements).
///
/// # Safety
/// `fill` writes every one of the elements before returning.
pub(crate) unsafe fn filled_raw<T: Float>(
    arg: &'static str,
    shape: &[usize],
    fill: impl FnOnce(*mut T),
) -> Result<Vec<T>> {
    let len = checked_numel::<T>(arg, shape)?;
    let mut v = reserve::<T>(arg, shape)?;
    fill(v.as_mut_ptr());
    // SAFETY: capacity >= len, and the caller guarantees `fill` initialized all len elements.
    unsafe { v.set_len(len) };
    Ok(v)
}

/// Builds an owned tensor of `shape` filled with zeros.
pub(crate) fn zeros<T: Float>(arg: &'static str, shape: &[usize]) -> Result<Tensor<T>> {
    Ok(Tensor { data: zeroed(arg, shape)?, shape: shape.to_vec() })
}
