//! Shared helpers of the stn integration tests.
#![allow(dead_code)]

use burn::tensor::{DType, Device, Tensor, TensorData};

/// Deterministic uniform numbers in [lo, hi) (xorshift), so tests need no rand crate.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn uniform(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| lo + (hi - lo) * self.next_f64()).collect()
    }
}

pub fn flex() -> Device {
    Device::flex()
}

pub fn autodiff() -> Device {
    Device::flex().autodiff()
}

/// A tensor of `shape` from f64 values, stored as f64 or f32.
pub fn tensor<const D: usize>(v: &[f64], shape: [usize; D], f64_: bool, device: &Device) -> Tensor<D> {
    let dtype = if f64_ { DType::F64 } else { DType::F32 };
    Tensor::from_data(TensorData::new(v.to_vec(), shape), (device, dtype))
}

/// The values of a tensor as f64.
pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data().convert::<f64>().try_into_vec::<f64>().expect("float tensor")
}

/// Largest |a - b| / (1 + |b|).
pub fn max_rel(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs() / (1.0 + y.abs())).fold(0.0, f64::max)
}

pub fn assert_close(what: &str, a: &[f64], b: &[f64], tol: f64) {
    let e = max_rel(a, b);
    assert!(e <= tol, "{what}: max relative difference {e:e} > {tol:e}");
    assert!(a.iter().all(|x| x.is_finite()), "{what}: non-finite value");
}

/// A random weighting of the output, so `sum(out * w)` has a non-trivial gradient.
pub fn weights<const D: usize>(out: &Tensor<D>, rng: &mut Rng, device: &Device) -> Tensor<D> {
    let dims = out.dims();
    let n: usize = dims.iter().product();
    let w = rng.uniform(n, -1.0, 1.0);
    Tensor::from_data(TensorData::new(w, dims), (device, out.dtype()))
}

/// Central-difference check of `analytic` (the gradient of `f` at `x0`) at coordinates `idx`.
pub fn fd_check(
    name: &str,
    f: &dyn Fn(&[f64]) -> f64,
    x0: &[f64],
    analytic: &[f64],
    idx: &[usize],
    tol: f64,
) {
    let eps = 1e-6;
    for &i in idx {
        let mut xp = x0.to_vec();
        let mut xm = x0.to_vec();
        xp[i] += eps;
        xm[i] -= eps;
        let fd = (f(&xp) - f(&xm)) / (2.0 * eps);
        let a = analytic[i];
        let err = (fd - a).abs() / (1.0 + fd.abs());
        assert!(err <= tol, "{name}: d/dx[{i}] analytic {a:e}, finite difference {fd:e} (rel err {err:e})");
    }
}

/// `sum(t * w)` as f64.
pub fn dot<const D: usize>(t: Tensor<D>, w: &Tensor<D>) -> f64 {
    values((t * w.clone()).sum())[0]
}

/// The first `n` digits of the vendored MNIST subset as (N, 1, 28, 28) values in [0, 1] and labels.
pub fn mnist(n: usize) -> (Vec<f64>, Vec<u8>) {
    use std::io::Read;
    // The run-time manifest dir (a shared target directory may hold a binary built elsewhere).
    let root = format!(
        "{}/../../data/mnist10k",
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into())
    );
    let read = |name: &str| {
        let f = std::fs::File::open(format!("{root}/{name}")).expect("vendored MNIST subset");
        let mut v = Vec::new();
        flate2::read::GzDecoder::new(f).read_to_end(&mut v).expect("gzip");
        v
    };
    let img = read("mnist10k-images-idx3-ubyte.gz");
    let lab = read("mnist10k-labels-idx1-ubyte.gz");
    assert_eq!(&img[..4], &[0, 0, 8, 3], "IDX image magic");
    let px = img[16..16 + n * 784].iter().map(|&b| b as f64 / 255.0).collect();
    (px, lab[8..8 + n].to_vec())
}
