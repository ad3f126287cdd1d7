//! `stn rectify`: image files, or image tables.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use stn_cluster::client::JobTimes;
use stn_data::image_io::{Encoding, PngLevel};
use stn_models::rectify::Rectifier;
use stn_table::batch::Timings;
use stn_table::rectify::{rectify_table, Event, OnError, RectifyOptions};

/// `--format`.
#[derive(Clone, Copy, ValueEnum)]
pub enum FormatArg {
    Png,
    Jpeg,
}

/// `--on-error`.
#[derive(Clone, Copy, ValueEnum)]
pub enum OnErrorArg {
    /// The row gets null and its reason in `stn_error`; the others go on.
    Null,
    /// Abort at the first bad row, leaving no output for that file.
    Fail,
}

/// Apply a trained transformer to image files, or to an image table.
#[derive(clap::Args)]
pub struct Args {
    /// The run folder written by `stn train` (an ST model).
    #[arg(long)]
    pub model: PathBuf,
    /// The device the transformer runs on: cpu, wgpu, vulkan, cuda (GPU devices need a build
    /// with `--features gpu`). Decoding and encoding stay on the CPU.
    #[arg(long, default_value = "cpu")]
    pub device: stn::device::DeviceKind,
    /// Input images (PNG, JPEG).
    #[arg(required_unless_present = "table", conflicts_with = "table")]
    pub inputs: Vec<PathBuf>,
    /// An image table: a Parquet file, or a folder of Parquet files (then --out is a folder
    /// with one output file per input file).
    #[arg(long)]
    pub table: Option<PathBuf>,
    /// The image column of the table (default: detected from the schema).
    #[arg(long, requires = "table")]
    pub column: Option<String>,
    /// Output folder (files), or the output file / folder (tables). Never overwritten.
    #[arg(long)]
    pub out: PathBuf,
    /// Format of the rectified images (tables: for columns of encoded images).
    #[arg(long, value_enum, default_value = "png")]
    pub format: FormatArg,
    /// PNG compression: `fast` (fdeflate, the default) or a zlib level 0-9 (6 = zlib's default).
    #[arg(long, default_value = "fast", value_parser = |s: &str| s.parse::<PngLevel>())]
    pub png_level: PngLevel,
    /// JPEG quality (with --format jpeg).
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub jpeg_quality: u8,
    /// What to do with a bad row of a table.
    #[arg(long, value_enum, default_value = "null", requires = "table")]
    pub on_error: OnErrorArg,
    /// Rows per batch through the model (tables).
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Largest image accepted, in pixels (a header claiming more is that row's error).
    #[arg(long, default_value_t = stn_table::codec::DEFAULT_MAX_PIXELS)]
    pub max_pixels: u64,
    /// Print the summary as JSON (tables).
    #[arg(long)]
    pub json: bool,
    /// Rectify the table on a Ballista cluster (`stn-scheduler` and `stn-executor`s started
    /// with a copy of the same run folder): df://HOST:PORT. Every executor must read the
    /// table at the same path; the outputs are written here.
    #[arg(long, value_name = "URL", requires = "table")]
    pub cluster: Option<String>,
    /// Files rectified on the cluster at once (one job each).
    #[arg(long, default_value_t = 4, requires = "cluster", value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: u16,
    /// Seconds a file's job may run on the cluster before it is cancelled there and the run
    /// stops with that error (default: no limit).
    #[arg(long, value_name = "SECONDS", requires = "cluster", value_parser = parse_timeout)]
    pub job_timeout: Option<f64>,
    /// Times a file's job may run on the cluster when an executor is lost under it (its
    /// connection breaks or its results are gone); other errors stop the run at once.
    #[arg(long, value_name = "N", default_value_t = 3, requires = "cluster", value_parser = clap::value_parser!(u16).range(1..=100))]
    pub job_attempts: u16,
    /// Mutual TLS to a cluster started with --tls-cert/--tls-key/--tls-ca: this client's
    /// certificate and key, and the cluster's CA.
    #[command(flatten)]
    pub tls: stn_cluster::tls::TlsArgs,
    /// Encrypt the outputs of plaintext inputs too, under this master key of --keys (outputs
    /// of encrypted inputs always are: under the input's footer master key unless this names
    /// another).
    #[arg(long, value_name = "MASTER_KEY_ID")]
    pub encrypt: Option<String>,
    #[command(flatten)]
    pub key_args: super::args::KeyArgs,
    #[command(flatten)]
    pub rules: super::args::InputRules,
    #[command(flatten)]
    pub delta: super::args::DeltaReadArgs,
    /// Write the outputs as a Delta table at --out, in one commit: a new table (`create`) or
    /// one more version of an existing one (`append`). A failed run commits nothing.
    #[arg(long, value_enum, requires = "table")]
    pub mode: Option<super::args::DeltaModeArg>,
}

/// Parses `--job-timeout`: a positive number of seconds.
pub fn parse_timeout(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v < 1e9 => Ok(v),
        _ => Err(format!("a positive number of seconds, got `{s}`")),
    }
}

