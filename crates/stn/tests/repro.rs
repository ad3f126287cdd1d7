//! `stn::repro`: the layer and reductions whose bits do not depend on the CPU, against portable
//! references written in plain Rust (`f32::mul_add` chains, sums in class order): what any
//! x86-64 CPU with FMA, AVX-512 or not, whatever its caches, computes. Plus the gradients, near
//! Burn's own ops.

use crate::common::*;
use burn::nn::LinearConfig;
use burn::tensor::{DType, Tensor, TensorData};

fn f32s<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
}

/// `x (n x k) * w (k x o)` as FMA chains in k slices of at most 512 added in order, then bias.
fn linear_reference(x: &[f32], w: &[f32], b: &[f32], n: usize, k: usize, o: usize) -> Vec<f32> {
    let count = k.div_ceil(512).max(1);
    let len = k.div_ceil(count);
    let mut out = vec![0.0f32; n * o];
    for i in 0..n {
        for j in 0..o {
            let mut total: Option<f32> = None;
            for s in 0..count {
                let mut acc = 0.0f32;
                for kk in (s * len).min(k)..((s + 1) * len).min(k) {
                    acc = x[i * k + kk].mul_add(w[kk * o + j], acc);
                }
                total = Some(total.map_or(acc, |t| t + acc));
            }
            out[i * o + j] = total.unwrap_or(0.0) + b[j];
        }
    }
    out
}

#[test]
fn linear_is_the_portable_fma_chains_in_fixed_slices() {
    let device = flex();
    let mut rng = Rng::new(7);
    // The FC layers of the models: k of 784 (FCN at 28x28), 1568 and 4608 (CNN at 42 and 60),
    // 1210 (the localization net at 60); batch 64 (training) and 256 (evaluation).
    for (n, k, o) in [(64, 784, 128), (256, 1568, 64), (64, 4608, 64), (256, 1210, 50), (100, 300, 70)] {
        let layer = LinearConfig::new(k, o).init(&device);
        let x: Vec<f32> = rng.uniform(n * k, -1.0, 1.0).into_iter().map(|v| v as f32).collect();
        let xt = Tensor::<2>::from_data(TensorData::new(x.clone(), [n, k]), (&device, DType::F32));
        let got = f32s(stn::repro::linear(&layer, xt));
        let w = f32s(layer.weight.val());
        let b = f32s(layer.bias.as_ref().unwrap().val());
        let want = linear_reference(&x, &w, &b, n, k, o);
        let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{n}x{k}x{o}: not the portable chains");
    }
}

#[test]
fn log_softmax_and_mean_are_sums_in_a_fixed_order() {
    let device = flex();
    let mut rng = Rng::new(3);
    let (n, c) = (64, 10);
    let x: Vec<f32> = rng.uniform(n * c, -6.0, 6.0).into_iter().map(|v| v as f32).collect();
    let xt = Tensor::<2>::from_data(TensorData::new(x.clone(), [n, c]), (&device, DType::F32));
    let got = f32s(stn::repro::log_softmax(xt.clone()));
    for i in 0..n {
        let row = &x[i * c..][..c];
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f32;
        for v in row {
            sum += libm::expf(v - max);
        }
        let lse = libm::logf(sum);
        for j in 0..c {
            assert_eq!(got[i * c + j].to_bits(), ((row[j] - max) - lse).to_bits(), "row {i} class {j}");
        }
    }
    // Close to Burn's own log_softmax (which sums in SIMD lanes).
    let burn = f32s(burn::tensor::activation::log_softmax(xt, 1));
    assert!(got.iter().zip(&burn).all(|(a, b)| (a - b).abs() <= 1e-5 * (1.0 + b.abs())));
    // The mean: a sequential sum, then one division.
    let v: Vec<f32> = rng.uniform(1000, -1.0, 1.0).into_iter().map(|v| v as f32).collect();
    let t = Tensor::<2>::from_data(TensorData::new(v.clone(), [40, 25]), (&device, DType::F32));
    let mut s = 0.0f32;
    for a in &v {
        s += a;
    }
    assert_eq!(f32s(stn::repro::mean(t))[0].to_bits(), (s / 1000.0).to_bits());
}

