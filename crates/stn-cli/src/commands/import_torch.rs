//! `stn import-torch`: PyTorch-trained weights of the tutorial's network as a run folder.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use stn_models::torch::{import_to_run, TorchArch, TUTORIAL_NORMALIZATION};

/// Import a PyTorch-trained spatial transformer (the official tutorial's network) as a run
/// folder that every stn command takes (`stn rectify`, `stn eval`, `stn sql`, Python's
/// `stn_rs.Rectifier`).
#[derive(clap::Args)]
pub struct Args {
    /// The weights: `torch.save(model.state_dict())` (`.pt`, `.pth`; a training checkpoint's
    /// dict holding `state_dict` is taken too) or safetensors (`.safetensors`).
    pub weights: PathBuf,
    /// The architecture: `tutorial` (the tutorial's `Net`: transformer and classifier) or
    /// `tutorial-cnn` (its classifier alone).
    #[arg(long, default_value = "tutorial")]
    pub arch: String,
    /// The input normalization the weights were trained with, `MEAN,STD` (the model then takes
    /// raw pixels in [0, 1]); `none` for models trained on raw pixels.
    #[arg(long, default_value = "0.1307,0.3081")]
    pub normalize: String,
    /// The run folder to write (must not hold a run already).
    #[arg(long)]
    pub out: PathBuf,
}

fn normalization(s: &str) -> Result<Option<[f64; 2]>> {
    if s == "none" {
        return Ok(None);
    }
    let parts: Vec<f64> =
        s.split(',').map(|p| p.trim().parse::<f64>()).collect::<Result<_, _>>().map_err(|_| {
            anyhow!(
                "--normalize: MEAN,STD (two numbers, e.g. {},{}) or none; got `{s}`",
                TUTORIAL_NORMALIZATION[0],
                TUTORIAL_NORMALIZATION[1]
            )
        })?;
    match parts.as_slice() {
        [m, s] => Ok(Some([*m, *s])),
        _ => Err(anyhow!("--normalize: MEAN,STD or none; got `{s}`")),
    }
}

/// Runs the command.
pub fn exec(args: Args) -> Result<ExitCode> {
    let arch: TorchArch = args.arch.parse().map_err(|e: String| anyhow!("--arch: {e}"))?;
    let normalize = normalization(&args.normalize)?;
    import_to_run(&args.weights, arch, normalize, &args.out)
        .map_err(anyhow::Error::msg)
        .context("stn import-torch")?;
    println!(
        "imported {} ({}) into {}{}",
        args.weights.display(),
        args.arch,
        args.out.display(),
        normalize.map_or(String::new(), |[m, s]| format!("; inputs normalized as (x - {m}) / {s}"))
    );
    Ok(ExitCode::SUCCESS)
}
