//! Outputs and gradients are bitwise identical for any thread count: every public sampling
//! entry point (grid_sample, affine_sample, projective_sample, tps_sample), forward and
//! backward (all gradients, and each one alone), run in rayon pools of 1, 2, 3 and 4 threads,
//! on shapes that exercise several blocks per sample and both backward strategies
//! (few samples: channel groups; many samples: one task per sample).

use std::fmt::Debug;

use crate::common::*;
use stn_kernels::*;

/// Runs `f` in a fresh rayon pool of `k` threads.
fn in_pool<R: Send>(k: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new().num_threads(k).build().unwrap().install(f)
}

/// One problem: input, grid and parameters of every family, an upstream gradient.
struct Case<T> {
    name: String,
    in_shape: Vec<usize>,
    out_size: Vec<usize>,
    input: Vec<T>,
    grid: Vec<T>,
    grid_shape: Vec<usize>,
    theta: Vec<T>,
    theta_shape: Vec<usize>,
    proj: Vec<T>,
    tps: Tps,
    tps_theta: Vec<T>,
    grad_out: Vec<T>,
    out_shape: Vec<usize>,
    opts: Vec<SampleOptions>,
}

fn make_case<T: Float>(
    seed: u64,
    in_shape: &[usize],
    out_size: &[usize],
    opts: Vec<SampleOptions>,
) -> Case<T> {
    let mut rng = Rng::new(seed);
    let n = in_shape[0];
    let d = out_size.len();
    let input = rng.vec(in_shape.iter().product(), -1.0, 1.0);
    let mut grid_shape = vec![n];
    grid_shape.extend_from_slice(out_size);
    grid_shape.push(d);
    // Grid points reach beyond the borders, so every padding mode does something.
    let grid = rng.vec(grid_shape.iter().product(), -1.15, 1.15);
    let theta_shape = vec![n, d, d + 1];
    let theta: Vec<T> = (0..n * d * (d + 1))
        .map(|i| {
            let (r, c) = ((i / (d + 1)) % d, i % (d + 1));
            T::from_f64(if r == c { 1.0 } else { 0.0 } + rng.uniform(-0.2, 0.2))
        })
        .collect();
    let proj =
        (0..n * 8).map(|i| T::from_f64(PROJECTIVE_IDENTITY[i % 8] + rng.uniform(-0.15, 0.15))).collect();
    let tps = Tps::default();
    let tps_theta =
        tps.identity::<f64>(n).into_iter().map(|v| T::from_f64(v + rng.uniform(-0.15, 0.15))).collect();
    let mut out_shape = vec![n, in_shape[1]];
    out_shape.extend_from_slice(out_size);
    let grad_out = rng.vec(out_shape.iter().product(), -1.0, 1.0);
    Case {
        name: format!("{} {in_shape:?} -> {out_size:?}", T::NAME),
        in_shape: in_shape.to_vec(),
        out_size: out_size.to_vec(),
        input,
        grid,
        grid_shape,
        theta,
        theta_shape,
        proj,
        tps,
        tps_theta,
        grad_out,
        out_shape,
        opts,
    }
}

const REQUESTS: [(GradRequest, &str); 3] =
    [(GradRequest::ALL, "ALL"), (GradRequest::INPUT, "INPUT"), (GradRequest::PARAMS, "PARAMS")];

fn push<T>(v: &mut Vec<(String, Vec<T>)>, name: String, t: Option<Tensor<T>>) {
    v.push((name, t.map(|t| t.data).unwrap_or_default()));
}

