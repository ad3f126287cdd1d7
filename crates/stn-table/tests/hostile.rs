//! Tables from other people: `path` rows that try to leave their folder, name devices, FIFOs or
//! huge files, and headers that claim huge images.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{Array, ArrayRef, BinaryArray, RecordBatch, StringArray, StructArray};
use arrow_schema::{DataType, Field, Fields, Schema};
use parquet::arrow::ArrowWriter;
use stn_table::codec::{decode_row, resolve_row_path, DecodeOptions};
use stn_table::convention::Convention;
use stn_table::rectify::{rectify_table, RectifyOptions};

use crate::common::*;

/// Writes a Hugging Face image table (`struct<bytes, path>`, bytes null) of `paths`.
fn hf_path_table(file: &Path, paths: &[&str]) {
    let fields = Fields::from(vec![
        Field::new("bytes", DataType::Binary, true),
        Field::new("path", DataType::Utf8, true),
    ]);
    let bytes: ArrayRef = Arc::new(BinaryArray::from(vec![None::<&[u8]>; paths.len()]));
    let p: ArrayRef = Arc::new(StringArray::from(paths.iter().map(|s| Some(*s)).collect::<Vec<_>>()));
    let image = StructArray::try_new(fields.clone(), vec![bytes, p], None).unwrap();
    let ids: ArrayRef = Arc::new(arrow_array::Int64Array::from_iter_values(0..paths.len() as i64));
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("image", DataType::Struct(fields), true),
    ]));
    let batch = RecordBatch::try_new(schema.clone(), vec![ids, Arc::new(image)]).unwrap();
    let mut w = ArrowWriter::try_new(std::fs::File::create(file).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn errors_of(output: &Path) -> Vec<Option<String>> {
    let (_, batches, _) = read_all(output);
    let e = column(&batches, "stn_error");
    let e = e.as_any().downcast_ref::<StringArray>().unwrap();
    (0..e.len()).map(|i| (!e.is_null(i)).then(|| e.value(i).to_string())).collect()
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo {}", path.display());
}

/// The folder of a hostile table: `table/` with a good image, the table, and files around it.
struct Place {
    root: PathBuf,
    table_dir: PathBuf,
    secret: PathBuf,
}

fn place(name: &str) -> Place {
    let root = tmp(name);
    let table_dir = root.join("table");
    std::fs::create_dir_all(table_dir.join("images")).unwrap();
    let png = fixtures().join("images/d0.png");
    std::fs::copy(&png, table_dir.join("images/good.png")).unwrap();
    // An image outside the table's folder, as a private photo next to a downloaded table.
    let secret = root.join("private.png");
    std::fs::copy(&png, &secret).unwrap();
    std::os::unix::fs::symlink(&secret, table_dir.join("leak.png")).unwrap();
    std::os::unix::fs::symlink("images/good.png", table_dir.join("alias.png")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", table_dir.join("zero.png")).unwrap();
    mkfifo(&table_dir.join("fifo.png"));
    // A valid PNG over the file-size limit the test sets (4 KiB): noise does not compress.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<f32> = (0..128 * 128)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 56) as f32 / 255.0
        })
        .collect();
    let big = stn_data::Image { data: noise, channels: 1, height: 128, width: 128 };
    std::fs::write(table_dir.join("images/big.png"), big.to_png().unwrap()).unwrap();
    Place { root, table_dir, secret }
}

const ROWS: [&str; 11] = [
    "images/good.png",
    "/etc/passwd",
    "../private.png",
    "leak.png",
    "alias.png",
    "/dev/zero",
    "zero.png",
    "fifo.png",
    "images/big.png",
    "images",
    "images/../images/good.png",
];

