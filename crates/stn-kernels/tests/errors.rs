//! Every kind of bad argument returns the right `KernelError` variant, naming the argument,
//! and nothing panics: wrong ranks, lengths, zero sizes, batch mismatches, wrong extents,
//! unsupported combinations, invalid TPS layouts, overflowing and unallocatable sizes,
//! and non-finite grids and parameters.

use std::process::Command;

use crate::common::*;
use stn_kernels::*;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn kind_of(e: &KernelError) -> &'static str {
    match e {
        KernelError::Rank { .. } => "Rank",
        KernelError::Shape { .. } => "Shape",
        KernelError::Length { .. } => "Length",
        KernelError::ZeroSize { .. } => "ZeroSize",
        KernelError::TooLarge { .. } => "TooLarge",
        KernelError::Alloc { .. } => "Alloc",
        KernelError::Batch { .. } => "Batch",
        KernelError::Unsupported { .. } => "Unsupported",
        KernelError::InvalidValue { .. } => "InvalidValue",
    }
}

fn arg_of(e: &KernelError) -> &'static str {
    match e {
        KernelError::Rank { arg, .. }
        | KernelError::Shape { arg, .. }
        | KernelError::Length { arg, .. }
        | KernelError::ZeroSize { arg, .. }
        | KernelError::TooLarge { arg, .. }
        | KernelError::Alloc { arg, .. }
        | KernelError::Batch { arg, .. }
        | KernelError::Unsupported { arg, .. }
        | KernelError::InvalidValue { arg, .. } => arg,
    }
}

/// Asserts `r` is an error of one of `kinds` naming `arg` (in the field and the message).
#[track_caller]
fn expect_err_any<T>(r: Result<T>, kinds: &[&str], arg: &str) -> KernelError {
    let e = match r {
        Ok(_) => panic!("expected a {kinds:?} error naming `{arg}`, got Ok"),
        Err(e) => e,
    };
    assert!(kinds.contains(&kind_of(&e)), "expected a {kinds:?} error naming `{arg}`, got {e:?}");
    assert_eq!(arg_of(&e), arg, "wrong argument named in {e:?}");
    let msg = e.to_string();
    assert!(msg.contains(arg), "message does not name `{arg}`: {msg}");
    e
}

#[track_caller]
fn expect_err<T>(r: Result<T>, kind: &str, arg: &str) -> KernelError {
    expect_err_any(r, &[kind], arg)
}

fn o2() -> SampleOptions {
    SampleOptions::default()
}

fn opts(mode: Interpolation) -> SampleOptions {
    SampleOptions { mode, ..Default::default() }
}

/// Valid 2-D arguments (N = 2, C = 3, 5 x 6 input, 4 x 3 output) and 3-D ones.
struct Fx {
    x: Vec<f64>,
    grid: Vec<f64>,
    theta: Vec<f64>,
    proj: Vec<f64>,
    tps: Tps,
    tps_theta: Vec<f64>,
    go: Vec<f64>,
    x3: Vec<f64>,
    grid3: Vec<f64>,
    theta3: Vec<f64>,
    go3: Vec<f64>,
}

const XS: [usize; 4] = [2, 3, 5, 6];
const GS: [usize; 4] = [2, 4, 3, 2];
const TS: [usize; 3] = [2, 2, 3];
const PS: [usize; 2] = [2, 8];
const TPS_S: [usize; 3] = [2, 16, 2];
const OS: [usize; 2] = [4, 3];
const GOS: [usize; 4] = [2, 3, 4, 3];
const XS3: [usize; 5] = [2, 3, 3, 4, 5];
const GS3: [usize; 5] = [2, 2, 3, 2, 3];
const TS3: [usize; 3] = [2, 3, 4];
const OS3: [usize; 3] = [2, 3, 2];
const GOS3: [usize; 5] = [2, 3, 2, 3, 2];

fn fx() -> Fx {
    let mut rng = Rng::new(42);
    let n = |s: &[usize]| s.iter().product::<usize>();
    let tps = Tps::default();
    Fx {
        x: rng.vec(n(&XS), -1.0, 1.0),
        grid: rng.vec(n(&GS), -1.0, 1.0),
        theta: vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.9, 0.1, 0.0, -0.1, 0.9, 0.0],
        proj: (0..16).map(|i| PROJECTIVE_IDENTITY[i % 8]).collect(),
        tps,
        tps_theta: tps.identity(2),
        go: rng.vec(n(&GOS), -1.0, 1.0),
        x3: rng.vec(n(&XS3), -1.0, 1.0),
        grid3: rng.vec(n(&GS3), -1.0, 1.0),
        theta3: (0..24).map(|i| if i % 12 % 5 == 0 { 1.0 } else { 0.0 }).collect(),
        go3: rng.vec(n(&GOS3), -1.0, 1.0),
    }
}

fn t<'a>(d: &'a [f64], s: &'a [usize]) -> TensorRef<'a, f64> {
    TensorRef::new(d, s)
}

/// The fixture is valid: every entry point accepts it (so each error below is caused by
/// the one argument changed).
#[test]
fn fixture_is_valid() {
    let f = fx();
    let a = GradRequest::ALL;
    let o = o2();
    grid_sample(t(&f.x, &XS), t(&f.grid, &GS), &o).unwrap();
    grid_sample_backward(t(&f.go, &GOS), t(&f.x, &XS), t(&f.grid, &GS), &o, a).unwrap();
    grid_sample(t(&f.x3, &XS3), t(&f.grid3, &GS3), &o).unwrap();
    grid_sample_backward(t(&f.go3, &GOS3), t(&f.x3, &XS3), t(&f.grid3, &GS3), &o, a).unwrap();
    affine_grid(t(&f.theta, &TS), &XS, false).unwrap();
    affine_grid(t(&f.theta3, &TS3), &XS3, false).unwrap();
    affine_grid_backward(t(&f.grid, &GS), false).unwrap();
    projective_grid(t(&f.proj, &PS), &XS, false).unwrap();
    projective_grid_backward(t(&f.grid, &GS), t(&f.proj, &PS), false).unwrap();
    tps_grid(t(&f.tps_theta, &TPS_S), &f.tps, &XS, false).unwrap();
    tps_grid_backward(t(&f.grid, &GS), &f.tps, false).unwrap();
    affine_sample(t(&f.x, &XS), t(&f.theta, &TS), &OS, &o).unwrap();
    affine_sample_backward(t(&f.go, &GOS), t(&f.x, &XS), t(&f.theta, &TS), &o, a).unwrap();
    affine_sample(t(&f.x3, &XS3), t(&f.theta3, &TS3), &OS3, &o).unwrap();
    affine_sample_backward(t(&f.go3, &GOS3), t(&f.x3, &XS3), t(&f.theta3, &TS3), &o, a).unwrap();
    projective_sample(t(&f.x, &XS), t(&f.proj, &PS), &OS, &o).unwrap();
    projective_sample_backward(t(&f.go, &GOS), t(&f.x, &XS), t(&f.proj, &PS), &o, a).unwrap();
    tps_sample(t(&f.x, &XS), t(&f.tps_theta, &TPS_S), &f.tps, &OS, &o).unwrap();
    tps_sample_backward(t(&f.go, &GOS), t(&f.x, &XS), t(&f.tps_theta, &TPS_S), &f.tps, &o, a).unwrap();
    let p = [0.1, 0.2, 0.3, 0.4];
    let th = AffineFamily::Similarity.to_affine(t(&p, &[1, 4])).unwrap();
    AffineFamily::Similarity.to_affine_backward(th.view(), t(&p, &[1, 4])).unwrap();
}

