//! `stn rectify` on image files: a trained transformer applied to image files of any size
//! through the rectification core ([`Rectifier`]): the localization net sees the image in
//! gray at its own input size, the sampler reads the full-resolution original (all its
//! channels), so the output keeps the original's detail.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use stn_data::image_io::Encoding;
use stn_data::Image;
use stn_fs::RecordLog;
use stn_models::rectify::Rectifier;
use stn_models::run::RunResult;
use stn_table::lineage::Lineage;

/// What a rectification run did.
#[derive(Debug, Clone, Default)]
pub struct RectifyOutcome {
    /// The image files written, one per readable input.
    pub written: Vec<PathBuf>,
    /// Inputs an earlier run into the same folder already rectified (same model and options).
    pub skipped: Vec<PathBuf>,
    /// The inputs that failed, with the reason.
    pub failed: Vec<(PathBuf, String)>,
    /// The theta file (one JSON object per written image, appended as each is written).
    pub thetas: Option<PathBuf>,
    /// Temporary files of an interrupted run that were removed.
    pub cleaned: Vec<PathBuf>,
}

/// Files decoded and rectified together.
const FILES_PER_BATCH: usize = 16;

/// The lineage file of an output folder of image files.
pub const LINEAGE_FILE: &str = "stn-lineage.json";

/// Makes sure `out` holds outputs of `lineage` only: writes its lineage file in a new folder,
/// or checks the one there (a folder made by another model or with other options is an error
/// saying how it differs). Removes the temporary files an interrupted run left there.
pub fn claim_folder(out: &Path, lineage: &Lineage) -> RunResult<Vec<PathBuf>> {
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let file = out.join(LINEAGE_FILE);
    match std::fs::read_to_string(&file) {
        Ok(text) => {
            let there = Lineage::from_json(&text).map_err(|e| format!("{}: {e}", file.display()))?;
            let d = there.differences(lineage);
            if !d.is_empty() {
                return Err(format!(
                    "{} holds outputs made differently ({}); nothing there is overwritten: choose another --out",
                    out.display(),
                    d.join("; ")
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(old) = ["theta.jsonl", "augment.jsonl"].into_iter().find(|f| out.join(f).exists()) {
                return Err(format!(
                    "{} holds the outputs of a run that recorded no lineage ({old}, no {LINEAGE_FILE}); choose another --out",
                    out.display()
                ));
            }
            match stn_fs::write_new(&file, format!("{}\n", lineage.to_json()).as_bytes()) {
                Ok(()) | Err(stn_fs::CommitError::Exists(_)) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
    }
    stn_fs::clean_stale_partials(out).map_err(|e| format!("{}: {e}", out.display()))
}

/// Rectifies every input into `out` (created if missing) as `<stem>.png` (or `.jpg` for a JPEG
/// `encoding`), and appends each image's theta to `theta.jsonl` as it is written. A bad input
/// (missing, not an image, corrupt) is recorded in [`RectifyOutcome::failed`] and skipped; no
/// output file is ever overwritten. A run into a folder that an interrupted run of the same
/// model and options left goes on where it stopped (inputs with a record and their image are
/// skipped); a folder made by another model or options is an error. `log` sees one line per
/// input.
pub fn rectify(
    rectifier: &Rectifier,
    inputs: &[PathBuf],
    out: &Path,
    encoding: Encoding,
    log: &mut dyn FnMut(String),
) -> RunResult<RectifyOutcome> {
    if inputs.is_empty() {
        return Err("no input images".into());
    }
    let mut options = std::collections::BTreeMap::new();
    options.insert("encoding".to_string(), format!("{encoding:?}"));
    let model = rectifier.model_id().unwrap_or(stn_table::lineage::UNKNOWN_MODEL);
    let lineage = Lineage::new("rectify-files", Some(model), options);
    let mut outcome = RectifyOutcome { cleaned: claim_folder(out, &lineage)?, ..Default::default() };
    let thetas = out.join("theta.jsonl");
    let (mut record, done) =
        RecordLog::open(&thetas).map_err(|e| format!("cannot open {}: {e}", thetas.display()))?;
    let done: HashSet<String> = done
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("output").and_then(|o| o.as_str()).map(str::to_string))
        .collect();
    let ext = match encoding {
        Encoding::Png(_) => "png",
        Encoding::Jpeg(_) => "jpg",
    };
    let mut names = HashSet::new();
    for chunk in inputs.chunks(FILES_PER_BATCH) {
        let mut ready: Vec<(&PathBuf, PathBuf, Image, bool)> = Vec::new();
        for path in chunk {
            let stem = path.file_stem().map_or("image".into(), |s| s.to_string_lossy().into_owned());
            let target = out.join(format!("{stem}.{ext}"));
            let recorded = done.contains(&target.display().to_string());
            if !names.insert(stem.clone()) || (target.exists() && !recorded) {
                let why = format!("{stem}.{ext} would overwrite another output; rename the input");
                log(format!("skipped {}: {why}", path.display()));
                outcome.failed.push((path.clone(), why));
                continue;
            }
            if recorded && target.exists() {
                log(format!("{} -> {} (done before)", path.display(), target.display()));
                outcome.skipped.push(path.clone());
                continue;
            }
            match Image::load_native(path) {
                Ok(img) => ready.push((path, target, img, recorded)),
                Err(e) => {
                    log(format!("skipped {}: {e}", path.display()));
                    outcome.failed.push((path.clone(), e.to_string()));
                }
            }
        }
        let images: Vec<&Image> = ready.iter().map(|(_, _, img, _)| img).collect();
        let results = rectifier.rectify(&images);
        for ((path, target, _, recorded), result) in ready.iter().zip(results) {
            let written = result.and_then(|r| {
                let bytes = r.image.encode(encoding).map_err(|e| e.to_string())?;
                // The record first, then the image: a run killed between the two leaves a
                // record whose image the next run makes, never an image without its theta.
                if !recorded {
                    let line = serde_json::json!({
                        "input": path.display().to_string(),
                        "output": target.display().to_string(),
                        "size": [r.image.height, r.image.width],
                        "theta": r.theta,
                        // theta decomposed: rotation, scales, shear, translation, zoom.
                        "explain": explain_theta(rectifier, &r.theta),
                    });
                    record
                        .append(&line.to_string())
                        .map_err(|e| format!("cannot write {}: {e}", thetas.display()))?;
                }
                stn_fs::write_new(target, &bytes).map_err(|e| e.to_string())?;
                Ok(r)
            });
            match written {
                Ok(_) => {
                    log(format!("{} -> {}", path.display(), target.display()));
                    outcome.written.push(target.clone());
                }
                Err(e) => {
                    log(format!("skipped {}: {e}", path.display()));
                    outcome.failed.push(((*path).clone(), e));
                }
            }
        }
    }
    outcome.thetas = Some(thetas);
    Ok(outcome)
}

/// `theta` decomposed under the rectifier's family (`stn::explain`), as JSON; null when it
/// cannot be (a non-finite value).
fn explain_theta(rectifier: &Rectifier, theta: &[f32]) -> serde_json::Value {
    let v: Vec<f64> = theta.iter().map(|&t| f64::from(t)).collect();
    stn::explain::explain(rectifier.transform(), &v)
        .ok()
        .and_then(|e| serde_json::to_value(e).ok())
        .unwrap_or(serde_json::Value::Null)
}
