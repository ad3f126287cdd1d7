//! `stn rectify`: apply a trained transformer to image files of any size. The localization
//! net sees the image in gray, resampled to its input size; the sampler reads the
//! full-resolution original (all its channels), so the output keeps the original's detail:
//! its size is the transformer's output size scaled by original size / localization size.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use stn_data::Image;

use crate::models::Classifier;
use crate::run::RunResult;

/// What a rectification run did.
#[derive(Debug, Clone, Default)]
pub struct RectifyOutcome {
    /// The PNG files written, one per readable input.
    pub written: Vec<PathBuf>,
    /// The inputs that failed, with the reason.
    pub failed: Vec<(PathBuf, String)>,
    /// The theta file (one JSON object per written image), if anything was written.
    pub thetas: Option<PathBuf>,
}

fn luminance(img: &Image) -> Vec<f32> {
    if img.channels == 1 {
        return img.data.clone();
    }
    let p = img.height * img.width;
    (0..p).map(|i| 0.299 * img.data[i] + 0.587 * img.data[p + i] + 0.114 * img.data[2 * p + i]).collect()
}

fn one(
    model: &Classifier,
    path: &Path,
    out: &Path,
    dev: &Device,
) -> Result<(PathBuf, serde_json::Value), String> {
    let t = model.transformer.as_ref().expect("checked by the caller");
    let img = Image::load_native(path).map_err(|e| e.to_string())?;
    let (h, w) = (img.height, img.width);
    let gray = Tensor::<4>::from_data(TensorData::new(luminance(&img), [1, 1, h, w]), dev);
    let theta = t.localize(gray).map_err(|e| e.to_string())?;
    let loc = &t.config().localization.input_size;
    let (lh, lw) = (loc[0] as f64, loc[1] as f64);
    let (th, tw) = (t.out_size()[0] as f64, t.out_size()[1] as f64);
    let size =
        [((th * h as f64 / lh).round() as usize).max(1), ((tw * w as f64 / lw).round() as usize).max(1)];
    let full = Tensor::<4>::from_data(TensorData::new(img.data.clone(), [1, img.channels, h, w]), dev);
    let warped =
        t.transform().warp(full, theta.clone(), &size, t.sample_options()).map_err(|e| e.to_string())?;
    let data: Vec<f32> =
        warped.into_data().convert::<f32>().try_into_vec::<f32>().map_err(|e| format!("{e:?}"))?;
    let rect = Image { data, channels: img.channels, height: size[0], width: size[1] };
    let png = rect.to_png().map_err(|e| e.to_string())?;
    let stem = path.file_stem().map_or("image".into(), |s| s.to_string_lossy().into_owned());
    let target = out.join(format!("{stem}.png"));
    stn::persist::write_atomic(&target, &png).map_err(|e| e.to_string())?;
    let th: Vec<f32> =
        theta.into_data().convert::<f32>().try_into_vec::<f32>().map_err(|e| format!("{e:?}"))?;
    let line = serde_json::json!({
        "input": path.display().to_string(),
        "output": target.display().to_string(),
        "size": size,
        "theta": th,
    });
    Ok((target, line))
}

/// Rectifies every input into `out` (created if missing). A bad input (missing, not an image,
/// corrupt) is recorded in [`RectifyOutcome::failed`] and skipped; an output file that already
/// exists is never overwritten (that input fails). `log` sees one line per input.
pub fn rectify(
    model: &Classifier,
    inputs: &[PathBuf],
    out: &Path,
    log: &mut dyn FnMut(String),
) -> RunResult<RectifyOutcome> {
    if model.transformer.is_none() {
        return Err(
            "this model has no spatial transformer; rectify needs an ST model (st-fcn, st-cnn, tutorial)"
                .into(),
        );
    }
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
    let model = model.valid();
    let dev = Device::flex();
    let mut outcome = RectifyOutcome::default();
    let mut names = HashSet::new();
    let mut lines = String::new();
    for path in inputs {
        let stem = path.file_stem().map_or("image".into(), |s| s.to_string_lossy().into_owned());
        if !names.insert(stem.clone()) || out.join(format!("{stem}.png")).exists() {
            let why = format!("{stem}.png would overwrite another output; rename the input");
            log(format!("skipped {}: {why}", path.display()));
            outcome.failed.push((path.clone(), why));
            continue;
        }
        match one(&model, path, out, &dev) {
            Ok((target, line)) => {
                log(format!("{} -> {}", path.display(), target.display()));
                lines.push_str(&line.to_string());
                lines.push('\n');
                outcome.written.push(target);
            }
            Err(e) => {
                log(format!("skipped {}: {e}", path.display()));
                outcome.failed.push((path.clone(), e));
            }
        }
    }
    if !outcome.written.is_empty() {
        stn::persist::write_atomic(&thetas, lines.as_bytes()).map_err(|e| e.to_string())?;
        outcome.thetas = Some(thetas);
    }
    Ok(outcome)
}