#[test]
fn exp_ln_sin_cos_are_libms_with_their_gradients() {
    let mut rng = Rng::new(5);
    let v: Vec<f32> = rng.uniform(4096, -20.0, 20.0).into_iter().map(|v| v as f32).collect();
    let pos: Vec<f32> = v.iter().map(|x| x.abs() + 1e-3).collect();
    let t = |v: &[f32], d: &burn::tensor::Device| {
        Tensor::<1>::from_data(TensorData::new(v.to_vec(), [v.len()]), (d, DType::F32))
    };
    let e = f32s(stn::repro::exp(t(&v, &flex())));
    let l = f32s(stn::repro::ln(t(&pos, &flex())));
    assert!(e.iter().zip(&v).all(|(a, x)| a.to_bits() == libm::expf(*x).to_bits()), "exp is libm's");
    assert!(l.iter().zip(&pos).all(|(a, x)| a.to_bits() == libm::logf(*x).to_bits()), "ln is libm's");
    let s = f32s(stn::repro::sin(t(&v, &flex())));
    let c = f32s(stn::repro::cos(t(&v, &flex())));
    assert!(s.iter().zip(&v).all(|(a, x)| a.to_bits() == libm::sinf(*x).to_bits()), "sin is libm's");
    assert!(c.iter().zip(&v).all(|(a, x)| a.to_bits() == libm::cosf(*x).to_bits()), "cos is libm's");
    // Gradients: d exp(x) = exp(x), d ln(x) = 1 / x, under autodiff, f64 too.
    let device = autodiff();
    let x = tensor(&rng.uniform(64, -3.0, 3.0), [64], true, &device).require_grad();
    let g = stn::repro::exp(x.clone()).sum().backward();
    assert_close("d exp", &values(x.grad(&g).unwrap()), &values(x.clone().exp()), 1e-12);
    let y = tensor(&rng.uniform(64, 0.5, 3.0), [64], true, &device).require_grad();
    let g = stn::repro::ln(y.clone()).sum().backward();
    assert_close("d ln", &values(y.grad(&g).unwrap()), &values(y.clone().recip()), 1e-12);
    // d sin(x) = cos(x), d cos(x) = -sin(x) (Burn's own ops as the reference).
    let g = stn::repro::sin(x.clone()).sum().backward();
    assert_close("d sin", &values(x.grad(&g).unwrap()), &values(x.clone().cos()), 1e-12);
    let g = stn::repro::cos(x.clone()).sum().backward();
    assert_close("d cos", &values(x.grad(&g).unwrap()), &values(x.clone().sin().neg()), 1e-12);
}

#[test]
fn their_gradients_match_burns_ops() {
    let device = autodiff();
    let mut rng = Rng::new(11);
    let (n, k, o) = (32, 900, 10);
    let layer = LinearConfig::new(k, o).init(&device);
    let x = tensor(&rng.uniform(n * k, -1.0, 1.0), [n, k], false, &device).require_grad();
    let target = weights(&Tensor::<2>::zeros([n, o], (&device, DType::F32)), &mut rng, &device);
    let ours =
        stn::repro::mean(stn::repro::log_softmax(stn::repro::linear(&layer, x.clone())) * target.clone());
    let g = ours.backward();
    let (gx, gw) = (values(x.grad(&g).unwrap()), values(layer.weight.val().grad(&g).unwrap()));
    let theirs = (burn::tensor::activation::log_softmax(layer.forward(x.clone()), 1) * target).mean();
    let g = theirs.backward();
    assert_close("d/dx", &gx, &values(x.grad(&g).unwrap()), 1e-4);
    assert_close("d/dw", &gw, &values(layer.weight.val().grad(&g).unwrap()), 1e-4);
}

