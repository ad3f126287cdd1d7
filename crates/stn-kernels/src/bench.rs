//! Benchmark support shared by the project's benchmarks (the kernel benchmark, the Burn op
//! benchmark, `stn bench`): the cases of the PyTorch peer script (`tools/peer/bench_grid_sample.py`),
//! its kind of inputs, and a median timer. Defined once here so every benchmark measures the
//! same thing.

use std::time::Instant;

/// One benchmark case: a float32 input (N, C, H, W) sampled to the same spatial size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BenchCase {
    /// The peer's key (`a` to `e`).
    pub key: char,
    /// Batch.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Height (input and output).
    pub h: usize,
    /// Width (input and output).
    pub w: usize,
    /// What the case stands for.
    pub desc: &'static str,
}

impl BenchCase {
    /// Elements of the input (and of the output).
    pub fn elems(&self) -> usize {
        self.n * self.c * self.h * self.w
    }

    /// Whether the case is large enough to be timed with one warm-up and no minimum time, as the
    /// peer does (>= 4M elements).
    pub fn is_big(&self) -> bool {
        self.elems() >= 4_000_000
    }
}

/// The peer's cases: MNIST, 60x60 MNIST, a feature map, ImageNet, a large photo.
pub const BENCH_CASES: [BenchCase; 5] = [
    BenchCase { key: 'a', n: 256, c: 1, h: 28, w: 28, desc: "MNIST" },
    BenchCase { key: 'b', n: 128, c: 1, h: 60, w: 60, desc: "60x60 MNIST" },
    BenchCase { key: 'c', n: 16, c: 64, h: 56, w: 56, desc: "feature map" },
    BenchCase { key: 'd', n: 8, c: 3, h: 224, w: 224, desc: "ImageNet" },
    BenchCase { key: 'e', n: 1, c: 3, h: 2048, w: 2048, desc: "large photo" },
];

/// A small deterministic generator (xorshift) for benchmark inputs.
#[derive(Debug, Clone)]
pub struct BenchRng(u64);

impl BenchRng {
    /// The generator of a case (seeded by its key).
    pub fn for_case(case: &BenchCase) -> Self {
        BenchRng(0x2545_F491_4F6C_DD1D ^ case.key as u64)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        let (u, v) = (self.uniform().max(1e-300), self.uniform());
        ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
    }

    /// `len` standard normal values.
    pub fn normals(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.normal()).collect()
    }

    /// Mild similarity transforms around the identity (N, 2, 3), as the peer's `make_theta`:
    /// angle within +-0.3 rad, scale 0.8 to 1.2, shift within +-0.2.
    pub fn thetas(&mut self, n: usize) -> Vec<f32> {
        let mut t = Vec::with_capacity(n * 6);
        let ang: Vec<f64> = (0..n).map(|_| (self.uniform() - 0.5) * 0.6).collect();
        let s: Vec<f64> = (0..n).map(|_| 0.8 + 0.4 * self.uniform()).collect();
        for i in 0..n {
            let (tx, ty) = ((self.uniform() - 0.5) * 0.4, (self.uniform() - 0.5) * 0.4);
            let (sn, cs) = ang[i].sin_cos();
            t.extend([s[i] * cs, -s[i] * sn, tx, s[i] * sn, s[i] * cs, ty].map(|v| v as f32));
        }
        t
    }
}

/// Median seconds of `f` after `warmup` runs, over at least `reps` runs and `min_time`
/// seconds (at most 1000 runs), and the number of runs.
pub fn median_time(mut f: impl FnMut(), reps: usize, warmup: usize, min_time: f64) -> (f64, usize) {
    if reps == 0 {
        return (f64::NAN, 0);
    }
    for _ in 0..warmup {
        f();
    }
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < reps || (start.elapsed().as_secs_f64() < min_time && times.len() < 1000) {
        let t0 = Instant::now();
        f();
        times.push(t0.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let m = times.len();
    let med = if m % 2 == 1 { times[m / 2] } else { 0.5 * (times[m / 2 - 1] + times[m / 2]) };
    (med, m)
}

/// Median seconds of `a` and of `b` timed alternately (a, b, a, b, ...), so both see the same
/// machine and cache state: after `warmup` runs of each, at least `reps` pairs and `min_time`
/// seconds (at most 1000 pairs).
pub fn median_time_pair(
    mut a: impl FnMut(),
    mut b: impl FnMut(),
    reps: usize,
    warmup: usize,
    min_time: f64,
) -> (f64, f64) {
    for _ in 0..warmup {
        a();
        b();
    }
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    let start = Instant::now();
    while ta.len() < reps.max(1) || (start.elapsed().as_secs_f64() < min_time && ta.len() < 1000) {
        let t0 = Instant::now();
        a();
        let t1 = Instant::now();
        b();
        ta.push((t1 - t0).as_secs_f64());
        tb.push(t1.elapsed().as_secs_f64());
    }
    (median(ta), median(tb))
}

fn median(mut t: Vec<f64>) -> f64 {
    t.sort_by(f64::total_cmp);
    let m = t.len();
    if m % 2 == 1 {
        t[m / 2]
    } else {
        0.5 * (t[m / 2 - 1] + t[m / 2])
    }
}
