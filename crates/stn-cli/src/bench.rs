//! `stn bench`: the kernel benchmark (the peer's cases) and the training-step and inference
//! throughput of the PyTorch tutorial's ST-CNN and of its plain CNN, on the shapes of
//! `../shared/peer/bench_stcnn.py` (28 x 28, batch 64, random data, SGD lr 0.01, NLL).

use burn::module::Module;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Distribution, Int, Tensor};
use stn_kernels::bench::median_time;

use crate::models::{nll_loss, ModelConfig, ModelKind};

/// Throughput of one model (images per second; medians).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throughput {
    /// Milliseconds per training step (forward, backward, SGD step).
    pub train_ms: f64,
    /// Training images per second.
    pub train_img_per_s: f64,
    /// Milliseconds per inference batch.
    pub infer_ms: f64,
    /// Inference images per second.
    pub infer_img_per_s: f64,
}

/// Batch size of the throughput figures (as `bench_stcnn.py`).
pub const BATCH: usize = 64;

/// Measures the tutorial ST-CNN (`ModelKind::Tutorial`) or its plain CNN
/// (`ModelKind::TutorialCnn`) on 28 x 28 inputs: median of `steps` steps after `warmup`.
pub fn throughput(kind: ModelKind, steps: usize, warmup: usize) -> stn::Result<Throughput> {
    let dev = Device::flex().autodiff();
    dev.seed(0);
    let b = BATCH;
    let batches: Vec<(Tensor<4>, Tensor<1, Int>)> = (0..8)
        .map(|_| {
            (
                Tensor::random([b, 1, 28, 28], Distribution::Normal(0.0, 1.0), &dev),
                Tensor::<1>::random([b], Distribution::Uniform(0.0, 10.0), &dev).int().clamp(0, 9),
            )
        })
        .collect();
    let mut model = Some(ModelConfig::new(kind, [28, 28]).init(&dev)?);
    let mut optim = SgdConfig::new().init();
    let mut i = 0;
    let (train, _) = median_time(
        || {
            let m = model.take().expect("model");
            let (x, y) = batches[i % batches.len()].clone();
            i += 1;
            let loss = nll_loss(m.forward(x).log_probs, y);
            let g = GradientsParams::from_grads(loss.backward(), &m);
            model = Some(optim.step(0.01, m, g));
        },
        steps,
        warmup,
        0.0,
    );
    let valid = model.expect("model").valid();
    let x = batches[0].0.clone().inner();
    let (infer, _) = median_time(
        || {
            std::hint::black_box(valid.forward(x.clone()).log_probs.into_data());
        },
        steps,
        warmup,
        0.0,
    );
    Ok(Throughput {
        train_ms: train * 1e3,
        train_img_per_s: b as f64 / train,
        infer_ms: infer * 1e3,
        infer_img_per_s: b as f64 / infer,
    })
}
