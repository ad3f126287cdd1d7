//! `kill -9` anywhere, then a re-run: for `stn rectify` (files and a folder of tables), `stn
//! augment` (files and a table) and `stn train` (then `--resume`), each killed at
//! `STN_KILL_POINTS` (default 20) points spread over an uninterrupted run's duration, re-run to
//! the end, and compared with the uninterrupted run: the same files, byte for byte (the
//! training metrics without their timings), no row lost or duplicated, no stray file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::cli::{s, tmp};

fn stn(args: &[String]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_stn")).args(args).output().expect("run stn")
}

fn points() -> usize {
    std::env::var("STN_KILL_POINTS").ok().and_then(|v| v.parse().ok()).unwrap_or(20)
}

/// Every file under `dir` (relative name -> bytes), after `normalize`.
pub(crate) fn snapshot(
    dir: &Path,
    normalize: &dyn Fn(&str, Vec<u8>) -> Vec<u8>,
) -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let name = p.strip_prefix(dir).unwrap().display().to_string();
                let bytes = std::fs::read(&p).unwrap();
                m.insert(name.clone(), normalize(&name, bytes));
            }
        }
    }
    m
}

fn differences(a: &BTreeMap<String, Vec<u8>>, b: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    let mut d = Vec::new();
    for k in a.keys().chain(b.keys()).collect::<std::collections::BTreeSet<_>>() {
        match (a.get(k), b.get(k)) {
            (Some(x), Some(y)) if x == y => {}
            (Some(_), Some(_)) => d.push(format!("{k} differs")),
            (Some(_), None) => d.push(format!("{k} missing")),
            (None, Some(_)) => d.push(format!("{k} is extra")),
            (None, None) => {}
        }
    }
    d
}

/// Runs `first` once uninterrupted into the empty folder `out` (the reference; the command
/// writes into it, or writes a file inside it), then for each kill point runs it again into an
/// empty `out`, kills it with SIGKILL after that delay, runs `rerun` to the end
/// and compares `out` with the reference.
fn kill_and_rerun(
    name: &str,
    out: &Path,
    first: &[String],
    rerun: &dyn Fn(&Path) -> Option<Vec<String>>,
    normalize: &dyn Fn(&str, Vec<u8>) -> Vec<u8>,
) {
    let _ = std::fs::remove_dir_all(out);
    std::fs::create_dir_all(out).unwrap();
    let t = Instant::now();
    let o = stn(first);
    let took = t.elapsed();
    let code = o.status.code();
    assert!(code == Some(0) || code == Some(1), "{name}: {}", String::from_utf8_lossy(&o.stderr));
    let reference = snapshot(out, normalize);
    assert!(!reference.is_empty());
    let n = points();
    let (mut killed_before_end, mut rerun_did_work) = (0, 0);
    // The reference's duration is only a guide (other tests share the machine): when a run
    // ends before its kill point, the later points move in.
    let mut span = took;
    for k in 0..n {
        let _ = std::fs::remove_dir_all(out);
        std::fs::create_dir_all(out).unwrap();
        // Kill points spread over the run, from its very start to just before its end.
        let delay = span.mul_f64((k as f64 + 0.25) / n as f64);
        let mut child = Command::new(env!("CARGO_BIN_EXE_stn"))
            .args(first)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            killed_before_end += 1;
        } else {
            span = span.mul_f64(0.7);
        }
        let _ = child.kill(); // SIGKILL
        child.wait().unwrap();
        // None: the killed run had finished its work (a training run past its last epoch).
        if let Some(args) = rerun(out) {
            let o = stn(&args);
            assert_eq!(
                o.status.code(),
                code,
                "{name}, killed after {delay:?}: the re-run exits as the uninterrupted run did\n{}",
                String::from_utf8_lossy(&o.stderr)
            );
            rerun_did_work += 1;
        }
        let got = snapshot(out, normalize);
        let d = differences(&reference, &got);
        assert!(d.is_empty(), "{name}, killed after {delay:?}: {d:?}");
    }
    eprintln!(
        "{name}: {n} kill points over {took:?}, {killed_before_end} killed before the end, every re-run equal to the uninterrupted run ({rerun_did_work} re-runs needed)"
    );
    assert!(
        killed_before_end * 4 >= n,
        "{name}: only {killed_before_end} of {n} kill points fell inside a run"
    );
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn same(_: &str, b: Vec<u8>) -> Vec<u8> {
    b
}

/// A small ST run folder, and the digits as image files and as tables.
fn inputs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = dir.join("run");
    assert!(stn(&strings(&[
        "train",
        "--model",
        "st-cnn",
        "--epochs",
        "1",
        "--train-size",
        "64",
        "--test-size",
        "32",
        "--out",
        s(&run)
    ]))
    .status
    .success());
    let images = dir.join("images");
    let o = stn(&strings(&[
        "export-digits",
        "--images",
        "--rows",
        "500",
        "--distortion",
        "rts",
        "--out",
        s(&images),
    ]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let tables = dir.join("tables");
    std::fs::create_dir_all(&tables).unwrap();
    for (i, seed) in [1, 2, 3, 4].iter().enumerate() {
        let o = stn(&strings(&[
            "export-digits",
            "--rows",
            "2000",
            "--row-group",
            "500",
            "--distortion",
            "rts",
            "--seed",
            &seed.to_string(),
            "--out",
            s(&tables.join(format!("part-{i}.parquet"))),
        ]));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    (run, images, tables)
}

fn image_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path().display().to_string()).collect();
    v.sort();
    v
}

