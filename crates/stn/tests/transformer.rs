//! The modules: SpatialTransformer (identity at init, any input size, the two stability
//! knobs), parallel and series transformers, saving and loading, and configuration errors.

use crate::common::*;
use burn::module::{Module, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};
use stn::{
    ConvBlockConfig, LocalizationNetConfig, ParallelTransformersConfig, SeriesTransformersConfig,
    SpatialTransformer, SpatialTransformerConfig, Transform,
};

fn digits(n: usize) -> Tensor<4> {
    let (px, _) = mnist(n);
    tensor(&px, [n, 1, 28, 28], false, &flex())
}

fn config(t: Transform) -> SpatialTransformerConfig {
    SpatialTransformerConfig::new(LocalizationNetConfig::tutorial(1), t, vec![28, 28])
}

fn with_out(mut c: SpatialTransformerConfig, out: Vec<usize>) -> SpatialTransformerConfig {
    c.out_size = out;
    c
}

/// Sets the regression layer to output `bias` for every input (zero weights).
fn fix_theta(stn: &mut SpatialTransformer, bias: &[f64]) {
    let dev = stn.localization.head.weight.val().device();
    let b = Tensor::<1>::from_data(TensorData::new(bias.to_vec(), [bias.len()]), &dev);
    stn.localization.head.bias = Some(Param::from_tensor(b));
}

#[test]
fn a_new_transformer_is_the_identity_for_every_family() {
    let x = digits(4);
    let xv = values(x.clone());
    for t in [
        Transform::Translation,
        Transform::Attention,
        Transform::Similarity,
        Transform::Affine,
        Transform::Projective,
        Transform::tps16(),
        Transform::Dense,
    ] {
        let stn = config(t).init(&flex()).unwrap();
        let out = stn.forward(x.clone());
        assert_eq!(out.output.dims(), [4, 1, 28, 28]);
        assert_eq!(out.theta.dims(), [4, t.num_params(&[28, 28])]);
        let e = max_rel(&values(out.output), &xv);
        assert!(e < 1e-5, "{t:?}: untrained output differs from the input by {e:e}");
        let id = t.identity(&[28, 28], false).unwrap();
        let th = values(out.theta);
        assert!(
            th.chunks(id.len()).all(|r| max_rel(r, &id) < 1e-6),
            "{t:?}: initial theta is not the identity"
        );
    }
}

#[test]
fn any_input_size_to_a_fixed_output_size() {
    let stn = config(Transform::Affine).init(&flex()).unwrap();
    let mut rng = Rng::new(1);
    for (h, w) in [(28, 28), (60, 45), (13, 17)] {
        let x = tensor(&rng.uniform(2 * h * w, 0.0, 1.0), [2, 1, h, w], false, &flex());
        let out = stn.forward(x);
        assert_eq!(out.output.dims(), [2, 1, 28, 28], "input {h}x{w}");
    }
    // Identity at init: a 56x56 input comes out as its 2x downsampling (pixel centres align).
    let big = tensor(&rng.uniform(56 * 56, 0.0, 1.0), [1, 1, 56, 56], false, &flex());
    let out = values(stn.forward(big.clone()).output);
    let bv = values(big);
    let down: Vec<f64> = (0..28)
        .flat_map(|i| {
            let bv = &bv;
            (0..28).map(move |j| {
                (bv[(2 * i) * 56 + 2 * j]
                    + bv[(2 * i) * 56 + 2 * j + 1]
                    + bv[(2 * i + 1) * 56 + 2 * j]
                    + bv[(2 * i + 1) * 56 + 2 * j + 1])
                    / 4.0
            })
        })
        .collect();
    assert_close("2x downsampling", &out, &down, 1e-5);
}

