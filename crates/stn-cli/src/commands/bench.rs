//! `stn bench`.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use stn_cli::models::ModelKind;

use super::args::ModeArg;

/// Arguments of `stn bench` (its help is on the subcommand in main.rs).
#[derive(clap::Args)]
pub struct Args {
    /// Kernel cases to run (a: 256x1x28x28, b: 128x1x60x60, c: 16x64x56x56,
    /// d: 8x3x224x224, e: 1x3x2048x2048); empty for none.
    #[arg(long, default_value = "abcde")]
    pub cases: String,
    /// Interpolation modes of the kernel benchmark.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "bilinear,nearest,bicubic")]
    pub modes: Vec<ModeArg>,
    /// Timed steps of the model throughput figures.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Print JSON (with `stcnn_train_img_per_s`, `stcnn_infer_img_per_s`, `cnn_train_img_per_s`;
    /// with --augment, `{"rows": [{"op", "shape", "img_per_s"}]}`).
    #[arg(long)]
    pub json: bool,
    /// Instead: the augmentation benchmark (RandomAffine, RandomPerspective and
    /// RandomThinPlateSpline on float32 batches of 32x3x256x256 and 256x1x28x28, parameter
    /// sampling and application, images/s), the rows of `tools/peer/bench_augment.py`.
    #[arg(long)]
    pub augment: bool,
    /// Seconds each augmentation row is timed for, at least.
    #[arg(long, default_value_t = 1.0)]
    pub min_time: f64,
    /// The device of the model throughput and of the warp benchmark: cpu, wgpu, vulkan, cuda
    /// (GPU devices need a build with `--features gpu`). On a GPU the kernel rows (stn-kernels,
    /// CPU) are skipped and the fused bilinear warp is timed instead (see --warp-shape).
    #[arg(long, default_value = "cpu")]
    pub device: stn::device::DeviceKind,
    /// The batch of the warp benchmark on a GPU device, NxCxHxW.
    #[arg(long, default_value = "256x3x224x224", value_parser = parse_shape)]
    pub warp_shape: [usize; 4],
}

fn parse_shape(s: &str) -> std::result::Result<[usize; 4], String> {
    let v: Vec<usize> = s
        .split('x')
        .map(|p| p.trim().parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| format!("{s:?}: {e}"))?;
    match v[..] {
        [n, c, h, w] if n * c * h * w > 0 => Ok([n, c, h, w]),
        _ => Err(format!("{s:?}: expected NxCxHxW, every size at least 1")),
    }
}