#[test]
fn killed_anywhere_then_rerun_gives_the_uninterrupted_result() {
    let dir = tmp("kill");
    let (run, images, tables) = inputs(&dir);

    // stn rectify on image files.
    let out = dir.join("rect");
    let mut args = strings(&["rectify", "--model", s(&run), "--out", s(&out)]);
    args.extend(image_files(&images));
    kill_and_rerun("rectify files", &out, &args, &|_| Some(args.clone()), &same);

    // stn rectify --table on a folder of tables.
    let out = dir.join("rect-tables");
    let args = strings(&[
        "rectify",
        "--model",
        s(&run),
        "--table",
        s(&tables),
        "--out",
        s(&out),
        "--batch-size",
        "50",
    ]);
    kill_and_rerun("rectify --table", &out, &args, &|_| Some(args.clone()), &same);

    // stn augment on image files, and on a table.
    let out = dir.join("aug");
    let args = strings(&[
        "augment",
        "--spec",
        "affine:rot=30,scale=0.8-1.2;tps:0.05",
        "--images",
        s(&images),
        "--copies",
        "3",
        "--seed",
        "7",
        "--out",
        s(&out),
    ]);
    kill_and_rerun("augment files", &out, &args, &|_| Some(args.clone()), &same);
    let out = dir.join("aug-table");
    let args = strings(&[
        "augment",
        "--spec",
        "perspective:0.3;hflip",
        "--table",
        s(&tables.join("part-0.parquet")),
        "--copies",
        "4",
        "--out",
        s(&out.join("aug.parquet")),
    ]);
    kill_and_rerun("augment --table", &out, &args, &|_| Some(args.clone()), &same);
}

#[test]
fn training_killed_anywhere_then_resumed_gives_the_uninterrupted_run() {
    let dir = tmp("kill-train");
    let out = dir.join("run");
    let common =
        ["--model", "st-cnn", "--train-size", "1000", "--test-size", "64", "--seed", "3", "--epochs", "4"];
    let mut first = strings(&["train", "--out", s(&out)]);
    first.extend(strings(&common));
    let resume = |out: &Path| {
        if out.join("model.stn").exists() {
            let (_, cfg) = stn_models::run::load_run(out).unwrap();
            (cfg.completed_epochs < 4)
                .then(|| strings(&["train", "--resume", "--epochs", "4", "--out", s(out)]))
        } else {
            let mut v = strings(&["train", "--out", s(out)]);
            v.extend(strings(&common));
            Some(v)
        }
    };
    // The metrics' timings differ from run to run, and so do the random ids Burn gives each
    // parameter in its files: the model is compared by what it computes (its outputs on 64 test
    // digits, bit for bit), the optimizer state by its epoch (a wrong state would change every
    // later epoch's weights and metrics).
    let probe = dir.join("probe");
    let normalize = |name: &str, b: Vec<u8>| {
        if name.starts_with("optimizer-") {
            return Vec::new();
        }
        if name == "model.stn" {
            let _ = std::fs::remove_dir_all(&probe);
            std::fs::create_dir_all(&probe).unwrap();
            std::fs::write(probe.join("model.stn"), &b).unwrap();
            let (model, _) = stn_models::run::load_run(&probe).unwrap();
            let (_, test) = stn_data::Dataset::embedded_split().unwrap();
            let idx: Vec<usize> = (0..64).collect();
            let (x, _) = stn_models::run::batch(&test, &idx, &burn::tensor::Device::flex());
            let out = model.forward(x).log_probs;
            let v = out.into_data().convert::<f32>().try_into_vec::<f32>().unwrap();
            return v.iter().flat_map(|f| f.to_bits().to_le_bytes()).collect();
        }
        if name != "metrics.jsonl" {
            return b;
        }
        let text = String::from_utf8(b).unwrap();
        let lines: Vec<String> = text
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                let o = v.as_object_mut().unwrap();
                o.remove("seconds");
                o.remove("images_per_s");
                v.to_string()
            })
            .collect();
        lines.join("\n").into_bytes()
    };
    kill_and_rerun("train --resume", &out, &first, &resume, &normalize);
}

#[test]
fn a_copy_killed_anywhere_then_rerun_gives_the_uninterrupted_table() {
    let dir = tmp("kill-copy");
    let (run, _, tables) = inputs(&dir);
    let out = dir.join("copy");
    let q = format!(
        "COPY (SELECT id, label, stn_rectify(image) AS image FROM '{}' ORDER BY id) TO '{}'",
        tables.join("part-0.parquet").display(),
        out.join("rect.parquet").display()
    );
    let args = strings(&["sql", "--model", s(&run), &q]);
    // A re-run writes the table again (COPY replaces its target); what matters is that a killed
    // one leaves no staging file behind and the table is whole.
    kill_and_rerun("COPY ... TO", &out, &args, &|_| Some(args.clone()), &same);
}
