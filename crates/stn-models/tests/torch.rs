//! PyTorch-trained weights imported: the tutorial's network trained with PyTorch
//! (`tools/torch/make_torch_fixture.py`, committed under `tests/fixtures/torch/`) gives PyTorch's
//! theta, transformer output and log-probabilities on raw digits, to 1e-5, from its `.pt`, its
//! `.safetensors` and a training checkpoint; wrong files are errors naming every tensor.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use stn_data::Image;
use stn_models::rectify::Rectifier;
use stn_models::run::load_run;
use stn_models::torch::{import, import_to_run, TorchArch, TUTORIAL_NORMALIZATION};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch").join(name)
}

struct Expected {
    inputs: Vec<f32>,
    n: usize,
    theta: Vec<f32>,
    log_probs: Vec<f32>,
    warped: Vec<f32>,
}

fn expected() -> Expected {
    let text = std::fs::read_to_string(fixture("expected.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let floats = |k: &str| -> Vec<f32> {
        v[k].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
    };
    assert_eq!(v["normalize"][0].as_f64().unwrap(), TUTORIAL_NORMALIZATION[0]);
    assert_eq!(v["normalize"][1].as_f64().unwrap(), TUTORIAL_NORMALIZATION[1]);
    let n = v["shape"][0].as_u64().unwrap() as usize;
    Expected {
        inputs: floats("inputs"),
        n,
        theta: floats("theta"),
        log_probs: floats("log_probs"),
        warped: floats("warped"),
    }
}

/// The largest difference, relative to the value where it is above 1 (the transformer's output
/// is in normalized units, up to about 3).
fn worst(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs() / y.abs().max(1.0)).fold(0.0, f32::max)
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
}

#[test]
fn the_tutorials_weights_give_pytorchs_theta_outputs_and_log_probs() {
    let e = expected();
    for file in ["tutorial.pt", "tutorial.safetensors", "checkpoint.pt"] {
        let (model, cfg) = import(&fixture(file), TorchArch::Tutorial, Some(TUTORIAL_NORMALIZATION))
            .unwrap_or_else(|err| panic!("{file}: {err}"));
        assert_eq!(cfg.normalize, Some(TUTORIAL_NORMALIZATION));
        let model = model.valid();
        let x = Tensor::<4>::from_data(TensorData::new(e.inputs.clone(), [e.n, 1, 28, 28]), &Device::flex());
        let out = model.forward(x);
        let theta = worst(&values(out.theta.unwrap()), &e.theta);
        let log_probs = worst(&values(out.log_probs), &e.log_probs);
        let warped = worst(&values(out.warped.unwrap()), &e.warped);
        eprintln!("{file}: largest difference from PyTorch: theta {theta:e}, log-probs {log_probs:e}, output {warped:e}");
        assert!(theta <= 1e-5, "{file}: theta off by {theta}");
        assert!(log_probs <= 1e-5, "{file}: log-probs off by {log_probs}");
        assert!(warped <= 1e-5, "{file}: transformer output off by {warped}");
    }
}

#[test]
fn an_imported_run_rectifies_raw_digits_with_pytorchs_theta() {
    let e = expected();
    let dir = std::env::temp_dir().join(format!("stn-torch-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    import_to_run(&fixture("tutorial.pt"), TorchArch::Tutorial, Some(TUTORIAL_NORMALIZATION), &dir).unwrap();
    let (_, cfg) = load_run(&dir).unwrap();
    let source = cfg.source.unwrap();
    assert!(source.starts_with("torch ") && source.contains("tutorial.pt sha256:"), "{source}");
    assert_eq!(cfg.model.normalize, Some(TUTORIAL_NORMALIZATION));
    // The rectifier sees raw pixels, normalizes them for the localization net as the model does.
    let r = Rectifier::from_run(&dir).unwrap();
    let images: Vec<Image> = e
        .inputs
        .chunks(28 * 28)
        .map(|d| Image { data: d.to_vec(), channels: 1, height: 28, width: 28 })
        .collect();
    let thetas: Vec<f32> = r.thetas(&images.iter().collect::<Vec<_>>()).unwrap().concat();
    let d = worst(&thetas, &e.theta);
    assert!(d <= 1e-5, "the rectifier's theta is off by {d}");
    // A second import into the same folder is refused, the first kept.
    let before = std::fs::read(dir.join("model.stn")).unwrap();
    let err = import_to_run(&fixture("tutorial.pt"), TorchArch::Tutorial, None, &dir).unwrap_err();
    assert!(err.contains("already holds a run"), "{err}");
    assert_eq!(std::fs::read(dir.join("model.stn")).unwrap(), before);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn wrong_files_are_errors_naming_every_tensor() {
    let err = |file: &str, arch: TorchArch| import(&fixture(file), arch, None).map(|_| ()).unwrap_err();
    let e = err("bad_missing.safetensors", TorchArch::Tutorial);
    assert!(e.contains("missing: fc_loc.2.bias (stn: transformer.localization.head.bias)"), "{e}");
    let e = err("bad_shape.safetensors", TorchArch::Tutorial);
    assert!(
        e.contains("convs.0.conv.weight") && e.contains("[10, 1, 5, 5]") && e.contains("[10, 1, 3, 3]"),
        "{e}"
    );
    let e = err("bad_extra.safetensors", TorchArch::Tutorial);
    assert!(e.contains("not in the model: fc3.weight"), "{e}");
    // The classifier alone has no place for the transformer's tensors: each is named.
    let e = err("tutorial.safetensors", TorchArch::TutorialCnn);
    for key in ["not in the model: localization.0.weight", "not in the model: fc_loc.2.bias"] {
        assert!(e.contains(key), "{key}: {e}");
    }
    let e = import(Path::new("/nonexistent/model.pt"), TorchArch::Tutorial, None).map(|_| ()).unwrap_err();
    assert!(e.contains("no such file"), "{e}");
    // Not a PyTorch file at all.
    let junk = std::env::temp_dir().join(format!("stn-torch-junk-{}.pt", std::process::id()));
    std::fs::write(&junk, b"not a pickle").unwrap();
    let e = import(&junk, TorchArch::Tutorial, None).map(|_| ()).unwrap_err();
    assert!(e.contains("cannot read the weights"), "{e}");
    std::fs::remove_file(junk).unwrap();
    // A normalization that cannot be applied.
    let e = import(&fixture("tutorial.pt"), TorchArch::Tutorial, Some([0.0, 0.0])).map(|_| ()).unwrap_err();
    assert!(e.contains("normalize"), "{e}");
}
