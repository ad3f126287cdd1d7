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
    /// The inputs that failed, with the reason.
    pub failed: Vec<(PathBuf, String)>,
    /// The record of every copy (`augment.jsonl`: input, output, copy, warp), if anything was
    /// written.
    pub record: Option<PathBuf>,
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
/// `augment.jsonl` with each copy's warp. A bad input is recorded in
/// [`AugmentOutcome::failed`] and skipped; nothing is overwritten.
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
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let record = out.join("augment.jsonl");
    if record.exists() {
        return Err(format!(
            "{} already holds augmented images (augment.jsonl); choose another --out",
            out.display()
        ));
    }
    let ext = match encoding {
        Encoding::Png(_) => "png",
        Encoding::Jpeg(_) => "jpg",
    };
    let device = Device::flex();
    let mut outcome = AugmentOutcome::default();
    let mut lines = String::new();
    let mut stems = std::collections::HashSet::new();
    for (i, path) in inputs.iter().enumerate() {
        let stem = path.file_stem().map_or("image".into(), |s| s.to_string_lossy().into_owned());
        let done = (|| -> Result<Vec<(PathBuf, String)>, String> {
            if !stems.insert(stem.clone()) {
                return Err(format!("another input is also named {stem}; rename one"));
            }
            let img = Image::load_native(path).map_err(|e| e.to_string())?;
            let mut made = Vec::with_capacity(copies);
            for copy in 0..copies {
                let target = out.join(format!("{stem}-{copy}.{ext}"));
                if target.exists() {
                    return Err(format!("{} exists; not overwritten", target.display()));
                }
                let (warped, warp) = augment_image(aug, &img, Key::new(seed, copy as u64, i as u64), &device)
                    .map_err(|e| e.to_string())?;
                let bytes = warped.encode(encoding).map_err(|e| e.to_string())?;
                stn::persist::write_atomic(&target, &bytes).map_err(|e| e.to_string())?;
                let line = serde_json::json!({
                    "input": path.display().to_string(),
                    "output": target.display().to_string(),
                    "index": i,
                    "copy": copy,
                    "warp": warp,
                });
                made.push((target, line.to_string()));
            }
            Ok(made)
        })();
        match done {
            Ok(made) => {
                log(format!("{} -> {} copies", path.display(), made.len()));
                for (target, line) in made {
                    lines.push_str(&line);
                    lines.push('\n');
                    outcome.written.push(target);
                }
            }
            Err(e) => {
                log(format!("skipped {}: {e}", path.display()));
                outcome.failed.push((path.clone(), e));
            }
        }
    }
    if !outcome.written.is_empty() {
        stn::persist::write_atomic(&record, lines.as_bytes()).map_err(|e| e.to_string())?;
        outcome.record = Some(record);
    }
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
