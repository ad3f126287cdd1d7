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
    throughput_on(&Device::flex(), kind, steps, warmup)
}

/// [`throughput`] on `device` (flex, or a GPU from [`stn::device::select`]); every timed step
/// waits for the device, so asynchronous GPU work is counted.
pub fn throughput_on(
    device: &Device,
    kind: ModelKind,
    steps: usize,
    warmup: usize,
) -> stn::Result<Throughput> {
    let dev = device.clone().without_autodiff().autodiff();
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
            sync(&dev);
        },
        steps,
        warmup,
        0.0,
    );
    let valid = model.expect("model").valid();
    let x = batches[0].0.clone().inner();
    let (infer, _) = median_time(
        || {
            std::hint::black_box(valid.forward(x.clone()).log_probs);
            sync(&dev);
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

fn sync(device: &Device) {
    device.sync().unwrap_or_else(|e| panic!("the device failed: {e:?}"));
}

/// The fused bilinear affine warp on one device: median milliseconds of the forward pass and of
/// forward + backward (to the input and the matrices, from `sum(out)`), and the bandwidth each
/// reaches counting only the bytes it must move (forward: read the input, write the output;
/// backward adds reading the output gradient and the input and writing the input gradient).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WarpBench {
    /// Forward, ms.
    pub fwd_ms: f64,
    /// Forward and backward, ms.
    pub fb_ms: f64,
    /// Forward, GB/s of its minimal traffic.
    pub fwd_gbs: f64,
    /// Forward and backward, GB/s of its minimal traffic.
    pub fb_gbs: f64,
}

/// Times the fused bilinear affine warp (zeros padding, `align_corners=false`, a mild rotation
/// and zoom, output the input's size) of a float32 batch `shape` (N, C, H, W) on `device`.
pub fn warp_bench(device: &Device, shape: [usize; 4], steps: usize, warmup: usize) -> stn::Result<WarpBench> {
    use stn::{ops, Interpolation, Padding, SampleOptions};
    let dev = device.clone().without_autodiff();
    dev.seed(0);
    let [n, _, h, w] = shape;
    let x = Tensor::<4>::random(shape, Distribution::Uniform(-1.0, 1.0), &dev);
    let (c, s) = (0.1f32.cos() * 0.9, 0.1f32.sin() * 0.9);
    let theta: Vec<f32> = (0..n).flat_map(|_| [c, -s, 0.05, s, c, -0.05]).collect();
    let theta = Tensor::<3>::from_data(burn::tensor::TensorData::new(theta, [n, 2, 3]), &dev);
    let o = SampleOptions::new(Interpolation::Bilinear, Padding::Zeros, false);
    let (fwd, _) = median_time(
        || {
            let out = ops::affine_sample(x.clone(), theta.clone(), &[h, w], o).expect("warp");
            std::hint::black_box(out);
            sync(&dev);
        },
        steps,
        warmup,
        0.0,
    );
    let xa = Tensor::<4>::from_inner(x.clone()).require_grad();
    let ta = Tensor::<3>::from_inner(theta.clone()).require_grad();
    let (fb, _) = median_time(
        || {
            let out = ops::affine_sample(xa.clone(), ta.clone(), &[h, w], o).expect("warp");
            let grads = out.sum().backward();
            std::hint::black_box((xa.grad(&grads), ta.grad(&grads)));
            sync(&dev);
        },
        steps,
        warmup,
        0.0,
    );
    let bytes = (shape.iter().product::<usize>() * 4) as f64;
    Ok(WarpBench {
        fwd_ms: fwd * 1e3,
        fb_ms: fb * 1e3,
        fwd_gbs: 2.0 * bytes / fwd / 1e9,
        fb_gbs: 5.0 * bytes / fb / 1e9,
    })
}
