//! `stn train`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use stn::Transform;
use stn_cli::models::{ModelConfig, ModelKind};
use stn_cli::run::{self, RunConfig, TableData};

use super::args::{DistortionArg, ModelArg, TransformArg};
use super::table_data;

/// Arguments of `stn train` (its help is on the subcommand in main.rs).
#[derive(clap::Args)]
pub struct Args {
    /// `mnist10k` (embedded: first 8,000 digits train, last 2,000 test) or an IDX prefix
    /// (PREFIX-images-idx3-ubyte[.gz] and PREFIX-labels-idx1-ubyte[.gz]).
    #[arg(long, default_value = "mnist10k")]
    pub data: String,
    /// Distortion of the digits.
    #[arg(long, value_enum, default_value = "none")]
    pub distortion: DistortionArg,
    /// Model.
    #[arg(long, value_enum, default_value = "st-cnn")]
    pub model: ModelArg,
    /// Transform family of the spatial transformer (ST models).
    #[arg(long, value_enum, default_value = "affine")]
    pub transform: TransformArg,
    /// Epochs.
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Seed of the distortion, the shuffling and the initialization.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// The localization net's learning rate as a multiple of --lr (ST models; e.g. 0.1).
    #[arg(long, default_value_t = 1.0)]
    pub loc_lr: f64,
    /// Train on the first N images only (0: all).
    #[arg(long, default_value_t = 0)]
    pub train_size: usize,
    /// Test on the first N images only (0: all).
    #[arg(long, default_value_t = 0)]
    pub test_size: usize,
    /// Train on an image table instead of --data: a Parquet file or a folder of them (any
    /// image convention, sizes and channels; images are made gray and resized to --image-size).
    #[arg(long, conflicts_with = "data")]
    pub table: Option<PathBuf>,
    /// The test table (default: the last fifth of --table's rows is held out).
    #[arg(long, requires = "table")]
    pub test_table: Option<PathBuf>,
    /// The image column of the table (default: detected).
    #[arg(long, requires = "table")]
    pub image_column: Option<String>,
    /// The label column of the table (integers from 0).
    #[arg(long, default_value = "label", requires = "table")]
    pub label_column: String,
    /// Size images of the table are resized to, HxW (default: the first image's size).
    #[arg(long, requires = "table", value_parser = super::parse_size)]
    pub image_size: Option<[usize; 2]>,
    /// Random warps of every training batch, per image, from (--seed, epoch, image index):
    /// ops separated by `;`, e.g. `affine:rot=30,scale=0.8-1.2,shift=0.1;tps:0.1` (ops affine,
    /// rotation, perspective, tps, elastic, crop, hflip, vflip; see the README). The test set
    /// is not augmented.
    #[arg(long, value_name = "SPEC")]
    pub augment: Option<String>,
    /// The run folder (must not hold a run yet, unless --resume).
    #[arg(long)]
    pub out: PathBuf,
    /// Continue the run in --out from its last checkpoint (weights and optimizer state) up
    /// to --epochs epochs in all; every other setting comes from the checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Print the final metrics as JSON.
    #[arg(long)]
    pub json: bool,
    /// The device to train on: cpu, wgpu, vulkan, cuda (GPU devices need a build with
    /// `--features gpu`; cuda: `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: stn::device::DeviceKind,
    /// Train on an encrypted table although the run folder (checkpoints, metrics) is written
    /// in plaintext: without it, an encrypted table is refused.
    #[arg(long)]
    pub allow_plaintext_output: bool,
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
        data,
        distortion,
        model,
        transform,
        epochs,
        seed,
        batch,
        lr,
        loc_lr,
        train_size,
        test_size,
        out,
        resume,
        json,
        table,
        test_table,
        image_column,
        label_column,
        image_size,
        augment,
        device,
        allow_plaintext_output,
        key_args,
        rules,
        delta,
    } = args;
    rules.apply()?;
    if let Some(note) = stn::repro::bitwise_note() {
        eprintln!("note: {note}");
    }
    let decode = rules.decode(stn_table::codec::DEFAULT_MAX_PIXELS);
    let keys = key_args.keys(None).context("stn train")?;
    if let Some(spec) = &augment {
        stn::augment::Augment::parse(spec).context("--augment")?;
    }
    let kind = match model {
        ModelArg::Fcn => ModelKind::Fcn,
        ModelArg::Cnn => ModelKind::Cnn,
        ModelArg::StFcn => ModelKind::StFcn,
        ModelArg::StCnn => ModelKind::StCnn,
        ModelArg::Tutorial => ModelKind::Tutorial,
    };
    let t = match transform {
        TransformArg::Affine => Transform::Affine,
        TransformArg::Projective => Transform::Projective,
        TransformArg::Tps => Transform::tps16(),
        TransformArg::Attention => Transform::Attention,
    };
    let cfg = RunConfig::new(
        ModelConfig::new(kind, [28, 28]).with_transform(t),
        data,
        distortion.name().into(),
        seed,
        epochs,
    )
    .with_batch(batch)
    .with_lr(lr)
    .with_loc_lr(loc_lr)
    .with_train_size(train_size)
    .with_test_size(test_size)
    .with_augment(augment)
    .with_device((device != stn::device::DeviceKind::Cpu).then(|| device.name().to_string()));
    // A Delta table: the version to read, resolved now and recorded with the run.
    let delta_version = match &table {
        Some(path) if stn_table::delta::is_delta(path) => {
            Some(stn_table::delta::DeltaInput::open(path, &delta.at()).context("stn train --table")?.version)
        }
        _ => None,
    };
    let cfg = cfg.with_table(table.map(|path| TableData {
        path: path.display().to_string(),
        test_path: test_table.map(|p| p.display().to_string()),
        image_column,
        label_column,
        image_size,
        delta_version,
    }));
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    let mut progress = |epoch: usize, b: usize, n: usize, loss: f64, acc: f64, ips: f64| {
        bar.set_prefix(format!("{epoch}/{epochs}"));
        bar.set_length(n as u64);
        bar.set_position(b as u64);
        bar.set_message(format!("loss {loss:.4} acc {:.1}% {ips:.0} img/s", 100.0 * acc));
    };
    let metrics = run::train_with(
        &cfg,
        &out,
        resume,
        &|c: &RunConfig| table_data(c, &decode, keys.as_ref(), allow_plaintext_output),
        &mut progress,
    )
    .map_err(anyhow::Error::msg)
    .context("stn train")?;
    bar.finish_and_clear();
    let last = metrics.last().expect("at least one epoch");
    for m in &metrics {
        eprintln!(
            "epoch {}: loss {:.4}, train accuracy {:.1}%, test error {:.2}%, {:.0} img/s",
            m.epoch,
            m.train_loss,
            100.0 * m.train_accuracy,
            100.0 * m.test_error,
            m.images_per_s
        );
    }
    if json {
        // The trained weights as one hex string, to compare machines and runs.
        let (model, _) = run::load_run(&out).map_err(anyhow::Error::msg).context("stn train")?;
        let mut doc = serde_json::to_value(last)?;
        doc["weights_digest"] = run::weights_digest(&model).map_err(anyhow::Error::msg)?.into();
        println!("{doc}");
    } else {
        println!(
            "test error {:.2}% after {} epochs; model in {}",
            100.0 * last.test_error,
            last.epoch,
            out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