#[test]
fn bad_inputs_and_configs_are_errors() {
    let dev = flex();
    let stn = config(Transform::Affine).init(&dev).unwrap();
    let e = stn.try_forward(Tensor::<4>::zeros([2, 3, 28, 28], &dev)).unwrap_err().to_string();
    assert!(e.contains("input") && e.contains("1 channels"), "{e}");
    let e = stn.try_forward(Tensor::<4>::zeros([2, 1, 0, 28], &dev)).unwrap_err().to_string();
    assert!(e.contains("zero"), "{e}");
    let e = stn.try_forward(Tensor::<5>::zeros([2, 1, 3, 28, 28], &dev)).unwrap_err().to_string();
    assert!(e.contains("rank 4"), "{e}");
    let bad = |c: SpatialTransformerConfig, field: &str| {
        let e = c.init(&dev).unwrap_err().to_string();
        assert!(e.contains(field), "expected an error about {field}, got: {e}");
    };
    bad(with_out(config(Transform::Affine), vec![28]), "out_size");
    bad(with_out(config(Transform::Affine), vec![0, 28]), "out_size");
    bad(config(Transform::Tps { rows: 1, cols: 5 }), "tps");
    bad(config(Transform::Affine).with_loc_grad_scale(f64::NAN), "loc_grad_scale");
    bad(config(Transform::Affine).with_identity_penalty(-1.0), "identity_penalty");
    bad(
        SpatialTransformerConfig::new(
            LocalizationNetConfig::new(1, vec![8, 8]).with_conv(vec![ConvBlockConfig::new(4, 9)]),
            Transform::Affine,
            vec![8, 8],
        ),
        "kernel 9",
    );
    bad(
        SpatialTransformerConfig::new(LocalizationNetConfig::tutorial(1), Transform::Affine3d, vec![4, 4, 4]),
        "localization",
    );
    bad(
        SpatialTransformerConfig::new(
            LocalizationNetConfig::new(1, vec![8, 8]).with_dropout(1.0),
            Transform::Affine,
            vec![8, 8],
        ),
        "dropout",
    );
}

#[test]
fn a_3d_transformer_with_an_fc_localization_net() {
    let dev = flex();
    let cfg = SpatialTransformerConfig::new(
        LocalizationNetConfig::new(2, vec![4, 5, 6]),
        Transform::Affine3d,
        vec![3, 4, 5],
    );
    let stn = cfg.init(&dev).unwrap();
    let mut rng = Rng::new(2);
    let x = tensor(&rng.uniform(2 * 2 * 4 * 5 * 6, 0.0, 1.0), [2, 2, 4, 5, 6], false, &dev);
    let out = stn.forward(x);
    assert_eq!(out.output.dims(), [2, 2, 3, 4, 5]);
    assert_eq!(out.theta.dims(), [2, 12]);
}

#[test]
fn parallel_transformers_concatenate_on_channels() {
    let dev = flex();
    let x = digits(3);
    let xv = values(x.clone());
    let cfg = ParallelTransformersConfig::new(vec![
        config(Transform::Affine),
        config(Transform::Attention),
        config(Transform::tps16()),
    ]);
    let mut par = cfg.init(&dev).unwrap();
    let out = par.forward(x.clone());
    assert_eq!(out.output.dims(), [3, 3, 28, 28]);
    assert_eq!(out.thetas.len(), 3);
    // Identity at init: every branch reproduces the input.
    let ov = values(out.output);
    for b in 0..3 {
        for s in 0..3 {
            let got = &ov[(s * 3 + b) * 784..][..784];
            assert!(max_rel(got, &xv[s * 784..][..784]) < 1e-5, "branch {b} sample {s}");
        }
    }
    // A branch with its own theta: channel 1 equals that branch run alone.
    fix_theta(&mut par.branches[1], &[0.6, 0.2, -0.1]);
    let out = values(par.forward(x.clone()).output);
    let alone = values(par.branches[1].forward(x).output);
    for s in 0..3 {
        assert_eq!(&out[(s * 3 + 1) * 784..][..784], &alone[s * 784..][..784]);
    }
    let e = ParallelTransformersConfig::new(vec![
        config(Transform::Affine),
        with_out(config(Transform::Affine), vec![20, 20]),
    ])
    .init(&dev)
    .unwrap_err()
    .to_string();
    assert!(e.contains("out_size"), "{e}");
}

