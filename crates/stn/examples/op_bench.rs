//! The cost of the Burn op against the raw stn-kernels call, on the peer's cases (float32,
//! align_corners = false), and against PyTorch with `--compare PEER.json` (the JSON of
//! `tools/peer/bench_grid_sample.py`).
//!
//! Figures (medians, ms), with PyTorch's meaning of the keys; each raw figure and its op
//! figure are timed alternately (raw, op, raw, op, ...), so both see the same cache state:
//!
//! - `fwd_ms` / `gs_fwd_ms`: the Burn op on `Device::flex()` (no autodiff): fused affine warp /
//!   sampling from a grid; `raw_fwd_ms` / `raw_gs_fwd_ms`: the kernel on slices.
//! - `fb_ms` / `gs_fb_ms`: under `Device::flex().autodiff()`, the op, then
//!   `(out * gout).sum().backward()` (gradients to the input and to theta / the grid);
//!   `raw_fb_ms` / `raw_gs_fb_ms`: kernel forward + kernel backward with `gout`.
//! - `loss_ms`: `(y * gout).sum().backward()` for a tracked output-shaped `y`: what Burn spends on
//!   the loss alone (PyTorch's `out.backward(gout)` injects the gradient without it), so the op's
//!   own cost under autodiff is `fb_ms - loss_ms`.
//!
//! Runs with `stn_kernels::alloc::keep_freed_memory` unless `--system-malloc` is given.
//!
//! ```sh
//! cargo run --release -p stn --example op_bench -- --json burn-op.json --compare peer.json
//! ```

use burn::tensor::{Device, Tensor, TensorData};
use serde_json::{json, Value};
use stn::{ops, Interpolation, Padding, SampleOptions};
use stn_kernels::bench::{median_time, median_time_pair, BenchRng, BENCH_CASES};
use stn_kernels::{self as k, GradRequest, TensorRef};

struct Args {
    json: Option<String>,
    compare: Option<String>,
    cases: String,
    modes: Vec<String>,
    threads: usize,
    reps: usize,
    warmup: usize,
    min_time: f64,
    /// Keep glibc's default malloc (per-buffer mmap, trimming) instead of `keep_freed_memory`.
    system_malloc: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: op_bench [--json FILE] [--compare PEER.json] [--cases abcde] [--modes bilinear,nearest,bicubic] \
         [--threads N] [--reps N] [--warmup N] [--min-time S] [--system-malloc]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        json: None,
        compare: None,
        cases: "abcde".into(),
        modes: vec!["bilinear".into()],
        threads: 2,
        reps: 10,
        warmup: 3,
        min_time: 0.5,
        system_malloc: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage());
        let num = |s: String| s.parse::<f64>().unwrap_or_else(|_| usage());
        match flag.as_str() {
            "--json" => a.json = Some(val()),
            "--compare" => a.compare = Some(val()),
            "--cases" => a.cases = val(),
            "--modes" => a.modes = val().split(',').map(str::to_string).collect(),
            "--threads" => a.threads = num(val()) as usize,
            "--reps" => a.reps = num(val()) as usize,
            "--warmup" => a.warmup = num(val()) as usize,
            "--system-malloc" => a.system_malloc = true,
            "--min-time" => a.min_time = num(val()),
            _ => usage(),
        }
    }
    if a.modes.iter().any(|m| mode_of(m).is_none()) || a.threads == 0 {
        usage();
    }
    a
}

fn mode_of(s: &str) -> Option<Interpolation> {
    match s {
        "bilinear" => Some(Interpolation::Bilinear),
        "nearest" => Some(Interpolation::Nearest),
        "bicubic" => Some(Interpolation::Bicubic),
        _ => None,
    }
}

fn t<const D: usize>(v: &[f32], shape: [usize; D], dev: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(v.to_vec(), shape), dev)
}

