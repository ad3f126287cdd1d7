//! `stn augment`: augmented copies of image files or of an image table.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use stn::augment::Augment;
use stn_data::image_io::{Encoding, PngLevel};
use stn_table::augment::{augment_table, AugmentTableOptions, MAX_COPIES};

use super::rectify::FormatArg;

/// Arguments of `stn augment` (its help is on the subcommand in main.rs).
#[derive(clap::Args)]
pub struct Args {
    /// The augmentation: ops separated by `;`, e.g. `affine:rot=30,scale=0.8-1.2;tps:0.1`.
    #[arg(long, value_name = "SPEC")]
    pub spec: String,
    /// A folder of image files (PNG, JPEG; taken in name order).
    #[arg(long, required_unless_present = "table", conflicts_with = "table")]
    pub images: Option<PathBuf>,
    /// An image table: a Parquet file, or a folder of Parquet files (then --out is a folder).
    #[arg(long)]
    pub table: Option<PathBuf>,
    /// The image column of the table (default: detected from the schema).
    #[arg(long, requires = "table")]
    pub column: Option<String>,
    /// Output folder (images), or the output file / folder (tables). Never overwritten.
    #[arg(long)]
    pub out: PathBuf,
    /// Augmented copies of every image.
    #[arg(long, default_value_t = 1)]
    pub copies: usize,
    /// Seed: copy k of image (or row) i is warped with the key (seed, k, i).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Format of the written images (tables: for columns of encoded images).
    #[arg(long, value_enum, default_value = "png")]
    pub format: FormatArg,
    /// PNG compression: `fast` or a zlib level 0-9.
    #[arg(long, default_value = "fast", value_parser = |s: &str| s.parse::<PngLevel>())]
    pub png_level: PngLevel,
    /// JPEG quality (with --format jpeg).
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub jpeg_quality: u8,
    /// Largest image accepted, in pixels (tables).
    #[arg(long, default_value_t = stn_table::codec::DEFAULT_MAX_PIXELS)]
    pub max_pixels: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
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
}

/// Runs the command; exit code 1 if any input failed.
pub fn exec(args: Args) -> Result<ExitCode> {
    let aug = Augment::parse(&args.spec).context("--spec")?;
    if args.copies == 0 || args.copies > MAX_COPIES {
        bail!("--copies must be from 1 to {MAX_COPIES}, got {}", args.copies);
    }
    args.rules.apply()?;
    let encoding = match args.format {
        FormatArg::Png => Encoding::Png(args.png_level),
        FormatArg::Jpeg => Encoding::Jpeg(args.jpeg_quality),
    };
    if let Some(dir) = &args.images {
        let inputs = stn_cli::augment::image_files(dir).map_err(anyhow::Error::msg)?;
        let outcome = stn_cli::augment::augment_files(
            &aug,
            &inputs,
            &args.out,
            args.copies,
            args.seed,
            encoding,
            &mut |line| eprintln!("{line}"),
        )
        .map_err(anyhow::Error::msg)
        .context("stn augment")?;
        let summary = serde_json::json!({
            "written": outcome.written.len(),
            "done_before": outcome.skipped.len(),
            "failed": outcome.failed.iter().map(|(p, e)| serde_json::json!({"input": p.display().to_string(), "error": e})).collect::<Vec<_>>(),
            "record": outcome.record.as_ref().map(|p| p.display().to_string()),
        });
        if args.json {
            println!("{summary}");
        } else {
            println!(
                "{} images written to {} ({} done before, {} inputs failed)",
                outcome.written.len(),
                args.out.display(),
                outcome.skipped.len(),
                outcome.failed.len()
            );
        }
        return Ok(if outcome.failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    let table = args.table.as_ref().expect("clap requires --images or --table");
    let opts = AugmentTableOptions {
        column: args.column.clone(),
        copies: args.copies,
        seed: args.seed,
        encoding,
        batch_size: 256,
        max_pixels: args.max_pixels,
        base_dir: args.rules.base_dir.clone(),
        allow_outside_paths: args.rules.allow_outside_paths,
        max_file_bytes: args.rules.max_file_bytes,
        keys: args.key_args.keys(args.encrypt.as_deref()).context("stn augment")?,
        delta_at: args.delta.at(),
    };
    let reports = augment_table(&aug, table, &args.out, &opts, &mut |rows| eprint!("\r{rows} rows"))
        .context("stn augment")?;
    eprintln!();
    let failed: usize = reports.iter().map(|r| r.failed).sum();
    let rows_out: usize = reports.iter().map(|r| r.rows_out).sum();
    if args.json {
        let files: Vec<_> = reports
            .iter()
            .map(|r| {
                serde_json::json!({
                    "input": r.input.display().to_string(), "output": r.output.display().to_string(),
                    "rows_in": r.rows_in, "rows_out": r.rows_out, "failed": r.failed,
                })
            })
            .collect();
        println!("{}", serde_json::json!({"files": files, "rows_out": rows_out, "failed": failed}));
    } else {
        for r in &reports {
            println!(
                "{} -> {}: {} rows, {} written, {} without an image",
                r.input.display(),
                r.output.display(),
                r.rows_in,
                r.rows_out,
                r.failed
            );
        }
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
