//! NaN grid coordinates behave as in PyTorch's CPU kernel (reference in `tests/golden_nan/`,
//! made by `tools/gen_nan_golden.py`). Where PyTorch's backward crashes (2-D bilinear,
//! border/reflection), ours differentiates what the forward computed and stays finite.

use serde_json::Value;
use stn_kernels::*;

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect()
}

fn shape(v: &Value) -> Vec<usize> {
    v.as_array().expect("shape").iter().map(|s| s.as_u64().unwrap() as usize).collect()
}

/// Equal within `tol`, NaN matching NaN.
fn same(got: &[f64], want: &[f64], tol: f64) -> bool {
    got.len() == want.len()
        && got
            .iter()
            .zip(want)
            .all(|(g, w)| (g.is_nan() && w.is_nan()) || (g - w).abs() <= tol * w.abs().max(1.0))
}

fn opts(c: &Value) -> SampleOptions {
    let mode = match c["mode"].as_str().unwrap() {
        "nearest" => Interpolation::Nearest,
        "bilinear" => Interpolation::Bilinear,
        _ => Interpolation::Bicubic,
    };
    let padding = match c["padding_mode"].as_str().unwrap() {
        "zeros" => Padding::Zeros,
        "border" => Padding::Border,
        _ => Padding::Reflection,
    };
    SampleOptions::new(mode, padding, c["align_corners"].as_bool().unwrap())
}

fn check<T: Float>(c: &Value, tol: f64, failures: &mut Vec<String>) {
    let o = opts(c);
    let (xs, gs) = (shape(&c["input"]["shape"]), shape(&c["grid"]["shape"]));
    let x: Vec<T> = floats(&c["input"]["data"]).into_iter().map(T::from_f64).collect();
    let g: Vec<T> = floats(&c["grid"]["data"]).into_iter().map(T::from_f64).collect();
    let (xr, gr) = (TensorRef::new(&x, &xs), TensorRef::new(&g, &gs));
    let label = format!("{}-D {:?} {:?} align={} {}", c["dims"], o.mode, o.padding, o.align_corners, T::NAME);
    let out = grid_sample(xr, gr, &o).expect("forward");
    let out64: Vec<f64> = out.data.iter().map(|v| v.to_f64()).collect();
    if !same(&out64, &floats(&c["output"]), tol) {
        failures.push(format!("{label}: output {out64:?} vs {:?}", floats(&c["output"])));
    }
    let ones = vec![T::ONE; out.data.len()];
    let grads = grid_sample_backward(TensorRef::new(&ones, &out.shape), xr, gr, &o, GradRequest::ALL)
        .expect("backward");
    let gi: Vec<f64> = grads.input.unwrap().data.iter().map(|v| v.to_f64()).collect();
    let gg: Vec<f64> = grads.grid.unwrap().data.iter().map(|v| v.to_f64()).collect();
    if c["backward"].as_bool().unwrap() {
        if !same(&gi, &floats(&c["grad_input"]), tol) {
            failures.push(format!("{label}: grad_input {gi:?} vs {:?}", floats(&c["grad_input"])));
        }
        if !same(&gg, &floats(&c["grad_grid"]), tol) {
            failures.push(format!("{label}: grad_grid {gg:?} vs {:?}", floats(&c["grad_grid"])));
        }
    } else {
        // PyTorch crashes here. Ours: finite gradients, and a NaN coordinate (clamped to 0 in
        // the forward) gets a zero gradient.
        let gin = floats(&c["grid"]["data"]);
        let ok = gi.iter().all(|v| v.is_finite())
            && gg.iter().all(|v| v.is_finite())
            && gin.iter().zip(&gg).all(|(p, q)| !p.is_nan() || *q == 0.0);
        if !ok {
            failures.push(format!("{label}: gradients where PyTorch crashes: {gi:?} {gg:?}"));
        }
    }
}

#[test]
fn nan_coordinates_follow_pytorch() {
    let text = std::fs::read_to_string(
        std::path::Path::new(
            &std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("tests/golden_nan/nan.json"),
    )
    .unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 30, "expected every dims x mode x padding x align x dtype case");
    let mut failures = Vec::new();
    for c in cases {
        match c["dtype"].as_str().unwrap() {
            "f64" => check::<f64>(c, 1e-10, &mut failures),
            _ => check::<f32>(c, 1e-4, &mut failures),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
