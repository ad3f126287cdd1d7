//! Delta Lake tables in and out of `stn rectify --table`, written and read back by the
//! `deltalake` Python package (`tools/delta/delta_tool.py`): deletion vectors, column mapping,
//! versions, one commit per run, nothing left by a failed one.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::cli::{s, tmp};

fn stn(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stn")).args(args).output().unwrap()
}

fn tool() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/delta/delta_tool.py")
}

/// `delta_tool.py ARGS`: its one JSON line, or its failure.
fn delta_tool(py: &str, args: &[&str]) -> serde_json::Value {
    let o = Command::new(py).arg(tool()).args(args).output().unwrap();
    assert!(o.status.success(), "delta_tool.py {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(out.trim()).unwrap_or(serde_json::Value::Null)
}

fn ok_json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap()
}

fn failure(o: &Output) -> String {
    assert!(!o.status.success(), "should have failed: {}", String::from_utf8_lossy(&o.stdout));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The files under `dir`, recursively (relative paths, sorted).
fn files(dir: &Path) -> Vec<String> {
    crate::kill::snapshot(dir, &|_, b| b).into_keys().collect()
}

fn ids(v: &serde_json::Value) -> Vec<i64> {
    v["ids"].as_array().unwrap().iter().map(|i| i.as_i64().unwrap()).collect()
}

#[test]
fn delta_tables_in_and_out() {
    let Some(py) =
        crate::cli::python_with("deltalake, pyroaring, pyarrow", "deltalake, pyroaring and pyarrow")
    else {
        return;
    };
    let dir = tmp("delta");
    let run = crate::hostile::run_dir(&dir);
    let digits = dir.join("digits.parquet");
    let o = stn(&["export-digits", "--distortion", "rts", "--rows", "200", "--out", s(&digits)]);
    assert!(o.status.success());
    // The reference: the plain Parquet table rectified.
    let reference = dir.join("reference.parquet");
    ok_json(&stn(&["rectify", "--model", s(&run), "--table", s(&digits), "--out", s(&reference), "--json"]));

    // A table written by deltalake: version 0 rows 0-119, version 1 rows 120-199, version 2
    // deletes rows 0, 5 and 7 of the first data file with a deletion vector.
    let input = dir.join("input");
    delta_tool(&py, &["make", s(&input), s(&digits), "--split", "120", "--delete-rows", "0,5,7"]);
    let mut want: Vec<i64> = (0..200).filter(|i| ![0, 5, 7].contains(i)).collect();
    want.sort();

    // Into Parquet files: one per data file, the deleted rows not read, every other row as
    // the plain table's run rectified it.
    let out = dir.join("out");
    let doc =
        ok_json(&stn(&["rectify", "--model", s(&run), "--table", s(&input), "--out", s(&out), "--json"]));
    assert_eq!(doc["files"], 2, "{doc}");
    assert_eq!(doc["rows"], 197, "{doc}");
    let cmp = delta_tool(&py, &["compare", s(&out), s(&reference)]);
    assert_eq!(ids(&cmp), want, "{cmp}");
    assert_eq!(cmp["differ"], serde_json::json!([]), "{cmp}");
    // A re-run skips both (their lineage names the data files and the rows read).
    let again =
        ok_json(&stn(&["rectify", "--model", s(&run), "--table", s(&input), "--out", s(&out), "--json"]));
    assert_eq!(again["skipped_files"], 2, "{again}");
    assert_eq!(again["output_digest"], doc["output_digest"]);

    // SQL reads the table by path: the latest version, deleted rows left out, and theta
    // equal to the table command's (the same core).
    let o = stn(&[
        "sql",
        "--model",
        s(&run),
        "--json",
        &format!("SELECT id, stn_theta(image) AS theta FROM '{}' ORDER BY id", s(&input)),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows: Vec<serde_json::Value> =
        String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let sql_ids: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(sql_ids, want, "SQL over the Delta table");
    assert!(rows.iter().all(|r| r["theta"].as_array().is_some_and(|t| t.len() == 6)), "{:?}", rows.first());
    // Time travel in SQL, as Databricks writes it: `'path@v1'` is version 1 (200 rows).
    let o =
        stn(&["sql", "--model", s(&run), "--json", &format!("SELECT count(*) AS n FROM '{}@v1'", s(&input))]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("\"n\":200"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = stn(&["sql", "--model", s(&run), &format!("SELECT count(*) FROM '{}@v9'", s(&input))]);
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("version 9"),
        "a missing version"
    );
    // And by time, `'path@yyyyMMddHHmmssSSS'` (UTC): a time after the last commit reads the
    // latest version, one before the first commit is an error.
    let o = stn(&[
        "sql",
        "--model",
        s(&run),
        "--json",
        &format!("SELECT count(*) AS n FROM '{}@29991231000000000'", s(&input)),
    ]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("\"n\":197"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o =
        stn(&["sql", "--model", s(&run), &format!("SELECT count(*) FROM '{}@20000101000000000'", s(&input))]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("before the table's first version"), "an early time: {e}");

    // --version 1: before the deletion, 200 rows.
    let v1 = dir.join("v1");
    let doc1 = ok_json(&stn(&[
        "rectify",
        "--model",
        s(&run),
        "--table",
        s(&input),
        "--version",
        "1",
        "--out",
        s(&v1),
        "--json",
    ]));
    assert_eq!(doc1["rows"], 200, "{doc1}");
    let e = failure(&stn(&[
        "rectify",
        "--model",
        s(&run),
        "--table",
        s(&input),
        "--version",
        "9",
        "--out",
        s(&dir.join("v9")),
    ]));
    assert!(e.contains("input") && e.to_lowercase().contains("version"), "{e}");
    assert!(!dir.join("v9").exists(), "nothing written for a version that does not exist");
    let e = failure(&stn(&[
        "rectify",
        "--model",
        s(&run),
        "--table",
        s(&input),
        "--timestamp",
        "2000-01-01T00:00:00Z",
        "--out",
        s(&dir.join("t2000")),
    ]));
    assert!(e.contains("--timestamp") || e.to_lowercase().contains("timestamp"), "{e}");

    // Into a new Delta table (one commit), read back by deltalake: theta as a list of 6.
    let table = dir.join("rectified");
    let doc = ok_json(&stn(&[
        "rectify",
        "--model",
        s(&run),
        "--table",
        s(&input),
        "--out",
        s(&table),
        "--mode",
        "create",
        "--json",
    ]));
    assert_eq!(doc["rows"], 197, "{doc}");
    let back = delta_tool(&py, &["read", s(&table)]);
    assert_eq!(back["version"], 0, "{back}");
    assert_eq!(back["rows"], 197, "{back}");
    assert_eq!(back["theta_lengths"], serde_json::json!([6]), "{back}");
    let cmp = delta_tool(&py, &["compare", s(&table), s(&reference)]);
    assert_eq!(ids(&cmp), want, "{cmp}");
    assert_eq!(cmp["differ"], serde_json::json!([]), "{cmp}");
    // Appending the plain table: version 1 with 397 rows; creating again is refused.
    ok_json(&stn(&[
        "rectify",
        "--model",
        s(&run),
        "--table",
        s(&digits),
        "--out",
        s(&table),
        "--mode",
        "append",
        "--json",
    ]));
    let back = delta_tool(&py, &["read", s(&table)]);
    assert_eq!((back["version"].clone(), back["rows"].clone()), (1.into(), 397.into()), "{back}");
    let before = files(&table);
    let e = failure(&stn(&[
        "rectify",
        "--model",
        s(&run),
        "--table",
        s(&digits),
        "--out",
        s(&table),
        "--mode",
        "create",
    ]));
    assert!(e.contains("is a Delta table already"), "{e}");
    assert_eq!(files(&table), before, "nothing written");
    // Appending other columns (the unrectified table as if it were a rectification) is refused
    // before anything is written.
    let plain = dir.join("plain-delta");
    delta_tool(&py, &["make", s(&plain), s(&digits)]);
    let before = files(&plain);
    let e = failure(&stn(&[
        "rectify",
        "--model",
        s(&run),
        "--table",
        s(&digits),
        "--out",
        s(&plain),
        "--mode",
        "append",
    ]));
    assert!(e.contains("has other columns than the outputs"), "{e}");
    assert_eq!(files(&plain), before, "nothing written");
    let e = failure(&stn(&[
        "rectify",
        "--model",
        s(&run),
        "--table",
        s(&digits),
        "--out",
        s(&dir.join("none")),
        "--mode",
        "append",
    ]));
    assert!(e.contains("is not a Delta table"), "{e}");

    // Training and evaluation read the same rows (the deleted ones left out); the run records
    // the version it read.
    let trained = dir.join("trained");
    let doc = ok_json(&stn(&[
        "train",
        "--model",
        "st-fcn",
        "--table",
        s(&input),
        "--epochs",
        "1",
        "--image-size",
        "28x28",
        "--json",
        "--out",
        s(&trained),
    ]));
    assert!(doc["weights_digest"].is_string(), "{doc}");
    let config = String::from_utf8_lossy(&std::fs::read(trained.join("model.stn")).unwrap()).into_owned();
    assert!(config.contains("\"delta_version\":2"), "the run records version 2");
    let e =
        ok_json(&stn(&["eval", "--model", s(&trained), "--table", s(&input), "--version", "1", "--json"]));
    assert_eq!(e["images"], 200, "version 1, before the deletion: {e}");
    let e = ok_json(&stn(&["eval", "--model", s(&trained), "--table", s(&input), "--json"]));
    assert_eq!(e["images"], 197, "the latest version: {e}");
    // Augmentation reads the same rows: two copies of each of the 197, per data file.
    let aug = dir.join("aug");
    let args =
        ["augment", "--table", s(&input), "--out", s(&aug), "--spec", "hflip", "--copies", "2", "--json"];
    let doc = ok_json(&stn(&args));
    assert_eq!(doc["rows_out"], 394, "{doc}");
    assert_eq!(doc["files"].as_array().map(Vec::len), Some(2), "{doc}");
    let again = ok_json(&stn(&args));
    assert_eq!(again["rows_out"], 394, "a re-run keeps the complete outputs: {again}");

    // A run that fails (a bad row with --on-error fail) commits nothing and leaves no file.
    let bad = dir.join("bad");
    let e = failure(&stn(&[
        "rectify",
        "--model",
        s(&run),
        "--table",
        s(&input),
        "--out",
        s(&bad),
        "--mode",
        "create",
        "--on-error",
        "fail",
        "--max-pixels",
        "100",
    ]));
    assert!(e.contains("row"), "{e}");
    assert!(!bad.exists(), "nothing committed, no data file or folder left");

    // A hostile log naming a data file outside the table is refused, nothing written.
    let hostile = dir.join("hostile");
    delta_tool(&py, &["make", s(&hostile), s(&digits)]);
    let size = std::fs::metadata(&digits).unwrap().len();
    let commit = format!(
        "{{\"commitInfo\":{{\"timestamp\":1,\"operation\":\"WRITE\"}}}}\n{{\"add\":{{\"path\":\"../digits.parquet\",\
         \"partitionValues\":{{}},\"size\":{size},\"modificationTime\":1,\"dataChange\":true}}}}\n"
    );
    std::fs::write(hostile.join("_delta_log/00000000000000000001.json"), commit).unwrap();
    let e = failure(&stn(&[
        "rectify",
        "--model",
        s(&run),
        "--table",
        s(&hostile),
        "--out",
        s(&dir.join("h-out")),
    ]));
    assert!(e.contains("outside the table") && e.contains("../digits.parquet"), "{e}");
    assert!(!dir.join("h-out").exists(), "nothing written");

    // Column mapping (physical column names in the files) with a deletion vector.
    let mapped = dir.join("mapped");
    delta_tool(
        &py,
        &["make", s(&mapped), s(&digits), "--split", "50", "--column-mapping", "--delete-rows", "1,2"],
    );
    let mout = dir.join("mapped-out");
    let doc = ok_json(&stn(&[
        "rectify",
        "--model",
        s(&run),
        "--table",
        s(&mapped),
        "--out",
        s(&mout),
        "--mode",
        "create",
        "--json",
    ]));
    assert_eq!(doc["rows"], 198, "{doc}");
    let cmp = delta_tool(&py, &["compare", s(&mout), s(&reference)]);
    let want: Vec<i64> = (0..200).filter(|i| ![1, 2].contains(i)).collect();
    assert_eq!(ids(&cmp), want, "{cmp}");
    assert_eq!(cmp["differ"], serde_json::json!([]), "{cmp}");
}
