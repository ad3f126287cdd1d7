//! The same rectification of a table locally, on the in-process cluster, and on loopback
//! clusters of real processes with one and with two executors; the time of each (median of
//! the rounds, after one warm-up run that loads the model on the executors) and its ratio to
//! the local run, with where the cluster's time goes (Ballista's job metrics).
//!
//! cargo run --release -p stn-cluster --example cluster_bench -- --model RUN_DIR [--rows 10000]
//!     [--files 8] [--rounds 5] [--work /tmp/stn-cluster-bench] [--tls CERT_DIR]
//!
//! With `--tls CERT_DIR` (made by `tools/cluster/make_certs.py`), the loopback cluster of one
//! executor runs again with mutual TLS on every connection (node.pem for the programs,
//! client.pem for this client).
//!
//! The table: the embedded digits, RTS-distorted (42 x 42 PNG, Hugging Face convention), in
//! `--files` files. Every configuration runs the library call (`stn_table::rectify::
//! rectify_table` here, `stn_cluster::client::rectify_table` there) with the same options;
//! process start-up is not timed. Prints one JSON line per configuration.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use stn_cluster::client::{self, ClusterFileReport, JobTimes};
use stn_cluster::local::{LocalCluster, LocalClusterConfig};
use stn_data::{Dataset, Distortion};
use stn_models::rectify::Rectifier;
use stn_sql::Model;
use stn_table::export::{write_dataset, ExportLayout};
use stn_table::rectify::{rectify_table, RectifyOptions};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn sum_jobs(runs: &[ClusterFileReport]) -> JobTimes {
    let mut j = JobTimes::default();
    for r in runs {
        j.scheduling += r.job.scheduling;
        j.execution += r.job.execution;
        j.total += r.job.total;
        j.transferred_bytes += r.job.transferred_bytes;
    }
    j
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    stn_kernels::alloc::keep_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    let model = PathBuf::from(arg(&args, "--model").ok_or("--model RUN_DIR is required")?);
    let model = std::fs::canonicalize(&model)?;
    let rows: usize = arg(&args, "--rows").map_or(Ok(10_000), |v| v.parse())?;
    let files: usize = arg(&args, "--files").map_or(Ok(8), |v| v.parse())?;
    let rounds: usize = arg(&args, "--rounds").map_or(Ok(5), |v| v.parse())?;
    let work = PathBuf::from(arg(&args, "--work").unwrap_or_else(|| "/tmp/stn-cluster-bench".into()));
    let _ = std::fs::remove_dir_all(&work);
    let table = work.join("table");
    std::fs::create_dir_all(&table)?;
    let data = Dataset::embedded()?;
    let data = Distortion::Rts.apply(&data.subset(0..rows.min(data.len()))?, 3)?;
    let per = data.len().div_ceil(files);
    for f in 0..files {
        let range = f * per..((f + 1) * per).min(data.len());
        write_dataset(
            &data.subset(range)?,
            &table.join(format!("part-{f:02}.parquet")),
            ExportLayout::HuggingFace,
            1000,
        )?;
    }
    let opts = RectifyOptions::default();
    let rectifier = Arc::new(Rectifier::from_run(&model).map_err(|e| e.to_string())?);
    let bin_dir =
        std::env::current_exe()?.parent().and_then(Path::parent).ok_or("no bin folder")?.to_path_buf();
    let mut out_n = 0usize;
    let mut next_out = || {
        out_n += 1;
        work.join(format!("out-{out_n}"))
    };

    // Local.
    let mut local = Vec::new();
    rectify_table(&rectifier, &table, &next_out(), &opts, &mut |_| {})?;
    for _ in 0..rounds {
        let t = Instant::now();
        rectify_table(&rectifier, &table, &next_out(), &opts, &mut |_| {})?;
        local.push(t.elapsed().as_secs_f64());
    }
    let local_s = median(local);
    println!(
        "{}",
        serde_json::json!({"config": "local", "rows": data.len(), "files": files, "seconds": local_s, "ratio": 1.0})
    );

    let mut measure = |name: &str, url: &client::Remote| -> Result<(), Box<dyn std::error::Error>> {
        let first = Instant::now();
        client::rectify_table(
            url,
            rectifier.clone(),
            &table,
            &next_out(),
            &opts,
            client::JobLimits::jobs(files),
            &mut |_| {},
        )?;
        let first = first.elapsed().as_secs_f64();
        let mut times = Vec::new();
        let mut jobs = Vec::new();
        for _ in 0..rounds {
            let t = Instant::now();
            let runs = client::rectify_table(
                url,
                rectifier.clone(),
                &table,
                &next_out(),
                &opts,
                client::JobLimits::jobs(files),
                &mut |_| {},
            )?;
            times.push(t.elapsed().as_secs_f64());
            jobs.push(sum_jobs(&runs));
        }
        let s = median(times.clone());
        let j = jobs[times.iter().position(|&x| x == s).unwrap_or(0)];
        println!(
            "{}",
            serde_json::json!({
                "config": name, "rows": data.len(), "files": files, "seconds": s, "ratio": s / local_s,
                "first_run_seconds": first,
                "jobs_summed": {
                    "scheduling_s": j.scheduling.as_secs_f64(), "execution_s": j.execution.as_secs_f64(),
                    "submit_to_last_row_s": j.total.as_secs_f64(), "flight_bytes": j.transferred_bytes,
                },
            })
        );
        Ok(())
    };

    // In-process: Ballista's standalone scheduler and one executor with 2 slots, in this process.
    {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let url = rt.block_on(client::start_in_process(Model::lazy(&model), 1, 2))?;
        measure("in-process, 1 executor x 2 slots", &url.as_str().into())?;
        drop(rt);
    }
    // Loopback processes.
    for (executors, vcores) in [(1, 2), (2, 1)] {
        let cfg = LocalClusterConfig::new(
            &bin_dir,
            &model,
            executors,
            vcores,
            &work.join(format!("cluster-{executors}")),
        );
        let cluster = LocalCluster::start(&cfg)?;
        measure(
            &format!("loopback, {executors} executor(s) x {vcores} slot(s)"),
            &cluster.url().as_str().into(),
        )?;
        drop(cluster);
    }
    if let Some(certs) = arg(&args, "--tls").map(PathBuf::from) {
        use stn_cluster::tls::TlsArgs;
        stn_cluster::tls::install_provider();
        let files = |name: &str| TlsArgs {
            tls_cert: Some(certs.join(format!("{name}.pem"))),
            tls_key: Some(certs.join(format!("{name}-key.pem"))),
            tls_ca: Some(certs.join("ca.pem")),
        };
        let mut cfg = LocalClusterConfig::new(&bin_dir, &model, 1, 2, &work.join("cluster-tls"));
        cfg.tls = Some(files("node"));
        let cluster = LocalCluster::start(&cfg)?;
        let remote = client::Remote::new(cluster.url()).with_tls(files("client").load()?);
        measure("loopback over mutual TLS, 1 executor(s) x 2 slot(s)", &remote)?;
        drop(cluster);
    }
    Ok(())
}
