//! The typed error of image tables.

use std::path::PathBuf;

use thiserror::Error;

/// What went wrong with a table, naming the file (and the row, for row errors).
#[derive(Debug, Error)]
pub enum TableError {
    /// A file or folder could not be read, listed or written.
    #[error("{}: {message}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A file is not a Parquet file, or is corrupt.
    #[error("{}: not a readable Parquet file: {message}", path.display())]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The reader's message.
        message: String,
    },
    /// The image (or label) column is missing, ambiguous or of a type that holds no images.
    #[error("{}: {message}", path.display())]
    Column {
        /// The file.
        path: PathBuf,
        /// What is wrong, and the columns there are.
        message: String,
    },
    /// A row could not be processed (with `--on-error fail`, or where a row must be good).
    #[error("{} row {row}: {reason}", path.display())]
    Row {
        /// The file.
        path: PathBuf,
        /// The row's index in the file, from 0.
        row: usize,
        /// Why.
        reason: String,
    },
    /// The output exists and is not to be overwritten, or the output place is unusable.
    #[error("{}: {message}", path.display())]
    Output {
        /// The output file or folder.
        path: PathBuf,
        /// What is wrong, and what to do.
        message: String,
    },
    /// An encrypted file without its keys, keys that do not open it, or an output that could
    /// not be protected as its input is.
    #[error("{}: {message}", path.display())]
    Keys {
        /// The file.
        path: PathBuf,
        /// What is wrong, and what to do (never key bytes).
        message: String,
    },
    /// The model or the rectification core failed.
    #[error("{0}")]
    Model(String),
}

/// `Result` with [`TableError`].
pub type Result<T, E = TableError> = std::result::Result<T, E>;
