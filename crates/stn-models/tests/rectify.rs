//! The rectification core: batched localization equals the per-image path, mixed sizes and
//! channel counts in one batch, full-resolution output sizes, identity behaviour, bad models.

use std::path::PathBuf;
use std::sync::OnceLock;

use burn::tensor::{Device, Tensor, TensorData};
use stn_data::Image;
use stn_models::models::{ModelConfig, ModelKind};
use stn_models::rectify::Rectifier;
use stn_models::run::{load_run, train, RunConfig};

/// A briefly trained ST-CNN on RTS digits (theta is not the identity), trained once.
fn run_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("stn-models-rectify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = RunConfig::new(
            ModelConfig::new(ModelKind::StCnn, [28, 28]),
            "mnist10k".into(),
            "rts".into(),
            3,
            1,
        )
        .with_train_size(256)
        .with_test_size(64);
        train(&cfg, &dir, false, &mut |_, _, _, _, _, _| {}).expect("train");
        dir
    })
}

fn pattern(c: usize, h: usize, w: usize, seed: usize) -> Image {
    let data =
        (0..c * h * w).map(|i| (((i * 7919 + seed * 104_729) % 1000) as f32 / 999.0).powi(2)).collect();
    Image { data, channels: c, height: h, width: w }
}

#[test]
fn batch_thetas_equal_the_per_image_localization() {
    let (model, _) = load_run(run_dir()).unwrap();
    let r = Rectifier::new(&model).unwrap();
    let t = model.transformer.as_ref().unwrap();
    let imgs = [pattern(1, 42, 42, 1), pattern(3, 60, 80, 2), pattern(1, 30, 20, 3), pattern(4, 42, 42, 4)];
    let refs: Vec<&Image> = imgs.iter().collect();
    let batch = r.thetas(&refs).unwrap();
    assert_eq!(batch.len(), 4);
    let dev = Device::flex();
    for (img, th) in imgs.iter().zip(&batch) {
        let g = img.to_gray();
        let x = Tensor::<4>::from_data(TensorData::new(g.data.clone(), [1, 1, g.height, g.width]), &dev);
        let one: Vec<f32> =
            t.localize(x).unwrap().into_data().convert::<f32>().try_into_vec::<f32>().unwrap();
        assert_eq!(one.len(), 6);
        for (a, b) in one.iter().zip(th) {
            assert!((a - b).abs() <= 1e-5, "batched {th:?} vs alone {one:?}");
        }
    }
    // Not the identity: the model learned something.
    assert!(batch.iter().any(|t| (t[0] - 1.0).abs() + t[1].abs() + t[2].abs() > 1e-3), "{batch:?}");
}

#[test]
fn mixed_batches_equal_images_rectified_alone_at_full_resolution() {
    let r = Rectifier::from_run(run_dir()).unwrap();
    let imgs = [pattern(1, 42, 42, 5), pattern(3, 84, 126, 6), pattern(1, 42, 42, 7), pattern(2, 21, 21, 8)];
    let refs: Vec<&Image> = imgs.iter().collect();
    let batch = r.rectify(&refs);
    for (img, out) in imgs.iter().zip(batch) {
        let out = out.unwrap();
        let alone = r.rectify(&[img]).remove(0).unwrap();
        assert_eq!(out.image.channels, img.channels, "all channels kept");
        // Output = transformer output (28) scaled by input / localization size (42).
        let want = [
            (28.0 * img.height as f64 / 42.0).round() as usize,
            (28.0 * img.width as f64 / 42.0).round() as usize,
        ];
        assert_eq!([out.image.height, out.image.width], want);
        assert_eq!(r.output_size(img.height, img.width), want);
        for (a, b) in out.image.data.iter().zip(&alone.image.data) {
            assert!((a - b).abs() <= 1e-4);
        }
        assert_eq!(out.theta.len(), r.num_params());
    }
}

#[test]
fn identity_model_resamples_the_image() {
    // A fresh transformer is the identity: an input at the localization size comes out as the
    // input resampled to the transformer's output size, identical for the same size.
    let cfg = ModelConfig::new(ModelKind::Tutorial, [28, 28]);
    let model = cfg.init(&Device::flex()).unwrap();
    let r = Rectifier::new(&model).unwrap();
    let img = pattern(3, 28, 28, 9);
    let out = r.rectify(&[&img]).remove(0).unwrap();
    assert_eq!(out.theta, vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
    assert_eq!((out.image.height, out.image.width), (28, 28));
    let max = out.image.data.iter().zip(&img.data).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(max <= 1e-5, "identity parameters reproduce the input ({max})");
}

#[test]
fn models_without_a_transformer_and_bad_parameter_rows_are_errors() {
    let cnn = ModelConfig::new(ModelKind::Cnn, [28, 28]).init(&Device::flex()).unwrap();
    let e = Rectifier::new(&cnn).unwrap_err();
    assert!(e.contains("no spatial transformer"), "{e}");
    let r = Rectifier::from_run(run_dir()).unwrap();
    let img = pattern(1, 10, 10, 1);
    let out = r.warp(&[&img], &[vec![1.0; 5]]);
    assert!(out[0].as_ref().unwrap_err().contains("parameter rows"));
    assert!(r.thetas(&[]).unwrap().is_empty());
    let missing = Rectifier::from_run(&std::env::temp_dir().join("no-such-stn-run")).unwrap_err();
    assert!(missing.contains("not a run folder"), "{missing}");
}
