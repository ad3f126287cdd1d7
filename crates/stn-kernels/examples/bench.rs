//! Kernel benchmark on the cases of the PyTorch peer (`bench_grid_sample.py`), with its
//! meaning of each figure (float32, align_corners = false):
//!
//! Runs with `stn_kernels::alloc::keep_freed_memory` unless `--system-malloc` is given.
//!
//! - `fwd_ms`: theta -> output, the fused affine path;
//! - `fb_ms`: the same plus the gradients to the input and to theta;
//! - `gs_fwd_ms`: sampling from a given grid;
//! - `gs_fb_ms`: the same plus the gradients to the input and to the grid.
//!
//! Each figure is the median of at least `--reps` timed runs after warm-up (small cases
//! repeat until `--min-time` seconds are spent). Prints a table; `--json FILE` writes one row
//! per (case, mode, padding) with the peer's keys; `--compare PEER.json` adds ours/peer ratios.
//!
//! Each row also reports the bytes each figure must move (`stn_kernels::bench::figure_bytes`),
//! the bandwidth it reached, and a parallel copy of the same bytes timed in the same run: the
//! limit a memory-bound kernel approaches (JSON keys `<figure>_bytes`, `_gbs`, `_copy_ms`,
//! `_copy_gbs`).
//!
//! ```sh
//! cargo run --release -p stn-kernels --example bench -- --json ours.json --threads 2
//! cargo run --release -p stn-kernels --example bench -- --cases ab --modes bilinear --compare peer.json
//! cargo run --release -p stn-kernels --example bench -- --shape 4,32,112,112 --compare peer.json
//! ```

use serde_json::{json, Value};
use stn_kernels::bench::{
    kernel_rows, mode_name, padding_name, peer_combos, BenchCase, KernelRow, BENCH_CASES as CASES,
};
use stn_kernels::*;

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
    /// Time only this figure (fwd, fb, gs_fwd, gs_fb); for profiling.
    only: Option<String>,
    /// `--shape N,C,H,W`: one more case, key `x` (the peer script takes the same flag).
    shape: Option<BenchCase>,
}

fn usage() -> ! {
    eprintln!(
        "usage: bench [--json FILE] [--compare PEER.json] [--cases abcde] \
         [--modes bilinear,nearest,bicubic] [--threads N] [--reps N>=10] [--warmup N] [--min-time S] [--system-malloc] [--only fwd|fb|gs_fwd|gs_fb] \
         [--shape N,C,H,W (case x; alone: only it)]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        json: None,
        compare: None,
        cases: "abcde".into(),
        modes: vec!["bilinear".into(), "nearest".into(), "bicubic".into()],
        threads: 2,
        reps: 10,
        warmup: 3,
        min_time: 0.5,
        system_malloc: false,
        only: None,
        shape: None,
    };
    let mut cases_given = false;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--json" => a.json = Some(val()),
            "--compare" => a.compare = Some(val()),
            "--cases" => {
                a.cases = val();
                cases_given = true;
            }
            "--shape" => a.shape = Some(shape_of(&val()).unwrap_or_else(|| usage())),
            "--modes" => a.modes = val().split(',').map(str::to_string).collect(),
            "--threads" => a.threads = val().parse().unwrap_or_else(|_| usage()),
            "--reps" => a.reps = val().parse().unwrap_or_else(|_| usage()),
            "--warmup" => a.warmup = val().parse().unwrap_or_else(|_| usage()),
            "--system-malloc" => a.system_malloc = true,
            "--min-time" => a.min_time = val().parse().unwrap_or_else(|_| usage()),
            "--only" => a.only = Some(val()),
            "-h" | "--help" => usage(),
            _ => {
                eprintln!("unknown argument {flag}");
                usage()
            }
        }
    }
    if a.shape.is_some() && !cases_given {
        a.cases = "x".into();
    }
    if a.reps < 10
        || a.threads == 0
        || a.cases.chars().any(|c| !"abcdex".contains(c))
        || (a.cases.contains('x') && a.shape.is_none())
    {
        usage();
    }
    for m in &a.modes {
        if mode_of(m).is_none() {
            eprintln!("unknown mode {m}");
            usage();
        }
    }
    a
}

