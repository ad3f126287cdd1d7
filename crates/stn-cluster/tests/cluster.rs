//! The image functions on Ballista clusters, all on loopback: an in-process cluster (Ballista's
//! standalone scheduler with two executors) and real `stn-scheduler` / `stn-executor`
//! processes started and stopped here. Results equal the local run byte for byte; both
//! executors run tasks; an executor killed mid-run; the model folder missing; no scheduler;
//! bad URLs. Every process is killed when its guard drops, and every wait is bounded.

#[path = "../../stn-table/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::RecordBatch;
use common::*;
use stn_cluster::client::{self, parse_url};
use stn_cluster::local::{free_port, LocalCluster, LocalClusterConfig};
use stn_cluster::ClusterError;
use stn_data::{Dataset, Distortion};
use stn_models::rectify::Rectifier;
use stn_sql::{Model, SqlOptions};
use stn_table::export::{write_dataset, ExportLayout};
use stn_table::rectify::{rectify_table, Event, RectifyOptions};

/// A folder of `files` Parquet files of `rows` RTS-distorted digits each (distinct digits),
/// 100 rows per row group.
fn digits(name: &str, files: usize, rows: usize) -> PathBuf {
    let dir = tmp(name).join("table");
    std::fs::create_dir_all(&dir).unwrap();
    let (_, test) = Dataset::embedded_split().unwrap();
    let d = Distortion::Rts.apply(&test.subset(0..files * rows).unwrap(), 7).unwrap();
    for f in 0..files {
        let part = d.subset(f * rows..(f + 1) * rows).unwrap();
        write_dataset(&part, &dir.join(format!("part-{f}.parquet")), ExportLayout::Binary, 100).unwrap();
    }
    dir
}

/// Like [`digits`], with every digit scaled up `scale` times (nearest, plus a fixed texture so
/// PNG has work to do): files whose jobs take long enough to kill an executor during one.
fn big_digits(name: &str, files: usize, rows: usize, scale: usize) -> PathBuf {
    let dir = tmp(name).join("table");
    std::fs::create_dir_all(&dir).unwrap();
    let (_, test) = Dataset::embedded_split().unwrap();
    let d = Distortion::Rts.apply(&test.subset(0..files * rows).unwrap(), 11).unwrap();
    let (h, w) = (d.height * scale, d.width * scale);
    let mut images = Vec::with_capacity(d.len() * h * w);
    for i in 0..d.len() {
        let src = d.image(i);
        for y in 0..h {
            for x in 0..w {
                let texture = ((x * 7 + y * 13) % 17) as f32 / 255.0;
                images.push((src[(y / scale) * d.width + x / scale] + texture).min(1.0));
            }
        }
    }
    let big = Dataset { images, labels: d.labels.clone(), height: h, width: w };
    for f in 0..files {
        let part = big.subset(f * rows..(f + 1) * rows).unwrap();
        write_dataset(&part, &dir.join(format!("part-{f}.parquet")), ExportLayout::Binary, 50).unwrap();
    }
    dir
}

/// The local run of `stn rectify --table`, the reference.
fn local_outputs(table: &Path) -> PathBuf {
    let out = table.with_file_name("local-out");
    rectify_table(rectifier(), table, &out, &RectifyOptions::default(), &mut |_| {}).unwrap();
    out
}

/// Every file of `reference` is in `got` with the same bytes (the writer is deterministic, so
/// the same rows, columns, values and row groups give the same file).
fn assert_same_files(reference: &Path, got: &Path) {
    let mut n = 0;
    for e in std::fs::read_dir(reference).unwrap() {
        let name = e.unwrap().file_name();
        let a = std::fs::read(reference.join(&name)).unwrap();
        let b =
            std::fs::read(got.join(&name)).unwrap_or_else(|e| panic!("{}: {e}", got.join(&name).display()));
        assert!(a == b, "{}: the cluster's output differs from the local one", name.to_string_lossy());
        n += 1;
    }
    assert!(n > 0);
    let extra: Vec<_> = std::fs::read_dir(got).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(extra.len(), n, "no other files in the output folder: {extra:?}");
}

/// The rows of a query's result as sorted (id, image bytes, theta) triples: a cluster returns
/// the files' rows in any order of files.
fn rows(batches: &[RecordBatch]) -> Vec<(i64, Vec<u8>, Vec<f32>)> {
    let mut out = Vec::new();
    for b in batches {
        let id = b.column_by_name("id").unwrap().as_primitive::<arrow_array::types::Int64Type>();
        let r = b.column_by_name("r").unwrap().as_binary::<i32>();
        let t = b.column_by_name("t").unwrap().as_fixed_size_list();
        for i in 0..b.num_rows() {
            let theta = t.value(i);
            let theta = theta.as_primitive::<arrow_array::types::Float32Type>().values().to_vec();
            out.push((id.value(i), r.value(i).to_vec(), theta));
        }
    }
    out.sort_by(|a, b| a.partial_cmp(b).unwrap());
    out
}

fn query_of(table: &Path) -> String {
    format!(
        "SELECT id, stn_rectify(image) AS r, stn_theta(image) AS t, upper('built-in') AS b FROM '{}/'",
        table.display()
    )
}

