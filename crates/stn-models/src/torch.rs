//! PyTorch-trained weights: the official tutorial's spatial transformer network
//! (<https://pytorch.org/tutorials/intermediate/spatial_transformer_tutorial.html>, where most
//! people start), imported onto stn's [`ModelKind::Tutorial`], which has its layers one for one.
//!
//! The tutorial's `state_dict` keys map as follows (Linear weights are transposed by Burn's
//! PyTorch adapter; convolutions have the same layout):
//!
//! | PyTorch | stn |
//! |---|---|
//! | `localization.0`, `localization.3` (conv 7x7, conv 5x5) | `transformer.localization.convs.0`, `.1` |
//! | `fc_loc.0`, `fc_loc.2` (Linear 90 -> 32, 32 -> 6) | `transformer.localization.hidden.0`, `.head` |
//! | `conv1`, `conv2` | `convs.0.conv`, `convs.1.conv` |
//! | `fc1`, `fc2` | `fcs.0`, `fcs.1` |
//!
//! [`TorchArch::TutorialCnn`] is the classifier alone (`conv*`, `fc*`). Files: PyTorch's
//! `torch.save` (`.pt`, `.pth`: a `state_dict`, or a checkpoint dict holding one under
//! `state_dict`, `model_state_dict` or `model`) and safetensors (`.safetensors`). Every missing,
//! extra or mis-shaped tensor is named in one error. The tutorial feeds its net normalized
//! digits, `(x - 0.1307) / 0.3081`: that normalization becomes part of the imported model
//! ([`ModelConfig::normalize`]), so raw pixels in give PyTorch's theta out.

use std::path::Path;

use burn::module::Module;
use burn::tensor::Device;
use burn_store::{ApplyResult, ModuleSnapshot, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore};

use crate::models::{Classifier, ModelConfig, ModelKind};
use crate::run::{RunConfig, RunResult};

/// The tutorial's input normalization, `[mean, std]` of MNIST's pixels.
pub const TUTORIAL_NORMALIZATION: [f64; 2] = [0.1307, 0.3081];

/// Which PyTorch architecture a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TorchArch {
    /// The tutorial's `Net`: its spatial transformer and its classifier.
    Tutorial,
    /// The tutorial's classifier without the transformer (`conv1`, `conv2`, `fc1`, `fc2`).
    TutorialCnn,
}

impl std::str::FromStr for TorchArch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tutorial" => Ok(TorchArch::Tutorial),
            "tutorial-cnn" => Ok(TorchArch::TutorialCnn),
            _ => Err(format!("architecture: `tutorial` or `tutorial-cnn`, got `{s}`")),
        }
    }
}

impl TorchArch {
    /// The stn model it becomes (28 x 28 digits, 10 classes, as the tutorial's).
    pub fn model(self, normalize: Option<[f64; 2]>) -> ModelConfig {
        let kind = match self {
            TorchArch::Tutorial => ModelKind::Tutorial,
            TorchArch::TutorialCnn => ModelKind::TutorialCnn,
        };
        ModelConfig::new(kind, [28, 28]).with_normalize(normalize)
    }
}

/// PyTorch key patterns (regex, replacement) onto stn's module paths, applied in order.
const KEYS: [(&str, &str); 9] = [
    // A training checkpoint's dict around the state_dict.
    (r"^(?:state_dict|model_state_dict|model)\.", ""),
    (r"^localization\.0\.", "transformer.localization.convs.0."),
    (r"^localization\.3\.", "transformer.localization.convs.1."),
    (r"^fc_loc\.0\.", "transformer.localization.hidden.0."),
    (r"^fc_loc\.2\.", "transformer.localization.head."),
    (r"^conv1\.", "convs.0.conv."),
    (r"^conv2\.", "convs.1.conv."),
    (r"^fc1\.", "fcs.0."),
    (r"^fc2\.", "fcs.1."),
];

/// A tensor's name in both worlds: PyTorch's key (undoing [`KEYS`]) and stn's module path.
fn both_names(path: &str) -> String {
    let torch = KEYS[1..].iter().find_map(|(from, to)| {
        path.strip_prefix(to).map(|rest| format!("{}{rest}", &from[1..].replace('\\', "")))
    });
    match torch {
        Some(t) => format!("{t} (stn: {path})"),
        None => path.to_string(),
    }
}