/// Every result of the case, labelled, in a fixed order.
fn run_case<T: Float>(c: &Case<T>) -> Vec<(String, Vec<T>)> {
    let mut res = Vec::new();
    let x = TensorRef::new(&c.input, &c.in_shape);
    let go = TensorRef::new(&c.grad_out, &c.out_shape);
    let grid = TensorRef::new(&c.grid, &c.grid_shape);
    let theta = TensorRef::new(&c.theta, &c.theta_shape);
    let n = c.in_shape[0];
    let pshape = [n, 8];
    let proj = TensorRef::new(&c.proj, &pshape);
    let tshape = [n, c.tps.num_points(), 2];
    let tps_theta = TensorRef::new(&c.tps_theta, &tshape);
    let two_d = c.out_size.len() == 2;
    for o in &c.opts {
        let tag = format!("{:?}/{:?}/align={}", o.mode, o.padding, o.align_corners);
        push(&mut res, format!("grid_sample {tag}"), Some(grid_sample(x, grid, o).unwrap()));
        push(
            &mut res,
            format!("affine_sample {tag}"),
            Some(affine_sample(x, theta, &c.out_size, o).unwrap()),
        );
        if two_d {
            let out = projective_sample(x, proj, &c.out_size, o).unwrap();
            push(&mut res, format!("projective_sample {tag}"), Some(out));
            let out = tps_sample(x, tps_theta, &c.tps, &c.out_size, o).unwrap();
            push(&mut res, format!("tps_sample {tag}"), Some(out));
        }
        for (req, rn) in REQUESTS {
            let g = grid_sample_backward(go, x, grid, o, req).unwrap();
            push(&mut res, format!("grid_sample_backward[{rn}] input {tag}"), g.input);
            push(&mut res, format!("grid_sample_backward[{rn}] grid {tag}"), g.grid);
            let g = affine_sample_backward(go, x, theta, o, req).unwrap();
            push(&mut res, format!("affine_sample_backward[{rn}] input {tag}"), g.input);
            push(&mut res, format!("affine_sample_backward[{rn}] params {tag}"), g.params);
            if two_d {
                let g = projective_sample_backward(go, x, proj, o, req).unwrap();
                push(&mut res, format!("projective_sample_backward[{rn}] input {tag}"), g.input);
                push(&mut res, format!("projective_sample_backward[{rn}] params {tag}"), g.params);
                let g = tps_sample_backward(go, x, tps_theta, &c.tps, o, req).unwrap();
                push(&mut res, format!("tps_sample_backward[{rn}] input {tag}"), g.input);
                push(&mut res, format!("tps_sample_backward[{rn}] params {tag}"), g.params);
            }
        }
    }
    res
}

fn check_case<T: Float + Bits + Debug>(c: &Case<T>) {
    let base = in_pool(1, || run_case(c));
    // Non-vacuous: the single-thread results hold real numbers.
    for (name, v) in &base {
        if name.contains("[INPUT] params") || name.contains("[INPUT] grid") || name.contains("[PARAMS] input")
        {
            assert!(v.is_empty(), "{}: {name}: a gradient that was not requested came back", c.name);
        } else {
            assert!(!v.is_empty(), "{}: {name}: missing result", c.name);
            if !name.contains("Nearest") || !(name.contains("params") || name.contains(" grid ")) {
                assert!(v.iter().any(|x| x.to_f64() != 0.0), "{}: {name}: all zero", c.name);
            }
        }
    }
    for k in [2, 3, 4] {
        let other = in_pool(k, || run_case(c));
        assert_eq!(other.len(), base.len());
        for ((name, a), (_, b)) in base.iter().zip(&other) {
            assert_bits_eq(b, a, &format!("{}: {name}: {k} threads vs 1", c.name));
        }
    }
}

fn opts_all_2d() -> Vec<SampleOptions> {
    vec![
        SampleOptions::new(Interpolation::Bilinear, Padding::Zeros, false),
        SampleOptions::new(Interpolation::Bilinear, Padding::Reflection, true),
        SampleOptions::new(Interpolation::Bicubic, Padding::Border, false),
        SampleOptions::new(Interpolation::Bicubic, Padding::Zeros, true),
        SampleOptions::new(Interpolation::Nearest, Padding::Reflection, false),
    ]
}

fn opts_3d() -> Vec<SampleOptions> {
    vec![
        SampleOptions::new(Interpolation::Bilinear, Padding::Zeros, true),
        SampleOptions::new(Interpolation::Bilinear, Padding::Reflection, false),
        SampleOptions::new(Interpolation::Nearest, Padding::Border, true),
    ]
}

/// Few samples (chains of channel groups split into bands of positions), several blocks per
/// sample (3 channels: ~10.9K positions per block; the 128 x 120 output has 15 360 positions);
/// one sample of one channel (two bands at once, the second in private planes); two samples.
#[test]
fn few_samples_large_image() {
    check_case(&make_case::<f32>(1, &[1, 3, 96, 96], &[96, 96], opts_all_2d()));
    check_case(&make_case::<f32>(2, &[1, 3, 96, 96], &[128, 120], opts_all_2d()));
    check_case(&make_case::<f64>(3, &[1, 3, 96, 96], &[128, 120], opts_all_2d()));
    check_case(&make_case::<f32>(15, &[1, 1, 70, 90], &[64, 96], opts_all_2d()));
    check_case(&make_case::<f64>(16, &[2, 1, 50, 40], &[64, 48], opts_all_2d()));
}