#[test]
fn series_transformers_compose_and_sample_once() {
    let dev = flex();
    let x = digits(2);
    let cfg = SeriesTransformersConfig::new(vec![
        config(Transform::Similarity),
        config(Transform::Affine),
        config(Transform::Projective),
    ]);
    let mut ser = cfg.init(&dev).unwrap();
    // Identity at init.
    let out = ser.forward(x.clone());
    assert!(max_rel(&values(out.output), &values(x.clone())) < 1e-5);
    assert_eq!(out.matrix.dims(), [2, 3, 3]);
    // Fixed stage transforms: the output equals one sampling through the product matrix.
    let (s, a, p) = (
        [0.9, 0.3, 0.05, -0.1],
        [1.1, 0.1, 0.0, -0.05, 0.95, 0.1],
        [1.0, 0.05, 0.0, 0.02, 1.0, 0.0, 0.03, -0.02],
    );
    fix_theta(&mut ser.stages[0], &s);
    fix_theta(&mut ser.stages[1], &a);
    fix_theta(&mut ser.stages[2], &p);
    let out = ser.forward(x.clone());
    let m = |t: Transform, v: &[f64]| {
        let rows: Vec<f64> = (0..2).flat_map(|_| v.iter().copied()).collect();
        t.matrix(tensor(&rows, [2, v.len()], false, &dev)).unwrap()
    };
    let prod =
        m(Transform::Similarity, &s).matmul(m(Transform::Affine, &a)).matmul(m(Transform::Projective, &p));
    assert_close("composed matrix", &values(out.matrix.clone()), &values(prod.clone()), 1e-6);
    let once = stn::warp_matrix(x.clone(), prod, true, &[28, 28], ser.stages[2].sample_options()).unwrap();
    assert_close("series output vs one sampling", &values(out.output.clone()), &values(once), 1e-6);
    // Sampling three times in a row blurs: it differs from the composed result.
    let mut seq = x.clone();
    for st in &ser.stages {
        seq = st.forward(seq).output;
    }
    assert!(max_rel(&values(seq), &values(out.output)) > 1e-3, "resampling three times should differ");
    let e = SeriesTransformersConfig::new(vec![config(Transform::Affine), config(Transform::tps16())])
        .init(&dev)
        .unwrap_err();
    assert!(e.to_string().contains("does not compose"), "{e}");
}

