//! The typed error every public function returns instead of panicking.

use thiserror::Error;

/// What went wrong with an argument, named so a caller can tell the user.
///
/// Every variant names the argument (`arg`), what was expected and what came.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KernelError {
    /// A tensor has the wrong number of dimensions.
    #[error("`{arg}`: expected {expected}, got a rank-{got} tensor of shape {shape:?}")]
    Rank {
        /// The argument's name.
        arg: &'static str,
        /// What was expected, in words (for example "rank 4 (N, C, H, W)").
        expected: String,
        /// The rank that came.
        got: usize,
        /// The shape that came.
        shape: Vec<usize>,
    },
    /// A tensor has the right rank but a wrong extent somewhere.
    #[error("`{arg}`: expected shape {expected}, got {got:?}")]
    Shape {
        /// The argument's name.
        arg: &'static str,
        /// The expected shape, in words (for example "(4, 2, 3)").
        expected: String,
        /// The shape that came.
        got: Vec<usize>,
    },
    /// The data buffer does not hold as many elements as the shape says.
    #[error("`{arg}`: shape {shape:?} needs {expected} elements, the buffer holds {got}")]
    Length {
        /// The argument's name.
        arg: &'static str,
        /// The shape that came.
        shape: Vec<usize>,
        /// Elements the shape needs.
        expected: usize,
        /// Elements the buffer holds.
        got: usize,
    },
    /// A size is zero where every size must be positive.
    #[error("`{arg}`: dimension {dim} is zero in shape {shape:?}; every size must be at least 1")]
    ZeroSize {
        /// The argument's name.
        arg: &'static str,
        /// Index of the zero dimension.
        dim: usize,
        /// The shape that came.
        shape: Vec<usize>,
    },
    /// The product of the sizes does not fit in `usize`, or its bytes exceed `isize::MAX`.
    #[error("`{arg}`: shape {shape:?} is too large: its element count overflows the address space")]
    TooLarge {
        /// The argument's name.
        arg: &'static str,
        /// The shape that came.
        shape: Vec<usize>,
    },
    /// The memory for a result could not be allocated.
    #[error("`{arg}`: cannot allocate {bytes} bytes for a result of shape {shape:?}")]
    Alloc {
        /// The result's name.
        arg: &'static str,
        /// The shape of the result.
        shape: Vec<usize>,
        /// Bytes requested.
        bytes: usize,
    },
    /// Two arguments disagree on the batch size.
    #[error("batch sizes disagree: `{arg}` has {got}, `{other}` has {expected}")]
    Batch {
        /// The argument whose batch size is off.
        arg: &'static str,
        /// The argument it was compared with.
        other: &'static str,
        /// The other argument's batch size.
        expected: usize,
        /// This argument's batch size.
        got: usize,
    },
    /// A combination of options the kernels do not offer (for example bicubic in 3-D).
    #[error("`{arg}`: {message}")]
    Unsupported {
        /// The argument or option at fault.
        arg: &'static str,
        /// Why, and what to use instead.
        message: String,
    },
    /// A scalar argument is out of its domain (for example a thin-plate-spline grid of 1 point).
    #[error("`{arg}`: {message}")]
    InvalidValue {
        /// The argument at fault.
        arg: &'static str,
        /// What was expected and what came.
        message: String,
    },
}

/// Result alias of this crate.
pub type Result<T, E = KernelError> = std::result::Result<T, E>;