/// What went wrong, every tensor named: the model's tensors the file lacks, the file's tensors
/// the model has no place for, and those of the wrong shape.
fn problems(result: &ApplyResult) -> Vec<String> {
    let mut out: Vec<String> = result.errors.iter().map(|e| format!("{e}")).collect();
    out.extend(result.missing.iter().map(|(path, _)| format!("missing: {}", both_names(path))));
    out.extend(result.unused.iter().map(|path| format!("not in the model: {}", both_names(path))));
    out
}

/// Reads a PyTorch or safetensors file of `arch` onto a new stn model; `normalize` is the
/// input's `[mean, std]` (None: the raw pixels). Every missing, extra or mis-shaped tensor is
/// named in the error.
pub fn import(
    path: &Path,
    arch: TorchArch,
    normalize: Option<[f64; 2]>,
) -> RunResult<(Classifier, ModelConfig)> {
    if !path.is_file() {
        return Err(format!("{}: no such file", path.display()));
    }
    let cfg = arch.model(normalize);
    let mut model = cfg.init(&Device::flex()).map_err(|e| e.to_string())?;
    let safetensors = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    let what = |e: &dyn std::fmt::Display| format!("{}: cannot read the weights: {e}", path.display());
    let result = if safetensors {
        let mut store = SafetensorsStore::from_file(path)
            .with_from_adapter(PyTorchToBurnAdapter)
            .validate(false)
            .allow_partial(true);
        for (from, to) in KEYS {
            store = store.with_key_remapping(from, to);
        }
        model.load_from(&mut store).map_err(|e| what(&e))?
    } else {
        let mut store =
            PytorchStore::from_file(path).map_indices_contiguous(false).validate(false).allow_partial(true);
        for (from, to) in KEYS {
            store = store.with_key_remapping(from, to);
        }
        model.load_from(&mut store).map_err(|e| what(&e))?
    };
    let problems = problems(&result);
    if !problems.is_empty() {
        return Err(format!(
            "{}: not the PyTorch tutorial's {} ({} {}):\n  {}",
            path.display(),
            match arch {
                TorchArch::Tutorial => "network (arch tutorial)",
                TorchArch::TutorialCnn => "classifier (arch tutorial-cnn)",
            },
            problems.len(),
            if problems.len() == 1 { "problem" } else { "problems" },
            problems.join("\n  ")
        ));
    }
    Ok((model, cfg))
}

/// The run configuration of an imported model: `source` says where its weights came from; the
/// data are the embedded digits (what `stn eval` tests it on by default), no epochs trained here.
pub fn run_config(model: ModelConfig, source: String) -> RunConfig {
    RunConfig::new(model, "mnist10k".into(), "none".into(), 0, 0).with_source(Some(source))
}

/// Imports `path` into a new run folder `out` (which must not hold a run): its `model.stn`
/// says where the weights came from (the file's name and content hash). Returns the model.
pub fn import_to_run(
    path: &Path,
    arch: TorchArch,
    normalize: Option<[f64; 2]>,
    out: &Path,
) -> RunResult<Classifier> {
    let (model, cfg) = import(path, arch, normalize)?;
    let checkpoint = crate::run::checkpoint_path(out);
    if checkpoint.exists() {
        return Err(format!("{} already holds a run (model.stn); choose another --out", out.display()));
    }
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let source = format!("torch {} {}", path.display(), crate::run::file_id(path)?);
    stn::persist::save(model.valid(), &run_config(cfg, source), &checkpoint).map_err(|e| e.to_string())?;
    Ok(model)
}

/// The rectifier of a PyTorch file of `arch` (imported in memory; its model id is the file's
/// content hash, so outputs' lineage names the weights).
pub fn rectifier(
    path: &Path,
    arch: TorchArch,
    normalize: Option<[f64; 2]>,
) -> RunResult<crate::rectify::Rectifier> {
    let (model, _) = import(path, arch, normalize)?;
    Ok(crate::rectify::Rectifier::new(&model)?.with_model_id(crate::run::file_id(path)?))
}
