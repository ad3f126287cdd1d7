//! Hostile tables through the `stn` program: decompression bombs within a memory budget
//! (peak RSS measured by the kernel), and arguments that used to panic or overflow.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use arrow_array::{ArrayRef, BinaryArray, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};

use crate::cli::{s, tmp};

/// Runs `stn` to the end: (exit success, stdout, stderr, peak RSS in bytes from `wait4`).
// The child is reaped by `wait4` (for its resource usage), not by `Child::wait`.
#[allow(clippy::zombie_processes)]
fn stn_measured(args: &[&str]) -> (bool, String, String, u64) {
    let child = Command::new(env!("CARGO_BIN_EXE_stn"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run stn");
    let pid = child.id() as libc::pid_t;
    let mut out = child.stdout.unwrap();
    let mut err = child.stderr.unwrap();
    let t = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut out, &mut s).unwrap();
        s
    });
    let mut e = String::new();
    std::io::Read::read_to_string(&mut err, &mut e).unwrap();
    let o = t.join().unwrap();
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4");
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    (ok, o, e, usage.ru_maxrss as u64 * 1024)
}

fn stn(args: &[&str]) -> (bool, String, String) {
    let (ok, o, e, _) = stn_measured(args);
    (ok, o, e)
}

/// A small ST run folder.
pub(crate) fn run_dir(dir: &Path) -> PathBuf {
    let run = dir.join("run");
    let (ok, _, e) = stn(&[
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
        s(&run),
    ]);
    assert!(ok, "{e}");
    run
}

/// A table of PNG bytes, one row per entry.
fn binary_table(file: &Path, rows: &[&[u8]]) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("image", DataType::Binary, true),
    ]));
    let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..rows.len() as i64));
    let images: ArrayRef = Arc::new(BinaryArray::from(rows.to_vec()));
    let batch = RecordBatch::try_new(schema.clone(), vec![ids, images]).unwrap();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(file).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// A PNG of `h x w` black pixels: a few kilobytes that decode to `h * w` pixels.
fn bomb(h: usize, w: usize) -> Vec<u8> {
    stn_data::Image { data: vec![0.0; h * w], channels: 1, height: h, width: w }.to_png().unwrap()
}

#[test]
fn decompression_bombs_stay_within_the_memory_budget() {
    let dir = tmp("bombs");
    let run = run_dir(&dir);
    // 64 rows that each decode to 4 megapixels (about 110 MiB of work each, 7 GiB together at
    // once), and one that alone needs more than the whole budget.
    let b = bomb(2048, 2048);
    let huge = bomb(7000, 7000);
    assert!(b.len() < 64 << 10 && huge.len() < 1 << 20, "{} {}", b.len(), huge.len());
    let mut rows: Vec<&[u8]> = vec![&b; 64];
    rows.insert(10, &huge);
    let table = dir.join("bombs.parquet");
    binary_table(&table, &rows);
    let out = dir.join("out.parquet");
    let budget: u64 = 512 << 20;
    let (ok, o, e, rss) = stn_measured(&[
        "rectify",
        "--model",
        s(&run),
        "--table",
        s(&table),
        "--out",
        s(&out),
        "--max-memory",
        "512M",
        "--json",
    ]);
    // One row failed: exit code 1, with the summary.
    assert!(!ok && o.contains("\"failed\":1"), "{o}\n{e}");
    assert!(e.contains("row 10") && e.contains("more than the memory budget of 512 MiB"), "{e}");
    assert!(rss < budget, "peak RSS {} MiB is over the budget of 512 MiB", rss >> 20);
    eprintln!("65 bomb rows: peak RSS {} MiB under --max-memory 512M", rss >> 20);
    let (_, batches) = {
        let f = std::fs::File::open(&out).unwrap();
        let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
            .unwrap()
            .build()
            .unwrap();
        ((), r.collect::<Result<Vec<_>, _>>().unwrap())
    };
    let n: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(n, 65, "every row is in the output");
    let nulls: usize = batches
        .iter()
        .map(|b| {
            b.column_by_name("stn_error").unwrap().len() - b.column_by_name("stn_error").unwrap().null_count()
        })
        .sum();
    assert_eq!(nulls, 1, "one error");
}

