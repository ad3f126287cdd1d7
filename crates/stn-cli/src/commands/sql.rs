//! `stn sql`: SQL over image tables with the transformer's functions (DataFusion).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use stn_data::image_io::{Encoding, PngLevel};
use stn_models::rectify::Rectifier;
use stn_sql::SqlOptions;

/// Run a SQL statement with `stn_rectify(image)`, `stn_theta(image)`, `stn_error(image)` and
/// `stn_rectified(image)`, here or on a cluster.
#[derive(clap::Args)]
pub struct Args {
    /// The run folder written by `stn train` (an ST model).
    #[arg(long)]
    pub model: PathBuf,
    /// The statement. A quoted path is a table: `FROM 'in.parquet'` or `FROM 'folder/'`;
    /// `COPY (SELECT ...) TO 'out.parquet'` writes a table.
    pub query: String,
    /// Print the rows as JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
    /// PNG compression of `stn_rectify` on encoded columns: `fast` or a zlib level 0-9.
    #[arg(long, default_value = "fast", value_parser = |s: &str| s.parse::<PngLevel>())]
    pub png_level: PngLevel,
    /// Folder that relative Hugging Face `path`s are read from (default: the current folder).
    #[arg(long)]
    pub base_dir: Option<PathBuf>,
    /// Run on a Ballista cluster (`stn-scheduler` and `stn-executor`s started with a copy of
    /// the same run folder): df://HOST:PORT. Table paths must be absolute and readable by
    /// every executor; `COPY ... TO` is written by the executors. Options travel with each
    /// call: `stn_rectify(image, 'png_level=6')`.
    #[arg(long, value_name = "URL", conflicts_with_all = ["png_level", "base_dir"])]
    pub cluster: Option<String>,
}

/// Runs the command.
pub fn exec(args: Args) -> Result<ExitCode> {
    let rectifier =
        Arc::new(Rectifier::from_run(&args.model).map_err(anyhow::Error::msg).context("stn sql")?);
    let options = SqlOptions {
        encoding: Encoding::Png(args.png_level),
        base_dir: args.base_dir,
        ..SqlOptions::default()
    };
    let batches = match &args.cluster {
        None => stn_sql::query(&stn_sql::context(rectifier, options), &args.query).context("stn sql")?,
        Some(url) => {
            let rt = tokio::runtime::Runtime::new().context("stn sql --cluster")?;
            rt.block_on(async {
                let ctx = stn_cluster::client::connect(url, rectifier.into()).await?;
                stn_cluster::client::sql(&ctx, &args.query).await
            })
            .context("stn sql --cluster")?
        }
    };
    print!("{}", stn_sql::format(&batches, args.json)?);
    if !args.json {
        println!();
    }
    Ok(ExitCode::SUCCESS)
}