/// `N,C,H,W` (each at least 1, at most 2^31 elements in all) as case `x`.
fn shape_of(s: &str) -> Option<BenchCase> {
    let v: Vec<usize> =
        s.split(',').map(|d| d.trim().parse().ok().filter(|&d| d > 0)).collect::<Option<_>>()?;
    let &[n, c, h, w] = v.as_slice() else { return None };
    let elems = n.checked_mul(c)?.checked_mul(h)?.checked_mul(w)?;
    (elems <= 1 << 31).then_some(BenchCase { key: 'x', n, c, h, w, desc: "custom" })
}

fn mode_of(s: &str) -> Option<Interpolation> {
    match s {
        "bilinear" => Some(Interpolation::Bilinear),
        "nearest" => Some(Interpolation::Nearest),
        "bicubic" => Some(Interpolation::Bicubic),
        _ => None,
    }
}

fn main() {
    let args = parse_args();
    let malloc =
        if !args.system_malloc && stn_kernels::alloc::keep_freed_memory() { "reuse" } else { "system" };
    let pool = rayon::ThreadPoolBuilder::new().num_threads(args.threads).build().expect("thread pool");
    let peer: Option<Value> = args.compare.as_ref().map(|p| {
        let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("cannot read {p}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{p} is not JSON: {e}"))
    });
    println!(
        "stn-kernels bench: threads={} malloc={malloc} float32 align_corners=false (medians, ms)",
        args.threads
    );
    println!("| case | mode | padding | fwd ms | fb ms | gs fwd ms | gs fb ms | reps |");
    println!("|---|---|---|---:|---:|---:|---:|---:|");
    let mut rows = Vec::new();
    let mut traffic: Vec<KernelRow> = Vec::new();
    pool.install(|| {
        let all: Vec<BenchCase> = CASES.iter().copied().chain(args.shape).collect();
        for case in all.iter().filter(|c| args.cases.contains(c.key)) {
            let modes: Vec<Interpolation> = args.modes.iter().map(|m| mode_of(m).expect("checked")).collect();
            let (n, c, h, w) = (case.n, case.c, case.h, case.w);
            let combos = peer_combos(case, &modes);
            let found =
                kernel_rows(case, &combos, args.reps, args.warmup, args.min_time, args.only.as_deref())
                    .expect("benchmark inputs are valid");
            for r in found {
                let (mode, pad) = (mode_name(r.mode), padding_name(r.padding));
                let mut row = json!({
                    "case": case.key.to_string(), "desc": case.desc, "N": n, "C": c, "H": h, "W": w,
                    "Ho": h, "Wo": w, "mode": mode, "padding": pad, "elems": n * c * h * w,
                    "fwd_ms": r.fwd_ms, "fb_ms": r.fb_ms, "gs_fwd_ms": r.gs_fwd_ms, "gs_fb_ms": r.gs_fb_ms,
                    "fwd_reps": r.fwd_reps,
                });
                let (gbs, copy_gbs) = (r.gbs(), r.copy_gbs());
                for (i, f) in KernelRow::FIGURES.iter().enumerate() {
                    row[format!("{f}_bytes")] = json!(r.bytes[i]);
                    row[format!("{f}_gbs")] = json!(finite(gbs[i]));
                    row[format!("{f}_copy_ms")] = json!(finite(r.copy_ms[i]));
                    row[format!("{f}_copy_gbs")] = json!(finite(copy_gbs[i]));
                }
                traffic.push(r.clone());
                println!(
                    "| {} {n}x{c}x{h}x{w} | {mode:8} | {pad:10} | {:9.3} | {:9.3} | {:9.3} | {:9.3} | {} |",
                    case.key, r.fwd_ms, r.fb_ms, r.gs_fwd_ms, r.gs_fb_ms, r.fwd_reps
                );
                rows.push(row);
            }
        }
    });
    print_traffic(&traffic);
    if let Some(peer) = &peer {
        print_ratios(&rows, peer);
    }
    if let Some(path) = &args.json {
        let doc = json!({ "impl": "stn-kernels", "threads": args.threads, "malloc": malloc, "dtype": "float32", "rows": rows });
        let tmp = format!("{path}.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(&doc).expect("json"))
            .and_then(|_| std::fs::rename(&tmp, path))
            .unwrap_or_else(|e| panic!("cannot write {path}: {e}"));
        eprintln!("wrote {path}");
    }
}

