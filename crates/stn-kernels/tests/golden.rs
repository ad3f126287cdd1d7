//! Conformance against PyTorch float64 reference vectors (`tests/golden/`, or the directory
//! named by `STN_GOLDEN_DIR`): every case, mode, padding and align_corners, 2-D and 3-D,
//! output and every gradient, in f64 (1e-10) and f32 (1e-4); and again channel by channel
//! (one-channel problems, which take paths of their own).

use std::path::PathBuf;

use crate::common::max_rel_err;
use serde_json::Value;
use stn_kernels::*;

fn golden_dir() -> PathBuf {
    match std::env::var_os("STN_GOLDEN_DIR") {
        Some(d) => PathBuf::from(d),
        // The run-time manifest dir: a target directory shared by clones at other paths may hold
        // a binary compiled elsewhere.
        None => PathBuf::from(
            std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("tests/golden"),
    }
}

struct T64 {
    shape: Vec<usize>,
    data: Vec<f64>,
}

fn tensor(v: &Value, key: &str) -> T64 {
    let t = &v[key];
    let shape = t["shape"]
        .as_array()
        .unwrap_or_else(|| panic!("{key}: no shape"))
        .iter()
        .map(|s| s.as_u64().unwrap() as usize)
        .collect();
    let data = t["data"]
        .as_array()
        .unwrap_or_else(|| panic!("{key}: no data"))
        .iter()
        .map(|x| x.as_f64().unwrap_or(f64::NAN))
        .collect();
    T64 { shape, data }
}

/// Channel `c` of an (N, C, ...) tensor, as an (N, 1, ...) tensor: its data and shape.
fn channel(t: &T64, c: usize) -> (Vec<f64>, Vec<usize>) {
    let (n, channels) = (t.shape[0], t.shape[1]);
    let plane: usize = t.shape[2..].iter().product();
    let data = (0..n).flat_map(|i| &t.data[(i * channels + c) * plane..][..plane]).copied().collect();
    let mut shape = t.shape.clone();
    shape[1] = 1;
    (data, shape)
}

fn cast<T: Float>(v: &[f64]) -> Vec<T> {
    v.iter().map(|x| T::from_f64(*x)).collect()
}

fn opts(r: &Value) -> SampleOptions {
    let mode = match r["mode"].as_str().unwrap() {
        "nearest" => Interpolation::Nearest,
        "bilinear" => Interpolation::Bilinear,
        "bicubic" => Interpolation::Bicubic,
        m => panic!("unknown mode {m}"),
    };
    let padding = match r["padding_mode"].as_str().unwrap() {
        "zeros" => Padding::Zeros,
        "border" => Padding::Border,
        "reflection" => Padding::Reflection,
        p => panic!("unknown padding {p}"),
    };
    SampleOptions { mode, padding, align_corners: r["align_corners"].as_bool().unwrap() }
}

/// Checks one case file in precision T; returns the number of comparisons made.
fn check_case<T: Float>(case: &Value, tol: f64, failures: &mut Vec<String>) -> usize {
    let name = case["name"].as_str().unwrap().to_string();
    let input = tensor(case, "input");
    let gout = tensor(case, "grad_output");
    let x: Vec<T> = cast(&input.data);
    let go: Vec<T> = cast(&gout.data);
    let xr = TensorRef::new(&x, &input.shape);
    let gor = TensorRef::new(&go, &gout.shape);
    let theta = case.get("theta").map(|_| tensor(case, "theta"));
    let out_size: Vec<usize> =
        case["out_size"].as_array().unwrap().iter().map(|s| s.as_u64().unwrap() as usize).collect();
    let mut count = 0;
    let mut cmp = |what: &str, r: &Value, got: &[T], want: &[f64]| {
        count += 1;
        let e = max_rel_err(got, want);
        if e.is_nan() || e > tol {
            failures.push(format!(
                "{name} {} {} {} align={} [{}] {what}: max error {e:e} > {tol:e}",
                T::NAME,
                r["mode"],
                r["padding_mode"],
                r["align_corners"],
                got.len()
            ));
        }
    };
    // The case's parameters and, channel by channel, its input and upstream gradient as
    // one-channel problems (the same for every result).
    let theta_t: Option<Vec<T>> = theta.as_ref().map(|th| cast(&th.data));
    let per_channel: Vec<_> = (0..input.shape[1])
        .map(|c| {
            let ((xc, xshape), (goc, goshape)) = (channel(&input, c), channel(&gout, c));
            (cast::<T>(&xc), xshape, cast::<T>(&goc), goshape)
        })
        .collect();
    for r in case["results"].as_array().unwrap() {
        let o = opts(r);
        let (want_output, want_grad_input) = (tensor(r, "output"), tensor(r, "grad_input"));
        let grid = tensor(r, "grid");
        let g: Vec<T> = cast(&grid.data);
        let gr = TensorRef::new(&g, &grid.shape);
        let out = grid_sample(xr, gr, &o).expect("grid_sample");
        cmp("output", r, &out.data, &want_output.data);
        let grads = grid_sample_backward(gor, xr, gr, &o, GradRequest::ALL).expect("grid_sample_backward");
        cmp("grad_input", r, &grads.input.unwrap().data, &want_grad_input.data);
        let want_gg = tensor(r, "grad_grid");
        cmp("grad_grid", r, &grads.grid.unwrap().data, &want_gg.data);
        // Only what was asked for is computed, and it is the same.
        let only_in = grid_sample_backward(gor, xr, gr, &o, GradRequest::INPUT).unwrap();
        assert!(only_in.grid.is_none());
        cmp("grad_input (input only)", r, &only_in.input.unwrap().data, &want_grad_input.data);

        // One channel at a time: the 2-D cases have 2 or 3 channels, and one channel takes
        // paths of its own (the register path's one-channel nearest loop). Channel c of the
        // output and of the input gradient is that of the one-channel problem; the grid
        // gradient is the sum of the channels' (summed in f64 here).
        let mut gg_sum = vec![0.0f64; want_gg.data.len()];
        for (c, (xc, xshape, goc, goshape)) in per_channel.iter().enumerate() {
            let (xcr, gocr) = (TensorRef::new(xc, xshape), TensorRef::new(goc, goshape));
            let want_out = channel(&want_output, c).0;
            let want_gi = channel(&want_grad_input, c).0;
            let what = |w: &str| format!("{w} (channel {c} alone)");
            let out = grid_sample(xcr, gr, &o).expect("grid_sample");
            cmp(&what("output"), r, &out.data, &want_out);
            let gc = grid_sample_backward(gocr, xcr, gr, &o, GradRequest::ALL).expect("grid_sample_backward");
            cmp(&what("grad_input"), r, &gc.input.unwrap().data, &want_gi);
            for (s, v) in gg_sum.iter_mut().zip(&gc.grid.unwrap().data) {
                *s += v.to_f64();
            }
            if let (Some(th), Some(t)) = (&theta, &theta_t) {
                let tr = TensorRef::new(t, &th.shape);
                let fused = affine_sample(xcr, tr, &out_size[2..], &o).expect("affine_sample");
                cmp(&what("output (fused)"), r, &fused.data, &want_out);
            }
        }
        cmp("grad_grid (sum of the channels alone)", r, &cast::<T>(&gg_sum), &want_gg.data);

        if let (Some(th), Some(t)) = (&theta, &theta_t) {
            let tr = TensorRef::new(t, &th.shape);
            let ac = o.align_corners;
            let ag = affine_grid(tr, &out_size, ac).expect("affine_grid");
            cmp("affine_grid", r, &ag.data, &grid.data);
            let gg: Vec<T> = cast(&want_gg.data);
            let dth =
                affine_grid_backward(TensorRef::new(&gg, &want_gg.shape), ac).expect("affine_grid_backward");
            let want_th = tensor(r, "grad_theta");
            cmp("grad_theta (affine_grid_backward)", r, &dth.data, &want_th.data);
            // The fused path: theta -> output, and back to input and theta.
            let fused = affine_sample(xr, tr, &out_size[2..], &o).expect("affine_sample");
            cmp("output (fused)", r, &fused.data, &want_output.data);
            let fg =
                affine_sample_backward(gor, xr, tr, &o, GradRequest::ALL).expect("affine_sample_backward");
            cmp("grad_input (fused)", r, &fg.input.unwrap().data, &want_grad_input.data);
            cmp("grad_theta (fused)", r, &fg.params.unwrap().data, &want_th.data);
        }
    }
    count
}

fn run_all<T: Float>(tol: f64) {
    let dir = golden_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read golden directory {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json") && p.file_name().is_some_and(|n| n != "index.json")
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no golden case files in {}", dir.display());
    let mut failures = Vec::new();
    let mut count = 0;
    let (mut seen2, mut seen3) = (false, false);
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let case: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        if case.get("results").is_none() {
            continue;
        }
        match case["spatial_dims"].as_u64() {
            Some(2) => seen2 = true,
            Some(3) => seen3 = true,
            _ => {}
        }
        count += check_case::<T>(&case, tol, &mut failures);
    }
    assert!(count > 0, "no comparisons made");
    if std::env::var_os("STN_GOLDEN_DIR").is_none() {
        assert!(seen2 && seen3, "the vendored set covers 2-D and 3-D");
    }
    assert!(
        failures.is_empty(),
        "{} of {count} comparisons failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{}: {count} comparisons within {tol:e} over {} files", T::NAME, files.len());
}

#[test]
fn golden_f64() {
    run_all::<f64>(1e-10);
}

#[test]
fn golden_f32() {
    run_all::<f32>(1e-4);
}
