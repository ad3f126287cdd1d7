//! Training and inference throughput of the PyTorch tutorial's ST-CNN and of its plain CNN, on
//! the shapes of `../shared/peer/bench_stcnn.py` (28 x 28, batch 64, random data, SGD lr 0.01,
//! NLL; medians over `--steps` steps after `--warmup`). Prints JSON with
//! `stcnn_train_img_per_s`, `stcnn_infer_img_per_s`, `cnn_train_img_per_s`, `cnn_infer_img_per_s`.
//!
//! `cargo run --release -p stn-cli --example stcnn_bench -- [--steps 50] [--warmup 10] [--threads 2] [--system-malloc]`

use burn::module::Module;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Distribution, Int, Tensor};
use stn_cli::models::{nll_loss, ModelConfig, ModelKind};
use stn_kernels::bench::median_time;

fn main() {
    let mut steps = 50;
    let mut warmup = 10;
    let mut threads = 2;
    let mut system_malloc = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut num = || {
            it.next().and_then(|v| v.parse::<usize>().ok()).unwrap_or_else(|| panic!("{a} needs a number"))
        };
        match a.as_str() {
            "--steps" => steps = num(),
            "--warmup" => warmup = num(),
            "--threads" => threads = num(),
            "--system-malloc" => system_malloc = true,
            _ => panic!("unknown argument {a}"),
        }
    }
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().expect("thread pool");
    let malloc = if !system_malloc && stn_kernels::alloc::keep_freed_memory() { "reuse" } else { "system" };
    let dev = Device::flex().autodiff();
    dev.seed(0);
    let b = 64;
    let batches: Vec<(Tensor<4>, Tensor<1, Int>)> = (0..8)
        .map(|_| {
            (
                Tensor::random([b, 1, 28, 28], Distribution::Normal(0.0, 1.0), &dev),
                Tensor::<1>::random([b], Distribution::Uniform(0.0, 10.0), &dev).int().clamp(0, 9),
            )
        })
        .collect();
    let mut out = serde_json::Map::new();
    out.insert("threads".into(), threads.into());
    out.insert("malloc".into(), malloc.into());
    out.insert("batch".into(), b.into());
    for (name, kind) in [("stcnn", ModelKind::Tutorial), ("cnn", ModelKind::TutorialCnn)] {
        let mut model = Some(ModelConfig::new(kind, [28, 28]).init(&dev).expect("model"));
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
        eprintln!(
            "{name}: train {:.2} ms/step ({:.0} img/s), infer {:.2} ms/batch ({:.0} img/s)",
            train * 1e3,
            b as f64 / train,
            infer * 1e3,
            b as f64 / infer
        );
        out.insert(format!("{name}_train_ms"), (train * 1e3).into());
        out.insert(format!("{name}_train_img_per_s"), (b as f64 / train).into());
        out.insert(format!("{name}_infer_ms"), (infer * 1e3).into());
        out.insert(format!("{name}_infer_img_per_s"), (b as f64 / infer).into());
    }
    println!("{}", serde_json::to_string_pretty(&serde_json::Value::Object(out)).expect("json"));
}
