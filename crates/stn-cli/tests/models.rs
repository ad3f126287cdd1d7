//! The models: shapes for every kind and input size, the tutorial model's size (equal to
//! PyTorch's), and a short training run that learns.

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Int, Tensor, TensorData};
use stn::Transform;
use stn_cli::models::{nll_loss, ModelConfig, ModelKind};
use stn_data::{Dataset, Distortion};

fn batch(d: &Dataset, start: usize, n: usize, device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
    let p = d.pixels();
    let x = TensorData::new(d.images[start * p..(start + n) * p].to_vec(), [n, 1, d.height, d.width]);
    let y = TensorData::new(d.labels[start..start + n].iter().map(|&l| l as i64).collect::<Vec<_>>(), [n]);
    (Tensor::from_data(x, device), Tensor::from_data(y, device))
}

#[test]
fn every_model_has_the_right_shapes() {
    let dev = Device::flex();
    for (size, kinds) in [(28, true), (42, true), (60, false)] {
        for kind in [
            ModelKind::Fcn,
            ModelKind::Cnn,
            ModelKind::StFcn,
            ModelKind::StCnn,
            ModelKind::Tutorial,
            ModelKind::TutorialCnn,
        ] {
            let transforms: &[Transform] = if kinds && kind.has_transformer() && kind != ModelKind::Tutorial {
                &[Transform::Affine, Transform::Projective, Transform::tps16(), Transform::Attention]
            } else {
                &[Transform::Affine]
            };
            for &t in transforms {
                let m = ModelConfig::new(kind, [size, size]).with_transform(t).init(&dev).unwrap();
                let x = Tensor::<4>::zeros([3, 1, size, size], &dev);
                let o = m.forward(x);
                assert_eq!(o.log_probs.dims(), [3, 10], "{kind:?} {t:?} {size}");
                assert_eq!(o.warped.is_some(), kind.has_transformer());
                if let Some(w) = o.warped {
                    let out = if kind == ModelKind::Tutorial { size } else { 28 };
                    assert_eq!(w.dims(), [3, 1, out, out], "{kind:?} {t:?} {size}");
                }
                // Probabilities sum to one.
                let s: Vec<f32> = o.log_probs.exp().sum_dim(1).into_data().try_to_vec().unwrap();
                assert!(s.iter().all(|v| (v - 1.0).abs() < 1e-4));
            }
        }
    }
    let cnn = ModelConfig::new(ModelKind::Cnn, [28, 28]).init(&dev).unwrap();
    let e = cnn.try_forward(Tensor::zeros([2, 3, 28, 28], &dev)).unwrap_err().to_string();
    assert!(e.contains("input") && e.contains("(N >= 1, 1, 28, 28)"), "{e}");
    assert!(cnn.try_forward(Tensor::zeros([2, 1, 30, 28], &dev)).is_err());
    // A transformer model takes any input size.
    let st = ModelConfig::new(ModelKind::StCnn, [28, 28]).init(&dev).unwrap();
    assert_eq!(st.forward(Tensor::zeros([2, 1, 50, 40], &dev)).log_probs.dims(), [2, 10]);
}

#[test]
fn the_tutorial_model_has_pytorchs_parameter_count() {
    // bench_stcnn.py's STCNN(28): 400 + 2,010 (localization convs) + 2,912 + 198 (fc_loc)
    // + 260 + 5,020 (convs) + 16,050 + 510 (fcs) = 27,360 parameters.
    let dev = Device::flex();
    let m = ModelConfig::new(ModelKind::Tutorial, [28, 28]).init(&dev).unwrap();
    assert_eq!(m.num_params(), 27_360);
    let plain = ModelConfig::new(ModelKind::TutorialCnn, [28, 28]).init(&dev).unwrap();
    assert_eq!(plain.num_params(), 27_360 - 400 - 2_010 - 2_912 - 198);
}

#[test]
fn cnn_and_st_cnn_learn_digits() {
    let dev = Device::flex().autodiff();
    dev.seed(1);
    let (train, test) = Dataset::embedded_split().unwrap();
    let train = Distortion::Rotation.apply(&train.subset(0..2048).unwrap(), 1).unwrap();
    let test = Distortion::Rotation.apply(&test.subset(0..512).unwrap(), 2).unwrap();
    for kind in [ModelKind::Cnn, ModelKind::StCnn] {
        let mut m = ModelConfig::new(kind, [28, 28]).init(&dev).unwrap();
        let mut optim = AdamConfig::new().init();
        for step in 0..128 {
            let (x, y) = batch(&train, (step * 64) % 2048, 64, &dev);
            let o = m.forward(x);
            let loss = nll_loss(o.log_probs, y);
            let g = GradientsParams::from_grads(loss.backward(), &m);
            m = optim.step(1e-3, m, g);
        }
        let v = m.valid();
        let (x, y) = batch(&test, 0, 512, &Device::flex());
        let pred: Vec<i64> =
            v.forward(x).log_probs.argmax(1).into_data().convert::<i64>().try_to_vec().unwrap();
        let labels: Vec<i64> = y.into_data().convert::<i64>().try_to_vec().unwrap();
        let acc = pred.iter().zip(&labels).filter(|(a, b)| a == b).count() as f64 / 512.0;
        eprintln!("{kind:?}: accuracy {acc:.3} on rotated digits after 128 steps");
        assert!(acc > 0.7, "{kind:?} accuracy {acc}");
    }
}

/// `loc_lr` slows only the localization net: after the same run, its theta stays closer to the
/// identity in proportion, while the model still trains.
#[test]
fn loc_lr_scales_the_localization_nets_steps() {
    use stn_cli::run::{load_run, train, RunConfig};
    let deviation = |loc_lr: f64| {
        let out = std::env::temp_dir().join(format!("stn-loc-lr-{}-{loc_lr}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let cfg = RunConfig::new(
            ModelConfig::new(ModelKind::StCnn, [28, 28]),
            "mnist10k".into(),
            "rts".into(),
            1,
            1,
        )
        .with_train_size(512)
        .with_test_size(64)
        .with_loc_lr(loc_lr);
        let metrics = train(&cfg, &out, false, &mut |_, _, _, _, _, _| {}).unwrap();
        assert_eq!(metrics.len(), 1);
        let (model, saved) = load_run(&out).unwrap();
        assert_eq!(saved.loc_lr, loc_lr, "the checkpoint keeps the setting");
        let (train_set, _) = Dataset::embedded_split().unwrap();
        let d = Distortion::Rts.apply(&train_set.subset(0..64).unwrap(), 1).unwrap();
        let (x, _) = batch(&d, 0, 64, &Device::flex());
        let theta = model.forward(x).theta.unwrap();
        let id = Tensor::<2>::from_data([[1.0f32, 0.0, 0.0, 0.0, 1.0, 0.0]], &Device::flex());
        let dev: f32 = (theta - id).abs().mean().into_scalar();
        std::fs::remove_dir_all(&out).unwrap();
        f64::from(dev)
    };
    let (full, slow) = (deviation(1.0), deviation(0.01));
    eprintln!("mean |theta - identity| after 8 steps: loc_lr 1 → {full:.2e}, loc_lr 0.01 → {slow:.2e}");
    assert!(full > 1e-3, "the localization net moved: {full}");
    assert!(slow < 0.1 * full, "loc_lr 0.01 moved it {slow}, against {full} at 1");
}
