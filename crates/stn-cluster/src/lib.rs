//! # stn-cluster: the image functions on a Ballista 55 cluster
//!
//! Rust has no stable ABI, so a Ballista cluster cannot load a function plugin: the project
//! ships its own scheduler and executor programs, `stn-scheduler` and `stn-executor`, which are
//! Ballista's stock programs (same flags) with `stn_rectify`, `stn_theta`, `stn_error` and
//! `stn_rectified` (see `stn-sql`) registered, the model loaded lazily from `--model RUN_DIR`.
//!
//! - [`server`]: what the two programs add to Ballista's (the session of the scheduler, the
//!   function registry of the executors, loopback binding by default);
//! - [`client`]: connecting to a cluster (`df://HOST:PORT`), running SQL there, rectifying a
//!   folder of Parquet files there with the same writer as the local run, and an in-process
//!   cluster (Ballista's standalone scheduler and executors) for tests and trials;
//! - [`local`]: a cluster of real `stn-scheduler` / `stn-executor` processes on loopback.
//!
//! ```no_run
//! use stn_cluster::client;
//! use stn_sql::Model;
//!
//! let rt = tokio::runtime::Runtime::new()?;
//! let rows = rt.block_on(async {
//!     let ctx = client::connect("df://127.0.0.1:50050", Model::lazy("runs/rts-st")).await?;
//!     client::sql(&ctx, "SELECT id, stn_theta(image) AS theta FROM '/data/digits/'").await
//! })?;
//! println!("{}", stn_sql::format(&rows, false)?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

pub mod client;
pub mod local;
pub mod server;
pub mod tls;

/// What can go wrong with a cluster, each naming what it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A scheduler URL that is not `df://HOST:PORT`.
    #[error(
        "bad cluster URL `{url}`: {message} (expected df://HOST:PORT, for example df://127.0.0.1:50050)"
    )]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        message: String,
    },
    /// No scheduler answers at the URL.
    #[error("no Ballista scheduler answers at {url}: {message}")]
    Unreachable {
        /// The URL given.
        url: String,
        /// Why.
        message: String,
    },
    /// The model folder cannot serve.
    #[error("{0}")]
    Model(String),
    /// A query failed (on the cluster or in planning).
    #[error("{0}")]
    Query(#[from] datafusion::error::DataFusionError),
    /// Reading a table or writing an output.
    #[error("{0}")]
    Table(#[from] stn_table::TableError),
    /// A job ran past its deadline (`--job-timeout`) and was cancelled on the cluster.
    #[error("{what} did not finish within {seconds} s (--job-timeout); {cancelled}")]
    Timeout {
        /// The job, in words.
        what: String,
        /// The deadline.
        seconds: u64,
        /// What became of the job on the cluster.
        cancelled: String,
    },
}

/// A result of this crate.
pub type Result<T, E = ClusterError> = std::result::Result<T, E>;
