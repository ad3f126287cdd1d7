//! `stn demo`: on the embedded digits under the RTS distortion, trains a CNN and an ST-CNN
//! (affine) with the same budget, compares their test errors, and writes a Markdown report with
//! the paper's figure and the training curves.

use std::path::{Path, PathBuf};

use crate::models::{ModelConfig, ModelKind};
use crate::run::{self, EpochMetrics, Progress, RunConfig, RunResult};
use crate::viz;

/// What the demo does.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The output folder (must not hold a report yet).
    pub out: PathBuf,
    /// Epochs of each model.
    pub epochs: usize,
    /// Training images (0: all 8,000).
    pub train_size: usize,
    /// Test images (0: all 2,000).
    pub test_size: usize,
    /// Seed.
    pub seed: u64,
}

/// What the demo measured.
#[derive(Debug, Clone)]
pub struct DemoResult {
    /// The CNN's metrics per epoch.
    pub cnn: Vec<EpochMetrics>,
    /// The ST-CNN's metrics per epoch.
    pub st_cnn: Vec<EpochMetrics>,
    /// The report file.
    pub report: PathBuf,
    /// The HTML report: the transformer explained ([`crate::report`]).
    pub page: PathBuf,
}

fn config(kind: ModelKind, o: &DemoOptions) -> RunConfig {
    RunConfig::new(ModelConfig::new(kind, [28, 28]), "mnist10k".into(), "rts".into(), o.seed, o.epochs)
        .with_train_size(o.train_size)
        .with_test_size(o.test_size)
}

fn write(path: &Path, bytes: &[u8]) -> RunResult<()> {
    stn::persist::write_atomic(path, bytes).map_err(|e| e.to_string())
}

/// Called after each batch with the model's name, then as [`Progress`].
pub type DemoProgress<'a> = dyn FnMut(&str, usize, usize, usize, f64, f64, f64) + 'a;

/// Runs the demo; `progress` sees each model's batches.
pub fn run_demo(o: &DemoOptions, progress: &mut DemoProgress<'_>) -> RunResult<DemoResult> {
    let report = o.out.join("report.md");
    if report.exists() || o.out.join("cnn").exists() || o.out.join("st-cnn").exists() {
        return Err(format!("{} already holds a demo; choose another --out", o.out.display()));
    }
    std::fs::create_dir_all(&o.out).map_err(|e| format!("cannot create {}: {e}", o.out.display()))?;
    let mut runs = Vec::new();
    for (name, kind) in [("cnn", ModelKind::Cnn), ("st-cnn", ModelKind::StCnn)] {
        let cfg = config(kind, o);
        let mut p: Box<Progress<'_>> = Box::new(|e, b, n, l, a, i| progress(name, e, b, n, l, a, i));
        let metrics = run::train(&cfg, &o.out.join(name), false, &mut *p)?;
        runs.push((name, cfg, metrics));
    }
    let (st_model, st_cfg) = run::load_run(&o.out.join("st-cnn"))?;
    // Only the 16 digits drawn: image i under a seed does not depend on the rest of the set, so
    // these are the first 16 of the test set the run was evaluated on (seed + 1).
    let (_, test) = stn_data::Dataset::embedded_split().map_err(|e| e.to_string())?;
    let rts: stn_data::Distortion = st_cfg.distortion.parse().map_err(|e| format!("{e}"))?;
    let drawn = test
        .subset(0..16)
        .and_then(|t| rts.apply(&t, st_cfg.seed.wrapping_add(1)))
        .map_err(|e| e.to_string())?;
    let fig = viz::figure(&st_model, &drawn, 16)?;
    write(&o.out.join("figure.png"), &fig.to_png().map_err(|e| e.to_string())?)?;
    let curves = viz::curves(&[("cnn", &runs[0].2), ("st-cnn", &runs[1].2)]);
    write(&o.out.join("curves.png"), &curves.to_png().map_err(|e| e.to_string())?)?;
    let (cnn, st) = (runs[0].2.clone(), runs[1].2.clone());
    let (ce, se) = (cnn.last().expect("epochs").test_error, st.last().expect("epochs").test_error);
    let md = format!(
        "# stn demo: CNN vs ST-CNN on RTS-distorted digits\n\n\
         Embedded MNIST subset ({train} training, {test} test digits), each rotated by up to 45 degrees, \
         scaled 0.7-1.2 and placed at random on a 42 x 42 canvas (seed {seed}); {epochs} epochs of Adam \
         (lr 1e-3, batch 64) for each model.\n\n\
         | model | test error | images/s (training) |\n|---|---:|---:|\n\
         | CNN | {ce:.2}% | {ci:.0} |\n| ST-CNN (affine) | {se:.2}% | {si:.0} |\n\n\
         ## What the transformer does\n\n\
         ![figure](figure.png)\n\n\
         Each test digit with the outline of its sampling grid (red), what the transformer made of \
         it (28 x 28), and the predicted label (green: right, red: wrong).\n\n\
         ## Training curves\n\n\
         ![curves](curves.png)\n\n\
         Test error in percent (left axis) after each epoch (bottom axis): CNN blue, ST-CNN orange.\n\n\
         The transformer explained (its rotations, zooms and shears per class, against the \
         distortions it undid): [report.html](report.html).\n\n\
         Reproduce: `stn demo --out DIR --epochs {epochs} --seed {seed}`; each model's run folder \
         (`cnn/`, `st-cnn/`) holds its checkpoint and `metrics.jsonl`.\n",
        train = if o.train_size == 0 { 8000 } else { o.train_size.min(8000) },
        test = if o.test_size == 0 { 2000 } else { o.test_size.min(2000) },
        seed = o.seed,
        epochs = o.epochs,
        ce = 100.0 * ce,
        se = 100.0 * se,
        ci = cnn.iter().map(|m| m.images_per_s).sum::<f64>() / cnn.len() as f64,
        si = st.iter().map(|m| m.images_per_s).sum::<f64>() / st.len() as f64,
    );
    write(&report, md.as_bytes())?;
    // The page: the ST-CNN's transformer explained on the test digits it was evaluated on.
    let n = if o.test_size == 0 { 2000 } else { o.test_size.min(2000) };
    let seed = st_cfg.seed.wrapping_add(1);
    let data = test.subset(0..n).and_then(|t| rts.apply(&t, seed)).map_err(|e| e.to_string())?;
    let samplers: Vec<_> = (0..data.len()).map(|i| rts.sampler(seed, i, 28, 28)).collect();
    let rectifier = stn_models::rectify::Rectifier::from_run(&o.out.join("st-cnn"))?;
    let rows = stn_table::explain::explain_dataset(&rectifier, &data, Some(&samplers))?;
    let input = crate::report::ReportInput {
        title: "stn demo: what the ST-CNN's transformer does".into(),
        source: format!("{n} embedded test digits, RTS-distorted (seed {seed})"),
        rows: &rows,
        data: &data,
        rectifier: &rectifier,
        metrics: &st,
        results: vec![
            ("CNN test error".into(), format!("{:.2}%", 100.0 * ce)),
            ("ST-CNN (affine) test error".into(), format!("{:.2}%", 100.0 * se)),
            ("epochs".into(), o.epochs.to_string()),
        ],
    };
    let page = crate::report::write_report(&input, &o.out)?;
    Ok(DemoResult { cnn, st_cnn: st, report, page })
}