// ---------------------------------------------------------------------------------------
// Rank
// ---------------------------------------------------------------------------------------

#[test]
fn wrong_rank() {
    let f = fx();
    let o = o2();
    let a = GradRequest::ALL;
    // input
    let e = expect_err(grid_sample(t(&f.x, &[6, 5, 6]), t(&f.grid, &GS), &o), "Rank", "input");
    if let KernelError::Rank { got, shape, .. } = e {
        assert_eq!((got, shape), (3, vec![6, 5, 6]));
    }
    expect_err(grid_sample(t(&f.x, &[2, 3, 5, 6, 1, 1]), t(&f.grid, &GS), &o), "Rank", "input");
    expect_err(affine_sample(t(&f.x, &[180]), t(&f.theta, &TS), &OS, &o), "Rank", "input");
    expect_err(projective_sample(t(&f.x, &[6, 30]), t(&f.proj, &PS), &OS, &o), "Rank", "input");
    expect_err(tps_sample(t(&f.x, &[6, 5, 6]), t(&f.tps_theta, &TPS_S), &f.tps, &OS, &o), "Rank", "input");
    expect_err(
        grid_sample_backward(t(&f.go, &GOS), t(&f.x, &[6, 5, 6]), t(&f.grid, &GS), &o, a),
        "Rank",
        "input",
    );
    // grid
    expect_err(grid_sample(t(&f.x, &XS), t(&f.grid, &[8, 3, 2]), &o), "Rank", "grid");
    expect_err(grid_sample(t(&f.x, &XS), t(&f.grid, &[2, 4, 3, 1, 2]), &o), "Rank", "grid");
    expect_err(grid_sample(t(&f.x3, &XS3), t(&f.grid3, &[2, 6, 3, 3]), &o), "Rank", "grid");
    expect_err(
        grid_sample_backward(t(&f.go, &GOS), t(&f.x, &XS), t(&f.grid, &[8, 3, 2]), &o, a),
        "Rank",
        "grid",
    );
    // theta / params
    expect_err(affine_grid(t(&f.theta, &[2, 6]), &XS, false), "Rank", "theta");
    expect_err(affine_sample(t(&f.x, &XS), t(&f.theta, &[2, 6]), &OS, &o), "Rank", "theta");
    expect_err(
        affine_sample_backward(t(&f.go, &GOS), t(&f.x, &XS), t(&f.theta, &[12]), &o, a),
        "Rank",
        "theta",
    );
    expect_err(projective_grid(t(&f.proj, &[16]), &XS, false), "Rank", "params");
    expect_err(projective_grid(t(&f.proj, &[2, 2, 4]), &XS, false), "Rank", "params");
    expect_err(projective_grid_backward(t(&f.grid, &GS), t(&f.proj, &[16]), false), "Rank", "params");
    expect_err(projective_sample(t(&f.x, &XS), t(&f.proj, &[2, 2, 4]), &OS, &o), "Rank", "params");
    expect_err(
        projective_sample_backward(t(&f.go, &GOS), t(&f.x, &XS), t(&f.proj, &[16]), &o, a),
        "Rank",
        "params",
    );
    expect_err(tps_grid(t(&f.tps_theta, &[2, 32]), &f.tps, &XS, false), "Rank", "theta");
    expect_err(tps_sample(t(&f.x, &XS), t(&f.tps_theta, &[2, 32]), &f.tps, &OS, &o), "Rank", "theta");
    expect_err(
        tps_sample_backward(t(&f.go, &GOS), t(&f.x, &XS), t(&f.tps_theta, &[64]), &f.tps, &o, a),
        "Rank",
        "theta",
    );
    let p = [0.1, 0.2, 0.3, 0.4];
    expect_err(AffineFamily::Similarity.to_affine(t(&p, &[4])), "Rank", "params");
    let g6 = [0.0; 6];
    expect_err(
        AffineFamily::Similarity.to_affine_backward(t(&g6, &[1, 2, 3]), t(&p, &[4])),
        "Rank",
        "params",
    );
    // grad_output / grad_grid / grad_theta
    expect_err(
        grid_sample_backward(t(&f.go, &[6, 4, 3]), t(&f.x, &XS), t(&f.grid, &GS), &o, a),
        "Rank",
        "grad_output",
    );
    expect_err(
        affine_sample_backward(t(&f.go, &[6, 4, 3]), t(&f.x, &XS), t(&f.theta, &TS), &o, a),
        "Rank",
        "grad_output",
    );
    expect_err(
        affine_sample_backward(t(&f.go, &[2, 3, 4, 3, 1]), t(&f.x, &XS), t(&f.theta, &TS), &o, a),
        "Rank",
        "grad_output",
    );
    expect_err(
        projective_sample_backward(t(&f.go, &[6, 4, 3]), t(&f.x, &XS), t(&f.proj, &PS), &o, a),
        "Rank",
        "grad_output",
    );
    expect_err(
        tps_sample_backward(t(&f.go, &[2, 3, 4, 3, 1]), t(&f.x, &XS), t(&f.tps_theta, &TPS_S), &f.tps, &o, a),
        "Rank",
        "grad_output",
    );
    expect_err(affine_grid_backward(t(&f.grid, &[8, 3, 2]), false), "Rank", "grad_grid");
    expect_err(projective_grid_backward(t(&f.grid, &[8, 3, 2]), t(&f.proj, &PS), false), "Rank", "grad_grid");
    expect_err(tps_grid_backward(t(&f.grid, &[2, 4, 3, 2, 1]), &f.tps, false), "Rank", "grad_grid");
    expect_err(
        AffineFamily::Similarity.to_affine_backward(t(&g6, &[6]), t(&p, &[1, 4])),
        "Rank",
        "grad_theta",
    );
    // size / out_size
    expect_err(affine_grid(t(&f.theta, &TS), &[2, 3, 5], false), "Rank", "size");
    expect_err(affine_grid(t(&f.theta, &TS), &[2, 3, 5, 6, 1, 1], false), "Rank", "size");
    expect_err(projective_grid(t(&f.proj, &PS), &[2, 3, 5, 6, 1], false), "Rank", "size");
    expect_err(tps_grid(t(&f.tps_theta, &TPS_S), &f.tps, &[2, 3, 5, 6, 1], false), "Rank", "size");
    expect_err(tps_grid(t(&f.tps_theta, &TPS_S), &f.tps, &[2, 30], false), "Rank", "size");
    expect_err(affine_sample(t(&f.x, &XS), t(&f.theta, &TS), &[4], &o), "Rank", "out_size");
    expect_err(affine_sample(t(&f.x, &XS), t(&f.theta, &TS), &[4, 3, 2], &o), "Rank", "out_size");
    expect_err(affine_sample(t(&f.x3, &XS3), t(&f.theta3, &TS3), &[4, 3], &o), "Rank", "out_size");
    expect_err(projective_sample(t(&f.x, &XS), t(&f.proj, &PS), &[4, 3, 2], &o), "Rank", "out_size");
    expect_err(tps_sample(t(&f.x, &XS), t(&f.tps_theta, &TPS_S), &f.tps, &[12], &o), "Rank", "out_size");
}