/// Many samples (one task per sample in the backward).
#[test]
fn many_samples() {
    check_case(&make_case::<f32>(4, &[6, 4, 40, 40], &[40, 40], opts_all_2d()));
    check_case(&make_case::<f64>(5, &[6, 4, 40, 40], &[33, 47], opts_all_2d()));
}

/// Many samples and many channels: several blocks per sample in the per-sample strategy
/// (48 channels: 704 positions per block, 1 920 positions).
#[test]
fn many_samples_many_blocks() {
    let opts = vec![
        SampleOptions::new(Interpolation::Bilinear, Padding::Border, true),
        SampleOptions::new(Interpolation::Bicubic, Padding::Reflection, false),
    ];
    check_case(&make_case::<f32>(6, &[5, 48, 40, 40], &[48, 40], opts));
}

/// 3-D: few samples with several blocks (8 channels: 4 096 positions per block), and many samples.
#[test]
fn volumes() {
    check_case(&make_case::<f32>(7, &[2, 8, 10, 12, 14], &[12, 16, 24], opts_3d()));
    check_case(&make_case::<f64>(8, &[4, 2, 6, 7, 8], &[8, 8, 8], opts_3d()));
    check_case(&make_case::<f32>(9, &[1, 3, 6, 7, 8], &[5, 9, 7], opts_3d()));
}

// ---------------------------------------------------------------------------------------
// The builds agree: the 2-D fast path (AVX2 and portable) and the generic engine
// ---------------------------------------------------------------------------------------

