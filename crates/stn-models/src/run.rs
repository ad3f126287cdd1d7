//! Training and evaluation runs: data, the training loop, per-epoch metrics and checkpoints.
//!
//! A run folder holds `model.stn` (the classifier and the [`RunConfig`] that built it, written
//! atomically after every epoch) and `metrics.jsonl` (one JSON object per epoch).

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::config::Config;
use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Int, Tensor, TensorData};
use stn_data::{Dataset, Distortion};

use crate::models::{nll_loss, Classifier, ModelConfig};

/// Everything that defines a training run; saved in the checkpoint.
#[derive(Config, Debug)]
pub struct RunConfig {
    /// The model.
    pub model: ModelConfig,
    /// `mnist10k` (the embedded set) or an IDX prefix.
    pub data: String,
    /// The distortion's name (`none`, `r`, `rts`, `p`, `e`, `tc`).
    pub distortion: String,
    /// Seed of the distortion, the shuffling and the initialization.
    pub seed: u64,
    /// Epochs to train.
    pub epochs: usize,
    /// Batch size.
    #[config(default = 64)]
    pub batch: usize,
    /// Adam learning rate.
    #[config(default = 1e-3)]
    pub lr: f64,
    /// The localization net's learning rate as a multiple of `lr` (Adam normalizes gradient
    /// scales, so a slower localization net needs its own rate; 1: the same).
    #[config(default = 1.0)]
    pub loc_lr: f64,
    /// Use only the first this many training images (0: all).
    #[config(default = 0)]
    pub train_size: usize,
    /// Use only the first this many test images (0: all).
    #[config(default = 0)]
    pub test_size: usize,
    /// Epochs completed (saved with the weights, so a checkpoint knows where it stands).
    #[config(default = 0)]
    pub completed_epochs: usize,
    /// Training on an image table instead of `data`: where the table is and how to read it.
    #[config(default = "None")]
    pub table: Option<TableData>,
    /// Random warps of every training batch (an [`stn::augment::Augment`] spec), drawn per
    /// image from (seed, epoch, image index); None: no augmentation. The test set is never
    /// augmented.
    #[config(default = "None")]
    pub augment: Option<String>,
    /// The device to train on (`cpu`, `wgpu`, `vulkan`, `cuda`; see [`stn::device`]); None: cpu.
    /// A resumed run takes the one asked for now, not the checkpoint's.
    #[config(default = "None")]
    pub device: Option<String>,
    /// Where the weights came from when they were not trained here (`stn import-torch`: the
    /// file and its content hash); None: trained by `stn train`.
    #[config(default = "None")]
    pub source: Option<String>,
}

/// A run's image table (a Parquet file or a folder of them), read by `stn-table`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TableData {
    /// The training table.
    pub path: String,
    /// The test table; without one, the last fifth of the training table's rows is held out
    /// (for the embedded digits written in order, exactly the embedded split).
    pub test_path: Option<String>,
    /// The image column (None: detected).
    pub image_column: Option<String>,
    /// The label column (integers from 0).
    pub label_column: String,
    /// Height and width every image is resized to before the distortion (None: the first
    /// usable image's size).
    pub image_size: Option<[usize; 2]>,
    /// The version read of a Delta table (the training table's; None: not a Delta table):
    /// resolved when the run starts, so the run names exactly the rows it trained on.
    #[serde(default)]
    pub delta_version: Option<u64>,
}

/// One epoch's metrics (a line of `metrics.jsonl`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct EpochMetrics {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f64,
    /// Training accuracy (dropout on).
    pub train_accuracy: f64,
    /// Test error rate (the held-out split under the same distortion, another seed).
    pub test_error: f64,
    /// Training images per second.
    pub images_per_s: f64,
    /// Seconds the epoch took.
    pub seconds: f64,
}

/// Errors of a run, with context for the user.
pub type RunResult<T> = Result<T, String>;

/// The training and test sets of a run, distorted: the embedded split, or for an IDX prefix
/// its files for training and the same files for testing (name a second prefix with
/// [`load_test`] to test elsewhere).
pub fn load_data(cfg: &RunConfig) -> RunResult<(Dataset, Dataset)> {
    if cfg.table.is_some() {
        return Err("this run trains on an image table: load it with stn-table's loader (train_with)".into());
    }
    let (train, test) = if cfg.data == "mnist10k" {
        Dataset::embedded_split().map_err(|e| e.to_string())?
    } else {
        let d = Dataset::load_prefix(&cfg.data).map_err(|e| e.to_string())?;
        (d.clone(), d)
    };
    prepare(cfg, train, test)
}

