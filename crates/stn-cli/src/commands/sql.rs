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
    /// Run on a Ballista cluster (`stn-scheduler` and `stn-executor`s started with a copy of
    /// the same run folder): df://HOST:PORT. Table paths must be absolute and readable by
    /// every executor; `COPY ... TO` is written by the executors. Options travel with each
    /// call: `stn_rectify(image, 'png_level=6')`.
    #[arg(long, value_name = "URL", conflicts_with_all = ["png_level", "base_dir", "allow_outside_paths"])]
    pub cluster: Option<String>,
    /// Seconds the statement's job may run on the cluster before it is cancelled there and
    /// the command stops with that error (default: no limit).
    #[arg(long, value_name = "SECONDS", requires = "cluster", value_parser = super::rectify::parse_timeout)]
    pub job_timeout: Option<f64>,
    /// Mutual TLS to a cluster started with --tls-cert/--tls-key/--tls-ca: this client's
    /// certificate and key, and the cluster's CA.
    #[command(flatten)]
    pub tls: stn_cluster::tls::TlsArgs,
    /// The master key (of --keys) that `COPY ... TO` Parquet outputs are encrypted with: with
    /// --keys, every Parquet output is encrypted.
    #[arg(long, value_name = "MASTER_KEY_ID")]
    pub encrypt: Option<String>,
    /// With --keys, let `COPY ... TO` write CSV, JSON or Arrow files (plaintext) anyway.
    #[arg(long)]
    pub allow_plaintext_output: bool,
    #[command(flatten)]
    pub key_args: super::args::KeyArgs,
    #[command(flatten)]
    pub rules: super::args::InputRules,
}

/// Runs the command.
pub fn exec(args: Args) -> Result<ExitCode> {
    args.rules.apply()?;
    if args.cluster.is_none() && args.tls != stn_cluster::tls::TlsArgs::default() {
        anyhow::bail!("stn sql: --tls-cert, --tls-key and --tls-ca are for a cluster (--cluster)");
    }
    let rectifier =
        Arc::new(Rectifier::from_run(&args.model).map_err(anyhow::Error::msg).context("stn sql")?);
    let options = SqlOptions {
        encoding: Encoding::Png(args.png_level),
        base_dir: args.rules.base_dir.clone(),
        allow_outside_paths: args.rules.allow_outside_paths,
        max_file_bytes: args.rules.max_file_bytes,
        ..SqlOptions::default()
    };
    let keys = args.key_args.keys(args.encrypt.as_deref()).context("stn sql")?;
    let batches = match &args.cluster {
        None => {
            let ctx = stn_sql::context(rectifier, options);
            if let Some(k) = keys {
                stn_sql::crypto::use_keys(&ctx, k);
            }
            stn_sql::query_with(&ctx, &args.query, args.allow_plaintext_output).map_err(|e| {
                let e = anyhow::Error::from(e);
                if format!("{e:#}").contains("decryption properties were not provided") {
                    e.context("an encrypted table: give its master keys with --keys FILE or STN_KEYS")
                } else {
                    e
                }
            })?
        }
        Some(url) => {
            stn_cluster::tls::install_provider();
            let tls = args.tls.load().map_err(anyhow::Error::msg).context("stn sql --cluster")?;
            let remote = stn_cluster::client::Remote::new(url.as_str()).with_tls(tls);
            let rt = tokio::runtime::Runtime::new().context("stn sql --cluster")?;
            stn_table::guard::guarded_anywhere("planning the query", || {
                rt.block_on(async {
                    let limit = args.job_timeout.map(std::time::Duration::from_secs_f64);
                    let mut config = remote.config(stn_cluster::client::cluster_config());
                    if limit.is_some() {
                        config = stn_cluster::client::deadline_config(config);
                    }
                    let ctx = stn_cluster::client::connect_with(url, rectifier.into(), config).await?;
                    // s3:// tables: read here for planning, by the executors with their own
                    // credentials (the environment they were started with).
                    stn_sql::store::register_for(&ctx, &args.query)?;
                    if let Some(k) = keys {
                        stn_cluster::client::require_private(&remote)?;
                        stn_cluster::client::use_keys(&ctx, k);
                        if args.allow_plaintext_output {
                            stn_sql::crypto::allow_plaintext_output(&ctx);
                        }
                    }
                    stn_cluster::client::sql_within(&ctx, url, &args.query, limit).await
                })
            })
            .map_err(anyhow::Error::msg)?
            .context("stn sql --cluster")?
        }
    };
    print!("{}", stn_sql::format(&batches, args.json)?);
    if !args.json {
        println!();
    }
    Ok(ExitCode::SUCCESS)
}