// ---------------------------------------------------------------------------------------
// Length
// ---------------------------------------------------------------------------------------

#[test]
fn data_length_mismatch() {
    let f = fx();
    let o = o2();
    let a = GradRequest::ALL;
    let short = |v: &[f64]| v[..v.len() - 1].to_vec();
    let long = |v: &[f64]| {
        let mut w = v.to_vec();
        w.push(0.0);
        w
    };
    let xs = short(&f.x);
    let e = expect_err(grid_sample(t(&xs, &XS), t(&f.grid, &GS), &o), "Length", "input");
    if let KernelError::Length { shape, expected, got, .. } = e {
        assert_eq!((shape, expected, got), (XS.to_vec(), 180, 179));
    }
    let xl = long(&f.x);
    expect_err(affine_sample(t(&xl, &XS), t(&f.theta, &TS), &OS, &o), "Length", "input");
    expect_err(projective_sample(t(&xl, &XS), t(&f.proj, &PS), &OS, &o), "Length", "input");
    expect_err(tps_sample(t(&xs, &XS), t(&f.tps_theta, &TPS_S), &f.tps, &OS, &o), "Length", "input");
    expect_err(grid_sample_backward(t(&f.go, &GOS), t(&xs, &XS), t(&f.grid, &GS), &o, a), "Length", "input");

    let gs = short(&f.grid);
    expect_err(grid_sample(t(&f.x, &XS), t(&gs, &GS), &o), "Length", "grid");
    expect_err(grid_sample_backward(t(&f.go, &GOS), t(&f.x, &XS), t(&gs, &GS), &o, a), "Length", "grid");
    expect_err(affine_grid_backward(t(&gs, &GS), false), "Length", "grad_grid");
    expect_err(projective_grid_backward(t(&gs, &GS), t(&f.proj, &PS), false), "Length", "grad_grid");
    expect_err(tps_grid_backward(t(&gs, &GS), &f.tps, false), "Length", "grad_grid");

    let ts = short(&f.theta);
    expect_err(affine_grid(t(&ts, &TS), &XS, false), "Length", "theta");
    expect_err(affine_sample(t(&f.x, &XS), t(&ts, &TS), &OS, &o), "Length", "theta");
    expect_err(affine_sample_backward(t(&f.go, &GOS), t(&f.x, &XS), t(&ts, &TS), &o, a), "Length", "theta");
    let ps = long(&f.proj);
    expect_err(projective_grid(t(&ps, &PS), &XS, false), "Length", "params");
    expect_err(projective_grid_backward(t(&f.grid, &GS), t(&ps, &PS), false), "Length", "params");
    expect_err(projective_sample(t(&f.x, &XS), t(&ps, &PS), &OS, &o), "Length", "params");
    expect_err(
        projective_sample_backward(t(&f.go, &GOS), t(&f.x, &XS), t(&ps, &PS), &o, a),
        "Length",
        "params",
    );
    let tts = short(&f.tps_theta);
    expect_err(tps_grid(t(&tts, &TPS_S), &f.tps, &XS, false), "Length", "theta");
    expect_err(tps_sample(t(&f.x, &XS), t(&tts, &TPS_S), &f.tps, &OS, &o), "Length", "theta");
    expect_err(
        tps_sample_backward(t(&f.go, &GOS), t(&f.x, &XS), t(&tts, &TPS_S), &f.tps, &o, a),
        "Length",
        "theta",
    );

    let gos = short(&f.go);
    expect_err(
        grid_sample_backward(t(&gos, &GOS), t(&f.x, &XS), t(&f.grid, &GS), &o, a),
        "Length",
        "grad_output",
    );
    expect_err(
        affine_sample_backward(t(&gos, &GOS), t(&f.x, &XS), t(&f.theta, &TS), &o, a),
        "Length",
        "grad_output",
    );
    expect_err(
        projective_sample_backward(t(&gos, &GOS), t(&f.x, &XS), t(&f.proj, &PS), &o, a),
        "Length",
        "grad_output",
    );
    expect_err(
        tps_sample_backward(t(&gos, &GOS), t(&f.x, &XS), t(&f.tps_theta, &TPS_S), &f.tps, &o, a),
        "Length",
        "grad_output",
    );

    let p = [0.1, 0.2, 0.3];
    expect_err(AffineFamily::Similarity.to_affine(t(&p, &[1, 4])), "Length", "params");
    let g5 = [0.0; 5];
    let p4 = [0.1, 0.2, 0.3, 0.4];
    expect_err(
        AffineFamily::Similarity.to_affine_backward(t(&g5, &[1, 2, 3]), t(&p4, &[1, 4])),
        "Length",
        "grad_theta",
    );
}

// ---------------------------------------------------------------------------------------
// ZeroSize
// ---------------------------------------------------------------------------------------

#[test]
fn zero_sizes() {
    let f = fx();
    let o = o2();
    let a = GradRequest::ALL;
    let empty: [f64; 0] = [];
    for (dim, shape) in [(0usize, [0usize, 3, 5, 6]), (1, [2, 0, 5, 6]), (2, [2, 3, 0, 6]), (3, [2, 3, 5, 0])]
    {
        let e = expect_err(grid_sample(t(&empty, &shape), t(&f.grid, &GS), &o), "ZeroSize", "input");
        if let KernelError::ZeroSize { dim: d, shape: s, .. } = e {
            assert_eq!((d, s), (dim, shape.to_vec()));
        }
        expect_err(affine_sample(t(&empty, &shape), t(&f.theta, &TS), &OS, &o), "ZeroSize", "input");
        expect_err(projective_sample(t(&empty, &shape), t(&f.proj, &PS), &OS, &o), "ZeroSize", "input");
        expect_err(
            tps_sample(t(&empty, &shape), t(&f.tps_theta, &TPS_S), &f.tps, &OS, &o),
            "ZeroSize",
            "input",
        );
        expect_err(
            affine_sample_backward(t(&f.go, &GOS), t(&empty, &shape), t(&f.theta, &TS), &o, a),
            "ZeroSize",
            "input",
        );
    }
    expect_err(grid_sample(t(&f.x3, &XS3), t(&empty, &[2, 2, 0, 2, 3]), &o), "ZeroSize", "grid");
    for (dim, shape) in [(1usize, [2usize, 0, 3, 2]), (2, [2, 4, 0, 2])] {
        let e = expect_err(grid_sample(t(&f.x, &XS), t(&empty, &shape), &o), "ZeroSize", "grid");
        if let KernelError::ZeroSize { dim: d, .. } = e {
            assert_eq!(d, dim);
        }
        expect_err(
            grid_sample_backward(t(&empty, &[2, 3, 0, 3]), t(&f.x, &XS), t(&empty, &shape), &o, a),
            "ZeroSize",
            "grid",
        );
        expect_err(affine_grid_backward(t(&empty, &shape), false), "ZeroSize", "grad_grid");
    }
    for size in [[0usize, 3, 5, 6], [2, 0, 5, 6], [2, 3, 0, 6], [2, 3, 5, 0]] {
        expect_err(affine_grid(t(&f.theta, &TS), &size, false), "ZeroSize", "size");
        expect_err(projective_grid(t(&f.proj, &PS), &size, true), "ZeroSize", "size");
        expect_err(tps_grid(t(&f.tps_theta, &TPS_S), &f.tps, &size, true), "ZeroSize", "size");
    }
    expect_err(affine_grid(t(&f.theta3, &TS3), &[2, 3, 3, 0, 5], false), "ZeroSize", "size");
    for out in [[0usize, 3], [4, 0]] {
        expect_err(affine_sample(t(&f.x, &XS), t(&f.theta, &TS), &out, &o), "ZeroSize", "out_size");
        expect_err(projective_sample(t(&f.x, &XS), t(&f.proj, &PS), &out, &o), "ZeroSize", "out_size");
        expect_err(
            tps_sample(t(&f.x, &XS), t(&f.tps_theta, &TPS_S), &f.tps, &out, &o),
            "ZeroSize",
            "out_size",
        );
    }
    expect_err(affine_sample(t(&f.x3, &XS3), t(&f.theta3, &TS3), &[2, 0, 2], &o), "ZeroSize", "out_size");
    // An empty upstream gradient of a fused warp.
    expect_err(
        affine_sample_backward(t(&empty, &[2, 3, 0, 3]), t(&f.x, &XS), t(&f.theta, &TS), &o, a),
        "ZeroSize",
        "grad_output",
    );
    expect_err(
        tps_sample_backward(t(&empty, &[2, 3, 4, 0]), t(&f.x, &XS), t(&f.tps_theta, &TPS_S), &f.tps, &o, a),
        "ZeroSize",
        "grad_output",
    );
}