#[test]
fn path_rows_stay_inside_the_tables_folder() {
    let p = place("paths-inside");
    let table = p.table_dir.join("t.parquet");
    hf_path_table(&table, &ROWS);
    let out = p.root.join("out.parquet");
    let opts = RectifyOptions { max_file_bytes: 4096, ..RectifyOptions::default() };
    let start = Instant::now();
    let reports = rectify_table(rectifier(), &table, &out, &opts, &mut |_| {}).unwrap();
    assert!(start.elapsed() < Duration::from_secs(60), "no FIFO or device hangs the run");
    assert_eq!((reports[0].rows, reports[0].failed), (11, 8));
    let e = errors_of(&out);
    let has = |i: usize, what: &[&str]| {
        let m = e[i].as_deref().unwrap_or_else(|| panic!("row {i} ({}) should fail", ROWS[i]));
        assert!(what.iter().all(|w| m.contains(w)), "row {i} ({}): {m}", ROWS[i]);
    };
    assert!(e[0].is_none() && e[4].is_none() && e[10].is_none(), "{e:?}");
    has(1, &["/etc/passwd", "is absolute", "--allow-outside-paths"]);
    has(2, &["../private.png", "`..`", "inside the table's folder"]);
    has(3, &["leak.png", "symbolic link", "leads out"]);
    has(5, &["is absolute"]);
    has(6, &["zero.png", "leads out"]);
    has(7, &["fifo.png", "FIFO"]);
    has(8, &["big.png", "more than the limit of 4096 bytes"]);
    has(9, &["folder"]);
}

#[test]
fn outside_paths_are_read_only_when_allowed_and_devices_never() {
    let p = place("paths-allowed");
    let table = p.table_dir.join("t.parquet");
    hf_path_table(&table, &ROWS);
    let out = p.root.join("out.parquet");
    let opts =
        RectifyOptions { max_file_bytes: 4096, allow_outside_paths: true, ..RectifyOptions::default() };
    rectify_table(rectifier(), &table, &out, &opts, &mut |_| {}).unwrap();
    let e = errors_of(&out);
    for ok in [0, 2, 3, 4, 10] {
        assert!(e[ok].is_none(), "row {ok} ({}): {:?}", ROWS[ok], e[ok]);
    }
    let has = |i: usize, what: &str| {
        let m = e[i].as_deref().unwrap_or_else(|| panic!("row {i} ({}) should fail", ROWS[i]));
        assert!(m.contains(what), "row {i} ({}): {m}", ROWS[i]);
    };
    has(1, "not a PNG or JPEG"); // /etc/passwd is read (allowed) but is no image
    has(5, "character device");
    has(6, "character device");
    has(7, "FIFO");
    has(8, "more than the limit");
    assert!(p.secret.is_file(), "inputs are never touched");
}

#[test]
fn a_base_dir_moves_the_fence() {
    let p = place("paths-base-dir");
    let table = p.table_dir.join("t.parquet");
    hf_path_table(&table, &["table/images/good.png", "private.png", "../escape.png"]);
    let out = p.root.join("out.parquet");
    let opts = RectifyOptions { base_dir: Some(p.root.clone()), ..RectifyOptions::default() };
    rectify_table(rectifier(), &table, &out, &opts, &mut |_| {}).unwrap();
    let e = errors_of(&out);
    assert!(e[0].is_none() && e[1].is_none(), "{e:?}");
    assert!(e[2].as_deref().is_some_and(|m| m.contains("`..`")), "{e:?}");
}

#[test]
fn resolving_a_path_names_the_reason() {
    let p = place("paths-resolve");
    let opts = DecodeOptions { base_dir: Some(p.table_dir.clone()), ..DecodeOptions::default() };
    let inside = resolve_row_path("alias.png", &opts).unwrap();
    assert_eq!(inside, std::fs::canonicalize(p.table_dir.join("images/good.png")).unwrap());
    for (bad, why) in [("", "empty"), ("a\0b", "NUL"), ("/x", "absolute"), ("../../x", "`..`")] {
        let e = resolve_row_path(bad, &opts).unwrap_err();
        assert!(e.contains(why), "{bad:?}: {e}");
    }
    // decode_row refuses the same way, before reading anything.
    let fields = Fields::from(vec![
        Field::new("bytes", DataType::Binary, true),
        Field::new("path", DataType::Utf8, true),
    ]);
    let a = StructArray::try_new(
        fields,
        vec![
            Arc::new(BinaryArray::from(vec![None::<&[u8]>])) as ArrayRef,
            Arc::new(StringArray::from(vec![Some("../private.png")])) as ArrayRef,
        ],
        None,
    )
    .unwrap();
    let e = decode_row(&Convention::HfImage, &a, 0, &opts).unwrap_err();
    assert!(e.contains("`..`"), "{e}");
}

