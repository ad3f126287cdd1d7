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

/// One row of the kernel benchmark: the peer's figures for one (case, mode, padding).
#[derive(Debug, Clone, PartialEq)]
pub struct KernelRow {
    /// The case.
    pub case: BenchCase,
    /// Interpolation mode.
    pub mode: crate::Interpolation,
    /// Padding mode.
    pub padding: crate::Padding,
    /// Fused affine warp, forward (ms).
    pub fwd_ms: f64,
    /// Fused affine warp, forward + backward to input and theta (ms).
    pub fb_ms: f64,
    /// Sampling from a given grid, forward (ms).
    pub gs_fwd_ms: f64,
    /// Sampling from a given grid, forward + backward to input and grid (ms).
    pub gs_fb_ms: f64,
    /// Timed runs of the forward figure.
    pub fwd_reps: usize,
    /// Bytes each figure must move at least (fwd, fb, gs fwd, gs fb): see [`figure_bytes`].
    pub bytes: [usize; 4],
    /// Milliseconds a parallel copy of the same bytes takes (half read, half written), on the
    /// same pool in the same run: this machine's limit for that much traffic (NaN if not timed).
    pub copy_ms: [f64; 4],
}

impl KernelRow {
    /// Figures in the order of [`KernelRow::bytes`].
    pub const FIGURES: [&'static str; 4] = ["fwd", "fb", "gs_fwd", "gs_fb"];

    /// Milliseconds of each figure, in the order of [`KernelRow::bytes`].
    pub fn ms(&self) -> [f64; 4] {
        [self.fwd_ms, self.fb_ms, self.gs_fwd_ms, self.gs_fb_ms]
    }

    /// Bandwidth each figure reached, GB/s (its bytes over its time).
    pub fn gbs(&self) -> [f64; 4] {
        let ms = self.ms();
        std::array::from_fn(|i| self.bytes[i] as f64 / (ms[i] * 1e6))
    }

    /// Bandwidth of the copy of each figure's bytes, GB/s: the limit.
    pub fn copy_gbs(&self) -> [f64; 4] {
        std::array::from_fn(|i| self.bytes[i] as f64 / (self.copy_ms[i] * 1e6))
    }
}

/// Bytes a figure of `case` must move at least, float32: every tensor it reads or writes, once.
/// With `s` the bytes of the input (= the output, = the upstream gradient, = the input gradient)
/// and `g` those of the grid: `fwd` reads the input and writes the output (2s); `fb` adds the
/// backward, which reads the upstream gradient and the input and writes the input gradient
/// (5s); `gs_fwd` also reads the grid (2s + g); `gs_fb` reads it twice more and writes its
/// gradient (5s + 3g). Parameters are negligible.
pub fn figure_bytes(case: &BenchCase, figure: &str) -> usize {
    let s = case.elems() * 4;
    let g = case.n * case.h * case.w * 2 * 4;
    match figure {
        "fwd" => 2 * s,
        "fb" => 5 * s,
        "gs_fwd" => 2 * s + g,
        "gs_fb" => 5 * s + 3 * g,
        _ => 0,
    }
}

/// Median milliseconds of a parallel copy of `bytes` bytes (`bytes / 2` read from one buffer,
/// written to another allocated beforehand) on the current rayon pool.
pub fn copy_ms(bytes: usize, reps: usize, warmup: usize, min_time: f64) -> f64 {
    use rayon::prelude::*;
    let n = bytes / 8;
    let src: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let mut dst = vec![0.0f32; n];
    let (t, _) = median_time(
        || {
            dst.par_chunks_mut(1 << 16).zip(src.par_chunks(1 << 16)).for_each(|(d, s)| d.copy_from_slice(s));
            std::hint::black_box(&mut dst);
        },
        reps,
        warmup,
        min_time,
    );
    t * 1e3
}

/// Which figures [`kernel_rows`] times (`None`: all four; else only the one named `fwd`, `fb`,
/// `gs_fwd` or `gs_fb`, the others are NaN).
pub type Only<'a> = Option<&'a str>;

/// Times the four figures of `case` for each (mode, padding), float32, align_corners = false,
/// on the current rayon pool, with the peer's inputs, and a copy of each figure's bytes. Small cases repeat until `min_time`
/// seconds; big ones (>= 4M elements) run `reps` times after one warm-up, as the peer does.
pub fn kernel_rows(
    case: &BenchCase,
    combos: &[(crate::Interpolation, crate::Padding)],
    reps: usize,
    warmup: usize,
    min_time: f64,
    only: Only<'_>,
) -> crate::Result<Vec<KernelRow>> {
    use crate::{
        affine_grid, affine_sample, affine_sample_backward, grid_sample, grid_sample_backward, GradRequest,
        SampleOptions, TensorRef,
    };
    let mut rng = BenchRng::for_case(case);
    let (n, c, h, w) = (case.n, case.c, case.h, case.w);
    let x = rng.normals(case.elems());
    let theta = rng.thetas(n);
    let gout = rng.normals(case.elems());
    let xs = [n, c, h, w];
    let (warm, mt) = if case.is_big() { (1, 0.0) } else { (warmup, min_time) };
    let ts = [n, 2, 3];
    let (xr, tr, gr) = (TensorRef::new(&x, &xs), TensorRef::new(&theta, &ts), TensorRef::new(&gout, &xs));
    let grid = affine_grid(tr, &xs, false)?;
    let reps_of = |fig: &str| match only {
        Some(f) if f != fig => 0,
        _ => reps,
    };
    // The limit of each figure's traffic, once per case (the bytes do not depend on the mode).
    let bytes = KernelRow::FIGURES.map(|f| figure_bytes(case, f));
    let copy: [f64; 4] = std::array::from_fn(|i| {
        if combos.is_empty() || reps_of(KernelRow::FIGURES[i]) == 0 {
            f64::NAN
        } else {
            copy_ms(bytes[i], reps, warm, mt)
        }
    });
    let mut rows = Vec::new();
    for &(mode, padding) in combos {
        let o = SampleOptions::new(mode, padding, false);
        // Validate once, so the timed closures cannot fail.
        affine_sample_backward(gr, xr, tr, &o, GradRequest::ALL)?;
        grid_sample_backward(gr, xr, grid.view(), &o, GradRequest::ALL)?;
        let (fwd, fwd_reps) = median_time(
            || {
                std::hint::black_box(affine_sample(xr, tr, &[h, w], &o).ok());
            },
            reps_of("fwd"),
            warm,
            mt,
        );
        let (fb, _) = median_time(
            || {
                std::hint::black_box(affine_sample(xr, tr, &[h, w], &o).ok());
                std::hint::black_box(affine_sample_backward(gr, xr, tr, &o, GradRequest::ALL).ok());
            },
            reps_of("fb"),
            warm,
            mt,
        );
        let (gs, _) = median_time(
            || {
                std::hint::black_box(grid_sample(xr, grid.view(), &o).ok());
            },
            reps_of("gs_fwd"),
            warm,
            mt,
        );
        let (gsfb, _) = median_time(
            || {
                std::hint::black_box(grid_sample(xr, grid.view(), &o).ok());
                std::hint::black_box(grid_sample_backward(gr, xr, grid.view(), &o, GradRequest::ALL).ok());
            },
            reps_of("gs_fb"),
            warm,
            mt,
        );
        rows.push(KernelRow {
            case: *case,
            mode,
            padding,
            fwd_ms: fwd * 1e3,
            fb_ms: fb * 1e3,
            gs_fwd_ms: gs * 1e3,
            gs_fb_ms: gsfb * 1e3,
            fwd_reps,
            bytes,
            copy_ms: copy,
        });
    }
    Ok(rows)
}

/// The peer's (mode, padding) combinations for a case: every mode with zeros padding, and for
/// case `d` also with border and reflection.
pub fn peer_combos(
    case: &BenchCase,
    modes: &[crate::Interpolation],
) -> Vec<(crate::Interpolation, crate::Padding)> {
    let mut v: Vec<_> = modes.iter().map(|&m| (m, crate::Padding::Zeros)).collect();
    if case.key == 'd' {
        for p in [crate::Padding::Border, crate::Padding::Reflection] {
            v.extend(modes.iter().map(|&m| (m, p)));
        }
    }
    v
}

/// The peer's name of a mode.
pub fn mode_name(m: crate::Interpolation) -> &'static str {
    match m {
        crate::Interpolation::Nearest => "nearest",
        crate::Interpolation::Bilinear => "bilinear",
        crate::Interpolation::Bicubic => "bicubic",
    }
}

/// The peer's name of a padding.
pub fn padding_name(p: crate::Padding) -> &'static str {
    match p {
        crate::Padding::Zeros => "zeros",
        crate::Padding::Border => "border",
        crate::Padding::Reflection => "reflection",
    }
}