/// The training and test sets of a run from undistorted ones: cut to `train_size` /
/// `test_size`, then distorted (the training set with the run's seed, the test set with the
/// next).
pub fn prepare(cfg: &RunConfig, train: Dataset, test: Dataset) -> RunResult<(Dataset, Dataset)> {
    let distortion: Distortion = cfg.distortion.parse().map_err(|e| format!("{e}"))?;
    let cut = |d: Dataset, n: usize| if n == 0 || n >= d.len() { Ok(d) } else { d.subset(0..n) };
    let train = cut(train, cfg.train_size).map_err(|e| e.to_string())?;
    let test = cut(test, cfg.test_size).map_err(|e| e.to_string())?;
    let train = distortion.apply(&train, cfg.seed).map_err(|e| e.to_string())?;
    let test = distortion.apply(&test, cfg.seed.wrapping_add(1)).map_err(|e| e.to_string())?;
    Ok((train, test))
}

/// A test set from IDX files under a distortion.
pub fn load_test(images: &Path, labels: &Path, distortion: &str, seed: u64) -> RunResult<Dataset> {
    let distortion: Distortion = distortion.parse().map_err(|e| format!("{e}"))?;
    let d = Dataset::load_idx(images, labels).map_err(|e| e.to_string())?;
    distortion.apply(&d, seed).map_err(|e| e.to_string())
}

/// Images `idx` of `d` as a batch (N, 1, H, W) and labels.
pub fn batch(d: &Dataset, idx: &[usize], device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
    let p = d.pixels();
    let mut x = Vec::with_capacity(idx.len() * p);
    for &i in idx {
        x.extend_from_slice(d.image(i));
    }
    let y: Vec<i64> = idx.iter().map(|&i| d.labels[i] as i64).collect();
    (
        Tensor::from_data(TensorData::new(x, [idx.len(), 1, d.height, d.width]), device),
        Tensor::from_data(TensorData::new(y, [idx.len()]), device),
    )
}

/// The predicted class of each row of `log_probs` (N, classes).
pub fn argmax(log_probs: Tensor<2>) -> Vec<i64> {
    log_probs.argmax(1).into_data().convert::<i64>().try_into_vec::<i64>().unwrap_or_default()
}

/// Error rate of `model` on `data` (no dropout, no autodiff), on flex.
pub fn error_rate(model: &Classifier, data: &Dataset, batch_size: usize) -> RunResult<f64> {
    error_rate_on(model, data, batch_size, &Device::flex())
}

/// That every label of `data` names one of the model's `classes` (a label at or above it would
/// index past the model's outputs in the loss): the first one that does not is the error.
pub fn check_labels(data: &Dataset, classes: usize, which: &str) -> RunResult<()> {
    match data.labels.iter().position(|&l| l as usize >= classes) {
        Some(i) => Err(format!(
            "the {which} set's image {i} has label {}, but the model has {classes} classes (labels 0 to {})",
            data.labels[i],
            classes.saturating_sub(1)
        )),
        None => Ok(()),
    }
}

/// Error rate of `model` (whose parameters live on `device`, with or without autodiff) on `data`.
pub fn error_rate_on(
    model: &Classifier,
    data: &Dataset,
    batch_size: usize,
    device: &Device,
) -> RunResult<f64> {
    if data.is_empty() {
        return Err("the data set is empty: no error rate".into());
    }
    check_labels(data, model.classes(), "evaluation")?;
    let dev = device.clone().without_autodiff();
    let model = model.valid();
    let mut wrong = 0usize;
    let idx: Vec<usize> = (0..data.len()).collect();
    for chunk in idx.chunks(batch_size.max(1)) {
        let (x, _) = batch(data, chunk, &dev);
        let out = model.try_forward(x).map_err(|e| e.to_string())?;
        let pred = argmax(out.log_probs);
        wrong += chunk.iter().zip(&pred).filter(|(&i, &p)| data.labels[i] as i64 != p).count();
    }
    Ok(wrong as f64 / data.len() as f64)
}

