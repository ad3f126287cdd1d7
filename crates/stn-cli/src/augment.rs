//! `stn augment` on image files, and the augmentation benchmark of `stn bench --augment`.
//! Both go through [`stn::augment`]; the per-image warp is `stn_table::augment::augment_image`,
//! shared with the table path.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Distribution, Tensor};
use stn::augment::{Augment, Key};
use stn_data::image_io::Encoding;
use stn_data::Image;
use stn_models::run::RunResult;
use stn_table::augment::augment_image;

/// What an augmentation run over image files did.
#[derive(Debug, Clone, Default)]
pub struct AugmentOutcome {
    /// The image files written (copies x readable inputs).
    pub written: Vec<PathBuf>,
    /// Copies an earlier run into the same folder already wrote (same spec, seed and options).
    pub skipped: Vec<PathBuf>,
    /// The inputs that failed, with the reason.
    pub failed: Vec<(PathBuf, String)>,
    /// The record of every copy (`augment.jsonl`: input, output, copy, warp; appended as each
    /// copy is written).
    pub record: Option<PathBuf>,
    /// Temporary files of an interrupted run that were removed.
    pub cleaned: Vec<PathBuf>,
}

/// The image files of a folder (PNG and JPEG by extension), sorted by name: image `i` of this
/// list is row `i` of the augmentation keys.
pub fn image_files(dir: &Path) -> RunResult<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut files = Vec::new();
    for entry in rd {
        let path = entry.map_err(|e| format!("cannot read {}: {e}", dir.display()))?.path();
        let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
        if path.is_file() && matches!(ext.as_str(), "png" | "jpg" | "jpeg") {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(format!("{} holds no PNG or JPEG files", dir.display()));
    }
    Ok(files)
}

/// Writes `copies` augmented copies of every input into `out` (created if missing) as
/// `<stem>-<copy>.png` (or `.jpg`), copy k of input i warped with the key (seed, k, i), and
/// appends each copy's warp to `augment.jsonl` as it is written. A bad input is recorded in
/// [`AugmentOutcome::failed`] and skipped; nothing is overwritten. A run into a folder that an
/// interrupted run of the same spec, seed and options left goes on where it stopped.
pub fn augment_files(
    aug: &Augment,
    inputs: &[PathBuf],
    out: &Path,
    copies: usize,
    seed: u64,
    encoding: Encoding,
    log: &mut dyn FnMut(String),
) -> RunResult<AugmentOutcome> {
    if inputs.is_empty() || copies == 0 {
        return Err("no input images, or --copies 0".into());
    }
    let mut options = std::collections::BTreeMap::new();
    options.insert("spec".to_string(), aug.to_string());
    options.insert("seed".to_string(), seed.to_string());
    options.insert("copies".to_string(), copies.to_string());
    options.insert("encoding".to_string(), format!("{encoding:?}"));
    let lineage = stn_table::lineage::Lineage::new("augment-files", None, options);
    let mut outcome =
        AugmentOutcome { cleaned: crate::rectify::claim_folder(out, &lineage)?, ..Default::default() };
    let record = out.join("augment.jsonl");
    let (mut log_file, done) =
        stn_fs::RecordLog::open(&record).map_err(|e| format!("cannot open {}: {e}", record.display()))?;
    let done: std::collections::HashSet<String> = done
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("output").and_then(|o| o.as_str()).map(str::to_string))
        .collect();
    let ext = match encoding {
        Encoding::Png(_) => "png",
        Encoding::Jpeg(_) => "jpg",
    };
    let device = Device::flex();
    let mut stems = std::collections::HashSet::new();
    for (i, path) in inputs.iter().enumerate() {
        let stem = path.file_stem().map_or("image".into(), |s| s.to_string_lossy().into_owned());
        let mut made = Vec::new();
        let mut before = Vec::new();
        let result = (|| -> Result<(), String> {
            if !stems.insert(stem.clone()) {
                return Err(format!("another input is also named {stem}; rename one"));
            }
            let targets: Vec<PathBuf> = (0..copies).map(|c| out.join(format!("{stem}-{c}.{ext}"))).collect();
            let recorded = |t: &Path| done.contains(&t.display().to_string());
            if let Some(t) = targets.iter().find(|t| t.exists() && !recorded(t)) {
                return Err(format!("{} exists; not overwritten", t.display()));
            }
            if targets.iter().all(|t| t.exists()) {
                before.extend(targets);
                return Ok(());
            }
            let img = Image::load_native(path).map_err(|e| e.to_string())?;
            for (copy, target) in targets.into_iter().enumerate() {
                if target.exists() {
                    before.push(target);
                    continue;
                }
                let (warped, warp) = augment_image(aug, &img, Key::new(seed, copy as u64, i as u64), &device)
                    .map_err(|e| e.to_string())?;
                let bytes = warped.encode(encoding).map_err(|e| e.to_string())?;
                // The record first, then the image (see `rectify`): never a copy without its record.
                if !recorded(&target) {
                    let line = serde_json::json!({
                        "input": path.display().to_string(),
                        "output": target.display().to_string(),
                        "index": i,
                        "copy": copy,
                        "warp": warp,
                    });
                    log_file
                        .append(&line.to_string())
                        .map_err(|e| format!("cannot write {}: {e}", record.display()))?;
                }
                stn_fs::write_new(&target, &bytes).map_err(|e| e.to_string())?;
                made.push(target);
            }
            Ok(())
        })();
        if !made.is_empty() || !before.is_empty() {
            log(format!(
                "{} -> {} copies ({} done before)",
                path.display(),
                made.len() + before.len(),
                before.len()
            ));
        }
        outcome.written.extend(made);
        outcome.skipped.extend(before);
        if let Err(e) = result {
            log(format!("skipped {}: {e}", path.display()));
            outcome.failed.push((path.clone(), e));
        }
    }
    outcome.record = Some(record);
    Ok(outcome)
}