/// Runs the command; exit code 1 if any input failed.
pub fn exec(args: Args) -> Result<ExitCode> {
    args.rules.apply()?;
    if args.cluster.is_none() && args.tls != stn_cluster::tls::TlsArgs::default() {
        anyhow::bail!("stn rectify: --tls-cert, --tls-key and --tls-ca are for a cluster (--cluster)");
    }
    let rectifier = Rectifier::from_run(&args.model).map_err(anyhow::Error::msg).context("stn rectify")?;
    let rectifier = match args.device {
        stn::device::DeviceKind::Cpu => rectifier,
        kind => rectifier.on_device(&stn::device::select(kind).context("--device")?.device),
    };
    let transform = rectifier.transform();
    let encoding = match args.format {
        FormatArg::Png => Encoding::Png(args.png_level),
        FormatArg::Jpeg => Encoding::Jpeg(args.jpeg_quality),
    };
    let Some(table) = &args.table else {
        let mut log = |line: String| eprintln!("{line}");
        let r = stn_cli::rectify::rectify(&rectifier, &args.inputs, &args.out, encoding, &mut log)
            .map_err(anyhow::Error::msg)
            .context("stn rectify")?;
        for p in &r.cleaned {
            eprintln!("removed {}, left by an interrupted run", p.display());
        }
        if r.skipped.is_empty() {
            println!(
                "rectified {} of {} images into {}",
                r.written.len(),
                args.inputs.len(),
                args.out.display()
            );
        } else {
            println!(
                "rectified {} of {} images into {} ({} done before)",
                r.written.len() + r.skipped.len(),
                args.inputs.len(),
                args.out.display(),
                r.skipped.len()
            );
        }
        return Ok(if r.failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) });
    };
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let opts = RectifyOptions {
        column: args.column.clone(),
        encoding,
        on_error: match args.on_error {
            OnErrorArg::Null => OnError::Null,
            OnErrorArg::Fail => OnError::Fail,
        },
        batch_size: args.batch_size,
        max_pixels: args.max_pixels,
        base_dir: args.rules.base_dir.clone(),
        allow_outside_paths: args.rules.allow_outside_paths,
        max_file_bytes: args.rules.max_file_bytes,
        keys: args.key_args.keys(args.encrypt.as_deref()).context("stn rectify")?,
        delta_at: args.delta.at(),
        delta_mode: args.mode.map(Into::into),
        ..RectifyOptions::default()
    };
    let tty = std::io::stderr().is_terminal();
    let bar = if tty { ProgressBar::new(0) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("[{bar:30}] {pos}/{len} rows {per_sec} {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    let start = Instant::now();
    let mut last_line = Instant::now();
    let mut total = 0usize;
    let mut shown_errors = 0usize;
    let mut events = |e: Event<'_>| match e {
        Event::Start { files, rows } => {
            total = rows;
            bar.set_length(rows as u64);
            if !tty {
                eprintln!("rectifying {rows} rows in {files} file(s)");
            }
        }
        Event::Rows { rows } => {
            bar.set_position(rows as u64);
            if !tty && last_line.elapsed() >= Duration::from_secs(5) {
                last_line = Instant::now();
                let rate = rows as f64 / start.elapsed().as_secs_f64();
                eprintln!("{rows}/{total} rows, {rate:.0} rows/s");
            }
        }
        Event::RowFailed { file, row, reason } => {
            shown_errors += 1;
            if shown_errors <= 100 {
                bar.suspend(|| eprintln!("{} row {row}: {reason}", file.display()));
            } else if shown_errors == 101 {
                bar.suspend(|| eprintln!("(more failed rows: see the stn_error column)"));
            }
        }
        Event::PartialRemoved(p) => {
            bar.suspend(|| eprintln!("removed {}, left by an interrupted run", p.display()))
        }
        Event::Retry { file, attempt, attempts, reason } => bar.suspend(|| {
            eprintln!("{}: {reason}; running its job again (attempt {attempt} of {attempts})", file.display())
        }),
        Event::FileDone(r) => {
            let line = if r.skipped {
                format!("{}: already rectified in {}, skipped", r.input.display(), r.output.display())
            } else {
                format!(
                    "{} -> {}: {} rows, {} failed",
                    r.input.display(),
                    r.output.display(),
                    r.rows,
                    r.failed
                )
            };
            bar.suspend(|| eprintln!("{line}"));
        }
    };
    let (reports, jobs) = match &args.cluster {
        None => (
            rectify_table(&rectifier, table, &args.out, &opts, &mut events).context("stn rectify --table")?,
            None,
        ),
        Some(url) => {
            stn_cluster::tls::install_provider();
            let tls = args.tls.load().map_err(anyhow::Error::msg).context("stn rectify --cluster")?;
            let runs = stn_cluster::client::rectify_table(
                &stn_cluster::client::Remote::new(url.as_str()).with_tls(tls),
                Arc::new(rectifier),
                table,
                &args.out,
                &opts,
                stn_cluster::client::JobLimits {
                    jobs: usize::from(args.jobs),
                    timeout: args.job_timeout.map(Duration::from_secs_f64),
                    attempts: usize::from(args.job_attempts),
                },
                &mut events,
            )
            .context("stn rectify --table --cluster")?;
            let mut jobs = JobTimes::default();
            for r in &runs {
                jobs.scheduling += r.job.scheduling;
                jobs.execution += r.job.execution;
                jobs.total += r.job.total;
                jobs.transferred_bytes += r.job.transferred_bytes;
            }
            (runs.into_iter().map(|r| r.file).collect::<Vec<_>>(), Some(jobs))
        }
    };
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    let rows: usize = reports.iter().filter(|r| !r.skipped).map(|r| r.rows).sum();
    let failed: usize = reports.iter().map(|r| r.failed).sum();
    let mut t = Timings::default();
    let mut io = Duration::ZERO;
    for r in &reports {
        t.add(&r.timings);
        io += r.io;
    }
    if let Some(note) = stn::repro::bitwise_note() {
        eprintln!("note: {note}");
    }
    if args.json {
        let mut doc = serde_json::json!({
            "files": reports.len(),
            "skipped_files": reports.iter().filter(|r| r.skipped).count(),
            "rows": rows, "failed": failed, "seconds": secs,
            "rows_per_s": rows as f64 / secs,
            "decode_s": t.decode.as_secs_f64(), "localize_s": t.localize.as_secs_f64(),
            "warp_s": t.warp.as_secs_f64(), "encode_s": t.encode.as_secs_f64(), "read_write_s": io.as_secs_f64(),
        });
        // What the outputs hold, whatever their encoding: the same on every machine that
        // computes the same (read back from the outputs, in file order; after `seconds`).
        let outputs: Vec<_> = reports.iter().map(|r| r.output.clone()).collect();
        doc["output_digest"] = stn_table::digest::output_digest(&outputs, opts.keys.as_ref())
            .context("stn rectify: the output digest")?
            .into();
        // What the transformer did to the table (theta decomposed: stn::explain), also read
        // back from the outputs, so a re-run that skips files says the same.
        let mut summary = stn_table::explain::Summary::new();
        for o in &outputs {
            summary
                .add_file(o, opts.keys.as_ref(), transform)
                .context("stn rectify: explaining the outputs' theta")?;
        }
        doc["explain"] = serde_json::to_value(&summary)?;
        if let Some(j) = jobs {
            // Summed over the files' jobs (which overlap in time with --jobs above 1).
            doc["cluster"] = serde_json::json!({
                "scheduling_s": j.scheduling.as_secs_f64(), "execution_s": j.execution.as_secs_f64(),
                "total_s": j.total.as_secs_f64(), "transferred_bytes": j.transferred_bytes,
            });
        }
        println!("{doc}");
    } else {
        println!(
            "{} rows done, {failed} failed, in {secs:.1} s ({:.0} rows/s); time: decode {:.1} s, localization {:.1} s, \
             warp {:.1} s, encode {:.1} s, read + write {:.1} s",
            rows - failed,
            rows as f64 / secs,
            t.decode.as_secs_f64(),
            t.localize.as_secs_f64(),
            t.warp.as_secs_f64(),
            t.encode.as_secs_f64(),
            io.as_secs_f64()
        );
        if let Some(j) = jobs {
            println!(
                "cluster jobs (summed over files): scheduling {:.2} s, execution {:.2} s, until the last row here {:.2} s, \
                 {:.1} MB of results over Flight",
                j.scheduling.as_secs_f64(),
                j.execution.as_secs_f64(),
                j.total.as_secs_f64(),
                j.transferred_bytes as f64 / 1e6
            );
        }
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