fn local_query(q: &str) -> Vec<RecordBatch> {
    let ctx = stn_sql::context(Arc::new(Rectifier::from_run(run_dir()).unwrap()), SqlOptions::default());
    stn_sql::query(&ctx, q).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

// ---------------------------------------------------------------- processes

/// A program of the workspace, beside this package's own (`cargo test --workspace` builds them all).
fn bin_path(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_stn-scheduler")).with_file_name(name);
    assert!(p.is_file(), "{} is not built: run the tests with `cargo test --workspace`", p.display());
    p
}

/// `stn rectify --table TABLE --out OUT --cluster URL` with the test model, and `more`.
fn stn_rectify_on(url: &str, table: &Path, out: &Path, more: &[&str]) -> std::process::Output {
    Command::new(bin_path("stn"))
        .args(["rectify", "--model", &run_dir().display().to_string()])
        .args([
            "--table",
            &table.display().to_string(),
            "--out",
            &out.display().to_string(),
            "--cluster",
            url,
        ])
        .args(more)
        .output()
        .unwrap()
}

/// A loopback cluster of real processes: the scheduler with `model`, one executor per entry
/// of `executor_models` (one task slot each).
fn cluster(
    name: &str,
    model: &Path,
    executor_models: &[&Path],
    sched: &[&str],
    exec: &[&str],
) -> LocalCluster {
    let mut cfg = LocalClusterConfig::new(
        bin_path("stn-scheduler").parent().unwrap(),
        model,
        0,
        1,
        &tmp(&format!("cluster-{name}")),
    );
    cfg.executor_models = executor_models.iter().map(|m| m.to_path_buf()).collect();
    cfg.scheduler_args = sched.iter().map(|a| a.to_string()).collect();
    cfg.executor_args = exec.iter().map(|a| a.to_string()).collect();
    LocalCluster::start(&cfg).unwrap_or_else(|e| panic!("{e}"))
}

// ---------------------------------------------------------------- tests

#[test]
fn urls_are_checked() {
    assert_eq!(parse_url("df://127.0.0.1:50050").unwrap(), ("127.0.0.1".into(), 50050));
    assert_eq!(parse_url("df://sched.example").unwrap(), ("sched.example".into(), 50050));
    assert_eq!(parse_url("df://[::1]:7000/").unwrap(), ("[::1]".into(), 7000));
    for (bad, why) in [
        ("http://127.0.0.1:50050", "df://"),
        ("127.0.0.1:50050", "df://"),
        ("df://", "no host"),
        ("df://:50050", "no host"),
        ("df://host:port", "`port`"),
        ("df://host:0", "`0`"),
        ("df://host:70000", "`70000`"),
        ("df://host:1/db", "only a host and a port"),
        ("df://user@host:1", "only a host and a port"),
        ("df://::1:5", "brackets"),
    ] {
        let e = parse_url(bad).unwrap_err();
        assert!(matches!(e, ClusterError::Url { .. }), "{bad}: {e}");
        assert!(e.to_string().contains(why) && e.to_string().contains(bad), "{bad}: {e}");
    }
}

#[test]
fn no_scheduler_is_a_clear_error() {
    let url = format!("df://127.0.0.1:{}", free_port().unwrap());
    let e = runtime().block_on(client::connect(&url, Model::lazy(run_dir()))).err().expect("no scheduler");
    assert!(matches!(e, ClusterError::Unreachable { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("no Ballista scheduler answers at") && msg.contains(&url), "{msg}");
    assert!(msg.to_lowercase().contains("refused"), "the cause is named: {msg}");
    // The same from the command line, with nothing written.
    let out = tmp("no-scheduler").join("out");
    let table = fixtures().join("pyarrow_binary.parquet");
    let o = stn_rectify_on(&url, &table, &out, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("no Ballista scheduler answers at"), "{err}");
    assert!(!out.exists(), "no output for a run that could not start");
    let o = Command::new(bin_path("stn"))
        .args(["sql", "--model", &run_dir().display().to_string(), "--cluster", "http://x", "SELECT 1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("bad cluster URL `http://x`"), "{err}");
}

#[test]
fn in_process_cluster_gives_the_local_results() {
    let table = digits("in-process", 4, 150);
    let rt = runtime();
    let url = rt.block_on(client::start_in_process(Model::lazy(run_dir()), 2, 1)).unwrap();
    // SQL: the same rows, the same bytes, a built-in function still there; both executors ran tasks.
    let q = query_of(&table);
    let (got, job) = rt
        .block_on(async {
            let ctx = client::connect(&url, Model::lazy(run_dir())).await?;
            client::collect_job(ctx.sql(&q).await?).await
        })
        .unwrap();
    assert_eq!(rows(&got), rows(&local_query(&q)));
    assert_eq!(got[0].column_by_name("b").unwrap().as_string::<i32>().value(0), "BUILT-IN");
    let job = job.expect("a cluster job");
    let ran = rt.block_on(client::job_executors(&url, &client::cluster_config(), &job)).unwrap();
    assert_eq!(ran.len(), 2, "both executors ran tasks: {ran:?}");
    // The table run: the same files as the local run, byte for byte.
    let reference = local_outputs(&table);
    let out = table.with_file_name("cluster-out");
    let r = Arc::new(Rectifier::from_run(run_dir()).unwrap());
    let reports = client::rectify_table(
        &url.as_str().into(),
        r,
        &table,
        &out,
        &RectifyOptions::default(),
        client::JobLimits::jobs(4),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(reports.iter().map(|r| r.file.rows).sum::<usize>(), 600);
    assert!(reports.iter().all(|r| r.job.execution > Duration::ZERO || r.job.total > Duration::ZERO));
    assert_same_files(&reference, &out);
    // Every image convention: the same file as the local run (fixed-shape outputs change
    // shape, decoded ones keep their struct, Hugging Face marks stn_image).
    for fixture in [
        "hf_bytes.parquet",
        "daft_image.parquet",
        "daft_fixed.parquet",
        "ray_variable.parquet",
        "spark_image.parquet",
    ] {
        let input = fixtures().join(fixture);
        let dir = tmp(&format!("in-process-{fixture}"));
        let (local, remote) = (dir.join("local.parquet"), dir.join("cluster.parquet"));
        rectify_table(rectifier(), &input, &local, &RectifyOptions::default(), &mut |_| {}).unwrap();
        let r = Arc::new(Rectifier::from_run(run_dir()).unwrap());
        client::rectify_table(
            &url.as_str().into(),
            r,
            &input,
            &remote,
            &RectifyOptions::default(),
            client::JobLimits::jobs(1),
            &mut |_| {},
        )
        .unwrap_or_else(|e| panic!("{fixture}: {e}"));
        assert!(std::fs::read(&local).unwrap() == std::fs::read(&remote).unwrap(), "{fixture}: same file");
    }
    drop(rt);
}

#[test]
fn real_processes_give_the_local_results_and_share_the_work() {
    let table = digits("real", 4, 150);
    let cluster = cluster("real", run_dir(), &[run_dir(), run_dir()], &[], &[]);
    let url = cluster.url();
    let rt = runtime();
    let q = query_of(&table);
    let result = rt.block_on(async {
        let ctx = client::connect(&url, Model::lazy(run_dir())).await?;
        let (rows, job) = client::collect_job(ctx.sql(&q).await?).await?;
        // stn_rectified: all three columns in one pass, the same values.
        let all = client::sql(
            &ctx,
            &format!(
                "SELECT id, s['stn_image'] AS r, s['stn_theta'] AS t FROM (SELECT id, stn_rectified(image) AS s FROM '{}/')",
                table.display()
            ),
        )
        .await?;
        Ok::<_, ClusterError>((rows, job, all))
    });
    let (got, job, all) = result.unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    let local = rows(&local_query(&q));
    assert_eq!(rows(&got), local, "same rows, same bytes of stn_image and stn_theta");
    assert_eq!(rows(&all), local, "stn_rectified gives the same values");
    let ran = rt.block_on(client::job_executors(&url, &client::cluster_config(), &job.unwrap())).unwrap();
    assert_eq!(ran.len(), 2, "both executors ran tasks: {ran:?}");

    // `stn rectify --table --cluster`: the same files as the local run.
    let reference = local_outputs(&table);
    let out = table.with_file_name("cli-out");
    let o = stn_rectify_on(&url, &table, &out, &["--json"]);
    assert!(o.status.success(), "{}\n{}", String::from_utf8_lossy(&o.stderr), cluster.logs());
    assert_same_files(&reference, &out);
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["rows"], 600);

    // `stn sql --cluster`, and COPY ... TO written by the executors.
    let copy = table.with_file_name("copied.parquet");
    let o = Command::new(bin_path("stn"))
        .args(["sql", "--model", &run_dir().display().to_string(), "--cluster", &url, "--json"])
        .arg(format!(
            "COPY (SELECT id, stn_theta(image, 'batch_size=7') AS t FROM '{}/') TO '{}'",
            table.display(),
            copy.display()
        ))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}\n{}", String::from_utf8_lossy(&o.stderr), cluster.logs());
    let (_, batches, _) = read_all(&copy);
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 600);
    // Bad options in a call are a clear error of the query.
    let o = Command::new(bin_path("stn"))
        .args(["sql", "--model", &run_dir().display().to_string(), "--cluster", &url])
        .arg(format!("SELECT stn_rectify(image, 'format=gif') FROM '{}/'", table.display()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("option `format`: png or jpeg, got `gif`"), "{err}");
    // Bound to loopback by default, and said nothing about exposure.
    assert!(!cluster.scheduler.log().contains("beyond this machine"));
    drop(cluster);
}

/// The Python that imports `imports` (`STN_PYTHON`, as `.ci/run` sets it, else `python3`), or
/// None, said on stderr, where it lacks them; in CI that is a failure instead.
fn python_with(imports: &str, what: &str) -> Option<String> {
    let py = std::env::var("STN_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py).args(["-c", &format!("import {imports}")]).status().is_ok_and(|s| s.success());
    if ok {
        return Some(py);
    }
    assert!(std::env::var_os("CI").is_none(), "CI must provide {what} (STN_PYTHON)");
    eprintln!("SKIPPED: no Python with {what} (set STN_PYTHON)");
    None
}

/// `tools/delta/delta_tool.py` with `args` and the environment `env`: its JSON line (Null when
/// it prints none).
fn delta_tool(py: &str, args: &[&str], env: &[(String, String)]) -> serde_json::Value {
    let tool = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/delta/delta_tool.py");
    let o = Command::new(py).arg(tool).args(args).envs(env.iter().cloned()).output().unwrap();
    assert!(o.status.success(), "delta_tool.py {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .map_or(serde_json::Value::Null, |l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
}

/// The rows of `SELECT id, stn_theta(image) AS t ...` as sorted (id, theta bits) pairs.
fn id_theta(batches: &[RecordBatch]) -> Vec<(i64, Vec<u32>)> {
    let mut out = Vec::new();
    for b in batches {
        let id = b.column_by_name("id").unwrap().as_primitive::<arrow_array::types::Int64Type>();
        let t = b.column_by_name("t").unwrap().as_fixed_size_list();
        for i in 0..b.num_rows() {
            let theta = t.value(i);
            let bits =
                theta.as_primitive::<arrow_array::types::Float32Type>().values().iter().map(|v| v.to_bits());
            out.push((id.value(i), bits.collect()));
        }
    }
    out.sort();
    out
}

#[test]
fn delta_tables_on_the_cluster_give_the_local_results() {
    let Some(py) = python_with("deltalake, pyroaring, pyarrow", "deltalake, pyroaring and pyarrow") else {
        return;
    };
    let dir = tmp("delta-cluster");
    // 200 RTS digits, Hugging Face layout (`image` a struct, so column mapping renames nested
    // fields too).
    let digits = dir.join("digits.parquet");
    let (_, test) = Dataset::embedded_split().unwrap();
    let d = Distortion::Rts.apply(&test.subset(0..200).unwrap(), 11).unwrap();
    write_dataset(&d, &digits, ExportLayout::HuggingFace, 50).unwrap();
    let reference = dir.join("reference.parquet");
    rectify_table(rectifier(), &digits, &reference, &RectifyOptions::default(), &mut |_| {}).unwrap();
    let rt = runtime();
    let url = rt.block_on(client::start_in_process(Model::lazy(run_dir()), 2, 1)).unwrap();
    let cluster_run = |table: &Path, out: &Path, opts: &RectifyOptions| {
        client::rectify_table(
            &url.as_str().into(),
            Arc::new(Rectifier::from_run(run_dir()).unwrap()),
            table,
            out,
            opts,
            client::JobLimits::jobs(2),
            &mut |_| {},
        )
    };
    let s = |p: &Path| p.display().to_string();
    // Tables written by deltalake, each with a deletion vector on its first data file: two
    // versions of 120 and 80 rows; column mapping (physical names, nested too); partitions by
    // label (the label only in the log).
    let cases: [(&str, &[&str], usize); 3] = [
        ("split", &["--split", "120", "--delete-rows", "0,5,7"], 197),
        ("mapped", &["--column-mapping", "--delete-rows", "1,2,3,199"], 196),
        ("partitioned", &["--partition-by", "label", "--delete-rows", "0,1"], 198),
    ];
    for (name, make, rows) in cases {
        let table = dir.join(name);
        let (t, d) = (s(&table), s(&digits));
        let mut args = vec!["make", t.as_str(), d.as_str()];
        args.extend_from_slice(make);
        delta_tool(&py, &args, &[]);
        // The table run: one output per data file, byte for byte the local run's (delta-rs's
        // own reader there), deleted rows left out.
        let (local, remote) = (dir.join(format!("{name}-local")), dir.join(format!("{name}-cluster")));
        rectify_table(rectifier(), &table, &local, &RectifyOptions::default(), &mut |_| {}).unwrap();
        let reports = cluster_run(&table, &remote, &RectifyOptions::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(reports.iter().map(|r| r.file.rows).sum::<usize>(), rows, "{name}");
        assert_same_files(&local, &remote);
        // Every row as the plain table's run rectified it.
        let cmp = delta_tool(&py, &["compare", &s(&remote), &s(&reference)], &[]);
        assert_eq!(cmp["rows"], rows, "{name}: {cmp}");
        assert_eq!(cmp["differ"], serde_json::json!([]), "{name}: {cmp}");
        // SQL on the cluster: the rows and thetas of the local SQL (delta-rs's table provider),
        // for the version before the deletion (200 rows); the version with the deletion
        // vector is refused, not read wrong.
        let before = if name == "split" { 1 } else { 0 };
        let q = format!("SELECT id, stn_theta(image) AS t FROM '{}@v{before}'", s(&table));
        let on_cluster = |q: &str| {
            rt.block_on(async {
                let ctx = client::connect(&url, Model::lazy(run_dir())).await?;
                client::sql(&ctx, q).await
            })
        };
        let got = on_cluster(&q).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(id_theta(&got).len(), 200, "{name}");
        assert_eq!(id_theta(&got), id_theta(&local_query(&q)), "{name}: SQL on the cluster");
        let e = on_cluster(&format!("SELECT count(*) FROM '{}'", s(&table))).unwrap_err().to_string();
        assert!(e.contains("deletion vectors") && e.contains("without --cluster"), "{name}: {e}");
        // Into a new Delta table from the cluster: one commit that deltalake reads back.
        let out = dir.join(format!("{name}-delta-out"));
        let create =
            RectifyOptions { delta_mode: Some(stn_table::delta::DeltaMode::Create), ..Default::default() };
        cluster_run(&table, &out, &create).unwrap_or_else(|e| panic!("{name}: {e}"));
        let back = delta_tool(&py, &["read", &s(&out)], &[]);
        assert_eq!((back["version"].as_i64(), back["rows"].as_u64()), (Some(0), Some(rows as u64)), "{back}");
        let cmp = delta_tool(&py, &["compare", &s(&out), &s(&reference)], &[]);
        assert_eq!(cmp["differ"], serde_json::json!([]), "{name}: {cmp}");
    }
    // Partition values and renamed columns come back as the table has them.
    let q = format!(
        "SELECT label, count(*) AS n FROM '{}@v0' GROUP BY label ORDER BY label",
        s(&dir.join("partitioned"))
    );
    let labels = |b: &[RecordBatch]| -> Vec<(i64, i64)> {
        b.iter()
            .flat_map(|b| {
                let l = b.column(0).as_primitive::<arrow_array::types::Int64Type>().clone();
                let n = b.column(1).as_primitive::<arrow_array::types::Int64Type>().clone();
                (0..b.num_rows()).map(move |i| (l.value(i), n.value(i)))
            })
            .collect()
    };
    let got = rt.block_on(async {
        let ctx = client::connect(&url, Model::lazy(run_dir())).await?;
        client::sql(&ctx, &q).await
    });
    let got = labels(&got.unwrap());
    assert_eq!(got.len(), 10, "{got:?}");
    assert_eq!(got, labels(&local_query(&q)));
    let split = dir.join("split");
    // A failed run commits nothing: appending to a table of other columns is refused before
    // anything is written.
    let append =
        RectifyOptions { delta_mode: Some(stn_table::delta::DeltaMode::Append), ..Default::default() };
    let e = cluster_run(&split, &split, &append).unwrap_err().to_string();
    assert!(e.contains("other columns"), "{e}");
    let versions = std::fs::read_dir(split.join("_delta_log")).unwrap().count();
    assert_eq!(versions, 3, "no version added");
    drop(rt);
}

/// The Python with the ADBC Flight SQL driver.
fn adbc_python() -> Option<String> {
    python_with("adbc_driver_flightsql, pyarrow", "adbc-driver-flightsql")
}

#[test]
fn flight_sql_clients_query_the_image_functions() {
    let Some(py) = adbc_python() else { return };
    let table = digits("flight-sql", 2, 100);
    let cluster = cluster("flight-sql", run_dir(), &[run_dir()], &["--flight-sql"], &[]);
    let endpoint = cluster.url().replace("df://", "grpc://");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/flightsql/adbc_query.py");
    let out = table.with_file_name("adbc.parquet");
    let o = Command::new(&py)
        .arg(&script)
        .args([&endpoint, &out.display().to_string()])
        .arg(format!("CREATE EXTERNAL TABLE imgs STORED AS PARQUET LOCATION '{}/'", table.display()))
        .arg("SELECT id, stn_rectify(image) AS r, stn_theta(image) AS t FROM imgs")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}\n{}", String::from_utf8_lossy(&o.stderr), cluster.logs());
    let (_, got, _) = read_all(&out);
    let local = local_query(&format!(
        "SELECT id, stn_rectify(image) AS r, stn_theta(image) AS t FROM '{}/'",
        table.display()
    ));
    assert_eq!(rows(&got), rows(&local), "the same rows through ADBC as locally");
    // A bad call is the client's error, with the reason.
    let o = Command::new(&py)
        .arg(&script)
        .args([&endpoint, &out.display().to_string()])
        .arg("SELECT stn_rectify(image, 'format=gif') FROM imgs") // the same (anonymous) session
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("png or jpeg, got `gif`"), "{err}");
    drop(cluster);
}

/// The Python with `cryptography` (certificates) and the ADBC Flight SQL driver.
fn tls_python() -> Option<String> {
    python_with("cryptography, adbc_driver_flightsql, pyarrow", "cryptography and adbc-driver-flightsql")
}

/// A CA with a node and a client certificate, made by `tools/cluster/make_certs.py` in `dir`.
fn make_certs(py: &str, dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/cluster/make_certs.py");
    let o = Command::new(py).arg(script).arg(dir).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// What a plaintext HTTP/2 client gets from `port` on 127.0.0.1: the first bytes of the answer
/// to the connection preface and an empty SETTINGS frame (an HTTP/2 server answers with its
/// own SETTINGS frame; a TLS server with an alert, or by closing).
fn plaintext_h2_answer(port: u16) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").unwrap();
    let mut got = Vec::new();
    let _ = s.take(64).read_to_end(&mut got);
    got
}

/// Every file under `dir` (the executors' work folders).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn a_tls_cluster_admits_only_its_own_and_rectifies_every_row() {
    use stn_cluster::tls::TlsArgs;
    let Some(py) = tls_python() else { return };
    let table = digits("tls", 3, 100);
    let certs = tmp("tls-certs");
    let (ours, stranger) = (certs.join("ours"), certs.join("stranger"));
    make_certs(&py, &ours);
    make_certs(&py, &stranger);
    let files = |d: &Path, cert: &str| TlsArgs {
        tls_cert: Some(d.join(format!("{cert}.pem"))),
        tls_key: Some(d.join(format!("{cert}-key.pem"))),
        tls_ca: Some(d.join("ca.pem")),
    };
    let dir = tmp("cluster-tls");
    let mut cfg = LocalClusterConfig::new(bin_path("stn-scheduler").parent().unwrap(), run_dir(), 2, 1, &dir);
    cfg.tls = Some(files(&ours, "node"));
    cfg.scheduler_args = vec!["--flight-sql".into()];
    let cluster = LocalCluster::start(&cfg).unwrap_or_else(|e| panic!("{e}"));
    let url = cluster.url();
    let s = |p: &Option<PathBuf>| p.as_ref().unwrap().display().to_string();
    let tls_flags = |t: &TlsArgs| {
        vec![
            "--tls-cert".into(),
            s(&t.tls_cert),
            "--tls-key".into(),
            s(&t.tls_key),
            "--tls-ca".into(),
            s(&t.tls_ca),
        ]
    };

    // Every port speaks TLS only: no plaintext HTTP/2 (gRPC, Flight) or HTTP (REST) answer.
    let client_tls = files(&ours, "client").load().unwrap();
    let executors = stn_cluster::local::registered_executors_over(cluster.port, client_tls.as_ref()).unwrap();
    assert_eq!(executors.len(), 2, "{executors:?}");
    let mut ports = vec![cluster.port];
    ports.extend(executors.iter().map(|e| e["port"].as_u64().unwrap() as u16));
    for port in ports {
        let got = plaintext_h2_answer(port);
        assert!(!(got.len() >= 9 && got[3] == 0x04), "port {port} answered HTTP/2 in plaintext: {got:?}");
        assert!(got.is_empty() || got[0] == 0x15, "port {port}: a TLS alert or nothing, got {got:?}");
    }
    assert!(stn_cluster::local::registered_executors(cluster.port).is_none(), "REST without TLS");
    assert!(
        stn_cluster::local::registered_executors_over(
            cluster.port,
            files(&stranger, "client").load().unwrap().as_ref()
        )
        .is_none(),
        "REST with a certificate of another CA"
    );

    // Clients without TLS, or with a certificate of another CA, are refused with the reason.
    let sql = |flags: &[String]| {
        Command::new(bin_path("stn"))
            .args(["sql", "--model", &run_dir().display().to_string(), "--cluster", &url])
            .args(flags)
            .arg(format!("SELECT count(*) AS n FROM '{}/'", table.display()))
            .output()
            .unwrap()
    };
    let o = sql(&[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("give --tls-cert, --tls-key and --tls-ca"), "{err}");
    let mut theirs = files(&stranger, "client");
    theirs.tls_ca = files(&ours, "client").tls_ca;
    let o = sql(&tls_flags(&theirs));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("a TLS connection failed"),
        "their client certificate: {err}"
    );
    let o = sql(&tls_flags(&files(&stranger, "client")));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("invalid peer certificate"), "their CA: {err}");
    let o = sql(&tls_flags(&files(&ours, "client")));
    assert!(o.status.success(), "{}\n{}", String::from_utf8_lossy(&o.stderr), cluster.logs());
    assert!(String::from_utf8_lossy(&o.stdout).contains("300"), "{}", String::from_utf8_lossy(&o.stdout));

    // A table run over TLS: every row, the same files as the local run; then the executors'
    // work folders hold nothing of the job.
    let reference = local_outputs(&table);
    let out = table.with_file_name("tls-out");
    let flags = tls_flags(&files(&ours, "client"));
    let o = stn_rectify_on(&url, &table, &out, &flags.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}\n{}", String::from_utf8_lossy(&o.stderr), cluster.logs());
    assert_same_files(&reference, &out);
    let start = std::time::Instant::now();
    let mut left = Vec::new();
    for i in 0..2 {
        left.extend(files_under(&dir.join(format!("work-{i}"))));
    }
    while !left.is_empty() && start.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(200));
        left = (0..2).flat_map(|i| files_under(&dir.join(format!("work-{i}")))).collect();
    }
    assert!(left.is_empty(), "the job's files stay on the executors: {left:?}");

    // A Flight SQL client (ADBC) over mutual TLS gets the same rows; without a certificate it
    // gets nothing.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/flightsql/adbc_query.py");
    let adbc = |endpoint: &str, t: Option<&TlsArgs>| {
        let mut c = Command::new(&py);
        c.arg(&script).args([endpoint, &table.with_file_name("adbc.parquet").display().to_string()]);
        c.arg(format!("CREATE EXTERNAL TABLE imgs STORED AS PARQUET LOCATION '{}/'", table.display()));
        c.arg("SELECT id, stn_rectify(image) AS r, stn_theta(image) AS t FROM imgs");
        if let Some(t) = t {
            c.env("STN_TLS_CA", s(&t.tls_ca))
                .env("STN_TLS_CERT", s(&t.tls_cert))
                .env("STN_TLS_KEY", s(&t.tls_key));
        }
        c.output().unwrap()
    };
    let tls_endpoint = url.replace("df://", "grpc+tls://");
    let o = adbc(&tls_endpoint, Some(&files(&ours, "client")));
    assert!(o.status.success(), "{}\n{}", String::from_utf8_lossy(&o.stderr), cluster.logs());
    let (_, got, _) = read_all(&table.with_file_name("adbc.parquet"));
    let local = local_query(&format!(
        "SELECT id, stn_rectify(image) AS r, stn_theta(image) AS t FROM '{}/'",
        table.display()
    ));
    assert_eq!(rows(&got), rows(&local), "the same rows through ADBC over TLS");
    // Flight SQL's job leaves its results to Ballista's delayed clean-up: the folders checked
    // above are where the jobs write.
    let work: Vec<_> = (0..2).flat_map(|i| files_under(&dir.join(format!("work-{i}")))).collect();
    assert!(work.iter().any(|f| f.extension().is_some_and(|e| e == "arrow")), "{work:?}");
    let mut no_cert = files(&ours, "client");
    (no_cert.tls_cert, no_cert.tls_key) = (None, None);
    let c = no_cert.tls_ca.clone();
    let o = Command::new(&py)
        .arg(&script)
        .args([&tls_endpoint, &table.with_file_name("adbc2.parquet").display().to_string(), "SELECT 1"])
        .env("STN_TLS_CA", c.unwrap())
        .output()
        .unwrap();
    assert!(!o.status.success(), "a Flight SQL client without a certificate is refused");
    let o = adbc(&url.replace("df://", "grpc://"), None);
    assert!(!o.status.success(), "a plaintext Flight SQL client is refused");
    assert!(!cluster.scheduler.log().contains("beyond this machine"));
    drop(cluster);
}

/// `tools/crypto/encrypted_tables.py read FILE`, with `keys` (aes-gcm wrapping) or without: the
/// rows and a hash of each column as pyarrow reads them, or pyarrow's error.
fn pyarrow_read(py: &str, file: &Path, keys: Option<&Path>) -> Result<serde_json::Value, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/crypto/encrypted_tables.py");
    let mut c = Command::new(py);
    c.arg(script).arg("read").arg(file);
    if let Some(k) = keys {
        c.arg("--keys").arg(k).args(["--wrapping", "aes-gcm"]);
    }
    let o = c.output().unwrap();
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&o.stdout).unwrap())
}

