//! `stn sql`: SQL over image tables with the transformer's functions (DataFusion).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use stn_data::image_io::{Encoding, PngLevel};
use stn_models::rectify::Rectifier;
use stn_sql::SqlOptions;

/// Run a SQL statement with `stn_rectify(image)`, `stn_theta(image)` and `stn_error(image)`.
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
    let ctx = stn_sql::context(rectifier, options);
    let batches = stn_sql::query(&ctx, &args.query).context("stn sql")?;
    print!("{}", stn_sql::format(&batches, args.json)?);
    if !args.json {
        println!();
    }
    Ok(ExitCode::SUCCESS)
}
