//! The typed error of the crate: what was wrong, with which argument or file.

use std::path::PathBuf;

use stn_kernels::KernelError;
use thiserror::Error;

/// Everything that can go wrong in `stn`, named so a caller can tell the user.
#[derive(Debug, Error)]
pub enum StnError {
    /// A tensor argument has a wrong shape, rank or size (the kernels' own checks and words).
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// A tensor argument has a dtype the op cannot take.
    #[error("`{arg}`: dtype {got} is not supported; {expected}")]
    DType {
        /// The argument's name.
        arg: &'static str,
        /// What is supported, in words.
        expected: &'static str,
        /// The dtype that came, as Burn prints it.
        got: String,
    },
    /// A configuration value is out of its domain.
    #[error("config `{field}`: {message}")]
    Config {
        /// The configuration field.
        field: &'static str,
        /// What is wrong, and what would be right.
        message: String,
    },
    /// An augmentation op has a parameter out of its domain, or its spec does not parse.
    #[error("augment `{op}`: {message}")]
    Augment {
        /// The op (and parameter) at fault, for example `affine.rot`.
        op: String,
        /// What is wrong, and what would be right.
        message: String,
    },
    /// A warp has no inverse (a singular matrix, a folding spline) where one was asked for.
    #[error("sample {sample}: no inverse: {message}")]
    NoInverse {
        /// The sample of the batch.
        sample: usize,
        /// Why, with where.
        message: String,
    },
    /// A device was asked for that this build or this machine does not have.
    #[error("device `{name}`: {message}")]
    Device {
        /// The device name as given (`cpu`, `wgpu`, `vulkan`, `cuda`).
        name: String,
        /// Why it is not available, and what would make it so.
        message: String,
    },
    /// Reading or writing a saved model failed.
    #[error("{}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// `Result` with [`StnError`].
pub type Result<T, E = StnError> = std::result::Result<T, E>;
