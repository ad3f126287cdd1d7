//! `stn`: train and evaluate spatial-transformer classifiers on distorted digits.
//! Progress and logs go to stderr, results to stdout (`--json` for machines).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use stn::Transform;
use stn_cli::models::{ModelConfig, ModelKind};
use stn_cli::run::{self, RunConfig};

#[derive(Parser)]
#[command(name = "stn", version, about = "Spatial Transformer Networks on distorted digits", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum DistortionArg {
    None,
    R,
    Rts,
    P,
    E,
    Tc,
}

impl DistortionArg {
    fn name(self) -> &'static str {
        match self {
            DistortionArg::None => "none",
            DistortionArg::R => "r",
            DistortionArg::Rts => "rts",
            DistortionArg::P => "p",
            DistortionArg::E => "e",
            DistortionArg::Tc => "tc",
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum ModelArg {
    Fcn,
    Cnn,
    StFcn,
    StCnn,
    Tutorial,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Bilinear,
    Nearest,
    Bicubic,
}

#[derive(Clone, Copy, ValueEnum)]
enum TransformArg {
    Affine,
    Projective,
    Tps,
    Attention,
}

#[derive(Subcommand)]
enum Command {
    /// Train a classifier on distorted digits; writes RUN_DIR/model.stn after every epoch and
    /// RUN_DIR/metrics.jsonl (one JSON object per epoch).
    ///
    /// Example: stn train --distortion rts --model st-cnn --transform affine --epochs 3 --out runs/rts-st
    Train {
        /// `mnist10k` (embedded: first 8,000 digits train, last 2,000 test) or an IDX prefix
        /// (PREFIX-images-idx3-ubyte[.gz] and PREFIX-labels-idx1-ubyte[.gz]).
        #[arg(long, default_value = "mnist10k")]
        data: String,
        /// Distortion of the digits.
        #[arg(long, value_enum, default_value = "none")]
        distortion: DistortionArg,
        /// Model.
        #[arg(long, value_enum, default_value = "st-cnn")]
        model: ModelArg,
        /// Transform family of the spatial transformer (ST models).
        #[arg(long, value_enum, default_value = "affine")]
        transform: TransformArg,
        /// Epochs.
        #[arg(long, default_value_t = 1)]
        epochs: usize,
        /// Seed of the distortion, the shuffling and the initialization.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Batch size.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Adam learning rate.
        #[arg(long, default_value_t = 1e-3)]
        lr: f64,
        /// The localization net's learning rate as a multiple of --lr (ST models; e.g. 0.1).
        #[arg(long, default_value_t = 1.0)]
        loc_lr: f64,
        /// Train on the first N images only (0: all).
        #[arg(long, default_value_t = 0)]
        train_size: usize,
        /// Test on the first N images only (0: all).
        #[arg(long, default_value_t = 0)]
        test_size: usize,
        /// The run folder (must not hold a run yet, unless --resume).
        #[arg(long)]
        out: PathBuf,
        /// Continue the run in --out from its last checkpoint (weights and optimizer state) up
        /// to --epochs epochs in all; every other setting comes from the checkpoint.
        #[arg(long)]
        resume: bool,
        /// Print the final metrics as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The main job: on the embedded digits under RTS, train a CNN and an ST-CNN with the same
    /// budget, print their test errors, and write a report (Markdown, the paper's figure, curves).
    ///
    /// Example: stn demo --out demo-out
    Demo {
        /// Output folder (must not hold a demo yet).
        #[arg(long, default_value = "demo-out")]
        out: PathBuf,
        /// Epochs of each model (12: the README results table's budget, so the default demo
        /// reproduces its RTS row).
        #[arg(long, default_value_t = 12)]
        epochs: usize,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Train on the first N digits only (0: all 8,000).
        #[arg(long, default_value_t = 0)]
        train_size: usize,
        /// Test on the first N digits only (0: all 2,000).
        #[arg(long, default_value_t = 0)]
        test_size: usize,
    },
    /// Apply a trained transformer to image files (PNG, JPEG; gray or colour; any size): writes
    /// `DIR/<name>.png` and DIR/theta.jsonl. Bad files are reported and skipped; the exit code is 1
    /// if any input failed.
    ///
    /// Example: stn rectify --model runs/rts-st scans/*.png --out rectified
    Rectify {
        /// The run folder written by `stn train` (an ST model).
        #[arg(long)]
        model: PathBuf,
        /// Input images.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
    },
    /// Pictures: the paper's figure for a trained model (inputs with the outline of their
    /// sampling grids, the transformer's outputs, predicted labels), or with --curves the test
    /// error per epoch of one or more runs.
    ///
    /// Examples: stn viz --model runs/rts-st --distortion rts --count 32 --out fig.png;
    /// stn viz --curves runs/rts-cnn --curves runs/rts-st --out curves.png
    Viz {
        /// The run folder of the model to draw.
        #[arg(long, required_unless_present = "curves", conflicts_with = "curves")]
        model: Option<PathBuf>,
        /// Run folders whose training curves to draw (repeat for several).
        #[arg(long)]
        curves: Vec<PathBuf>,
        /// Distortion of the test digits (default: the model's).
        #[arg(long, value_enum)]
        distortion: Option<DistortionArg>,
        /// Seed of the distortion.
        #[arg(long, default_value_t = 2)]
        seed: u64,
        /// How many test digits.
        #[arg(long, default_value_t = 32)]
        count: usize,
        /// The PNG file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Benchmarks: the kernels on the PyTorch peer's cases (ms per call), and training and
    /// inference throughput of the tutorial ST-CNN and its plain CNN (28 x 28, batch 64).
    ///
    /// Example: stn bench --json > bench.json
    Bench {
        /// Kernel cases to run (a: 256x1x28x28, b: 128x1x60x60, c: 16x64x56x56,
        /// d: 8x3x224x224, e: 1x3x2048x2048); empty for none.
        #[arg(long, default_value = "abcde")]
        cases: String,
        /// Interpolation modes of the kernel benchmark.
        #[arg(long, value_enum, value_delimiter = ',', default_value = "bilinear,nearest,bicubic")]
        modes: Vec<ModeArg>,
        /// Timed steps of the model throughput figures.
        #[arg(long, default_value_t = 50)]
        steps: usize,
        /// Threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Print JSON (with `stcnn_train_img_per_s`, `stcnn_infer_img_per_s`, `cnn_train_img_per_s`).
        #[arg(long)]
        json: bool,
    },
    /// Error rate of a trained model on distorted digits (the embedded test split by default).
    ///
    /// Example: stn eval --model runs/rts-st --distortion rts --seed 5 --json
    Eval {
        /// The run folder written by `stn train`.
        #[arg(long)]
        model: PathBuf,
        /// IDX images file (default: the embedded test split).
        #[arg(long, requires = "labels")]
        images: Option<PathBuf>,
        /// IDX labels file.
        #[arg(long, requires = "images")]
        labels: Option<PathBuf>,
        /// Distortion (default: the one the model was trained on).
        #[arg(long, value_enum)]
        distortion: Option<DistortionArg>,
        /// Seed of the distortion.
        #[arg(long, default_value_t = 2)]
        seed: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn train(cmd: Command) -> Result<()> {
    let Command::Train {
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
    } = cmd
    else {
        unreachable!("train");
    };
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
    .with_test_size(test_size);
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
    let metrics =
        run::train(&cfg, &out, resume, &mut progress).map_err(anyhow::Error::msg).context("stn train")?;
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
        println!("{}", serde_json::to_string(last)?);
    } else {
        println!(
            "test error {:.2}% after {} epochs; model in {}",
            100.0 * last.test_error,
            last.epoch,
            out.display()
        );
    }
    Ok(())
}

fn eval(cmd: Command) -> Result<()> {
    let Command::Eval { model, images, labels, distortion, seed, json } = cmd else {
        unreachable!("eval");
    };
    let (net, cfg) = run::load_run(&model).map_err(anyhow::Error::msg).context("stn eval")?;
    let dist = distortion.map_or(cfg.distortion.clone(), |d| d.name().to_string());
    let data = match (images, labels) {
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
    Ok(())
}

fn demo(cmd: Command) -> Result<()> {
    let Command::Demo { out, epochs, seed, train_size, test_size } = cmd else {
        unreachable!("demo");
    };
    let opts = stn_cli::demo::DemoOptions { out, epochs, train_size, test_size, seed };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    let start = std::time::Instant::now();
    let mut progress = |name: &str, epoch: usize, b: usize, n: usize, loss: f64, acc: f64, ips: f64| {
        bar.set_prefix(format!("{name} epoch {epoch}/{epochs}"));
        bar.set_length(n as u64);
        bar.set_position(b as u64);
        bar.set_message(format!("loss {loss:.4} acc {:.1}% {ips:.0} img/s", 100.0 * acc));
    };
    let r = stn_cli::demo::run_demo(&opts, &mut progress).map_err(anyhow::Error::msg).context("stn demo")?;
    bar.finish_and_clear();
    let (c, s) = (r.cnn.last().expect("epochs"), r.st_cnn.last().expect("epochs"));
    println!("RTS-distorted digits, {epochs} epochs each ({:.0} s):", start.elapsed().as_secs_f64());
    println!("  CNN             test error {:6.2}%", 100.0 * c.test_error);
    println!("  ST-CNN (affine) test error {:6.2}%", 100.0 * s.test_error);
    println!("report: {}", r.report.display());
    Ok(())
}

fn viz(cmd: Command) -> Result<()> {
    let Command::Viz { model, curves, distortion, seed, count, out } = cmd else {
        unreachable!("viz");
    };
    let img = if let Some(dir) = model {
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
    Ok(())
}

fn bench(cmd: Command) -> Result<()> {
    use stn_kernels::bench::{kernel_rows, mode_name, padding_name, peer_combos, BENCH_CASES};
    let Command::Bench { cases, modes, steps, threads, json } = cmd else {
        unreachable!("bench");
    };
    if threads == 0 || steps == 0 {
        bail!("--threads and --steps must be at least 1");
    }
    if let Some(bad) = cases.chars().find(|c| !"abcde".contains(*c)) {
        bail!("unknown case {bad:?} in --cases; use letters of abcde");
    }
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().context("thread pool")?;
    let modes: Vec<stn::Interpolation> = modes
        .iter()
        .map(|m| match m {
            ModeArg::Bilinear => stn::Interpolation::Bilinear,
            ModeArg::Nearest => stn::Interpolation::Nearest,
            ModeArg::Bicubic => stn::Interpolation::Bicubic,
        })
        .collect();
    let mut rows = Vec::new();
    if !json {
        println!("kernels (float32, align_corners=false, {threads} threads; medians, ms):");
        println!("| case | mode | padding | fwd | fb | gs fwd | gs fb |");
        println!("|---|---|---|---:|---:|---:|---:|");
    }
    for case in BENCH_CASES.iter().filter(|c| cases.contains(c.key)) {
        eprintln!("kernels: case {} ...", case.key);
        for r in kernel_rows(case, &peer_combos(case, &modes), 10, 3, 0.5, None)? {
            let (m, p) = (mode_name(r.mode), padding_name(r.padding));
            if !json {
                println!(
                    "| {} {}x{}x{}x{} | {m} | {p} | {:.3} | {:.3} | {:.3} | {:.3} |",
                    case.key, case.n, case.c, case.h, case.w, r.fwd_ms, r.fb_ms, r.gs_fwd_ms, r.gs_fb_ms
                );
            }
            rows.push(serde_json::json!({
                "case": case.key.to_string(), "mode": m, "padding": p,
                "fwd_ms": r.fwd_ms, "fb_ms": r.fb_ms, "gs_fwd_ms": r.gs_fwd_ms, "gs_fb_ms": r.gs_fb_ms,
            }));
        }
    }
    eprintln!("models: tutorial ST-CNN and its plain CNN ...");
    let st = stn_cli::bench::throughput(ModelKind::Tutorial, steps, 10)?;
    let cnn = stn_cli::bench::throughput(ModelKind::TutorialCnn, steps, 10)?;
    if json {
        let doc = serde_json::json!({
            "threads": threads,
            "kernels": rows,
            "batch": stn_cli::bench::BATCH,
            "stcnn_train_img_per_s": st.train_img_per_s, "stcnn_infer_img_per_s": st.infer_img_per_s,
            "stcnn_train_ms": st.train_ms, "stcnn_infer_ms": st.infer_ms,
            "cnn_train_img_per_s": cnn.train_img_per_s, "cnn_infer_img_per_s": cnn.infer_img_per_s,
            "cnn_train_ms": cnn.train_ms, "cnn_infer_ms": cnn.infer_ms,
            // The transformer's cost over the plain CNN (0.1 = 10% slower).
            "st_cost_train": st.train_ms / cnn.train_ms - 1.0, "st_cost_infer": st.infer_ms / cnn.infer_ms - 1.0,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!("\nmodels (28 x 28, batch {}; medians):", stn_cli::bench::BATCH);
        for (name, t) in [("tutorial ST-CNN", st), ("its plain CNN", cnn)] {
            println!(
                "  {name:16} train {:7.2} ms/step ({:6.0} img/s)   infer {:6.2} ms/batch ({:6.0} img/s)",
                t.train_ms, t.train_img_per_s, t.infer_ms, t.infer_img_per_s
            );
        }
        println!(
            "  the transformer's cost over the plain CNN: training {:+.0}%, inference {:+.0}%",
            100.0 * (st.train_ms / cnn.train_ms - 1.0),
            100.0 * (st.infer_ms / cnn.infer_ms - 1.0)
        );
    }
    Ok(())
}

/// Returns whether every input was rectified.
fn rectify(cmd: Command) -> Result<bool> {
    let Command::Rectify { model, inputs, out } = cmd else {
        unreachable!("rectify");
    };
    let (net, _) = run::load_run(&model).map_err(anyhow::Error::msg).context("stn rectify")?;
    let mut log = |line: String| eprintln!("{line}");
    let r = stn_cli::rectify::rectify(&net, &inputs, &out, &mut log)
        .map_err(anyhow::Error::msg)
        .context("stn rectify")?;
    println!("rectified {} of {} images into {}", r.written.len(), inputs.len(), out.display());
    Ok(r.failed.is_empty())
}

fn main() -> ExitCode {
    stn_kernels::alloc::keep_freed_memory();
    let cli = Cli::parse();
    let result = match cli.command {
        c @ Command::Rectify { .. } => match rectify(c) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(1),
            Err(e) => Err(e),
        },
        c @ Command::Train { .. } => train(c),
        c @ Command::Bench { .. } => bench(c),
        c @ Command::Viz { .. } => viz(c),
        c @ Command::Eval { .. } => eval(c),
        c @ Command::Demo { .. } => demo(c),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