// ---------------------------------------------------------------------------------------
// Batch
// ---------------------------------------------------------------------------------------

#[track_caller]
fn expect_batch<T>(r: Result<T>, arg: &str, other: &str, expected: usize, got: usize) {
    let e = expect_err(r, "Batch", arg);
    if let KernelError::Batch { other: o, expected: ex, got: g, .. } = &e {
        assert_eq!((*o, *ex, *g), (other, expected, got), "{e:?}");
        assert!(e.to_string().contains(other), "message does not name `{other}`: {e}");
    }
}

#[test]
fn batch_mismatch_with_input() {
    let f = fx();
    let o = o2();
    let a = GradRequest::ALL;
    let mut rng = Rng::new(1);
    let grid3: Vec<f64> = rng.vec(3 * 4 * 3 * 2, -1.0, 1.0);
    expect_batch(grid_sample(t(&f.x, &XS), t(&grid3, &[3, 4, 3, 2]), &o), "grid", "input", 2, 3);
    expect_batch(
        grid_sample_backward(t(&f.go, &GOS), t(&f.x, &XS), t(&grid3, &[3, 4, 3, 2]), &o, a),
        "grid",
        "input",
        2,
        3,
    );
    let g1 = &f.grid[..12 * 2];
    expect_batch(grid_sample(t(&f.x, &XS), t(g1, &[1, 4, 3, 2]), &o), "grid", "input", 2, 1);
    let g3d: Vec<f64> = rng.vec(18 * 3, -1.0, 1.0);
    expect_batch(grid_sample(t(&f.x3, &XS3), t(&g3d, &[3, 2, 3, 1, 3]), &o), "grid", "input", 2, 3);

    let th3: Vec<f64> = rng.vec(18, -1.0, 1.0);
    expect_batch(affine_sample(t(&f.x, &XS), t(&th3, &[3, 2, 3]), &OS, &o), "theta", "input", 2, 3);
    expect_batch(
        affine_sample_backward(t(&f.go, &GOS), t(&f.x, &XS), t(&th3, &[3, 2, 3]), &o, a),
        "theta",
        "input",
        2,
        3,
    );
    let th33: Vec<f64> = rng.vec(12, -1.0, 1.0);
    expect_batch(affine_sample(t(&f.x3, &XS3), t(&th33, &[1, 3, 4]), &OS3, &o), "theta", "input", 2, 1);

    let p3: Vec<f64> = rng.vec(24, -1.0, 1.0);
    expect_batch(projective_sample(t(&f.x, &XS), t(&p3, &[3, 8]), &OS, &o), "params", "input", 2, 3);
    expect_batch(
        projective_sample_backward(t(&f.go, &GOS), t(&f.x, &XS), t(&p3, &[3, 8]), &o, a),
        "params",
        "input",
        2,
        3,
    );
    let tt1 = f.tps.identity::<f64>(1);
    expect_batch(tps_sample(t(&f.x, &XS), t(&tt1, &[1, 16, 2]), &f.tps, &OS, &o), "theta", "input", 2, 1);
    expect_batch(
        tps_sample_backward(t(&f.go, &GOS), t(&f.x, &XS), t(&tt1, &[1, 16, 2]), &f.tps, &o, a),
        "theta",
        "input",
        2,
        1,
    );
}

#[test]
fn batch_mismatch_with_size() {
    let f = fx();
    let mut rng = Rng::new(2);
    let p3: Vec<f64> = rng.vec(24, -1.0, 1.0);
    expect_batch(projective_grid(t(&p3, &[3, 8]), &XS, false), "params", "size", 2, 3);
    let tt1 = f.tps.identity::<f64>(1);
    expect_batch(tps_grid(t(&tt1, &[1, 16, 2]), &f.tps, &XS, false), "theta", "size", 2, 1);
}

/// `affine_grid` with theta's batch different from `size[0]`: the same situation as in
/// `projective_grid` / `tps_grid`, which report `Batch`; `affine_grid` should too.
#[test]
fn affine_grid_batch_mismatch_is_batch_error() {
    let mut rng = Rng::new(3);
    let th3: Vec<f64> = rng.vec(18, -1.0, 1.0);
    // It must be an error naming theta in any case.
    expect_err_any(affine_grid(t(&th3, &[3, 2, 3]), &XS, false), &["Batch", "Shape"], "theta");
    expect_batch(affine_grid(t(&th3, &[3, 2, 3]), &XS, false), "theta", "size", 2, 3);
}

/// `projective_grid_backward` has no `size` argument: a params batch that disagrees with
/// `grad_grid` must name `grad_grid` as the other argument.
#[test]
fn projective_grid_backward_batch_mismatch_names_grad_grid() {
    let f = fx();
    let mut rng = Rng::new(4);
    let p3: Vec<f64> = rng.vec(24, -1.0, 1.0);
    // It must be a Batch error naming params in any case.
    let e = expect_err(projective_grid_backward(t(&f.grid, &GS), t(&p3, &[3, 8]), false), "Batch", "params");
    if let KernelError::Batch { expected, got, .. } = e {
        assert_eq!((expected, got), (2, 3));
    }
    expect_batch(
        projective_grid_backward(t(&f.grid, &GS), t(&p3, &[3, 8]), false),
        "params",
        "grad_grid",
        2,
        3,
    );
}