/// FNV-1a over the bit patterns of a buffer, every NaN counted as one pattern: the compiler
/// may fold a negation into a product (`-a * b` as `-(a * b)`), which flips the sign bit of a
/// NaN result and nothing else, so the builds agree on where NaNs are, not on their bits.
fn fnv<T: Bits + Float>(v: &[T]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for x in v {
        let bits = if x.is_nan() { u64::MAX } else { x.bits() };
        for b in bits.to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h ^ v.len() as u64
}

/// One line per result: "hash name".
fn digests() -> Vec<String> {
    fn lines<T: Float + Bits>(c: &Case<T>, out: &mut Vec<String>) {
        for (name, v) in run_case(c) {
            out.push(format!("{:016x} {} {name}", fnv(&v), c.name));
        }
    }
    let mut out = Vec::new();
    lines(&make_case::<f32>(2, &[1, 3, 96, 96], &[128, 120], opts_all_2d()), &mut out);
    lines(&make_case::<f64>(5, &[6, 4, 40, 40], &[33, 47], opts_all_2d()), &mut out);
    lines(&make_case::<f32>(10, &[4, 2, 17, 19], &[21, 13], opts_all_2d()), &mut out);
    lines(&make_case::<f64>(11, &[1, 2, 17, 19], &[9, 31], opts_all_2d()), &mut out);
    lines(&make_case::<f32>(15, &[1, 1, 70, 90], &[64, 96], opts_all_2d()), &mut out);
    lines(&make_case::<f32>(8, &[2, 2, 6, 7, 8], &[8, 8, 8], opts_3d()), &mut out);
    // The register-held path's edges: 4 channels (its most), 5 (the staged path), 1 (its own
    // nearest loop), a partial last group of 8 positions, NaN coordinates; nearest with every
    // padding (taps outside the plane are masked for zeros, clamped for border).
    for (seed, shape) in
        [(12, [3, 4, 23, 29]), (13, [2, 5, 23, 29]), (14, [5, 1, 9, 11]), (26, [3, 1, 30, 26])]
    {
        let mut opts = opts_all_2d();
        opts.push(SampleOptions::new(Interpolation::Nearest, Padding::Zeros, false));
        opts.push(SampleOptions::new(Interpolation::Nearest, Padding::Border, true));
        let mut case = make_case::<f32>(seed, &shape, &[19, 37], opts);
        for i in (0..case.grid.len()).step_by(37) {
            case.grid[i] = f32::NAN;
        }
        lines(&case, &mut out);
    }
    // The channels-last path (f32, 8 channels or more): blocks of 8 (8 channels), 16 with a
    // partial block (13, 45: zero-padded channels) and 64 (bicubic; 45, 70: a partial one), a
    // partial last group of 8 positions and chunk, NaN coordinates, several samples; and one
    // sample with few blocks, which shares one scratch between the threads and samples it in bands.
    for (seed, shape, out_size) in [
        (17, [3, 8, 11, 13], [9, 7]),
        (18, [2, 13, 17, 19], [21, 13]),
        (19, [2, 45, 12, 10], [7, 11]),
        (20, [1, 70, 9, 8], [5, 6]),
        (21, [1, 16, 40, 36], [44, 37]),
        // The channels-last backward (4 samples or more: one task per sample): blocks of 8, 16
        // (a partial one) and 64 (bicubic: partial, then full and partial), and 64 channels
        // over two blocks of output positions (512 each: one accumulator per block).
        (22, [4, 8, 11, 13], [9, 7]),
        (23, [5, 29, 12, 10], [11, 9]),
        (24, [4, 70, 9, 8], [5, 6]),
        (25, [4, 64, 12, 14], [30, 20]),
    ] {
        let mut case = make_case::<f32>(seed, &shape, &out_size, opts_all_2d());
        for i in (0..case.grid.len()).step_by(29) {
            case.grid[i] = f32::NAN;
        }
        lines(&case, &mut out);
    }
    out
}

/// The same results, bit for bit, from the default build (AVX2 when the CPU has it, with the
/// register-held path for few channels and the channels-last path for many), the staged AVX2
/// build (`STN_KERNELS_NO_FUSED=1`, `STN_KERNELS_NO_CHANNELS_LAST=1`),
/// the portable build of the fast path (`STN_KERNELS_NO_SIMD=1`), the generic engine
/// (`STN_KERNELS_GENERIC=1`) and, on a CPU with AVX-512F, the AVX-512 paths
/// (`STN_KERNELS_AVX512=1`: register-held and staged, then staged for every channel count);
/// each variant runs in a child process since the switches are read once per process. In a
/// pool of 2 threads, so that every machine takes the same paths (which channels-last backward
/// runs depends on the samples per thread).
#[test]
fn builds_agree_bitwise() {
    const CHILD: &str = "STN_DETERMINISM_CHILD";
    if std::env::var_os(CHILD).is_some() {
        for l in in_pool(2, digests) {
            println!("DIGEST {l}");
        }
        return;
    }
    let here = in_pool(2, digests);
    assert!(here.len() > 100);
    let mut variants: Vec<&[&str]> = vec![
        &["STN_KERNELS_NO_FUSED"],
        &["STN_KERNELS_NO_CHANNELS_LAST"],
        &["STN_KERNELS_NO_SIMD"],
        &["STN_KERNELS_GENERIC"],
    ];
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        variants.push(&["STN_KERNELS_AVX512"]);
        variants.push(&["STN_KERNELS_AVX512", "STN_KERNELS_NO_FUSED", "STN_KERNELS_NO_CHANNELS_LAST"]);
    }
    for vars in variants {
        let var = vars.join("=1 ");
        let mut child = std::process::Command::new(std::env::current_exe().unwrap());
        child
            .args([
                &test_path(module_path!(), "builds_agree_bitwise"),
                "--exact",
                "--test-threads=1",
                "--nocapture",
            ])
            .env(CHILD, "1");
        for v in vars {
            child.env(v, "1");
        }
        let out = child.output().expect("cannot run the test binary");
        assert!(out.status.success(), "{var}=1 child failed: {}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let there: Vec<String> =
            stdout.lines().filter_map(|l| l.split_once("DIGEST ")).map(|(_, d)| d.to_string()).collect();
        assert_eq!(there.len(), here.len(), "{var}=1: a different number of results");
        let differ: Vec<&str> =
            here.iter().zip(&there).filter(|(a, b)| a != b).map(|(a, _)| &a[17..]).collect();
        assert!(
            differ.is_empty(),
            "{var}=1 differs from the default build in {} results: {differ:#?}",
            differ.len()
        );
    }
}
