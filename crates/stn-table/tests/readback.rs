//! Tables written here, read back by other tools: pyarrow and DuckDB
//! (`tools/tables/check_output.py`). The Python with both comes from `STN_PYTHON` (set by
//! `.ci/run`, which installs them); without it, `python3` is tried, and where it lacks them the
//! test says so and passes only outside CI.

use std::path::PathBuf;
use std::process::Command;

use crate::common::*;
use stn_table::rectify::{rectify_table, RectifyOptions};

fn python() -> Option<String> {
    if let Ok(p) = std::env::var("STN_PYTHON") {
        return Some(p);
    }
    let ok =
        Command::new("python3").args(["-c", "import pyarrow, duckdb"]).status().is_ok_and(|s| s.success());
    if ok {
        Some("python3".into())
    } else {
        assert!(std::env::var_os("CI").is_none(), "CI must provide pyarrow and duckdb (STN_PYTHON)");
        eprintln!("readback: SKIPPED, no Python with pyarrow and duckdb (set STN_PYTHON)");
        None
    }
}

#[test]
fn outputs_open_in_pyarrow_and_duckdb_with_input_columns_unchanged() {
    let Some(py) = python() else { return };
    let script = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap())
        .join("../../tools/tables/check_output.py");
    let dir = tmp("readback");
    for table in [
        "hf_bytes.parquet",
        "bad_rows.parquet",
        "polars_large_binary.parquet",
        "duckdb_read_blob.parquet",
        "daft_image.parquet",
        "ray_variable.parquet",
        "ray_native.parquet",
        "spark_image.parquet",
        "img2dataset.parquet",
    ] {
        let input = fixtures().join(table);
        let out = dir.join(table);
        rectify_table(rectifier(), &input, &out, &RectifyOptions::default(), &mut |_| {}).unwrap();
        let o = Command::new(&py).arg(&script).arg(&input).arg(&out).output().expect("run python");
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{table}: {text} {}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["ok"], true, "{table}: {v}");
        let failed = if table == "bad_rows.parquet" {
            6
        } else if table == "img2dataset.parquet" {
            1
        } else {
            0
        };
        assert_eq!(v["failed"], failed, "{table}: DuckDB counts the errors");
        assert_eq!(v["theta_len"], 6, "{table}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}