// ---------------------------------------------------------------------------------------
// Shape
// ---------------------------------------------------------------------------------------

#[test]
fn wrong_extents() {
    let f = fx();
    let o = o2();
    let a = GradRequest::ALL;
    let mut rng = Rng::new(5);
    // Grid last axis.
    let g3: Vec<f64> = rng.vec(2 * 4 * 3 * 3, -1.0, 1.0);
    let e = expect_err(grid_sample(t(&f.x, &XS), t(&g3, &[2, 4, 3, 3]), &o), "Shape", "grid");
    if let KernelError::Shape { got, .. } = e {
        assert_eq!(got, vec![2, 4, 3, 3]);
    }
    expect_err(
        grid_sample_backward(t(&f.go, &GOS), t(&f.x, &XS), t(&g3, &[2, 4, 3, 3]), &o, a),
        "Shape",
        "grid",
    );
    let g2: Vec<f64> = rng.vec(2 * 2 * 3 * 3 * 2, -1.0, 1.0);
    expect_err(grid_sample(t(&f.x3, &XS3), t(&g2, &[2, 2, 3, 3, 2]), &o), "Shape", "grid");
    // grad_grid last axis.
    expect_err(affine_grid_backward(t(&g3, &[2, 4, 3, 3]), false), "Shape", "grad_grid");
    expect_err(affine_grid_backward(t(&g2, &[2, 2, 3, 3, 2]), false), "Shape", "grad_grid");
    expect_err(projective_grid_backward(t(&g3, &[2, 4, 3, 3]), t(&f.proj, &PS), false), "Shape", "grad_grid");
    expect_err(tps_grid_backward(t(&g3, &[2, 4, 3, 3]), &f.tps, false), "Shape", "grad_grid");

    // theta (N, 3, 3) for 2-D, (N, 2, 3) for 3-D, (N, 3, 4) for 2-D.
    let th9: Vec<f64> = rng.vec(18, -1.0, 1.0);
    expect_err(affine_sample(t(&f.x, &XS), t(&th9, &[2, 3, 3]), &OS, &o), "Shape", "theta");
    expect_err(affine_grid(t(&th9, &[2, 3, 3]), &XS, false), "Shape", "theta");
    expect_err(
        affine_sample_backward(t(&f.go, &GOS), t(&f.x, &XS), t(&th9, &[2, 3, 3]), &o, a),
        "Shape",
        "theta",
    );
    expect_err(affine_sample(t(&f.x3, &XS3), t(&f.theta, &TS), &OS3, &o), "Shape", "theta");
    expect_err(affine_grid(t(&f.theta, &TS), &XS3, false), "Shape", "theta");
    expect_err(affine_sample(t(&f.x, &XS), t(&f.theta3, &TS3), &OS, &o), "Shape", "theta");
    expect_err(affine_grid(t(&f.theta3, &TS3), &XS, false), "Shape", "theta");
    // projective params (N, 9); TPS theta with the wrong K or last axis.
    let p9: Vec<f64> = rng.vec(18, -1.0, 1.0);
    expect_err(projective_sample(t(&f.x, &XS), t(&p9, &[2, 9]), &OS, &o), "Shape", "params");
    expect_err(projective_grid(t(&p9, &[2, 9]), &XS, false), "Shape", "params");
    expect_err(projective_grid_backward(t(&f.grid, &GS), t(&p9, &[2, 9]), false), "Shape", "params");
    let tt: Vec<f64> = rng.vec(2 * 15 * 2, -1.0, 1.0);
    expect_err(tps_sample(t(&f.x, &XS), t(&tt, &[2, 15, 2]), &f.tps, &OS, &o), "Shape", "theta");
    expect_err(tps_grid(t(&tt, &[2, 15, 2]), &f.tps, &XS, false), "Shape", "theta");
    let tt3: Vec<f64> = rng.vec(2 * 16 * 3, -1.0, 1.0);
    expect_err(tps_sample(t(&f.x, &XS), t(&tt3, &[2, 16, 3]), &f.tps, &OS, &o), "Shape", "theta");
    let t34 = Tps::new(3, 4).unwrap();
    expect_err(tps_grid(t(&f.tps_theta, &TPS_S), &t34, &XS, false), "Shape", "theta");

    // grad_output of the wrong shape.
    let mut rng2 = Rng::new(6);
    for gs in [[2usize, 3, 4, 4], [2, 3, 3, 3], [2, 2, 4, 3], [2, 4, 4, 3]] {
        let go: Vec<f64> = rng2.vec(gs.iter().product(), -1.0, 1.0);
        expect_err(
            grid_sample_backward(t(&go, &gs), t(&f.x, &XS), t(&f.grid, &GS), &o, a),
            "Shape",
            "grad_output",
        );
    }
    for gs in [[2usize, 2, 4, 3], [2, 4, 4, 3]] {
        let go: Vec<f64> = rng2.vec(gs.iter().product(), -1.0, 1.0);
        expect_err(
            affine_sample_backward(t(&go, &gs), t(&f.x, &XS), t(&f.theta, &TS), &o, a),
            "Shape",
            "grad_output",
        );
        expect_err(
            projective_sample_backward(t(&go, &gs), t(&f.x, &XS), t(&f.proj, &PS), &o, a),
            "Shape",
            "grad_output",
        );
        expect_err(
            tps_sample_backward(t(&go, &gs), t(&f.x, &XS), t(&f.tps_theta, &TPS_S), &f.tps, &o, a),
            "Shape",
            "grad_output",
        );
    }
    // grad_output with another batch size.
    let go: Vec<f64> = rng2.vec(3 * 3 * 4 * 3, -1.0, 1.0);
    for r in [
        affine_sample_backward(t(&go, &[3, 3, 4, 3]), t(&f.x, &XS), t(&f.theta, &TS), &o, a).map(|_| ()),
        projective_sample_backward(t(&go, &[3, 3, 4, 3]), t(&f.x, &XS), t(&f.proj, &PS), &o, a).map(|_| ()),
        grid_sample_backward(t(&go, &[3, 3, 4, 3]), t(&f.x, &XS), t(&f.grid, &GS), &o, a).map(|_| ()),
    ] {
        expect_err_any(r, &["Shape", "Batch"], "grad_output");
    }
    let go3: Vec<f64> = rng2.vec(2 * 3 * 2 * 3 * 3, -1.0, 1.0);
    expect_err(
        grid_sample_backward(t(&go3, &[2, 3, 2, 3, 3]), t(&f.x3, &XS3), t(&f.grid3, &GS3), &o, a),
        "Shape",
        "grad_output",
    );

    // Affine families: parameter width and grad_theta shape.
    let p5 = [0.1; 5];
    expect_err(AffineFamily::Similarity.to_affine(t(&p5, &[1, 5])), "Shape", "params");
    expect_err(AffineFamily::Translation.to_affine(t(&p5[..3], &[1, 3])), "Shape", "params");
    let p4 = [0.1, 0.2, 0.3, 0.4];
    let g9 = [0.0; 9];
    expect_err(
        AffineFamily::Similarity.to_affine_backward(t(&g9, &[1, 3, 3]), t(&p4, &[1, 4])),
        "Shape",
        "grad_theta",
    );
    let g12 = [0.0; 12];
    expect_err_any(
        AffineFamily::Similarity.to_affine_backward(t(&g12, &[2, 2, 3]), t(&p4, &[1, 4])),
        &["Shape", "Batch"],
        "grad_theta",
    );
}

