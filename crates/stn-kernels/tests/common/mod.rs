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

/// Exact bit pattern of an `f32` or `f64`, for bitwise comparisons (NaN included).
pub trait Bits: Copy {
    fn bits(self) -> u64;
}
impl Bits for f32 {
    fn bits(self) -> u64 {
        self.to_bits() as u64
    }
}
impl Bits for f64 {
    fn bits(self) -> u64 {
        self.to_bits()
    }
}

/// Asserts two buffers are identical bit for bit, naming the first differing element.
pub fn assert_bits_eq<T: Bits + std::fmt::Debug>(a: &[T], b: &[T], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(x.bits() == y.bits(), "{what}: element {i} differs: {x:?} vs {y:?}");
    }
}

/// Norm-wise relative difference: max |a - b| / max(1, max |b|); infinite if either side
/// has a NaN or the lengths differ.
pub fn norm_rel_err<T: Float>(a: &[T], b: &[T]) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    let mut diff = 0.0f64;
    let mut scale = 1.0f64;
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (x.to_f64(), y.to_f64());
        if x.is_nan() || y.is_nan() {
            return f64::INFINITY;
        }
        diff = diff.max((x - y).abs());
        scale = scale.max(y.abs());
    }
    diff / scale
}

/// Asserts `norm_rel_err(a, b) <= tol`.
pub fn assert_close<T: Float>(a: &[T], b: &[T], tol: f64, what: &str) {
    let e = norm_rel_err(a, b);
    assert!(e <= tol, "{what}: norm-wise relative error {e:e} > {tol:e}");
}

/// Central finite differences of `f` at `x` with step `h`, one coordinate at a time.
pub fn fd_grad(x: &[f64], h: f64, mut f: impl FnMut(&[f64]) -> f64) -> Vec<f64> {
    let mut xp = x.to_vec();
    (0..x.len())
        .map(|i| {
            let orig = xp[i];
            xp[i] = orig + h;
            let fp = f(&xp);
            xp[i] = orig - h;
            let fm = f(&xp);
            xp[i] = orig;
            (fp - fm) / (2.0 * h)
        })
        .collect()
}

/// Asserts an analytic gradient matches a numeric one element-wise:
/// |a - n| <= tol * max(1, |n|).
pub fn assert_grad_close(analytic: &[f64], numeric: &[f64], tol: f64, what: &str) {
    assert_eq!(analytic.len(), numeric.len(), "{what}: lengths differ");
    for (i, (a, n)) in analytic.iter().zip(numeric).enumerate() {
        let e = (a - n).abs() / n.abs().max(1.0);
        assert!(e <= tol, "{what}: element {i}: analytic {a:e} vs numeric {n:e} (error {e:e} > {tol:e})");
    }
}

/// Distance from `x` to the nearest multiple of 0.5: the kinks of every interpolation
/// (integers), rounding ties of nearest (half-integers) and the reflection / clip
/// boundaries of every padding mode (integers or half-integers) all lie on that lattice.
pub fn kink_distance(x: f64) -> f64 {
    let y = 2.0 * x;
    (y - y.round()).abs() / 2.0
}

/// Pixel coordinate of normalized coordinate `g` along an axis of `size` (PyTorch).
pub fn unnormalize(g: f64, size: usize, align: bool) -> f64 {
    if align {
        (g + 1.0) / 2.0 * (size as f64 - 1.0)
    } else {
        ((g + 1.0) * size as f64 - 1.0) / 2.0
    }
}

/// Normalized coordinate of pixel coordinate `p` along an axis of `size` (inverse of [`unnormalize`]).
pub fn normalize(p: f64, size: usize, align: bool) -> f64 {
    if align {
        2.0 * p / (size as f64 - 1.0) - 1.0
    } else {
        (2.0 * p + 1.0) / size as f64 - 1.0
    }
}

/// Whether every point of a grid (N, ..., D) lies at least `margin` (in input pixels) away
/// from the kink lattice, for an input of spatial sizes `in_spatial` (tensor order D, H, W).
pub fn grid_clear_of_kinks(grid: &[f64], in_spatial: &[usize], align: bool, margin: f64) -> bool {
    let d = in_spatial.len();
    grid.chunks_exact(d).all(|pt| {
        (0..d).all(|a| {
            let p = unnormalize(pt[a], in_spatial[d - 1 - a], align);
            p.is_finite() && kink_distance(p) > margin
        })
    })
}

/// A random grid (N, *out_spatial, D) for an input of spatial sizes `in_spatial` (tensor
/// order), whose pixel coordinates are at least `margin` from the kink lattice. With
/// `outside`, coordinates range over about 1.7 pixels beyond each border; else strictly inside.
pub fn safe_grid(
    rng: &mut Rng,
    n: usize,
    out_spatial: &[usize],
    in_spatial: &[usize],
    align: bool,
    outside: bool,
    margin: f64,
) -> (Vec<f64>, Vec<usize>) {
    let d = in_spatial.len();
    assert_eq!(out_spatial.len(), d);
    let points = n * out_spatial.iter().product::<usize>();
    let mut grid = Vec::with_capacity(points * d);
    for _ in 0..points {
        for a in 0..d {
            let size = in_spatial[d - 1 - a];
            let (lo, hi) = if outside { (-1.7, size as f64 + 0.7) } else { (0.0, size as f64 - 1.0) };
            let p = loop {
                let p = rng.uniform(lo, hi);
                if kink_distance(p) > margin {
                    break p;
                }
            };
            grid.push(normalize(p, size, align));
        }
    }
    let mut shape = vec![n];
    shape.extend_from_slice(out_spatial);
    shape.push(d);
    (grid, shape)
}

/// The name the test harness knows test `name` of the calling module by (`module::name`: all
/// of tests/ is one binary), for running it alone in a child process with `--exact`.
pub fn test_path(module: &str, name: &str) -> String {
    match module.split_once("::") {
        Some((_, m)) => format!("{m}::{name}"),
        None => name.to_string(),
    }
}
