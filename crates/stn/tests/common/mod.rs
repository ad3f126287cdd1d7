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