// ---------------------------------------------------------------------------------------
// Unsupported, InvalidValue
// ---------------------------------------------------------------------------------------

#[test]
fn unsupported_combinations() {
    let f = fx();
    let a = GradRequest::ALL;
    for pad in [Padding::Zeros, Padding::Border, Padding::Reflection] {
        for align in [false, true] {
            let o = SampleOptions::new(Interpolation::Bicubic, pad, align);
            expect_err(grid_sample(t(&f.x3, &XS3), t(&f.grid3, &GS3), &o), "Unsupported", "mode");
            expect_err(
                grid_sample_backward(t(&f.go3, &GOS3), t(&f.x3, &XS3), t(&f.grid3, &GS3), &o, a),
                "Unsupported",
                "mode",
            );
            expect_err(affine_sample(t(&f.x3, &XS3), t(&f.theta3, &TS3), &OS3, &o), "Unsupported", "mode");
            expect_err(
                affine_sample_backward(t(&f.go3, &GOS3), t(&f.x3, &XS3), t(&f.theta3, &TS3), &o, a),
                "Unsupported",
                "mode",
            );
        }
    }
    for mode in [Interpolation::Nearest, Interpolation::Bilinear] {
        let o = opts(mode);
        let pr = (0..16).map(|i| PROJECTIVE_IDENTITY[i % 8]).collect::<Vec<f64>>();
        expect_err(projective_sample(t(&f.x3, &XS3), t(&pr, &PS), &OS, &o), "Unsupported", "input");
        expect_err(projective_sample(t(&f.x3, &XS3), t(&pr, &PS), &OS3, &o), "Unsupported", "input");
        expect_err(
            projective_sample_backward(t(&f.go3, &GOS3), t(&f.x3, &XS3), t(&pr, &PS), &o, a),
            "Unsupported",
            "input",
        );
        expect_err(
            tps_sample(t(&f.x3, &XS3), t(&f.tps_theta, &TPS_S), &f.tps, &OS3, &o),
            "Unsupported",
            "input",
        );
        expect_err(
            tps_sample_backward(t(&f.go3, &GOS3), t(&f.x3, &XS3), t(&f.tps_theta, &TPS_S), &f.tps, &o, a),
            "Unsupported",
            "input",
        );
    }
}

#[test]
fn invalid_tps_layouts() {
    for r in [
        Tps::new(1, 4),
        Tps::new(4, 1),
        Tps::new(0, 0),
        Tps::new(1, 1),
        Tps::new(33, 32),
        Tps::new(usize::MAX, 2),
        Tps::new(2, usize::MAX),
        Tps::new(1 << 32, 1 << 32),
        Tps::square(15),
        Tps::square(2),
        Tps::square(0),
        Tps::square(1),
        Tps::square(17),
        Tps::square(usize::MAX),
    ] {
        expect_err(r, "InvalidValue", "tps");
    }
    // Valid layouts still work.
    assert_eq!(Tps::new(2, 2).unwrap().num_points(), 4);
    assert_eq!(Tps::square(9).unwrap().num_points(), 9);
    assert_eq!(Tps::new(32, 32).unwrap().num_points(), 1024);
    let t = Tps::new(3, 5).unwrap();
    assert_eq!((t.rows(), t.cols(), t.control_points().len()), (3, 5, 15));
}

// ---------------------------------------------------------------------------------------
// Overflowing and unallocatable sizes
// ---------------------------------------------------------------------------------------

/// Address-space limit of the child processes of [`isolated`], in KiB (4 GiB): an entry
/// point must reject a result it cannot hold before it allocates anything proportional to
/// the result's extent, so nothing here needs more.
const CHILD_ADDRESS_SPACE_KIB: u64 = 4 << 20;

/// Runs test `name` of this binary in a child process with a capped address space, so that
/// an abort (for example a failed allocation) is reported as this test's failure instead of
/// killing the harness, and no test can exhaust the machine's memory.
/// Returns true in the child, where the caller runs the body.
fn isolated(name: &str) -> bool {
    if std::env::var_os("STN_ERRORS_CHILD").is_some() {
        return true;
    }
    let exe = std::env::current_exe().unwrap();
    let path = test_path(module_path!(), name);
    let args = [path.as_str(), "--exact", "--test-threads=1", "--nocapture"];
    let mut cmd = if cfg!(unix) {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(format!("ulimit -v {CHILD_ADDRESS_SPACE_KIB} && exec \"$0\" \"$@\""))
            .arg(&exe)
            .args(args);
        c
    } else {
        let mut c = Command::new(&exe);
        c.args(args);
        c
    };
    let out = cmd.env("STN_ERRORS_CHILD", "1").output().expect("cannot run the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} failed in a child process ({}):\n{stdout}\n{stderr}",
        out.status
    );
    false
}

#[test]
fn overflowing_sizes() {
    if !isolated("overflowing_sizes") {
        return;
    }
    let f = fx();
    let o = o2();
    let huge = [usize::MAX / 2, 4, 4, 4];
    expect_err(affine_grid(t(&f.theta, &TS), &huge, false), "TooLarge", "size");
    expect_err(projective_grid(t(&f.proj, &PS), &huge, false), "TooLarge", "size");
    expect_err(tps_grid(t(&f.tps_theta, &TPS_S), &f.tps, &huge, false), "TooLarge", "size");
    expect_err(affine_grid(t(&f.theta3, &TS3), &[usize::MAX / 2, 4, 4, 4, 4], false), "TooLarge", "size");
    // Huge dims, empty data: an error naming the input (the element count overflows).
    let empty: [f64; 0] = [];
    expect_err_any(grid_sample(t(&empty, &huge), t(&f.grid, &GS), &o), &["TooLarge", "Length"], "input");
    expect_err_any(
        affine_sample(t(&empty, &[1 << 31, 1 << 31, 1 << 2, 1]), t(&f.theta, &TS), &OS, &o),
        &["TooLarge", "Length"],
        "input",
    );
    // Fits usize but not the address space in bytes.
    expect_err(grid_sample(t(&empty, &[1 << 31, 1 << 31, 2, 1]), t(&f.grid, &GS), &o), "TooLarge", "input");
    expect_err_any(
        grid_sample(t(&f.x, &XS), t(&empty, &[usize::MAX / 4, 4, 3, 2]), &o),
        &["TooLarge"],
        "grid",
    );
    expect_err_any(
        affine_sample(t(&f.x, &XS), t(&f.theta, &TS), &[usize::MAX / 2, 3], &o),
        &["TooLarge"],
        "out_size",
    );
    // An out_size that fits alone but overflows once multiplied by N * C.
    expect_err_any(
        affine_sample(t(&f.x, &XS), t(&f.theta, &TS), &[1 << 31, 1 << 31], &o),
        &["TooLarge", "Alloc"],
        "output",
    );
    // The grid of affine_grid overflows in bytes.
    expect_err_any(
        affine_grid(t(&f.theta, &TS), &[2, 1, 1 << 31, 1 << 30], false),
        &["TooLarge", "Alloc"],
        "grid",
    );
}