#[test]
fn a_rerun_with_another_model_or_options_does_not_keep_the_old_outputs() {
    use stn_models::models::{ModelConfig, ModelKind};
    use stn_models::run::{train, RunConfig};
    use stn_table::lineage::{Lineage, LINEAGE_KEY};
    let dir = tmp("lineage");
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::copy(fixtures().join("pyarrow_binary.parquet"), input.join("a.parquet")).unwrap();
    let out = dir.join("out");
    let r = rectifier();
    rectify_table(r, &input, &out, &RectifyOptions::default(), &mut |_| {}).unwrap();
    let (schema, _, _) = read_all(&out.join("a.parquet"));
    let lineage = Lineage::from_json(&schema.metadata()[LINEAGE_KEY]).unwrap();
    assert_eq!(lineage.model.as_deref(), r.model_id(), "the output names the model that made it");
    assert!(r.model_id().is_some_and(|m| m.starts_with("sha256:") && m.len() == 7 + 64));
    assert_eq!(lineage.input.as_ref().map(|i| (i.name.as_str(), i.rows)), Some(("a.parquet", 8)));
    let before = std::fs::read(out.join("a.parquet")).unwrap();
    // The same model and options: the output is kept, the file skipped.
    let again = rectify_table(r, &input, &out, &RectifyOptions::default(), &mut |_| {}).unwrap();
    assert!(again[0].skipped);
    // Other options: refused, saying which, and nothing is touched.
    let jpeg =
        RectifyOptions { encoding: stn_data::image_io::Encoding::Jpeg(80), ..RectifyOptions::default() };
    let e = rectify_table(r, &input, &out, &jpeg, &mut |_| {}).unwrap_err().to_string();
    assert!(
        e.contains("option encoding: `png fast` there, `jpeg 80` now") && e.contains("never overwritten"),
        "{e}"
    );
    // Another model: refused too.
    let other = dir.join("other-run");
    let cfg =
        RunConfig::new(ModelConfig::new(ModelKind::StCnn, [28, 28]), "mnist10k".into(), "rts".into(), 9, 1)
            .with_train_size(64)
            .with_test_size(32);
    train(&cfg, &other, false, &mut |_, _, _, _, _, _| {}).unwrap();
    let r2 = stn_models::rectify::Rectifier::from_run(&other).unwrap();
    assert_ne!(r2.model_id(), r.model_id());
    let e =
        rectify_table(&r2, &input, &out, &RectifyOptions::default(), &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("another model") && e.contains("a.parquet"), "{e}");
    // A single-file output behaves the same way.
    let single = dir.join("single.parquet");
    rectify_table(r, &input.join("a.parquet"), &single, &RectifyOptions::default(), &mut |_| {}).unwrap();
    assert!(
        rectify_table(r, &input.join("a.parquet"), &single, &RectifyOptions::default(), &mut |_| {}).unwrap()
            [0]
        .skipped
    );
    assert!(rectify_table(&r2, &input.join("a.parquet"), &single, &RectifyOptions::default(), &mut |_| {})
        .is_err());
    assert_eq!(std::fs::read(out.join("a.parquet")).unwrap(), before, "untouched");
}

#[test]
fn stale_partials_of_a_killed_run_are_removed_on_the_next() {
    let dir = tmp("stale");
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let stale = out.join(format!(".a.parquet{}{pid}-0", stn_fs::PARTIAL_MARK));
    std::fs::write(&stale, b"half a file").unwrap();
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::copy(fixtures().join("pyarrow_binary.parquet"), input.join("a.parquet")).unwrap();
    let mut removed = Vec::new();
    rectify_table(rectifier(), &input, &out, &RectifyOptions::default(), &mut |e| {
        if let stn_table::rectify::Event::PartialRemoved(p) = e {
            removed.push(p.to_path_buf());
        }
    })
    .unwrap();
    assert_eq!(removed, vec![stale.clone()]);
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["a.parquet"]);
}
