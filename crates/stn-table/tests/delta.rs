//! A Delta table another writer changes while a run writes into it: a concurrent append is
//! kept beside the run's (nothing lost), a conflicting change (a new schema) makes the run's
//! commit fail, reported, with nothing of the run left in the table. The other writers are
//! this library (a second run) and the `deltalake` Python package (`tools/delta/delta_tool.py`).

use std::path::{Path, PathBuf};
use std::process::Command;

use stn_table::delta::{DeltaAt, DeltaInput, DeltaMode, DeltaSink};
use stn_table::rectify::{rectify_table, RectifyOptions};

use crate::common::{fixtures, rectifier, tmp};

fn python() -> Option<String> {
    let py = std::env::var("STN_PYTHON").unwrap_or_else(|_| "python3".into());
    if Command::new(&py).args(["-c", "import deltalake, pyarrow"]).status().is_ok_and(|s| s.success()) {
        return Some(py);
    }
    assert!(std::env::var_os("CI").is_none(), "CI must provide deltalake (STN_PYTHON)");
    eprintln!("delta: SKIPPED, no Python with deltalake (set STN_PYTHON)");
    None
}

fn delta_tool(py: &str, args: &[&str]) -> serde_json::Value {
    let tool = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/delta/delta_tool.py");
    let o = Command::new(py).arg(tool).args(args).output().unwrap();
    assert!(o.status.success(), "delta_tool.py {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap_or(serde_json::Value::Null)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The data files in the table's folder.
fn data_files(table: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(table)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".parquet"))
        .collect();
    v.sort();
    v
}

#[test]
fn another_writer_during_a_run() {
    let Some(py) = python() else { return };
    let dir = tmp("delta-writers");
    let input = fixtures().join("hf_bytes.parquet");
    let table = dir.join("table");
    let create = RectifyOptions { delta_mode: Some(DeltaMode::Create), ..RectifyOptions::default() };
    let append = RectifyOptions { delta_mode: Some(DeltaMode::Append), ..RectifyOptions::default() };
    let reports = rectify_table(rectifier(), &input, &table, &create, &mut |_| {}).unwrap();
    let rows = reports[0].rows;
    assert!(rows > 0);
    let first = DeltaInput::open(&table, &DeltaAt::Latest).unwrap();
    assert_eq!(first.version, 0);
    let schema = stn_table::rectify::FilePlan::of_task(
        rectifier(),
        &stn_table::rectify::plan_table(
            &input,
            &table,
            &append,
            &stn_table::rectify::rectify_lineage(rectifier(), &append),
        )
        .unwrap()[0],
        &append,
    )
    .unwrap()
    .out_schema;

    // A run appending (its table read at version 0, a data file written) while another run
    // appends and commits version 1: both appends are kept, the run's as version 2.
    let mut sink = DeltaSink::open(&table, DeltaMode::Append, &schema).unwrap();
    let ours = sink.data_file(Path::new("ours.parquet"));
    std::fs::copy(reports[0].output.clone(), &ours).unwrap();
    sink.add(&ours, rows).unwrap();
    rectify_table(rectifier(), &input, &table, &append, &mut |_| {}).unwrap();
    assert_eq!(sink.commit(&schema, "{}").unwrap(), 2, "committed after the other writer's version 1");
    let back = delta_tool(&py, &["read", s(&table)]);
    assert_eq!(back["version"], 2, "{back}");
    assert_eq!(back["rows"], 3 * rows as u64, "every append kept: {back}");

    // A run appending while another writer replaces the table's schema: the run's commit
    // conflicts, the error says so, its data file is removed, the other writer's version stays.
    let mut sink = DeltaSink::open(&table, DeltaMode::Append, &schema).unwrap();
    let ours = sink.data_file(Path::new("ours-again.parquet"));
    std::fs::copy(reports[0].output.clone(), &ours).unwrap();
    sink.add(&ours, rows).unwrap();
    let before: Vec<String> = data_files(&table).into_iter().filter(|n| !ours.ends_with(n)).collect();
    delta_tool(&py, &["change-schema", s(&table)]);
    let written_by_them: Vec<String> =
        data_files(&table).into_iter().filter(|n| !before.contains(n) && !ours.ends_with(n)).collect();
    let e = sink.commit(&schema, "{}").unwrap_err().to_string();
    assert!(e.contains("the commit failed, nothing was added"), "{e}");
    assert!(!ours.exists(), "the run's data file is removed");
    let back = delta_tool(&py, &["read", s(&table)]);
    assert_eq!(back["version"], 3, "the other writer's version is the latest: {back}");
    assert_eq!(back["columns"], serde_json::json!(["other"]), "{back}");
    assert_eq!(back["rows"], 1, "{back}");
    let mut now: Vec<String> = before.clone();
    now.extend(written_by_them);
    now.sort();
    assert_eq!(data_files(&table), now, "nothing of the failed run left");
}