/// The brief's case: out_size (2^31, 2^31) in f32, 2^62 elements whose bytes overflow.
#[test]
fn huge_output_2_pow_31_squared_is_an_error_f32() {
    if !isolated("huge_output_2_pow_31_squared_is_an_error_f32") {
        return;
    }
    let x = vec![0.5f32; 16];
    let th = [1.0f32, 0.0, 0.0, 0.0, 1.0, 0.0];
    let p = [1.0f32, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0];
    let xs = [1, 1, 4, 4];
    let o = o2();
    expect_err_any(
        affine_sample(t32(&x, &xs), t32(&th, &[1, 2, 3]), &[1 << 31, 1 << 31], &o),
        &["TooLarge", "Alloc"],
        "output",
    );
    expect_err_any(
        projective_sample(t32(&x, &xs), t32(&p, &[1, 8]), &[1 << 31, 1 << 31], &o),
        &["TooLarge", "Alloc"],
        "output",
    );
}

#[test]
fn unallocatable_output_is_an_error_f32() {
    if !isolated("unallocatable_output_is_an_error_f32") {
        return;
    }
    let x = vec![0.5f32; 16];
    let th = [1.0f32, 0.0, 0.0, 0.0, 1.0, 0.0];
    let xs = [1, 1, 4, 4];
    let o = o2();
    // 2^48 elements (1 PiB): fits the type, not the machine.
    expect_err_any(
        affine_sample(t32(&x, &xs), t32(&th, &[1, 2, 3]), &[1 << 24, 1 << 24], &o),
        &["TooLarge", "Alloc"],
        "output",
    );
    let p = [1.0f32, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0];
    expect_err_any(
        projective_sample(t32(&x, &xs), t32(&p, &[1, 8]), &[1 << 24, 1 << 24], &o),
        &["TooLarge", "Alloc"],
        "output",
    );
    expect_err_any(
        affine_grid(t32(&th, &[1, 2, 3]), &[1, 1, 1 << 24, 1 << 24], false),
        &["TooLarge", "Alloc"],
        "grid",
    );
    expect_err_any(
        projective_grid(t32(&p, &[1, 8]), &[1, 1, 1 << 24, 1 << 24], false),
        &["TooLarge", "Alloc"],
        "grid",
    );
    let tps = Tps::default();
    let tt = tps.identity::<f32>(1);
    expect_err_any(
        tps_grid(t32(&tt, &[1, 16, 2]), &tps, &[1, 1, 1 << 24, 1 << 24], false),
        &["TooLarge", "Alloc"],
        "grid",
    );
}

/// `tps_sample` with an unallocatable output: must be an error like the other fused warps,
/// not an abort (its output would be 2^48 f32 = 1 PiB).
#[test]
fn unallocatable_tps_output_is_an_error() {
    if !isolated("unallocatable_tps_output_is_an_error") {
        return;
    }
    let x = vec![0.5f32; 16];
    let tps = Tps::default();
    let tt = tps.identity::<f32>(1);
    expect_err_any(
        tps_sample(t32(&x, &[1, 1, 4, 4]), t32(&tt, &[1, 16, 2]), &tps, &[1 << 24, 1 << 24], &o2()),
        &["TooLarge", "Alloc"],
        "output",
    );
}

/// The same with a single very long output row (2^45 positions, 128 TiB of f32).
#[test]
fn unallocatable_tps_output_row_is_an_error() {
    if !isolated("unallocatable_tps_output_row_is_an_error") {
        return;
    }
    let x = vec![0.5f32; 16];
    let tps = Tps::default();
    let tt = tps.identity::<f32>(1);
    expect_err_any(
        tps_sample(t32(&x, &[1, 1, 4, 4]), t32(&tt, &[1, 16, 2]), &tps, &[1, 1 << 45], &o2()),
        &["TooLarge", "Alloc"],
        "output",
    );
}

/// Affine and projective warps with a single very long output row (2^45 positions,
/// 128 TiB of f32): an error, not an abort.
#[test]
fn unallocatable_output_row_is_an_error() {
    if !isolated("unallocatable_output_row_is_an_error") {
        return;
    }
    let x = vec![0.5f32; 16];
    let th = [1.0f32, 0.0, 0.0, 0.0, 1.0, 0.0];
    let p = [1.0f32, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0];
    let xs = [1, 1, 4, 4];
    for out in [[1usize << 45, 1], [1, 1 << 45]] {
        expect_err_any(
            affine_sample(t32(&x, &xs), t32(&th, &[1, 2, 3]), &out, &o2()),
            &["TooLarge", "Alloc"],
            "output",
        );
        expect_err_any(
            projective_sample(t32(&x, &xs), t32(&p, &[1, 8]), &out, &o2()),
            &["TooLarge", "Alloc"],
            "output",
        );
    }
}

fn t32<'a>(d: &'a [f32], s: &'a [usize]) -> TensorRef<'a, f32> {
    TensorRef::new(d, s)
}

// ---------------------------------------------------------------------------------------
// Non-finite values do not panic
// ---------------------------------------------------------------------------------------

const SPECIALS: [f64; 8] =
    [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e30, -1e30, 1e300, -0.0, f64::MIN_POSITIVE];

fn poisoned_grid(rng: &mut Rng, len: usize) -> Vec<f64> {
    (0..len)
        .map(|i| if i % 3 == 0 { SPECIALS[(i / 3) % SPECIALS.len()] } else { rng.uniform(-1.3, 1.3) })
        .collect()
}

fn poisoned_grid_no_panic<T: Float>() {
    let mut rng = Rng::new(7);
    let cases: [(&[usize], &[usize], &[Interpolation]); 2] = [
        (
            &[2, 2, 5, 6],
            &[2, 7, 8, 2],
            &[Interpolation::Nearest, Interpolation::Bilinear, Interpolation::Bicubic],
        ),
        (&[2, 2, 3, 4, 5], &[2, 3, 4, 5, 3], &[Interpolation::Nearest, Interpolation::Bilinear]),
    ];
    for (xs, gs, modes) in cases {
        let x: Vec<T> = rng.vec(xs.iter().product(), -1.0, 1.0);
        let g64 = poisoned_grid(&mut rng, gs.iter().product());
        let g: Vec<T> = g64.iter().map(|v| T::from_f64(*v)).collect();
        let mut out_shape = vec![xs[0], xs[1]];
        out_shape.extend_from_slice(&gs[1..gs.len() - 1]);
        let go: Vec<T> = rng.vec(out_shape.iter().product(), -1.0, 1.0);
        for &mode in modes {
            for pad in [Padding::Zeros, Padding::Border, Padding::Reflection] {
                for align in [false, true] {
                    let o = SampleOptions::new(mode, pad, align);
                    let out = grid_sample(TensorRef::new(&x, xs), TensorRef::new(&g, gs), &o)
                        .unwrap_or_else(|e| panic!("{o:?}: {e}"));
                    assert_eq!(out.shape, out_shape);
                    assert_eq!(out.data.len(), go.len());
                    // Points whose every coordinate is finite and inside give finite values.
                    let d = gs.len() - 2;
                    for (p, pt) in g64.chunks_exact(d).enumerate() {
                        if pt.iter().all(|v| v.abs() <= 1.3) {
                            let plane = out.data.len() / (xs[0] * xs[1]);
                            let (n, q) = (p / plane, p % plane);
                            for c in 0..xs[1] {
                                let v = out.data[(n * xs[1] + c) * plane + q];
                                assert!(v.is_finite(), "{o:?}: non-finite output at a finite point {pt:?}");
                            }
                        }
                    }
                    for req in [GradRequest::ALL, GradRequest::INPUT, GradRequest::PARAMS] {
                        let gr = grid_sample_backward(
                            TensorRef::new(&go, &out_shape),
                            TensorRef::new(&x, xs),
                            TensorRef::new(&g, gs),
                            &o,
                            req,
                        )
                        .unwrap_or_else(|e| panic!("{o:?}: {e}"));
                        assert_eq!(gr.input.map(|t| t.data.len()), req.input.then_some(x.len()));
                        assert_eq!(gr.grid.map(|t| t.data.len()), req.params.then_some(g.len()));
                    }
                }
            }
        }
    }
}