fn peer_row<'a>(peer: &'a Option<Value>, case: char, mode: &str) -> Option<&'a Value> {
    peer.as_ref()?["rows"].as_array()?.iter().find(|r| {
        r["case"].as_str() == Some(&case.to_string())
            && r["mode"].as_str() == Some(mode)
            && r["padding"] == "zeros"
    })
}

fn main() {
    let args = parse_args();
    let malloc =
        if !args.system_malloc && stn_kernels::alloc::keep_freed_memory() { "reuse" } else { "system" };
    // The global pool: Burn's own work (flex ops, the autodiff backward) runs there too.
    rayon::ThreadPoolBuilder::new().num_threads(args.threads).build_global().expect("thread pool");
    let peer: Option<Value> = args.compare.as_ref().map(|p| {
        let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("cannot read {p}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{p} is not JSON: {e}"))
    });
    let (flex, ad) = (Device::flex(), Device::flex().autodiff());
    println!("Burn op vs raw stn-kernels: threads={} malloc={malloc} float32 align_corners=false padding=zeros (medians, ms)", args.threads);
    println!("| case | mode | fwd raw/op | gs fwd raw/op | fb raw/op | gs fb raw/op | loss | op/raw fb | op/raw gs fb |");
    println!("|---|---|---|---|---|---|---:|---:|---:|");
    let mut rows = Vec::new();
    {
        for case in BENCH_CASES.iter().filter(|c| args.cases.contains(c.key)) {
            let mut rng = BenchRng::for_case(case);
            let (n, c, h, w) = (case.n, case.c, case.h, case.w);
            let xs = [n, c, h, w];
            let x = rng.normals(case.elems());
            let theta = rng.thetas(n);
            let gout = rng.normals(case.elems());
            let grid = k::affine_grid(TensorRef::new(&theta, &[n, 2, 3]), &xs, false).expect("grid").data;
            let gs = [n, h, w, 2];
            let ts = [n, 2, 3];
            let (warm, mt) = if case.is_big() { (1, 0.0) } else { (args.warmup, args.min_time) };
            let time = |f: &mut dyn FnMut()| median_time(f, args.reps, warm, mt).0 * 1e3;
            // Raw and op alternate, so both see the same cache state.
            let pair = |a: &mut dyn FnMut(), b: &mut dyn FnMut()| {
                let (ta, tb) = median_time_pair(a, b, args.reps, warm, mt);
                (ta * 1e3, tb * 1e3)
            };
            let (xr, tr, gr, go) = (
                TensorRef::new(&x, &xs),
                TensorRef::new(&theta, &ts),
                TensorRef::new(&grid, &gs),
                TensorRef::new(&gout, &xs),
            );
            // Burn tensors, built once (clones share the buffers).
            let (xf, tf, gf) = (t(&x, xs, &flex), t(&theta, [n, 2, 3], &flex), t(&grid, gs, &flex));
            let (xa, ta, ga, goa) =
                (t(&x, xs, &ad), t(&theta, [n, 2, 3], &ad), t(&grid, gs, &ad), t(&gout, xs, &ad));
            let loss_ms = time(&mut || {
                let y = xa.clone().require_grad();
                let _ = (y * goa.clone()).sum().backward();
            });
            for m in &args.modes {
                let o = SampleOptions::new(mode_of(m).expect("checked"), Padding::Zeros, false);
                let out = [h, w];
                let (raw_fwd, fwd) = pair(
                    &mut || {
                        std::hint::black_box(k::affine_sample(xr, tr, &out, &o).expect("fwd"));
                    },
                    &mut || {
                        std::hint::black_box(
                            ops::affine_sample(xf.clone(), tf.clone(), &out, o).expect("fwd"),
                        );
                    },
                );
                let (raw_gs, gs_fwd) = pair(
                    &mut || {
                        std::hint::black_box(k::grid_sample(xr, gr, &o).expect("gs"));
                    },
                    &mut || {
                        std::hint::black_box(ops::grid_sample(xf.clone(), gf.clone(), o).expect("gs"));
                    },
                );
                let (raw_fb, fb) = pair(
                    &mut || {
                        std::hint::black_box(k::affine_sample(xr, tr, &out, &o).expect("fwd"));
                        std::hint::black_box(
                            k::affine_sample_backward(go, xr, tr, &o, GradRequest::ALL).expect("bwd"),
                        );
                    },
                    &mut || {
                        let (x, th) = (xa.clone().require_grad(), ta.clone().require_grad());
                        let y = ops::affine_sample(x, th, &out, o).expect("fwd");
                        let _ = (y * goa.clone()).sum().backward();
                    },
                );
                let (raw_gs_fb, gs_fb) = pair(
                    &mut || {
                        std::hint::black_box(k::grid_sample(xr, gr, &o).expect("gs"));
                        std::hint::black_box(
                            k::grid_sample_backward(go, xr, gr, &o, GradRequest::ALL).expect("bwd"),
                        );
                    },
                    &mut || {
                        let (x, g) = (xa.clone().require_grad(), ga.clone().require_grad());
                        let y = ops::grid_sample(x, g, o).expect("gs");
                        let _ = (y * goa.clone()).sum().backward();
                    },
                );
                let (r_fb, r_gs) = ((fb - loss_ms) / raw_fb, (gs_fb - loss_ms) / raw_gs_fb);
                println!(
                    "| {} {n}x{c}x{h}x{w} | {m} | {raw_fwd:.3} / {fwd:.3} | {raw_gs:.3} / {gs_fwd:.3} | {raw_fb:.3} / {fb:.3} | {raw_gs_fb:.3} / {gs_fb:.3} | {loss_ms:.3} | {r_fb:.2} | {r_gs:.2} |",
                    case.key
                );
                let mut row = json!({
                    "case": case.key.to_string(), "desc": case.desc, "N": n, "C": c, "H": h, "W": w,
                    "mode": m, "padding": "zeros",
                    "fwd_ms": fwd, "raw_fwd_ms": raw_fwd, "gs_fwd_ms": gs_fwd, "raw_gs_fwd_ms": raw_gs,
                    "fb_ms": fb, "raw_fb_ms": raw_fb, "gs_fb_ms": gs_fb, "raw_gs_fb_ms": raw_gs_fb,
                    "loss_ms": loss_ms, "op_over_raw_fb": r_fb, "op_over_raw_gs_fb": r_gs,
                });
                if let Some(p) = peer_row(&peer, case.key, m) {
                    for key in ["fwd_ms", "fb_ms", "gs_fwd_ms", "gs_fb_ms"] {
                        if let (Some(ours), Some(theirs)) = (row[key].as_f64(), p[key].as_f64()) {
                            row[format!("{key}_vs_peer")] = json!(ours / theirs);
                        }
                    }
                }
                rows.push(row);
            }
        }
    }
    if peer.is_some() {
        println!("\nAgainst PyTorch (ours / peer, < 1 is faster):");
        println!("| case | mode | fwd | fb | gs fwd | gs fb |");
        println!("|---|---|---:|---:|---:|---:|");
        for r in &rows {
            let f = |k: &str| r[k].as_f64().map_or("-".to_string(), |v| format!("{v:.2}"));
            println!(
                "| {} | {} | {} | {} | {} | {} |",
                r["case"].as_str().unwrap_or("?"),
                r["mode"].as_str().unwrap_or("?"),
                f("fwd_ms_vs_peer"),
                f("fb_ms_vs_peer"),
                f("gs_fwd_ms_vs_peer"),
                f("gs_fb_ms_vs_peer")
            );
        }
    }
    if let Some(path) = &args.json {
        let doc = json!({ "threads": args.threads, "malloc": malloc, "rows": rows });
        std::fs::write(path, serde_json::to_string_pretty(&doc).expect("json"))
            .unwrap_or_else(|e| panic!("cannot write {path}: {e}"));
    }
}
