//! `stn eval`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use stn_cli::run;

use super::args::DistortionArg;

/// Arguments of `stn eval` (its help is on the subcommand in main.rs).
#[derive(clap::Args)]
pub struct Args {
    /// The run folder written by `stn train`.
    #[arg(long)]
    pub model: PathBuf,
    /// IDX images file (default: the embedded test split).
    #[arg(long, requires = "labels")]
    pub images: Option<PathBuf>,
    /// IDX labels file.
    #[arg(long, requires = "images")]
    pub labels: Option<PathBuf>,
    /// An image table to evaluate on (a Parquet file or a folder of them): images made gray
    /// and resized to the size the model was trained on.
    #[arg(long, conflicts_with_all = ["images", "labels"])]
    pub table: Option<PathBuf>,
    /// The image column of --table (default: detected).
    #[arg(long, requires = "table")]
    pub image_column: Option<String>,
    /// The label column of --table.
    #[arg(long, default_value = "label", requires = "table")]
    pub label_column: String,
    /// Distortion (default: the one the model was trained on).
    #[arg(long, value_enum)]
    pub distortion: Option<DistortionArg>,
    /// Seed of the distortion.
    #[arg(long, default_value_t = 2)]
    pub seed: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub key_args: super::args::KeyArgs,
    #[command(flatten)]
    pub rules: super::args::InputRules,
    #[command(flatten)]
    pub delta: super::args::DeltaReadArgs,
}

/// Runs the command.
pub fn exec(args: Args) -> Result<ExitCode> {
    let Args {
        model,
        images,
        labels,
        distortion,
        seed,
        json,
        table,
        image_column,
        label_column,
        key_args,
        rules,
        delta,
    } = args;
    rules.apply()?;
    let (net, cfg) = run::load_run(&model).map_err(anyhow::Error::msg).context("stn eval")?;
    let dist = distortion.map_or(cfg.distortion.clone(), |d| d.name().to_string());
    let data = match (images, labels) {
        _ if table.is_some() => {
            let path = table.as_deref().expect("checked");
            let d: stn_data::Distortion = dist.parse()?;
            // The size before the distortion: what the table run resized to, else the
            // model's input (undistorted) or the 28 x 28 digits the distortions are made for.
            let size = cfg
                .table
                .as_ref()
                .and_then(|t| t.image_size)
                .unwrap_or(if d == stn_data::Distortion::None { cfg.model.input_size } else { [28, 28] });
            let t = stn_table::dataset::load_labelled(
                path,
                image_column.as_deref(),
                &label_column,
                Some(size),
                &rules.decode(stn_table::codec::DEFAULT_MAX_PIXELS),
                key_args.keys(None)?.as_ref(),
                &delta.at(),
            )
            .context("stn eval --table")?;
            if !t.skipped.is_empty() {
                eprintln!("{}: {} rows left out (bad image or label)", path.display(), t.skipped.len());
            }
            d.apply(&t.data, seed)?
        }
        (Some(i), Some(l)) => run::load_test(&i, &l, &dist, seed).map_err(anyhow::Error::msg)?,
        _ => {
            let (_, test) = stn_data::Dataset::embedded_split()?;
            let d: stn_data::Distortion = dist.parse()?;
            d.apply(&test, seed)?
        }
    };
    let [h, w] = cfg.model.input_size;
    if net.transformer.is_none() && (data.height, data.width) != (h, w) {
        bail!(
            "the model takes {h} x {w} images and distortion `{dist}` makes {} x {}; evaluate it under the distortion it was trained on ({})",
            data.height,
            data.width,
            cfg.distortion
        );
    }
    let err = run::error_rate(&net, &data, 256).map_err(anyhow::Error::msg)?;
    if json {
        println!(
            "{}",
            serde_json::json!({ "error_rate": err, "images": data.len(), "distortion": dist, "seed": seed })
        );
    } else {
        println!("error rate {:.2}% on {} images (distortion {dist}, seed {seed})", 100.0 * err, data.len());
    }
    Ok(ExitCode::SUCCESS)
}
