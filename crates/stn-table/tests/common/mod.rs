//! Shared by the table and SQL tests: the fixtures and a briefly trained model.
#![allow(dead_code)]

pub mod fuzz;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use stn_models::models::{ModelConfig, ModelKind};
use stn_models::rectify::Rectifier;
use stn_models::run::{train, RunConfig};

/// The fixture folder (read at run time: a shared target folder may hold binaries built in
/// another checkout).
pub fn fixtures() -> PathBuf {
    let here = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let own = here.join("tests/fixtures");
    if own.is_dir() {
        own
    } else {
        here.join("../stn-table/tests/fixtures")
    }
}

/// The fixtures' manifest.
pub fn manifest() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("manifest.json")).unwrap()).unwrap()
}

/// A fresh temporary folder for one test.
pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("stn-table-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A run folder with an ST-CNN briefly trained on RTS digits (theta is not the identity),
/// trained once per test binary.
pub fn run_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("stn-table-model-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = RunConfig::new(
            ModelConfig::new(ModelKind::StCnn, [28, 28]),
            "mnist10k".into(),
            "rts".into(),
            3,
            1,
        )
        .with_train_size(256)
        .with_test_size(64);
        train(&cfg, &dir, false, &mut |_, _, _, _, _, _| {}).expect("train");
        dir
    })
}

/// The rectifier of [`run_dir`].
pub fn rectifier() -> &'static Rectifier {
    static R: OnceLock<Rectifier> = OnceLock::new();
    R.get_or_init(|| Rectifier::from_run(run_dir()).unwrap())
}

/// Reads a whole Parquet file with arrow-rs.
pub fn read_all(path: &Path) -> (arrow_schema::SchemaRef, Vec<arrow_array::RecordBatch>, usize) {
    let b = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(path).unwrap(),
    )
    .unwrap();
    let schema = b.schema().clone();
    let groups = b.metadata().num_row_groups();
    let batches = b.build().unwrap().collect::<Result<Vec<_>, _>>().unwrap();
    (schema, batches, groups)
}

/// One column of a file, all batches concatenated.
pub fn column(batches: &[arrow_array::RecordBatch], name: &str) -> arrow_array::ArrayRef {
    let parts: Vec<&dyn arrow_array::Array> =
        batches.iter().map(|b| b.column_by_name(name).unwrap().as_ref()).collect();
    arrow_select::concat::concat(&parts).unwrap()
}
