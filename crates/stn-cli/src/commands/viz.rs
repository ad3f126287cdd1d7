//! `stn viz`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use stn_cli::run;

use super::args::DistortionArg;

/// Arguments of `stn viz` (its help is on the subcommand in main.rs).
#[derive(clap::Args)]
pub struct Args {
    /// The run folder of the model to draw.
    #[arg(long, required_unless_present_any = ["curves", "augment"], conflicts_with_all = ["curves", "augment"])]
    pub model: Option<PathBuf>,
    /// Draw augmented digits instead: a row per digit, the original then --copies copies of
    /// this augmentation, with their keypoints (ink centroid and extremes) and the original
    /// frame's outline, moved with each warp.
    #[arg(long, value_name = "SPEC", conflicts_with = "curves")]
    pub augment: Option<String>,
    /// Augmented copies per digit (with --augment).
    #[arg(long, default_value_t = 6)]
    pub copies: usize,
    /// Run folders whose training curves to draw (repeat for several).
    #[arg(long)]
    pub curves: Vec<PathBuf>,
    /// Distortion of the test digits (default: the model's).
    #[arg(long, value_enum)]
    pub distortion: Option<DistortionArg>,
    /// Seed of the distortion.
    #[arg(long, default_value_t = 2)]
    pub seed: u64,
    /// How many test digits.
    #[arg(long, default_value_t = 32)]
    pub count: usize,
    /// The PNG file to write.
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs the command.
pub fn exec(args: Args) -> Result<ExitCode> {
    let Args { model, curves, distortion, seed, count, out, augment, copies } = args;
    let img = if let Some(spec) = augment {
        let aug = stn::augment::Augment::parse(&spec).context("--augment")?;
        let (_, test) = stn_data::Dataset::embedded_split()?;
        let d: stn_data::Distortion = distortion.map_or("none", |d| d.name()).parse()?;
        let test = d.apply(&test.subset(0..count.clamp(1, 64))?, seed)?;
        stn_cli::viz::augment_grid(&test, &aug, count.min(64), copies.clamp(1, 32), seed)
            .map_err(anyhow::Error::msg)?
    } else if let Some(dir) = model {
        let (net, cfg) = run::load_run(&dir).map_err(anyhow::Error::msg).context("stn viz")?;
        let dist = distortion.map_or(cfg.distortion.clone(), |d| d.name().to_string());
        let (_, test) = stn_data::Dataset::embedded_split()?;
        let d: stn_data::Distortion = dist.parse()?;
        let test = d.apply(&test.subset(0..count.clamp(1, 2000))?, seed)?;
        stn_cli::viz::figure(&net, &test, count).map_err(anyhow::Error::msg)?
    } else {
        let mut runs = Vec::new();
        for dir in &curves {
            let path = dir.join("metrics.jsonl");
            let text =
                std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let mut ms = Vec::new();
            for (i, line) in text.lines().enumerate() {
                let m: run::EpochMetrics = serde_json::from_str(line)
                    .with_context(|| format!("{} line {}: not a metrics line", path.display(), i + 1))?;
                ms.push(m);
            }
            if ms.is_empty() {
                bail!("{} has no epochs", path.display());
            }
            runs.push((dir.display().to_string(), ms));
        }
        let refs: Vec<(&str, &[run::EpochMetrics])> =
            runs.iter().map(|(n, m)| (n.as_str(), m.as_slice())).collect();
        stn_cli::viz::curves(&refs)
    };
    stn::persist::write_atomic(&out, &img.to_png()?)?;
    println!("wrote {}", out.display());
    Ok(ExitCode::SUCCESS)
}