/// NaN (a figure not timed) as JSON null.
fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// Per row and figure: the bytes it must move, the bandwidth it reached, and that bandwidth as
/// a share of a copy of the same bytes timed in the same run (the machine's limit).
fn print_traffic(rows: &[KernelRow]) {
    println!(
        "\nTraffic: MB each figure must move | GB/s reached | share of a copy of the same bytes (this run's limit)"
    );
    println!("| case | mode | padding | fwd | fb | gs fwd | gs fb | copy GB/s (fwd, fb, gs fwd, gs fb) |");
    println!("|---|---|---|---:|---:|---:|---:|---:|");
    for r in rows {
        let (gbs, copy) = (r.gbs(), r.copy_gbs());
        let cell = |i: usize| {
            if gbs[i].is_finite() {
                format!(
                    "{:.1} MB {:.1} GB/s {:.0}%",
                    r.bytes[i] as f64 / 1e6,
                    gbs[i],
                    100.0 * gbs[i] / copy[i]
                )
            } else {
                "-".into()
            }
        };
        let lim: Vec<String> =
            copy.iter().map(|c| if c.is_finite() { format!("{c:.1}") } else { "-".into() }).collect();
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.case.key,
            mode_name(r.mode),
            padding_name(r.padding),
            cell(0),
            cell(1),
            cell(2),
            cell(3),
            lim.join(", ")
        );
    }
}

/// Ours / peer for each figure (below 1 = faster than the peer).
fn print_ratios(rows: &[Value], peer: &Value) {
    const FIGS: [(&str, f64); 4] = [("fwd_ms", 0.5), ("fb_ms", 0.5), ("gs_fwd_ms", 1.0), ("gs_fb_ms", 1.0)];
    println!(
        "\nOurs / PyTorch (below 1.00 = faster; targets: fwd, fb <= 0.50; gs fwd, gs fb <= 1.00; \
         a cross marks a miss)"
    );
    println!(
        "| case | mode | padding | fwd ms (ours / torch) | fb ms | gs fwd ms | gs fb ms \
         | fwd ratio | fb ratio | gs fwd ratio | gs fb ratio |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let empty = Vec::new();
    let prow = peer["rows"].as_array().unwrap_or(&empty);
    let mut misses = 0;
    for r in rows {
        let Some(p) = prow
            .iter()
            .find(|p| p["case"] == r["case"] && p["mode"] == r["mode"] && p["padding"] == r["padding"])
        else {
            continue;
        };
        let mut cells: Vec<String> = FIGS
            .iter()
            .map(|(k, _)| match (r[k].as_f64(), p[k].as_f64()) {
                (Some(a), Some(b)) => format!("{} / {}", ms(a), ms(b)),
                _ => "-".into(),
            })
            .collect();
        for (k, target) in FIGS {
            cells.push(match (r[k].as_f64(), p[k].as_f64()) {
                (Some(a), Some(b)) if b > 0.0 => {
                    let q = a / b;
                    // The cell shows two decimals; a miss is judged on what it shows.
                    let miss = (q * 100.0).round() / 100.0 > target;
                    misses += miss as usize;
                    format!("{q:.2}{}", if miss { " ✗" } else { "" })
                }
                _ => "-".into(),
            });
        }
        println!(
            "| {} | {} | {} | {} |",
            r["case"].as_str().unwrap_or("?"),
            r["mode"].as_str().unwrap_or("?"),
            r["padding"].as_str().unwrap_or("?"),
            cells.join(" | ")
        );
    }
    println!("\n{misses} ratios outside their targets.");
}

/// Milliseconds with three significant digits (0.337, 1.58, 24.0, 181).
fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}