/// Runs the command.
pub fn exec(args: Args) -> Result<ExitCode> {
    use stn_kernels::bench::{kernel_rows, mode_name, padding_name, peer_combos, BENCH_CASES};
    let Args { cases, modes, steps, threads, json, augment, min_time, device, warp_shape } = args;
    if threads == 0 || steps == 0 {
        bail!("--threads and --steps must be at least 1");
    }
    if device != stn::device::DeviceKind::Cpu {
        return gpu_bench(device, warp_shape, steps, json);
    }
    if augment {
        if !(min_time.is_finite() && min_time >= 0.0) {
            bail!("--min-time must be a number of seconds, got {min_time}");
        }
        rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().context("thread pool")?;
        let rows = stn_cli::augment::bench_rows(min_time)?;
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({"threads": threads, "rows": rows}))?
            );
        } else {
            println!(
                "augmentation (float32, {threads} threads; medians):\n| op | shape | img/s |\n|---|---|---:|"
            );
            for r in rows {
                println!("| {} | {} | {:.0} |", r.op, r.shape, r.img_per_s);
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(bad) = cases.chars().find(|c| !"abcde".contains(*c)) {
        bail!("unknown case {bad:?} in --cases; use letters of abcde");
    }
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().context("thread pool")?;
    let modes: Vec<stn::Interpolation> = modes
        .iter()
        .map(|m| match m {
            ModeArg::Bilinear => stn::Interpolation::Bilinear,
            ModeArg::Nearest => stn::Interpolation::Nearest,
            ModeArg::Bicubic => stn::Interpolation::Bicubic,
        })
        .collect();
    let mut rows = Vec::new();
    let mut traffic = Vec::new();
    if !json {
        println!("kernels (float32, align_corners=false, {threads} threads; medians, ms):");
        println!("| case | mode | padding | fwd | fb | gs fwd | gs fb |");
        println!("|---|---|---|---:|---:|---:|---:|");
    }
    for case in BENCH_CASES.iter().filter(|c| cases.contains(c.key)) {
        eprintln!("kernels: case {} ...", case.key);
        for r in kernel_rows(case, &peer_combos(case, &modes), 10, 3, 0.5, None)? {
            let (m, p) = (mode_name(r.mode), padding_name(r.padding));
            if !json {
                println!(
                    "| {} {}x{}x{}x{} | {m} | {p} | {:.3} | {:.3} | {:.3} | {:.3} |",
                    case.key, case.n, case.c, case.h, case.w, r.fwd_ms, r.fb_ms, r.gs_fwd_ms, r.gs_fb_ms
                );
            }
            let mut row = serde_json::json!({
                "case": case.key.to_string(), "mode": m, "padding": p,
                "fwd_ms": r.fwd_ms, "fb_ms": r.fb_ms, "gs_fwd_ms": r.gs_fwd_ms, "gs_fb_ms": r.gs_fb_ms,
            });
            // The traffic of each figure: bytes it must move, bandwidth reached, and a copy of
            // the same bytes in this run (the limit).
            let (gbs, copy) = (r.gbs(), r.copy_gbs());
            for (i, f) in stn_kernels::bench::KernelRow::FIGURES.iter().enumerate() {
                row[format!("{f}_bytes")] = serde_json::json!(r.bytes[i]);
                row[format!("{f}_gbs")] = serde_json::json!(gbs[i]);
                row[format!("{f}_copy_gbs")] = serde_json::json!(copy[i]);
            }
            traffic.push(format!(
                "| {} | {m} | {p} | {} |",
                case.key,
                (0..4)
                    .map(|i| format!(
                        "{:.1} MB, {:.1} GB/s = {:.0}% of {:.1}",
                        r.bytes[i] as f64 / 1e6,
                        gbs[i],
                        100.0 * gbs[i] / copy[i],
                        copy[i]
                    ))
                    .collect::<Vec<_>>()
                    .join(" | ")
            ));
            rows.push(row);
        }
    }
    if !json && !traffic.is_empty() {
        println!("\nkernel traffic: bytes each figure must move, bandwidth reached, share of a copy of the same bytes (GB/s):");
        println!("| case | mode | padding | fwd | fb | gs fwd | gs fb |");
        println!("|---|---|---|---|---|---|---|");
        for line in &traffic {
            println!("{line}");
        }
    }
    eprintln!("models: tutorial ST-CNN and its plain CNN ...");
    let st = stn_cli::bench::throughput(ModelKind::Tutorial, steps, 10)?;
    let cnn = stn_cli::bench::throughput(ModelKind::TutorialCnn, steps, 10)?;
    if json {
        let doc = serde_json::json!({
            "threads": threads,
            "kernels": rows,
            "batch": stn_cli::bench::BATCH,
            "stcnn_train_img_per_s": st.train_img_per_s, "stcnn_infer_img_per_s": st.infer_img_per_s,
            "stcnn_train_ms": st.train_ms, "stcnn_infer_ms": st.infer_ms,
            "cnn_train_img_per_s": cnn.train_img_per_s, "cnn_infer_img_per_s": cnn.infer_img_per_s,
            "cnn_train_ms": cnn.train_ms, "cnn_infer_ms": cnn.infer_ms,
            // The transformer's cost over the plain CNN (0.1 = 10% slower).
            "st_cost_train": st.train_ms / cnn.train_ms - 1.0, "st_cost_infer": st.infer_ms / cnn.infer_ms - 1.0,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!("\nmodels (28 x 28, batch {}; medians):", stn_cli::bench::BATCH);
        for (name, t) in [("tutorial ST-CNN", st), ("its plain CNN", cnn)] {
            println!(
                "  {name:16} train {:7.2} ms/step ({:6.0} img/s)   infer {:6.2} ms/batch ({:6.0} img/s)",
                t.train_ms, t.train_img_per_s, t.infer_ms, t.infer_img_per_s
            );
        }
        println!(
            "  the transformer's cost over the plain CNN: training {:+.0}%, inference {:+.0}%",
            100.0 * (st.train_ms / cnn.train_ms - 1.0),
            100.0 * (st.infer_ms / cnn.infer_ms - 1.0)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `stn bench --device` on a GPU: the fused bilinear warp and the tutorial models' throughput.
fn gpu_bench(kind: stn::device::DeviceKind, shape: [usize; 4], steps: usize, json: bool) -> Result<ExitCode> {
    let sel = stn::device::select(kind).context("--device")?;
    eprintln!("device: {sel}");
    eprintln!("warp: {}x{}x{}x{} ...", shape[0], shape[1], shape[2], shape[3]);
    let warp = stn_cli::bench::warp_bench(&sel.device, shape, steps, 3)?;
    eprintln!("models: tutorial ST-CNN and its plain CNN ...");
    let st = stn_cli::bench::throughput_on(&sel.device, ModelKind::Tutorial, steps, 10)?;
    let cnn = stn_cli::bench::throughput_on(&sel.device, ModelKind::TutorialCnn, steps, 10)?;
    if json {
        let doc = serde_json::json!({
            "device": kind.name(), "api": sel.api, "adapter": sel.adapter,
            "warp_shape": shape, "warp_fwd_ms": warp.fwd_ms, "warp_fb_ms": warp.fb_ms,
            "warp_fwd_gbs": warp.fwd_gbs, "warp_fb_gbs": warp.fb_gbs,
            "batch": stn_cli::bench::BATCH,
            "stcnn_train_img_per_s": st.train_img_per_s, "stcnn_infer_img_per_s": st.infer_img_per_s,
            "cnn_train_img_per_s": cnn.train_img_per_s, "cnn_infer_img_per_s": cnn.infer_img_per_s,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!("device {sel}");
        println!(
            "fused bilinear affine warp, float32 {}x{}x{}x{} (medians): forward {:.3} ms ({:.1} GB/s), forward+backward {:.3} ms ({:.1} GB/s)",
            shape[0], shape[1], shape[2], shape[3], warp.fwd_ms, warp.fwd_gbs, warp.fb_ms, warp.fb_gbs
        );
        println!("models (28 x 28, batch {}; medians):", stn_cli::bench::BATCH);
        for (name, t) in [("tutorial ST-CNN", st), ("its plain CNN", cnn)] {
            println!(
                "  {name:16} train {:7.2} ms/step ({:6.0} img/s)   infer {:6.2} ms/batch ({:6.0} img/s)",
                t.train_ms, t.train_img_per_s, t.infer_ms, t.infer_img_per_s
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
