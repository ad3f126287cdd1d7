//! `stn rectify` on image files: a trained transformer applied to image files of any size
//! through the rectification core ([`Rectifier`]): the localization net sees the image in
//! gray at its own input size, the sampler reads the full-resolution original (all its
//! channels), so the output keeps the original's detail.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use stn_data::image_io::Encoding;
use stn_data::Image;
use stn_models::rectify::Rectifier;
use stn_models::run::RunResult;

/// What a rectification run did.
#[derive(Debug, Clone, Default)]
pub struct RectifyOutcome {
    /// The image files written, one per readable input.
    pub written: Vec<PathBuf>,
    /// The inputs that failed, with the reason.
    pub failed: Vec<(PathBuf, String)>,
    /// The theta file (one JSON object per written image), if anything was written.
    pub thetas: Option<PathBuf>,
}

/// Files decoded and rectified together.
const FILES_PER_BATCH: usize = 16;

/// Rectifies every input into `out` (created if missing) as `<stem>.png` (or `.jpg` for a JPEG
/// `encoding`). A bad input (missing, not an image, corrupt) is recorded in
/// [`RectifyOutcome::failed`] and skipped; an output file that already exists is never
/// overwritten (that input fails). `log` sees one line per input.
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
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let thetas = out.join("theta.jsonl");
    if thetas.exists() {
        return Err(format!(
            "{} already holds rectified images (theta.jsonl); choose another --out",
            out.display()
        ));
    }
    let ext = match encoding {
        Encoding::Png(_) => "png",
        Encoding::Jpeg(_) => "jpg",
    };
    let mut outcome = RectifyOutcome::default();
    let mut names = HashSet::new();
    let mut lines = String::new();
    for chunk in inputs.chunks(FILES_PER_BATCH) {
        let mut ready: Vec<(&PathBuf, PathBuf, Image)> = Vec::new();
        for path in chunk {
            let stem = path.file_stem().map_or("image".into(), |s| s.to_string_lossy().into_owned());
            let target = out.join(format!("{stem}.{ext}"));
            if !names.insert(stem.clone()) || target.exists() {
                let why = format!("{stem}.{ext} would overwrite another output; rename the input");
                log(format!("skipped {}: {why}", path.display()));
                outcome.failed.push((path.clone(), why));
                continue;
            }
            match Image::load_native(path) {
                Ok(img) => ready.push((path, target, img)),
                Err(e) => {
                    log(format!("skipped {}: {e}", path.display()));
                    outcome.failed.push((path.clone(), e.to_string()));
                }
            }
        }
        let images: Vec<&Image> = ready.iter().map(|(_, _, img)| img).collect();
        let results = rectifier.rectify(&images);
        for ((path, target, _), result) in ready.iter().zip(results) {
            let written = result.and_then(|r| {
                let bytes = r.image.encode(encoding).map_err(|e| e.to_string())?;
                stn::persist::write_atomic(target, &bytes).map_err(|e| e.to_string())?;
                Ok(r)
            });
            match written {
                Ok(r) => {
                    log(format!("{} -> {}", path.display(), target.display()));
                    let line = serde_json::json!({
                        "input": path.display().to_string(),
                        "output": target.display().to_string(),
                        "size": [r.image.height, r.image.width],
                        "theta": r.theta,
                    });
                    lines.push_str(&line.to_string());
                    lines.push('\n');
                    outcome.written.push(target.clone());
                }
                Err(e) => {
                    log(format!("skipped {}: {e}", path.display()));
                    outcome.failed.push(((*path).clone(), e));
                }
            }
        }
    }
    if !outcome.written.is_empty() {
        stn::persist::write_atomic(&thetas, lines.as_bytes()).map_err(|e| e.to_string())?;
        outcome.thetas = Some(thetas);
    }
    Ok(outcome)
}
