//! Helpers shared by the conformance tests.
#![allow(dead_code)]

use stn_kernels::Float;

/// A deterministic pseudo-random generator (xorshift), so tests need no extra crate.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        lo + (hi - lo) * u
    }
    pub fn vec<T: Float>(&mut self, n: usize, lo: f64, hi: f64) -> Vec<T> {
        (0..n).map(|_| T::from_f64(self.uniform(lo, hi))).collect()
    }
}

/// Largest |a - b| / max(1, |b|); NaN where one side is NaN and the other is not.
pub fn max_rel_err<T: Float>(a: &[T], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let mut worst = 0.0f64;
    for (x, y) in a.iter().zip(b) {
        let x = x.to_f64();
        if x.is_nan() && y.is_nan() {
            continue;
        }
        let e = (x - y).abs() / y.abs().max(1.0);
        if e.is_nan() || e > worst {
            worst = e;
        }
    }
    worst
}

/// sum(a * b).
pub fn dot<T: Float>(a: &[T], b: &[T]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x.to_f64() * y.to_f64()).sum()
}