#[test]
fn save_and_load_give_identical_outputs() {
    let dev = flex();
    let dir = std::env::temp_dir().join(format!("stn-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("affine.stn");
    let mut stn = config(Transform::Affine).with_identity_penalty(0.5).init(&dev).unwrap();
    // Non-trivial weights everywhere, so the round trip is tested on more than the init.
    let mut rng = Rng::new(3);
    let hw = rng.uniform(32 * 6, -0.01, 0.01);
    stn.localization.head.weight = Param::from_tensor(tensor(&hw, [32, 6], false, &dev));
    fix_theta(&mut stn, &[0.9, 0.1, 0.05, -0.1, 1.05, 0.0]);
    let x = digits(4);
    let before = stn.forward(x.clone());
    stn.save(&path).unwrap();
    let loaded = SpatialTransformer::load(&path, &dev).unwrap();
    let after = loaded.forward(x.clone());
    assert_eq!(values(before.output), values(after.output));
    assert_eq!(values(before.theta), values(after.theta));
    assert_eq!(loaded.config().identity_penalty, 0.5);
    assert_eq!(loaded.transform(), Transform::Affine);
    // Parallel and series round trips.
    let par = ParallelTransformersConfig::new(vec![config(Transform::Attention), config(Transform::tps16())])
        .init(&dev)
        .unwrap();
    par.save(dir.join("par.stn")).unwrap();
    let par2 = stn::ParallelTransformers::load(dir.join("par.stn"), &dev).unwrap();
    assert_eq!(values(par.forward(x.clone()).output), values(par2.forward(x.clone()).output));
    assert_eq!(par2.num_params(), par.num_params());

    // Errors: missing file, not a model, truncated, missing folder; no partial files left.
    let e = SpatialTransformer::load(dir.join("missing.stn"), &dev).unwrap_err().to_string();
    assert!(e.contains("missing.stn") && e.contains("cannot read"), "{e}");
    std::fs::write(dir.join("junk.stn"), b"hello").unwrap();
    let e = SpatialTransformer::load(dir.join("junk.stn"), &dev).unwrap_err().to_string();
    assert!(e.contains("not an stn model"), "{e}");
    let full = std::fs::read(&path).unwrap();
    for cut in [30, full.len() / 2, full.len() - 3] {
        std::fs::write(dir.join("cut.stn"), &full[..cut]).unwrap();
        let e = SpatialTransformer::load(dir.join("cut.stn"), &dev).unwrap_err().to_string();
        assert!(e.contains("corrupt") || e.contains("truncated"), "cut at {cut}: {e}");
    }
    let e = SpatialTransformer::load(dir.join("par.stn"), &dev).unwrap_err().to_string();
    assert!(e.contains("configuration"), "a parallel model is not a single transformer: {e}");
    let e = stn.save(dir.join("no-such-dir").join("m.stn")).unwrap_err().to_string();
    assert!(e.contains("does not exist"), "{e}");
    // Overwriting keeps a loadable file and no temporaries.
    stn.save(&path).unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn grad_scale_and_identity_penalty() {
    let ad = autodiff();
    let x = digits(8);
    let x = Tensor::<4>::from_data(x.into_data(), &ad);
    // loc_grad_scale: the localization net's gradients are multiplied, nothing else changes.
    let cfg = config(Transform::Affine).with_loc_grad_scale(0.1);
    let stn = cfg.init(&ad).unwrap();
    let target = x.clone().flip([3]);
    let loss = (stn.forward(x.clone()).output - target.clone()).powi_scalar(2).mean();
    let g = GradientsParams::from_grads(loss.backward(), &stn);
    let head_id = stn.localization.head.bias.as_ref().unwrap().id;
    let before = values(g.get::<1>(head_id).unwrap());
    assert!(before.iter().any(|v| *v != 0.0));
    let g = stn.scale_grads(g);
    let after = values(g.get::<1>(head_id).unwrap());
    assert_close("scaled bias grad", &after, &before.iter().map(|v| v * 0.1).collect::<Vec<_>>(), 1e-6);
    let group = stn.localization_params();
    assert!(group.matches(&head_id, None), "the head bias is in the localization group");

    // identity_penalty: weight * mean((theta - identity)^2), and its gradient pulls theta back.
    let mut stn = config(Transform::Affine).with_identity_penalty(2.0).init(&ad).unwrap();
    fix_theta(&mut stn, &[1.2, 0.0, 0.1, 0.0, 1.0, -0.2]);
    let out = stn.forward(x.clone());
    let expected = 2.0 * (0.04 + 0.01 + 0.04) / 6.0;
    assert!((values(out.penalty.clone())[0] - expected).abs() < 1e-6);
    let g = GradientsParams::from_grads(out.penalty.backward(), &stn);
    let gb = values(g.get::<1>(stn.localization.head.bias.as_ref().unwrap().id).unwrap());
    assert!(gb[0] > 0.0 && gb[2] > 0.0 && gb[5] < 0.0 && gb[1] == 0.0, "penalty gradient {gb:?}");
    let zero = config(Transform::Affine).init(&ad).unwrap().forward(x).penalty;
    assert_eq!(values(zero), vec![0.0]);
}