#[test]
fn arguments_that_used_to_overflow_are_clear_errors() {
    let dir = tmp("bad-args");
    // The cnn's convolutions need 16 x 16: a smaller table size is an error, not an underflow.
    let table = dir.join("digits.parquet");
    let (ok, _, e) = stn(&["export-digits", "--rows", "40", "--out", s(&table)]);
    assert!(ok, "{e}");
    let (ok, _, e) = stn(&[
        "train",
        "--model",
        "cnn",
        "--table",
        s(&table),
        "--image-size",
        "8x8",
        "--out",
        s(&dir.join("r1")),
    ]);
    assert!(!ok && e.contains("at least 16 x 16") && e.contains("8 x 8"), "{e}");
    let (ok, _, e) = stn(&[
        "augment",
        "--spec",
        "hflip",
        "--images",
        s(&dir),
        "--copies",
        "4000000000",
        "--out",
        s(&dir.join("a")),
    ]);
    assert!(!ok && e.contains("--copies must be from 1 to 10000"), "{e}");
    let (ok, _, e) = stn(&[
        "rectify",
        "--model",
        s(&dir),
        "--table",
        s(&table),
        "--out",
        s(&dir.join("o.parquet")),
        "--max-memory",
        "1K",
    ]);
    assert!(!ok && e.contains("--max-memory"), "{e}");
    let (ok, _, e) = stn(&[
        "rectify",
        "--model",
        s(&dir),
        "--table",
        s(&table),
        "--out",
        s(&dir.join("o.parquet")),
        "--max-memory",
        "lots",
    ]);
    assert!(!ok && e.contains("not a size"), "{e}");
    assert!(!dir.join("o.parquet").exists() && !dir.join("a").exists() && !dir.join("r1").exists());
}

#[test]
fn a_label_beyond_the_models_classes_is_an_error_before_training() {
    let dir = tmp("labels");
    let schema = Arc::new(Schema::new(vec![
        Field::new("image", DataType::Binary, true),
        Field::new("label", DataType::Int64, true),
    ]));
    let png =
        stn_data::Image { data: vec![0.5; 28 * 28], channels: 1, height: 28, width: 28 }.to_png().unwrap();
    let images: ArrayRef = Arc::new(BinaryArray::from(vec![Some(png.as_slice()); 30]));
    let labels: ArrayRef =
        Arc::new(Int64Array::from_iter_values((0..30).map(|i| if i == 7 { 12 } else { i % 10 })));
    let batch = RecordBatch::try_new(schema.clone(), vec![images, labels]).unwrap();
    let table = dir.join("t.parquet");
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&table).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let (ok, _, e) = stn(&["train", "--model", "fcn", "--table", s(&table), "--out", s(&dir.join("run"))]);
    assert!(!ok && e.contains("image 7 has label 12") && e.contains("10 classes"), "{e}");
    assert!(!dir.join("run").join("model.stn").exists());
}

#[test]
fn corrupt_parquet_files_are_clear_errors_not_panics() {
    // Files on which the Parquet reader itself panics (found by fuzzing).
    let dir = tmp("corrupt");
    let run = run_dir(&dir);
    let crashes =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../stn-table/tests/fuzz/regressions/parquet");
    let mut n = 0;
    for f in std::fs::read_dir(&crashes).unwrap() {
        let f = f.unwrap().path();
        let table = dir.join(format!("{}.parquet", f.file_name().unwrap().to_string_lossy()));
        std::fs::copy(&f, &table).unwrap();
        let out = dir.join(format!("out-{n}.parquet"));
        let (ok, _, e) = stn(&["rectify", "--model", s(&run), "--table", s(&table), "--out", s(&out)]);
        assert!(
            !ok && e.contains(&table.display().to_string()) && !e.contains("panicked"),
            "{}: {e}",
            f.display()
        );
        assert!(!out.exists());
        let q = format!("SELECT count(*) FROM '{}'", table.display());
        let (_, _, e) = stn(&["sql", "--model", s(&run), &q]);
        assert!(!e.contains("panicked") && !e.contains("RUST_BACKTRACE"), "{}: {e}", f.display());
        n += 1;
    }
    assert!(n >= 5);
}