#[test]
fn non_finite_grid_does_not_panic_f64() {
    poisoned_grid_no_panic::<f64>();
}

#[test]
fn non_finite_grid_does_not_panic_f32() {
    poisoned_grid_no_panic::<f32>();
}

fn all_opts(three_d: bool) -> Vec<SampleOptions> {
    let modes: &[Interpolation] = if three_d {
        &[Interpolation::Nearest, Interpolation::Bilinear]
    } else {
        &[Interpolation::Nearest, Interpolation::Bilinear, Interpolation::Bicubic]
    };
    let mut v = Vec::new();
    for &m in modes {
        for pad in [Padding::Zeros, Padding::Border, Padding::Reflection] {
            for align in [false, true] {
                v.push(SampleOptions::new(m, pad, align));
            }
        }
    }
    v
}

#[test]
fn non_finite_parameters_do_not_panic() {
    let f = fx();
    let a = GradRequest::ALL;
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e300, -1e300] {
        for pos in [0usize, 2, 4] {
            // 2-D affine.
            let mut th = f.theta.clone();
            th[pos] = bad;
            th[6 + (pos + 1) % 6] = bad;
            let g = affine_grid(t(&th, &TS), &XS, false).unwrap();
            assert_eq!(g.data.len(), 2 * 5 * 6 * 2);
            affine_grid_backward(g.view(), true).unwrap();
            for o in all_opts(false) {
                let out = affine_sample(t(&f.x, &XS), t(&th, &TS), &OS, &o).unwrap();
                assert_eq!(out.data.len(), f.go.len());
                let gr = affine_sample_backward(t(&f.go, &GOS), t(&f.x, &XS), t(&th, &TS), &o, a).unwrap();
                assert_eq!(gr.input.unwrap().data.len(), f.x.len());
                assert_eq!(gr.params.unwrap().data.len(), th.len());
            }
            // 3-D affine.
            let mut th3 = f.theta3.clone();
            th3[pos] = bad;
            th3[12 + pos + 5] = bad;
            affine_grid(t(&th3, &TS3), &XS3, true).unwrap();
            for o in all_opts(true) {
                let out = affine_sample(t(&f.x3, &XS3), t(&th3, &TS3), &OS3, &o).unwrap();
                assert_eq!(out.data.len(), f.go3.len());
                let gr =
                    affine_sample_backward(t(&f.go3, &GOS3), t(&f.x3, &XS3), t(&th3, &TS3), &o, a).unwrap();
                assert_eq!(gr.params.unwrap().data.len(), th3.len());
            }
            // Projective (also in the perspective terms).
            for ppos in [pos, 6, 7] {
                let mut p = f.proj.clone();
                p[ppos] = bad;
                let g = projective_grid(t(&p, &PS), &XS, true).unwrap();
                projective_grid_backward(g.view(), t(&p, &PS), true).unwrap();
                for o in all_opts(false) {
                    let out = projective_sample(t(&f.x, &XS), t(&p, &PS), &OS, &o).unwrap();
                    assert_eq!(out.data.len(), f.go.len());
                    let gr =
                        projective_sample_backward(t(&f.go, &GOS), t(&f.x, &XS), t(&p, &PS), &o, a).unwrap();
                    assert_eq!(gr.params.unwrap().data.len(), p.len());
                }
            }
            // TPS.
            let mut tt = f.tps_theta.clone();
            tt[pos * 3] = bad;
            tt[33 + pos] = bad;
            tps_grid(t(&tt, &TPS_S), &f.tps, &XS, false).unwrap();
            for o in all_opts(false) {
                let out = tps_sample(t(&f.x, &XS), t(&tt, &TPS_S), &f.tps, &OS, &o).unwrap();
                assert_eq!(out.data.len(), f.go.len());
                let gr =
                    tps_sample_backward(t(&f.go, &GOS), t(&f.x, &XS), t(&tt, &TPS_S), &f.tps, &o, a).unwrap();
                assert_eq!(gr.params.unwrap().data.len(), tt.len());
            }
            // Affine families.
            for fam in [AffineFamily::Translation, AffineFamily::Attention, AffineFamily::Similarity] {
                let mut p = fam.identity();
                let i = pos % p.len();
                p[i] = bad;
                let th = fam.to_affine(t(&p, &[1, p.len()])).unwrap();
                let gt = [1.0; 6];
                fam.to_affine_backward(t(&gt, &[1, 2, 3]), t(&p, &[1, p.len()])).unwrap();
                assert_eq!(th.data.len(), 6);
            }
        }
    }
}

/// A projective map whose denominator vanishes on the output grid (h31 = 1 and x = -1 with
/// align_corners: w = 0 on the left column) divides by zero; that must not panic.
#[test]
fn projective_zero_denominator_does_not_panic() {
    let f = fx();
    let p: Vec<f64> = (0..16).map(|i| if i % 8 == 6 { 1.0 } else { PROJECTIVE_IDENTITY[i % 8] }).collect();
    let g = projective_grid(t(&p, &PS), &XS, true).unwrap();
    assert!(g.data.iter().any(|v| !v.is_finite()), "the grid should hit the pole");
    projective_grid_backward(g.view(), t(&p, &PS), true).unwrap();
    for o in all_opts(false).into_iter().filter(|o| o.align_corners) {
        let out = projective_sample(t(&f.x, &XS), t(&p, &PS), &[5, 6], &o).unwrap();
        assert_eq!(out.data.len(), 2 * 3 * 30);
        let go = vec![1.0; 2 * 3 * 30];
        let gr =
            projective_sample_backward(t(&go, &[2, 3, 5, 6]), t(&f.x, &XS), t(&p, &PS), &o, GradRequest::ALL)
                .unwrap();
        assert_eq!(gr.params.unwrap().data.len(), 16);
        let gs = grid_sample(t(&f.x, &XS), g.view(), &o).unwrap();
        assert_eq!(gs.data.len(), out.data.len());
    }
}
