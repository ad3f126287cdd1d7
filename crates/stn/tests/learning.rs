//! Learning tests: a spatial transformer learns to undo a fixed, known warp applied to a few
//! hundred embedded digits. The budget (steps, batch, learning rate) is fixed; the time is not
//! asserted (a few seconds in release mode here).

use std::sync::Mutex;

use crate::common::*;
use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Tensor};
use stn::{LocalizationNetConfig, SampleOptions, SpatialTransformer, SpatialTransformerConfig, Transform};

/// Burn's seed may be process-wide: the trainings run one at a time so each is reproducible.
static SERIAL: Mutex<()> = Mutex::new(());

const DIGITS: usize = 256;
const BATCH: usize = 64;

/// Trains `stn` to map `inputs` to `targets` (MSE, Adam) for `steps` steps; returns the
/// mean loss over all digits before and after.
fn train(
    mut stn: SpatialTransformer,
    inputs: &Tensor<4>,
    targets: &Tensor<4>,
    steps: usize,
    lr: f64,
) -> (SpatialTransformer, f64, f64) {
    let eval = |stn: &SpatialTransformer| {
        let out = stn.forward(inputs.clone().inner()).output;
        let (out, t) = (values(out), values(targets.clone().inner()));
        out.iter().zip(&t).map(|(a, b)| (a - b) * (a - b)).sum::<f64>() / out.len() as f64
    };
    let valid_stn = |stn: &SpatialTransformer| stn.valid();
    let before = eval(&valid_stn(&stn));
    let mut optim = AdamConfig::new().init();
    for step in 0..steps {
        let start = (step * BATCH) % DIGITS;
        let x = inputs.clone().narrow(0, start, BATCH);
        let y = targets.clone().narrow(0, start, BATCH);
        let out = stn.forward(x);
        let loss = (out.output - y).powi_scalar(2).mean() + out.penalty;
        let grads = stn.scale_grads(GradientsParams::from_grads(loss.backward(), &stn));
        stn = optim.step(lr, stn, grads);
    }
    let after = eval(&valid_stn(&stn));
    (stn, before, after)
}

fn digits(device: &Device) -> Tensor<4> {
    let (px, _) = mnist(DIGITS);
    tensor(&px, [DIGITS, 1, 28, 28], false, device)
}

/// Mean theta over the digits.
fn mean_theta(stn: &SpatialTransformer, inputs: &Tensor<4>) -> Vec<f64> {
    let th = values(stn.valid().forward(inputs.clone().inner()).theta);
    let p = th.len() / DIGITS;
    (0..p).map(|j| th.iter().skip(j).step_by(p).sum::<f64>() / DIGITS as f64).collect()
}

#[test]
fn affine_transformer_learns_to_undo_a_known_warp() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dev = autodiff();
    dev.seed(7);
    let targets = digits(&dev);
    // The warp: rotate 20 degrees, scale 0.9, shift; maps output to input coordinates.
    let (a, s) = (20f64.to_radians(), 0.9);
    let warp = [s * a.cos(), -s * a.sin(), 0.1, s * a.sin(), s * a.cos(), -0.08];
    let wt: Vec<f64> = (0..DIGITS).flat_map(|_| warp).collect();
    let inputs = Transform::Affine
        .warp(targets.clone(), tensor(&wt, [DIGITS, 6], false, &dev), &[28, 28], SampleOptions::default())
        .unwrap()
        .detach();
    let cfg =
        SpatialTransformerConfig::new(LocalizationNetConfig::tutorial(1), Transform::Affine, vec![28, 28]);
    let stn = cfg.init(&dev).unwrap();
    let (stn, before, after) = train(stn, &inputs, &targets, 300, 3e-3);
    // The true inverse of the warp (2 x 3 part of the inverse homogeneous matrix).
    let det = warp[0] * warp[4] - warp[1] * warp[3];
    let (i00, i01, i10, i11) = (warp[4] / det, -warp[1] / det, -warp[3] / det, warp[0] / det);
    let inv = [i00, i01, -(i00 * warp[2] + i01 * warp[5]), i10, i11, -(i10 * warp[2] + i11 * warp[5])];
    let theta = mean_theta(&stn, &inputs);
    let err = theta.iter().zip(&inv).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    eprintln!("affine: loss {before:.5} -> {after:.5} ({:.1}x); theta {theta:.3?}, inverse {inv:.3?}, max error {err:.4}", before / after);
    assert!(after * 10.0 <= before, "loss fell only {:.1}x ({before} -> {after})", before / after);
    assert!(err <= 0.05, "learned theta {theta:?} is {err} from the inverse {inv:?}");
}

#[test]
fn tps_transformer_learns_to_undo_an_elastic_warp() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dev = autodiff();
    dev.seed(11);
    let targets = digits(&dev);
    let t = Transform::tps16();
    // A smooth elastic warp: the 4 x 4 control points jittered by up to 0.15, fixed.
    let mut rng = Rng::new(3);
    let mut warp = t.identity(&[], false).unwrap();
    for v in warp.iter_mut() {
        *v += 0.15 * (2.0 * rng.next_f64() - 1.0);
    }
    let wt: Vec<f64> = (0..DIGITS).flat_map(|_| warp.iter().copied()).collect();
    let inputs = t
        .warp(targets.clone(), tensor(&wt, [DIGITS, 32], false, &dev), &[28, 28], SampleOptions::default())
        .unwrap()
        .detach();
    let cfg = SpatialTransformerConfig::new(LocalizationNetConfig::tutorial(1), t, vec![28, 28]);
    let stn = cfg.init(&dev).unwrap();
    let (_, before, after) = train(stn, &inputs, &targets, 300, 3e-3);
    eprintln!("tps: loss {before:.5} -> {after:.5} ({:.1}x)", before / after);
    assert!(after * 5.0 <= before, "loss fell only {:.1}x ({before} -> {after})", before / after);
}