/// A seeded permutation of `0..n` (Fisher-Yates with SplitMix64).
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut s = seed ^ 0xD1B5_4A32_D192_ED03;
    let mut next = || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        p.swap(i, j);
    }
    p
}

/// The checkpoint file of a run folder.
pub fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join("model.stn")
}

/// The content hash of a run folder's model file: `sha256:` and the hex digest of `model.stn`.
/// Outputs record it (their lineage), so a re-run knows whether they were made by this model.
pub fn model_id(dir: &Path) -> RunResult<String> {
    file_id(&checkpoint_path(dir))
}

/// The content hash of a file: `sha256:` and the hex digest of its bytes.
pub fn file_id(path: &Path) -> RunResult<String> {
    use sha2::Digest;
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let digest = sha2::Sha256::digest(&bytes);
    Ok(format!("sha256:{}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>()))
}

/// The digest of a model's weights: the SHA-256, in hex, of every parameter in the order of
/// their paths in the module (`convs.0.conv.weight`, ...), each as its path, a NUL byte, its
/// shape (little-endian `u64` per dimension, after their count) and its values as
/// little-endian `f32`. The model file's encoding (parameter IDs, header, run options) changes
/// nothing: two machines that trained the same weights print the same digest.
pub fn weights_digest(model: &Classifier) -> RunResult<String> {
    use burn_store::ModuleSnapshot;
    use sha2::Digest;
    let mut tensors = model.collect(None, None, false);
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let mut h = sha2::Sha256::new();
    for t in &tensors {
        let data = burn_store::bridge::to_data(t).map_err(|e| format!("weights `{}`: {e}", t.name))?;
        let values = data.try_to_vec::<f32>().map_err(|e| format!("weights `{}`: {e:?}", t.name))?;
        h.update(t.name.as_bytes());
        h.update([0u8]);
        h.update((data.shape().len() as u64).to_le_bytes());
        for d in data.shape().iter() {
            h.update((*d as u64).to_le_bytes());
        }
        for v in values {
            h.update(v.to_le_bytes());
        }
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Loads a run folder's model (on flex, for inference) and configuration.
pub fn load_run(dir: &Path) -> RunResult<(Classifier, RunConfig)> {
    load_run_on(dir, &Device::flex())
}

/// The optimizer state of a run folder after `epoch` epochs (`optimizer-E.bin`). One per
/// checkpoint: the state is written before the model's checkpoint names its epoch, and the
/// previous one removed after, so a run killed at any point leaves a checkpoint whose optimizer
/// state is there (runs of older versions have `optimizer.bin`).
pub fn optimizer_path(dir: &Path, epoch: usize) -> PathBuf {
    dir.join(format!("optimizer-{epoch}.bin"))
}

/// Removes the optimizer states of a run folder other than the one of `keep` epochs (left by a
/// run killed between writing one and committing its checkpoint, or the previous checkpoint's).
fn remove_other_optimizer_states(dir: &Path, keep: usize) {
    let keep = optimizer_path(dir, keep);
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("optimizer-") && name.ends_with(".bin") && e.path() != keep {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Loads a run folder's model onto `device` and its configuration.
pub fn load_run_on(dir: &Path, device: &Device) -> RunResult<(Classifier, RunConfig)> {
    let path = checkpoint_path(dir);
    if !path.is_file() {
        return Err(format!(
            "{} is not a run folder (no model.stn); make one with `stn train --out`",
            dir.display()
        ));
    }
    let (cfg, record) = stn::persist::load::<RunConfig>(&path).map_err(|e| e.to_string())?;
    let model = cfg.model.init(device).map_err(|e| e.to_string())?;
    let model = stn::persist::apply(model, record, &path).map_err(|e| e.to_string())?;
    Ok((model, cfg))
}

/// Called after each batch with (epoch, batch, batches, running loss, running accuracy, images/s).
pub type Progress<'a> = dyn FnMut(usize, usize, usize, f64, f64, f64) + 'a;

/// Trains for `cfg.epochs` epochs, writing the optimizer state, the checkpoint (weights +
/// configuration with the epochs completed) and a metrics line after each into `out`
/// (created if missing). With `resume`, continues the run in `out` from its checkpoint up to
/// `cfg.epochs` epochs in all (the rest of `cfg` comes from the checkpoint). Returns the
/// metrics of the epochs trained now.
pub fn train(
    cfg: &RunConfig,
    out: &Path,
    resume: bool,
    progress: &mut Progress<'_>,
) -> RunResult<Vec<EpochMetrics>> {
    train_with(cfg, out, resume, &load_data, progress)
}

/// The Burn device of a run's `device` setting (None: cpu).
pub fn run_device(name: Option<&str>) -> RunResult<Device> {
    match name {
        None => Ok(Device::flex()),
        Some(n) => stn::device::select_by_name(n).map(|s| s.device).map_err(|e| e.to_string()),
    }
}

/// What gives a run its training and test sets (distorted), from the run's configuration.
pub type DataLoader<'a> = dyn Fn(&RunConfig) -> RunResult<(Dataset, Dataset)> + 'a;

/// [`train`] with the data sets from `load` (for example an image table's loader; on resume it
/// is called with the checkpoint's configuration).
pub fn train_with(
    cfg: &RunConfig,
    out: &Path,
    resume: bool,
    load: &DataLoader<'_>,
    progress: &mut Progress<'_>,
) -> RunResult<Vec<EpochMetrics>> {
    if cfg.epochs == 0 || cfg.batch == 0 {
        return Err("--epochs and --batch must be at least 1".into());
    }
    if !cfg.lr.is_finite() || cfg.lr <= 0.0 {
        return Err(format!("--lr must be a positive number, got {}", cfg.lr));
    }
    if !cfg.loc_lr.is_finite() || cfg.loc_lr <= 0.0 {
        return Err(format!("--loc-lr must be a positive number, got {}", cfg.loc_lr));
    }
    let device = run_device(cfg.device.as_deref())?.autodiff();
    let metrics_path = out.join("metrics.jsonl");
    let saved = if resume {
        let (model, saved) = load_run_on(out, &device)?;
        if saved.completed_epochs >= cfg.epochs {
            return Err(format!(
                "{} has already trained {} epochs; ask for more with --epochs",
                out.display(),
                saved.completed_epochs
            ));
        }
        Some((model, saved))
    } else {
        if checkpoint_path(out).exists() {
            return Err(format!(
                "{} already holds a run (model.stn); continue it with --resume or choose another --out",
                out.display()
            ));
        }
        None
    };
    let first_start = saved.is_none();
    let mut run_cfg = match &saved {
        Some((_, s)) => RunConfig { epochs: cfg.epochs, device: cfg.device.clone(), ..s.clone() },
        None => cfg.clone(),
    };
    let (train_set, test_set) = load(&run_cfg)?;
    check_labels(&train_set, run_cfg.model.classes, "training")?;
    check_labels(&test_set, run_cfg.model.classes, "test")?;
    run_cfg.model.input_size = [train_set.height, train_set.width];
    let (mut model, mut optim) = match saved {
        Some((model, s)) => {
            let mut opt_path = optimizer_path(out, s.completed_epochs);
            if !opt_path.exists() && out.join("optimizer.bin").exists() {
                opt_path = out.join("optimizer.bin");
            }
            let bytes =
                std::fs::read(&opt_path).map_err(|e| format!("cannot read {}: {e}", opt_path.display()))?;
            let record = burn::optim::OptimizerRecord::from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))
                .map_err(|e| format!("{}: corrupt optimizer state: {e:?}", opt_path.display()))?;
            remove_other_optimizer_states(out, s.completed_epochs);
            let _ = stn_fs::clean_stale_partials(out);
            // Metrics of epochs the checkpoint does not include (a stop between files) are dropped.
            let kept: String = std::fs::read_to_string(&metrics_path)
                .unwrap_or_default()
                .lines()
                .take(s.completed_epochs)
                .map(|l| format!("{l}\n"))
                .collect();
            stn::persist::write_atomic(&metrics_path, kept.as_bytes()).map_err(|e| e.to_string())?;
            (model, AdamConfig::new().init().load_record(record))
        }
        None => {
            device.seed(run_cfg.seed);
            (run_cfg.model.init(&device).map_err(|e| e.to_string())?, AdamConfig::new().init())
        }
    };
    let cfg = run_cfg.clone();
    let cfg = &cfg;
    let augment = match &cfg.augment {
        Some(spec) => Some(stn::augment::Augment::parse(spec).map_err(|e| format!("--augment: {e}"))?),
        None => None,
    };
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    if first_start {
        // What a run killed before its first checkpoint left (a metrics line, an optimizer
        // state, temporary files) is not part of this one.
        stn::persist::write_atomic(&metrics_path, b"").map_err(|e| e.to_string())?;
        remove_other_optimizer_states(out, 0);
        let _ = stn_fs::clean_stale_partials(out);
    }
    let mut all = Vec::new();
    let n = train_set.len();
    let batches = n.div_ceil(cfg.batch);
    let first = cfg.completed_epochs + 1;
    for epoch in first..=cfg.epochs {
        let start = Instant::now();
        let order = permutation(n, cfg.seed.wrapping_add(epoch as u64));
        let (mut loss_sum, mut correct, mut seen) = (0.0, 0usize, 0usize);
        for (b, idx) in order.chunks(cfg.batch).enumerate() {
            let (x, y) = batch(&train_set, idx, &device);
            let x = match &augment {
                Some(aug) => {
                    let keys =
                        stn::augment::Key::batch(cfg.seed, epoch as u64, idx.iter().map(|&i| i as u64));
                    aug.forward(x, &keys).map_err(|e| e.to_string())?.image
                }
                None => x,
            };
            let out = model.try_forward(x).map_err(|e| e.to_string())?;
            let pred = argmax(out.log_probs.clone().inner());
            correct += idx.iter().zip(&pred).filter(|(&i, &p)| train_set.labels[i] as i64 == p).count();
            let mut loss = nll_loss(out.log_probs, y);
            if let Some(p) = out.penalty {
                loss = loss + p;
            }
            let lv: f64 = loss.clone().inner().into_scalar::<f32>() as f64;
            if !lv.is_finite() {
                return Err(format!("the loss became {lv} in epoch {epoch}; try a smaller --lr"));
            }
            let mut raw = loss.backward();
            // The localization net's gradients, apart when it has its own learning rate.
            let loc = match &model.transformer {
                Some(t) if cfg.loc_lr != 1.0 => {
                    Some(t.scale_grads(GradientsParams::from_module(&mut raw, &t.localization)))
                }
                _ => None,
            };
            let mut grads = GradientsParams::from_grads(raw, &model);
            if let Some(t) = &model.transformer {
                grads = t.scale_grads(grads);
            }
            if let Some(loc) = loc {
                model = optim.step(cfg.lr * cfg.loc_lr, model, loc);
            }
            model = optim.step(cfg.lr, model, grads);
            loss_sum += lv * idx.len() as f64;
            seen += idx.len();
            let ips = seen as f64 / start.elapsed().as_secs_f64();
            progress(epoch, b + 1, batches, loss_sum / seen as f64, correct as f64 / seen as f64, ips);
        }
        let seconds = start.elapsed().as_secs_f64();
        let test_error = error_rate_on(&model, &test_set, 256, &device)?;
        let m = EpochMetrics {
            epoch,
            train_loss: loss_sum / n as f64,
            train_accuracy: correct as f64 / n as f64,
            test_error,
            images_per_s: n as f64 / seconds,
            seconds,
        };
        let state = optim
            .to_record()
            .into_bytes()
            .map_err(|e| format!("cannot encode the optimizer state: {e:?}"))?;
        // The epoch's optimizer state and metrics first, then the checkpoint that names the
        // epoch: killed anywhere, the folder holds a checkpoint and the state that goes with it
        // (a resume drops metrics lines beyond the checkpoint's epoch).
        stn::persist::write_atomic(&optimizer_path(out, epoch), &state).map_err(|e| e.to_string())?;
        let line = serde_json::to_string(&m).map_err(|e| e.to_string())?;
        let (mut metrics, _) = stn_fs::RecordLog::open(&metrics_path)
            .map_err(|e| format!("cannot write {}: {e}", metrics_path.display()))?;
        metrics.append(&line).map_err(|e| format!("cannot write {}: {e}", metrics_path.display()))?;
        run_cfg.completed_epochs = epoch;
        stn::persist::save(model.valid(), &run_cfg, &checkpoint_path(out)).map_err(|e| e.to_string())?;
        remove_other_optimizer_states(out, epoch);
        all.push(m);
    }
    Ok(all)
}