#[test]
fn encrypted_tables_on_a_cluster_stay_encrypted_and_never_downgrade() {
    use stn_cluster::tls::TlsArgs;
    let Some(py) = tls_python() else { return };
    let table = digits("enc", 1, 120);
    let dir = table.parent().unwrap().to_path_buf();
    let certs = dir.join("certs");
    make_certs(&py, &certs);
    // Master keys of IDs stn has never seen, random, in the JSON of --keys.
    let keys = dir.join("keys.json");
    let o = Command::new(&py)
        .arg("-c")
        .arg(
            "import base64, json, os, sys; k = {i: os.urandom(32) for i in ['ward-7', 'scans', 'labels']}; \
             json.dump({i: base64.b64encode(v).decode() for i, v in k.items()}, open(sys.argv[1], 'w')); \
             print(json.dumps([base64.b64encode(v).decode() for v in k.values()] + [v.hex() for v in k.values()]))",
        )
        .arg(&keys)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Each key in base64 and in hex, to look for in every log.
    let secrets: Vec<String> = serde_json::from_slice(&o.stdout).unwrap();
    // pyarrow writes the table encrypted: an encrypted footer (double wrapping), and a
    // plaintext footer with the image column under its own key.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/crypto/encrypted_tables.py");
    let o = Command::new(&py)
        .arg(&script)
        .arg("write")
        .arg(table.join("part-0.parquet"))
        .arg(dir.join("pyarrow"))
        .arg(&keys)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let input = dir.join("encrypted");
    std::fs::create_dir_all(&input).unwrap();
    for name in ["aesgcm_double_encfooter", "aesgcm_single_plainfooter"] {
        let f = format!("{name}.parquet");
        std::fs::copy(dir.join("pyarrow").join(&f), input.join(&f)).unwrap();
    }

    let mut cfg = LocalClusterConfig::new(
        bin_path("stn-scheduler").parent().unwrap(),
        run_dir(),
        2,
        1,
        &dir.join("tls"),
    );
    let node = TlsArgs {
        tls_cert: Some(certs.join("node.pem")),
        tls_key: Some(certs.join("node-key.pem")),
        tls_ca: Some(certs.join("ca.pem")),
    };
    cfg.tls = Some(node);
    // Logging at debug level (Ballista prints plans and task settings there).
    cfg.scheduler_args = vec!["--log-level-setting".into(), "debug".into()];
    cfg.executor_args =
        vec!["--keys".into(), keys.display().to_string(), "--log-level-setting".into(), "debug".into()];
    let tls_cluster = LocalCluster::start(&cfg).unwrap_or_else(|e| panic!("{e}"));
    let url = tls_cluster.url();
    let mut client: Vec<String> = ["client.pem", "client-key.pem", "ca.pem"]
        .iter()
        .zip(["--tls-cert", "--tls-key", "--tls-ca"])
        .flat_map(|(f, flag)| [flag.to_string(), certs.join(f).display().to_string()])
        .collect();
    client.extend(["--keys".into(), keys.display().to_string()]);
    let stn = |args: &[&str], more: &[String]| {
        Command::new(bin_path("stn")).args(args).args(more).output().unwrap()
    };
    let model = run_dir().display().to_string();

    // The table rectified on the cluster: encrypted outputs that pyarrow reads, with the keys
    // only, as the same rows as the local run's.
    let local = dir.join("local-out");
    let o = stn(
        &[
            "rectify",
            "--model",
            &model,
            "--table",
            &input.display().to_string(),
            "--out",
            &local.display().to_string(),
        ],
        &client[6..],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = dir.join("cluster-out");
    let o = stn(
        &[
            "rectify",
            "--model",
            &model,
            "--table",
            &input.display().to_string(),
            "--out",
            &out.display().to_string(),
            "--cluster",
            &url,
        ],
        &client,
    );
    assert!(o.status.success(), "{}\n{}", String::from_utf8_lossy(&o.stderr), tls_cluster.logs());
    for name in ["aesgcm_double_encfooter", "aesgcm_single_plainfooter"] {
        let f = out.join(format!("{name}.parquet"));
        assert!(std::fs::read(&f).unwrap().ends_with(b"PARE"), "{name}: an encrypted footer");
        let got = pyarrow_read(&py, &f, Some(&keys)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = pyarrow_read(&py, &local.join(format!("{name}.parquet")), Some(&keys)).unwrap();
        assert_eq!(got, want, "{name}: the cluster's rows are the local run's");
        assert_eq!(got["rows"], 120);
        let e = pyarrow_read(&py, &f, None).unwrap_err();
        assert!(e.contains("ncrypt") || e.contains("decrypt"), "{name}: pyarrow without keys: {e}");
    }

    // COPY ... TO on the cluster: the executors write it encrypted under the named master key.
    let copy = dir.join("copy.parquet");
    let sql = |q: String, more: &[String]| {
        let mut flags = client.clone();
        flags.extend(more.iter().cloned());
        stn(&["sql", "--model", &model, "--cluster", &url], &[flags, vec![q]].concat())
    };
    let q = format!(
        "COPY (SELECT id, stn_theta(image) AS t FROM '{}/') TO '{}'",
        input.display(),
        copy.display()
    );
    let o = sql(q.clone(), &["--encrypt".into(), "ward-7".into()]);
    assert!(o.status.success(), "{}\n{}", String::from_utf8_lossy(&o.stderr), tls_cluster.logs());
    assert!(std::fs::read(&copy).unwrap().ends_with(b"PARE"), "COPY's output has an encrypted footer");
    assert_eq!(pyarrow_read(&py, &copy, Some(&keys)).unwrap()["rows"], 240);
    assert!(pyarrow_read(&py, &copy, None).is_err(), "pyarrow without keys reads nothing");
    // No master key named: refused, nothing written. A plaintext format: refused.
    let copy2 = dir.join("copy2.parquet");
    let o = sql(q.replace(&copy.display().to_string(), &copy2.display().to_string()), &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--encrypt"), "{err}");
    assert!(!copy2.exists(), "nothing written");
    let o = sql(
        format!("COPY (SELECT id FROM '{}/') TO '{}'", input.display(), dir.join("ids.csv").display()),
        &[],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("plaintext"), "{err}");
    assert!(!dir.join("ids.csv").exists());
    let logs = tls_cluster.logs();
    assert!(logs.contains("DEBUG"), "the processes logged at debug level");
    for k in &secrets {
        assert!(!logs.to_lowercase().contains(&k.to_lowercase()), "a master key in the cluster's logs");
    }
    drop(tls_cluster);

    // The downgrade Ballista alone would make: an executor without keys writes no plaintext
    // for a client with keys; it refuses, and nothing is written.
    let cluster = cluster("enc-nokeys", run_dir(), &[run_dir()], &[], &[]);
    let url = cluster.url();
    let plain_copy = dir.join("downgraded.parquet");
    let o = stn(
        &[
            "sql",
            "--model",
            &model,
            "--cluster",
            &url,
            "--keys",
            &keys.display().to_string(),
            "--encrypt",
            "ward-7",
        ],
        &[format!(
            "COPY (SELECT id, stn_theta(image) AS t FROM '{}/') TO '{}'",
            table.display(),
            plain_copy.display()
        )],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("this executor has no keys"), "{err}\n{}", cluster.logs());
    assert!(!plain_copy.exists(), "no plaintext output");
    // Nor does it read an encrypted table.
    let o = stn(
        &["sql", "--model", &model, "--cluster", &url, "--keys", &keys.display().to_string()],
        &[format!("SELECT count(*) FROM '{}/'", input.join("aesgcm_double_encfooter.parquet").display())],
    );
    assert!(!o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    drop(cluster);
}

#[test]
fn the_cluster_reads_tables_in_s3() {
    let Some(py) = python_with("moto.server, boto3", "moto[server] and boto3") else { return };
    let table = digits("s3", 2, 100);
    let tool = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/s3/s3_tool.py");
    let port = free_port().unwrap();
    /// The S3 server, killed when dropped (also when an assertion fails).
    struct Server(std::process::Child);
    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let server = Server(
        Command::new(&py)
            .arg(&tool)
            .args(["serve", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(30), "the S3 server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The executors' and the client's credentials: their own environment, never the plan.
    let env: Vec<(String, String)> = [
        ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}")),
        ("AWS_ALLOW_HTTP", "true".into()),
        ("AWS_ACCESS_KEY_ID", "cluster-key".into()),
        ("AWS_SECRET_ACCESS_KEY", "cluster-secret-Hq2".into()),
        ("AWS_REGION", "us-east-1".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let run_py = |args: &[&str]| {
        let o = Command::new(&py).arg(&tool).args(args).envs(env.iter().cloned()).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    run_py(&["mkbucket", "tables"]);
    for f in 0..2 {
        let name = format!("part-{f}.parquet");
        run_py(&["put", &table.join(&name).display().to_string(), &format!("s3://tables/digits/{name}")]);
    }
    let mut cfg = LocalClusterConfig::new(
        bin_path("stn-scheduler").parent().unwrap(),
        run_dir(),
        2,
        1,
        &tmp("cluster-s3"),
    );
    cfg.env = env.clone();
    let cluster = LocalCluster::start(&cfg).unwrap_or_else(|e| panic!("{e}"));
    let q = |from: &str| format!("SELECT id, stn_theta(image) AS t FROM '{from}' ORDER BY id");
    let sql = |more: &[&str], query: String| {
        Command::new(bin_path("stn"))
            .args(["sql", "--model", &run_dir().display().to_string(), "--json"])
            .args(more)
            .arg(query)
            .envs(env.iter().cloned())
            .output()
            .unwrap()
    };
    let local = sql(&[], q(&format!("{}/", table.display())));
    assert!(local.status.success(), "{}", String::from_utf8_lossy(&local.stderr));
    let url = cluster.url();
    let remote = sql(&["--cluster", &url], q("s3://tables/digits/"));
    assert!(remote.status.success(), "{}\n{}", String::from_utf8_lossy(&remote.stderr), cluster.logs());
    assert_eq!(String::from_utf8_lossy(&remote.stdout).lines().count(), 200);
    // The two files repeat ids: the rows compared as sorted lines.
    let lines = |o: &std::process::Output| {
        let mut v: Vec<String> = String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect();
        v.sort();
        v
    };
    assert_eq!(lines(&remote), lines(&local), "the cluster reads the table in S3 as the local folder");
    // COPY ... TO S3 by the executors: pyarrow reads the object as the local COPY's file; the
    // same target again is refused and left as it was.
    let copy =
        |to: &str| format!("COPY (SELECT id, stn_theta(image) AS t FROM 's3://tables/digits/') TO '{to}'");
    let local_copy = table.with_file_name("copy.parquet");
    let o = sql(&[], copy(&local_copy.display().to_string()));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = sql(&["--cluster", &url], copy("s3://tables/out/theta.parquet"));
    assert!(o.status.success(), "{}\n{}", String::from_utf8_lossy(&o.stderr), cluster.logs());
    let read = |target: &str| {
        let o =
            Command::new(&py).arg(&tool).args(["read", target]).envs(env.iter().cloned()).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let want = read(&local_copy.display().to_string());
    assert_eq!(read("s3://tables/out/theta.parquet"), want, "the executors' object is the local COPY's rows");
    let o = sql(&["--cluster", &url], copy("s3://tables/out/theta.parquet"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("already exists"), "{err}");
    assert_eq!(read("s3://tables/out/theta.parquet"), want, "unchanged");
    // `stn rectify --table s3://... --cluster`: the executors read the table in S3, the client
    // uploads the outputs there; pyarrow reads them through S3 as the local run's files.
    let rectify = |more: &[&str], from: &str, to: &str| {
        Command::new(bin_path("stn"))
            .args(["rectify", "--model", &run_dir().display().to_string(), "--table", from, "--out", to])
            .args(more)
            .envs(env.iter().cloned())
            .output()
            .unwrap()
    };
    let local_out = table.with_file_name("rectified-local");
    let o = rectify(&["--json"], &table.display().to_string(), &local_out.display().to_string());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let digest = |o: &std::process::Output| {
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        doc["output_digest"].as_str().unwrap().to_string()
    };
    let local_digest = digest(&o);
    let o = rectify(&["--cluster", &url, "--json"], "s3://tables/digits/", "s3://tables/rectified/");
    assert!(o.status.success(), "{}\n{}", String::from_utf8_lossy(&o.stderr), cluster.logs());
    assert_eq!(
        digest(&o),
        local_digest,
        "two executors rectify the rows to the local run's pixels and thetas"
    );
    for f in 0..2 {
        let name = format!("part-{f}.parquet");
        assert_eq!(
            read(&format!("s3://tables/rectified/{name}")),
            read(&local_out.join(&name).display().to_string()),
            "{name}: the cluster's object is the local run's file"
        );
    }
    // A re-run skips the complete outputs.
    let o = rectify(&["--cluster", &url], "s3://tables/digits/", "s3://tables/rectified/");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.matches("skipped").count() == 2, "{err}");
    // A Delta table in S3 written by deltalake, with a deletion vector, rectified by the cluster
    // into a new Delta table in S3 in one commit: deltalake reads it back through S3 with the
    // local run's rows, the deleted ones left out.
    if python_with("deltalake, pyroaring", "deltalake and pyroaring").is_some() {
        let part0 = table.join("part-0.parquet").display().to_string();
        delta_tool(&py, &["make", "s3://tables/lake", &part0, "--delete-rows", "0,1,2"], &env);
        let o = rectify(
            &["--cluster", &url, "--mode", "create"],
            "s3://tables/lake",
            "s3://tables/lake-rectified",
        );
        assert!(o.status.success(), "{}\n{}", String::from_utf8_lossy(&o.stderr), cluster.logs());
        let back = delta_tool(&py, &["read", "s3://tables/lake-rectified"], &env);
        assert_eq!((back["version"].as_i64(), back["rows"].as_u64()), (Some(0), Some(97)), "{back}");
        let reference = local_out.join("part-0.parquet").display().to_string();
        let cmp = delta_tool(&py, &["compare", "s3://tables/lake-rectified", &reference], &env);
        assert_eq!(cmp["differ"], serde_json::json!([]), "{cmp}");
        assert_eq!(cmp["ids"].as_array().map(Vec::len), Some(97), "{cmp}");
    }
    assert!(!cluster.logs().contains("cluster-secret-Hq2"), "no secret in the cluster's logs");
    drop(server);
    drop(cluster);
}

/// A loopback cluster that notices a dead executor within seconds.
fn fragile_cluster(name: &str) -> LocalCluster {
    cluster(
        name,
        run_dir(),
        &[run_dir(), run_dir()],
        &["--executor-timeout-seconds", "4", "--expire-dead-executor-interval-seconds", "1"],
        &["--executor-heartbeat-interval-seconds", "1"],
    )
}

#[test]
fn an_executor_killed_in_the_middle_of_a_query() {
    let table = big_digits("killed-sql", 8, 60, 8);
    let q = query_of(&table);
    let cluster = Arc::new(Mutex::new(fragile_cluster("killed-sql")));
    let url = cluster.lock().unwrap().url();
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let (q, url) = (q.clone(), url.clone());
        std::thread::spawn(move || {
            let rt = runtime();
            let r = rt.block_on(async {
                let ctx = client::connect(&url, Model::lazy(run_dir())).await?;
                client::sql(&ctx, &q).await
            });
            let _ = tx.send(r.map_err(|e| e.to_string()));
        });
    }
    // Kill executor 1 once the job has finished its first task (more are queued or running).
    let start = std::time::Instant::now();
    loop {
        let done = cluster.lock().unwrap().logs().contains("Finished task");
        if done || start.elapsed() > Duration::from_secs(60) {
            assert!(done, "no task finished within 60 s\n{}", cluster.lock().unwrap().logs());
            cluster.lock().unwrap().kill_executor(1);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let result = rx.recv_timeout(Duration::from_secs(180)).unwrap_or_else(|_| {
        panic!("the query neither finished nor failed in 180 s\n{}", cluster.lock().unwrap().logs())
    });
    // Surviving a dead executor is required: the scheduler reruns its tasks on the other one.
    let got = result.unwrap_or_else(|e| {
        panic!("the query failed after an executor was killed: {e}\n{}", cluster.lock().unwrap().logs())
    });
    eprintln!(
        "executor killed mid-query: the query completed with {} rows",
        got.iter().map(|b| b.num_rows()).sum::<usize>()
    );
    assert_eq!(rows(&got), rows(&local_query(&q)), "every row, the same values");
}

#[test]
fn an_executor_killed_in_the_middle_of_a_table_run() {
    let table = big_digits("killed-table", 8, 60, 8);
    let reference = local_outputs(&table);
    let cluster = Arc::new(Mutex::new(fragile_cluster("killed-table")));
    let url = cluster.lock().unwrap().url();
    let out = table.with_file_name("cluster-out");
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let (cluster, out, table, url) = (cluster.clone(), out.clone(), table.clone(), url.clone());
        std::thread::spawn(move || {
            let mut killed = false;
            let mut events = |e: Event<'_>| match (e, killed) {
                (Event::FileDone(_), false) => {
                    // The first file is done, others are running on both executors: kill one.
                    killed = true;
                    cluster.lock().unwrap().kill_executor(1);
                }
                (Event::Retry { file, attempt, attempts, reason }, _) => {
                    // Whether a job is lost depends on where it was when the executor died.
                    eprintln!("retry: {}: {reason} (attempt {attempt} of {attempts})", file.display())
                }
                _ => {}
            };
            let r = Arc::new(Rectifier::from_run(run_dir()).unwrap());
            let result = client::rectify_table(
                &url.as_str().into(),
                r,
                &table,
                &out,
                &RectifyOptions::default(),
                client::JobLimits::jobs(2),
                &mut events,
            );
            let _ = tx.send(result.map(|r| r.len()).map_err(|e| e.to_string()));
        });
    }
    let result = rx.recv_timeout(Duration::from_secs(180)).unwrap_or_else(|_| {
        panic!("the run neither finished nor failed in 180 s\n{}", cluster.lock().unwrap().logs())
    });
    assert!(cluster.lock().unwrap().executors[1].is_none(), "an executor was killed during the run");
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains("stn-partial")), "no partial output: {names:?}");
    let files = result.unwrap_or_else(|e| {
        panic!(
            "the run failed after an executor was killed ({} of 8 files written): {e}\n{}",
            names.len(),
            cluster.lock().unwrap().logs()
        )
    });
    eprintln!("executor killed mid-run: the run completed ({files} files) on the remaining executor");
    assert_same_files(&reference, &out);
}

#[test]
fn listening_beyond_loopback_is_refused_without_tls_or_insecure() {
    for program in ["stn-scheduler", "stn-executor"] {
        let o = Command::new(bin_path(program))
            .args(["--model", &run_dir().display().to_string(), "--bind-host", "0.0.0.0", "--bind-port"])
            .arg(free_port().unwrap().to_string())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{program}: {err}");
        assert!(
            err.contains("refused") && err.contains("--insecure") && err.contains("without TLS"),
            "{program}: {err}"
        );
    }
}

#[test]
fn model_folder_missing_on_an_executor() {
    // At start-up: the executor refuses to start, naming the folder.
    let missing = tmp("no-model").join("runs/none");
    let o = Command::new(bin_path("stn-executor"))
        .args([
            "--model",
            &missing.display().to_string(),
            "--scheduler-port",
            &free_port().unwrap().to_string(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains(&missing.display().to_string()) && err.contains("no such folder"), "{err}");
    let not_a_run = tmp("not-a-run");
    let o = Command::new(bin_path("stn-scheduler"))
        .args(["--model", &not_a_run.display().to_string(), "--bind-port", &free_port().unwrap().to_string()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("not a run folder (no model.stn)"), "{err}");

    // Gone by the time a query needs it: the query fails, naming the folder and the host.
    let copy = tmp("model-copy").join("run");
    std::fs::create_dir_all(&copy).unwrap();
    for e in std::fs::read_dir(run_dir()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), copy.join(e.file_name())).unwrap();
    }
    let table = digits("model-gone", 2, 50);
    let cluster = cluster("model-gone", run_dir(), &[&copy], &["--task-max-failures", "1"], &[]);
    std::fs::remove_dir_all(&copy).unwrap();
    let q = format!("SELECT stn_theta(image) AS t FROM '{}/'", table.display());
    let rt = runtime();
    let e = rt
        .block_on(async {
            let ctx = client::connect(&cluster.url(), Model::lazy(run_dir())).await?;
            client::sql(&ctx, &q).await
        })
        .expect_err("the executor has no model");
    let msg = e.to_string();
    assert!(
        msg.contains("cannot load the model from") && msg.contains("model-copy"),
        "{msg}\n{}",
        cluster.logs()
    );
}

#[test]
fn rows_and_options_survive_any_batching() {
    // The same table through the in-process cluster with small batches and a tiny batch size
    // in the call: the same theta as the local run.
    let table = digits("batching", 2, 40);
    let rt = runtime();
    let url = rt.block_on(client::start_in_process(Model::lazy(run_dir()), 1, 2)).unwrap();
    let q = |opts: &str| {
        format!("SELECT id, stn_theta(image{opts}) AS t FROM '{}/' ORDER BY id", table.display())
    };
    let got = rt
        .block_on(async {
            let ctx = client::connect(&url, Model::lazy(run_dir())).await?;
            client::sql(&ctx, &q(", 'batch_size=3'")).await
        })
        .unwrap();
    let thetas = |b: &[RecordBatch]| {
        let mut m: BTreeMap<i64, Vec<Vec<f32>>> = BTreeMap::new();
        for b in b {
            let id = b.column(0).as_primitive::<arrow_array::types::Int64Type>();
            let t = b.column(1).as_fixed_size_list();
            for i in 0..b.num_rows() {
                let v = t.value(i).as_primitive::<arrow_array::types::Float32Type>().values().to_vec();
                m.entry(id.value(i)).or_default().push(v);
            }
        }
        for v in m.values_mut() {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        }
        m
    };
    assert_eq!(thetas(&got), thetas(&local_query(&q(""))));
    assert_eq!(got.iter().map(|b| b.num_rows()).sum::<usize>(), 80);
}

#[test]
fn a_stuck_job_fails_at_its_deadline_and_is_cancelled() {
    // One executor, killed and expired: jobs are accepted and then wait for an executor
    // forever. With a deadline, the run stops with that error and leaves nothing.
    let table = digits("stuck", 1, 40);
    let mut c = cluster(
        "stuck",
        run_dir(),
        &[run_dir()],
        &["--executor-timeout-seconds", "2", "--expire-dead-executor-interval-seconds", "1"],
        &["--executor-heartbeat-interval-seconds", "1"],
    );
    c.kill_executor(0);
    let start = std::time::Instant::now();
    while registered_count(c.port) > 0 && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let url = c.url();
    let out = table.with_file_name("stuck-out");
    let r = Arc::new(Rectifier::from_run(run_dir()).unwrap());
    let t = std::time::Instant::now();
    let e = client::rectify_table(
        &url.as_str().into(),
        r,
        &table,
        &out,
        &RectifyOptions::default(),
        client::JobLimits { timeout: Some(Duration::from_secs(3)), ..client::JobLimits::jobs(1) },
        &mut |_| {},
    )
    .unwrap_err();
    let took = t.elapsed();
    assert!(matches!(e, ClusterError::Timeout { .. }), "{e}");
    assert!(
        e.to_string().contains("did not finish within 3 s") && e.to_string().contains("was cancelled"),
        "{e}"
    );
    assert!(took < Duration::from_secs(30), "the deadline holds: {took:?}");
    let left: Vec<_> =
        std::fs::read_dir(&out).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "nothing written: {left:?}");
    // The same for a query.
    let rt = runtime();
    let e = rt
        .block_on(async {
            let config = client::deadline_config(client::cluster_config());
            let ctx = client::connect_with(&url, Model::lazy(run_dir()), config).await?;
            client::sql_within(&ctx, &url, &query_of(&table), Some(Duration::from_secs(2))).await
        })
        .unwrap_err();
    assert!(matches!(e, ClusterError::Timeout { .. }) && e.to_string().contains("was cancelled"), "{e}");
    eprintln!("a stuck job: {e}");
}

fn registered_count(port: u16) -> usize {
    stn_cluster::local::registered_executors(port).map_or(usize::MAX, |v| v.len())
}