/// The ops of the augmentation benchmark, named as kornia names them, with the spec each runs
/// (the same ranges as `tools/peer/bench_augment.py`).
pub const BENCH_OPS: [(&str, &str); 3] = [
    ("RandomAffine", "affine:rot=30,scale=0.8-1.2,shift=0.1,shear=10"),
    ("RandomPerspective", "perspective:0.5"),
    ("RandomThinPlateSpline", "tps:0.1"),
];

/// The batch shapes of the augmentation benchmark (N, C, H, W).
pub const BENCH_SHAPES: [[usize; 4]; 2] = [[32, 3, 256, 256], [256, 1, 28, 28]];

/// One row of the augmentation benchmark.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AugmentRow {
    /// The op (kornia's name).
    pub op: String,
    /// `NxCxHxW`.
    pub shape: String,
    /// Images per second (median), parameter sampling and application.
    pub img_per_s: f64,
}

/// Times every op on every shape: float32 batches on flex, each call drawing new parameters
/// (a new epoch's keys) and sampling; medians over at least `min_time` seconds.
pub fn bench_rows(min_time: f64) -> stn::Result<Vec<AugmentRow>> {
    let device = Device::flex();
    let mut rows = Vec::new();
    for shape in BENCH_SHAPES {
        let x = Tensor::<4>::random(shape, Distribution::Default, &device);
        let n = shape[0];
        for (name, spec) in BENCH_OPS {
            let aug = Augment::parse(spec)?;
            let mut epoch = 0u64;
            let mut failed = None;
            let (secs, _) = stn_kernels::bench::median_time(
                || {
                    epoch += 1;
                    match aug.forward(x.clone(), &Key::batch(1, epoch, 0..n as u64)) {
                        Ok(out) => drop(std::hint::black_box(out)),
                        Err(e) => failed = Some(e),
                    }
                },
                10,
                3,
                min_time,
            );
            if let Some(e) = failed {
                return Err(e);
            }
            let shape = shape.iter().map(usize::to_string).collect::<Vec<_>>().join("x");
            rows.push(AugmentRow { op: name.into(), shape, img_per_s: n as f64 / secs });
        }
    }
    Ok(rows)
}