/// The probe run in a child process: hashes of a plain gemm product with k = 900 (which gemm
/// blocks by the L1 cache it reads from `/sys`) and of `stn::repro::linear` with the same k at
/// batch 256, printed as `probe raw=HASH linear=HASH`. Does nothing unless `STN_PROBE` is set.
#[test]
fn probe() {
    if std::env::var_os("STN_PROBE").is_none() {
        return;
    }
    let (m, n, k) = (256usize, 128usize, 900usize);
    let mut rng = Rng::new(9);
    let lhs: Vec<f32> = rng.uniform(m * k, -1.0, 1.0).into_iter().map(|v| v as f32).collect();
    let rhs: Vec<f32> = rng.uniform(k * n, -1.0, 1.0).into_iter().map(|v| v as f32).collect();
    let mut raw = vec![0.0f32; m * n];
    // SAFETY: dst m x n, lhs m x k, rhs k x n, row-major, in bounds.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            raw.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    };
    let device = flex();
    // The same weights in every process (the layer's own initialisation is random).
    let mut layer = LinearConfig::new(k, n).with_bias(false).init(&device);
    layer.weight = burn::module::Param::from_tensor(Tensor::<2>::from_data(
        TensorData::new(rhs, [k, n]),
        (&device, DType::F32),
    ));
    let x = Tensor::<2>::from_data(TensorData::new(lhs, [m, k]), (&device, DType::F32));
    let ours = f32s(stn::repro::linear(&layer, x));
    let hash = |v: &[f32]| {
        v.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| (h ^ x.to_bits() as u64).wrapping_mul(0x100_0000_01b3))
    };
    println!("probe raw={:016x} linear={:016x}", hash(&raw), hash(&ours));
}

/// Runs [`probe`] in a child process, with the L1 data cache that gemm reads from `/sys`
/// replaced by an unshared one of `l1` (size, ways) through `tools/cpu/with_l1.sh`, or as it
/// is; None where this machine cannot fake it (not root, no `unshare`).
fn probe_with_l1(l1: Option<(&str, &str)>) -> Option<(String, String)> {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = match l1 {
        None => std::process::Command::new(&exe),
        Some((size, ways)) => {
            let tool = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/cpu/with_l1.sh");
            let mut c = std::process::Command::new("bash");
            c.arg(tool).args([size, ways]).arg(&exe);
            c
        }
    };
    let out = cmd
        .args(["--exact", "repro::probe", "--nocapture", "--test-threads", "1"])
        .env("STN_PROBE", "1")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // The harness prints "test repro::probe ... " before the probe's line, on the same line.
    let line = text.lines().find_map(|l| l.find("probe raw=").map(|i| &l[i..]))?;
    let field = |name: &str| line.split_whitespace().find_map(|w| w.strip_prefix(name)).map(str::to_string);
    Some((field("raw=")?, field("linear=")?))
}

/// What another CPU's caches would do, on this machine: gemm reads the L1 data cache's size,
/// ways and sharing from `/sys`; replaced there by a 32 KiB 8-way L1d (Zen 2 to 4: k = 900 in
/// two blocks) and a 48 KiB 12-way one (Zen 5, Intel since Ice Lake without a sibling: one
/// block), each unshared, a plain gemm product with k = 900 changes bits under at least one of
/// them, whatever this machine's own cache (the control: the change reaches gemm), and
/// `stn::repro::linear` changes under none.
#[test]
fn products_do_not_follow_the_l1_cache_gemm_reads() {
    let (raw, linear) = probe_with_l1(None).expect("the probe runs");
    let mut changed = false;
    for l1 in [("32K", "8"), ("48K", "12")] {
        let Some((raw_l1, linear_l1)) = probe_with_l1(Some(l1)) else {
            eprintln!("SKIPPED: cannot fake the L1 cache here (unshare -m and bind mounts need root)");
            return;
        };
        changed |= raw_l1 != raw;
        assert_eq!(linear_l1, linear, "stn::repro::linear with an L1d of {l1:?}");
    }
    assert!(changed, "the control: a plain gemm product follows the faked L1d (else the faking did nothing)");
}
