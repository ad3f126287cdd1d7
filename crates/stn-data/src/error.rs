//! The typed error of the data layer.

use std::path::PathBuf;

use thiserror::Error;

/// What went wrong reading or making data, with the file or argument it concerns.
#[derive(Debug, Error)]
pub enum DataError {
    /// A file could not be opened or read.
    #[error("{}: {message}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The system's message.
        message: String,
    },
    /// A file's contents are not what its format says (bad header, truncated, trailing bytes).
    #[error("{what}: {message}")]
    Format {
        /// The file or buffer (a path or a name).
        what: String,
        /// What is wrong.
        message: String,
    },
    /// An argument is out of its domain.
    #[error("`{arg}`: {message}")]
    Invalid {
        /// The argument.
        arg: &'static str,
        /// What is wrong, and what would be right.
        message: String,
    },
    /// The sampler refused a request (a size that cannot be allocated, for example).
    #[error(transparent)]
    Kernel(#[from] stn_kernels::KernelError),
}

/// `Result` with [`DataError`].
pub type Result<T, E = DataError> = std::result::Result<T, E>;
