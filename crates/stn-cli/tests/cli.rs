//! The `stn` program end to end: a tiny training run and its evaluation, and bad input (missing
//! and corrupt files, a wrong model folder, bad flag values): each a clear message, a non-zero
//! exit, and no partial output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn stn(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stn")).args(args).output().expect("run stn")
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// A fresh temporary folder for one test.
pub(crate) fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("stn-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The Python that imports `imports` (`STN_PYTHON`, as `.ci/run` sets it, else `python3`), or
/// None, said on stderr, where it lacks them; in CI that is a failure instead.
pub(crate) fn python_with(imports: &str, what: &str) -> Option<String> {
    let py = std::env::var("STN_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py).args(["-c", &format!("import {imports}")]).status().is_ok_and(|s| s.success());
    if ok {
        return Some(py);
    }
    assert!(std::env::var_os("CI").is_none(), "CI must provide {what} (STN_PYTHON)");
    eprintln!("SKIPPED: no Python with {what} (set STN_PYTHON)");
    None
}

/// A path as a program argument.
pub(crate) fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn train_then_eval() {
    let dir = tmp("train");
    let run = dir.join("run");
    let o = stn(&[
        "train",
        "--model",
        "st-fcn",
        "--distortion",
        "r",
        "--epochs",
        "2",
        "--train-size",
        "256",
        "--test-size",
        "100",
        "--out",
        s(&run),
        "--json",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "stn train failed: {err}");
    let last: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON on stdout");
    assert_eq!(last["epoch"], 2);
    assert!(err.contains("epoch 1:") && err.contains("epoch 2:"), "progress on stderr: {err}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|m| (0.0..=1.0).contains(&m["test_error"].as_f64().unwrap())));
    assert!(run.join("model.stn").is_file());

    let o = stn(&["eval", "--model", s(&run), "--json"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "stn eval failed: {err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["images"], 2000);
    assert_eq!(v["distortion"], "r");
    let e = v["error_rate"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&e));
    // The same seed gives the same error rate.
    let again: serde_json::Value =
        serde_json::from_str(text(&stn(&["eval", "--model", s(&run), "--json"])).0.trim()).unwrap();
    assert_eq!(again["error_rate"], v["error_rate"]);

    // A second run into the same folder is refused and leaves the first one intact.
    let before = std::fs::read(run.join("model.stn")).unwrap();
    let o = stn(&["train", "--epochs", "1", "--train-size", "64", "--out", s(&run)]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("already holds a run") && text(&o).1.contains("--resume"), "{}", text(&o).1);
    assert_eq!(std::fs::read(run.join("model.stn")).unwrap(), before);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_input_is_a_clear_error_with_no_output() {
    let dir = tmp("bad");
    let out = dir.join("out");
    // Missing data.
    let o = stn(&["train", "--data", "/no/such/prefix", "--out", s(&out)]);
    assert!(!o.status.success());
    let err = text(&o).1;
    assert!(err.contains("/no/such/prefix-images-idx3-ubyte"), "{err}");
    assert!(!out.exists(), "no run folder after a failed start");
    // Corrupt IDX (truncated images).
    let mut imgs = vec![0u8, 0, 8, 3];
    for d in [10u32, 28, 28] {
        imgs.extend_from_slice(&d.to_be_bytes());
    }
    imgs.extend(vec![0u8; 100]);
    std::fs::write(dir.join("x-images-idx3-ubyte"), &imgs).unwrap();
    let mut labs = vec![0u8, 0, 8, 1];
    labs.extend_from_slice(&10u32.to_be_bytes());
    labs.extend(vec![1u8; 10]);
    std::fs::write(dir.join("x-labels-idx1-ubyte"), &labs).unwrap();
    let prefix = dir.join("x");
    let o = stn(&["train", "--data", s(&prefix), "--out", s(&out)]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("truncated"), "{}", text(&o).1);
    assert!(!out.exists());
    // Bad flag values.
    let o = stn(&["train", "--distortion", "twist", "--out", s(&out)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("possible values"), "{}", text(&o).1);
    let o = stn(&["train", "--epochs", "0", "--out", s(&out)]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("--epochs"), "{}", text(&o).1);
    let o = stn(&["train", "--lr", "-1", "--epochs", "1", "--out", s(&out)]);
    assert!(!o.status.success());
    assert!(!out.join("model.stn").exists());
    let o = stn(&["train", "--loc-lr", "0", "--epochs", "1", "--out", s(&out)]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("--loc-lr"), "{}", text(&o).1);
    assert!(!out.join("model.stn").exists());
    // A wrong model folder, and a corrupt model file.
    let o = stn(&["eval", "--model", s(&dir)]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("not a run folder"), "{}", text(&o).1);
    let fake = dir.join("fake");
    std::fs::create_dir_all(&fake).unwrap();
    std::fs::write(fake.join("model.stn"), b"STN-MODEL garbage").unwrap();
    let o = stn(&["eval", "--model", s(&fake)]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("model.stn"), "{}", text(&o).1);
    // Eval data files that are missing.
    let o = stn(&["eval", "--model", s(&fake), "--images", "/no/img", "--labels", "/no/lab"]);
    assert!(!o.status.success());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn demo_writes_a_report_with_pictures() {
    let dir = tmp("demo");
    let out = dir.join("demo");
    let o = stn(&["demo", "--out", s(&out), "--epochs", "2", "--train-size", "256", "--test-size", "64"]);
    let (stdout, err) = text(&o);
    assert!(o.status.success(), "stn demo failed: {err}");
    assert!(stdout.contains("CNN") && stdout.contains("ST-CNN") && stdout.contains("report.md"), "{stdout}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("| CNN |") && report.contains("figure.png") && report.contains("curves.png"));
    for f in ["figure.png", "curves.png"] {
        let img = stn_data::Image::load(&out.join(f), 3).unwrap();
        assert!(img.width > 100 && img.height > 100, "{f}: {}x{}", img.width, img.height);
    }
    assert!(out.join("cnn").join("model.stn").is_file() && out.join("st-cnn").join("model.stn").is_file());
    // The page: the ST-CNN's transformer explained on the 64 test digits, linked from the report.
    assert!(report.contains("report.html") && stdout.contains("report.html"), "{stdout}");
    let explained: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("explain.json")).unwrap()).unwrap();
    assert_eq!(explained["summary"]["rows"], 64, "{explained}");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("recovered vs applied rotation") && html.contains("train loss"));
    let o = stn(&["demo", "--out", s(&out), "--epochs", "1"]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("already holds a demo"), "{}", text(&o).1);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn rectify_processes_good_files_and_reports_bad_ones() {
    let dir = tmp("rectify");
    let run = dir.join("run");
    let o = stn(&[
        "train",
        "--model",
        "st-fcn",
        "--epochs",
        "1",
        "--train-size",
        "128",
        "--test-size",
        "32",
        "--out",
        s(&run),
    ]);
    assert!(o.status.success(), "{}", text(&o).1);
    let gray = stn_data::Image {
        data: (0..56 * 56).map(|i| (i % 56) as f32 / 55.0).collect(),
        channels: 1,
        height: 56,
        width: 56,
    };
    std::fs::write(dir.join("big.png"), gray.to_png().unwrap()).unwrap();
    let rgb = stn_data::Image {
        data: (0..3 * 30 * 40).map(|i| (i % 7) as f32 / 6.0).collect(),
        channels: 3,
        height: 30,
        width: 40,
    };
    std::fs::write(dir.join("colour.png"), rgb.to_png().unwrap()).unwrap();
    std::fs::write(dir.join("notes.png"), b"not a picture").unwrap();
    let out = dir.join("out");
    let o = stn(&[
        "rectify",
        "--model",
        s(&run),
        s(&dir.join("big.png")),
        s(&dir.join("notes.png")),
        s(&dir.join("missing.png")),
        s(&dir.join("colour.png")),
        "--out",
        s(&out),
    ]);
    let (stdout, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "some inputs failed: {err}");
    assert!(err.contains("notes.png") && err.contains("missing.png"), "{err}");
    assert!(stdout.contains("rectified 2 of 4"), "{stdout}");
    let big = stn_data::Image::load_native(&out.join("big.png")).unwrap();
    assert_eq!((big.channels, big.height, big.width), (1, 56, 56), "full resolution kept");
    let col = stn_data::Image::load_native(&out.join("colour.png")).unwrap();
    assert_eq!((col.channels, col.height, col.width), (3, 30, 40));
    let thetas = std::fs::read_to_string(out.join("theta.jsonl")).unwrap();
    assert_eq!(thetas.lines().count(), 2);
    let first: serde_json::Value = serde_json::from_str(thetas.lines().next().unwrap()).unwrap();
    assert_eq!(first["theta"].as_array().unwrap().len(), 6);
    // Each record says what the theta means (stn::explain): the angle is theta's own.
    let t: Vec<f64> = first["theta"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let angle = first["explain"]["angle_deg"].as_f64().unwrap();
    assert!((angle - t[3].atan2(t[0]).to_degrees()).abs() < 1e-3, "{first}");
    assert_eq!(first["explain"]["family"], "affine");
    assert!(!out.join("notes.png").exists());
    // A second run of the same model and options into the same folder keeps what is done;
    // other options are refused (nothing is overwritten).
    let before = std::fs::read(out.join("big.png")).unwrap();
    let o = stn(&["rectify", "--model", s(&run), s(&dir.join("big.png")), "--out", s(&out)]);
    assert!(o.status.success() && text(&o).0.contains("(1 done before)"), "{:?}", text(&o));
    assert_eq!(std::fs::read_to_string(out.join("theta.jsonl")).unwrap(), thetas, "no record twice");
    let o =
        stn(&["rectify", "--model", s(&run), s(&dir.join("big.png")), "--out", s(&out), "--format", "jpeg"]);
    assert!(!o.status.success() && text(&o).1.contains("made differently"), "{}", text(&o).1);
    assert_eq!(std::fs::read(out.join("big.png")).unwrap(), before);
    // A model without a transformer cannot rectify.
    let cnn = dir.join("cnn");
    assert!(stn(&[
        "train",
        "--model",
        "cnn",
        "--epochs",
        "1",
        "--train-size",
        "64",
        "--test-size",
        "32",
        "--out",
        s(&cnn)
    ])
    .status
    .success());
    let o = stn(&["rectify", "--model", s(&cnn), s(&dir.join("big.png")), "--out", s(&dir.join("o2"))]);
    assert!(!o.status.success() && text(&o).1.contains("no spatial transformer"), "{}", text(&o).1);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn viz_draws_the_figure_and_curves() {
    let dir = tmp("viz");
    let run = dir.join("run");
    let o = stn(&[
        "train",
        "--model",
        "st-cnn",
        "--distortion",
        "rts",
        "--epochs",
        "2",
        "--train-size",
        "128",
        "--test-size",
        "32",
        "--out",
        s(&run),
    ]);
    assert!(o.status.success(), "{}", text(&o).1);
    let fig = dir.join("fig.png");
    let o = stn(&["viz", "--model", s(&run), "--count", "8", "--out", s(&fig)]);
    assert!(o.status.success(), "{}", text(&o).1);
    let img = stn_data::Image::load(&fig, 3).unwrap();
    assert!(img.width > 300 && img.height > 100, "{}x{}", img.width, img.height);
    let cur = dir.join("curves.png");
    let o = stn(&["viz", "--curves", s(&run), "--curves", s(&run), "--out", s(&cur)]);
    assert!(o.status.success(), "{}", text(&o).1);
    assert!(stn_data::Image::load(&cur, 3).is_ok());
    // Bad: a folder without metrics, no --model nor --curves.
    let o = stn(&["viz", "--curves", s(&dir), "--out", s(&dir.join("x.png"))]);
    assert!(!o.status.success() && text(&o).1.contains("metrics.jsonl"), "{}", text(&o).1);
    assert!(!dir.join("x.png").exists());
    let o = stn(&["viz", "--out", s(&dir.join("y.png"))]);
    assert_eq!(o.status.code(), Some(2));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn resume_continues_a_run() {
    let dir = tmp("resume");
    let run = dir.join("run");
    let common = ["--model", "st-fcn", "--train-size", "128", "--test-size", "32", "--seed", "4"];
    let mut args = vec!["train", "--epochs", "1", "--out", s(&run)];
    args.extend(common);
    assert!(stn(&args).status.success());
    let o = stn(&["train", "--resume", "--epochs", "3", "--out", s(&run), "--json"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("epoch 2:") && err.contains("epoch 3:") && !err.contains("epoch 1:"), "{err}");
    let last: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(last["epoch"], 3);
    let lines = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let epochs: Vec<u64> = lines
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(epochs, vec![1, 2, 3]);
    // Nothing more to do, and nothing to resume elsewhere.
    let o = stn(&["train", "--resume", "--epochs", "3", "--out", s(&run)]);
    assert!(!o.status.success() && text(&o).1.contains("already trained 3 epochs"), "{}", text(&o).1);
    let o = stn(&["train", "--resume", "--epochs", "2", "--out", s(&dir.join("none"))]);
    assert!(!o.status.success() && text(&o).1.contains("not a run folder"), "{}", text(&o).1);
    // A corrupt optimizer state is an error, and the checkpoint stays as it was.
    let before = std::fs::read(run.join("model.stn")).unwrap();
    std::fs::write(run.join("optimizer-3.bin"), b"junk").unwrap();
    let o = stn(&["train", "--resume", "--epochs", "4", "--out", s(&run)]);
    assert!(!o.status.success() && text(&o).1.contains("optimizer"), "{}", text(&o).1);
    assert_eq!(std::fs::read(run.join("model.stn")).unwrap(), before);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bench_prints_the_throughput_keys() {
    let o = stn(&["bench", "--cases", "a", "--modes", "nearest", "--steps", "2", "--json"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON on stdout");
    for k in ["stcnn_train_img_per_s", "stcnn_infer_img_per_s", "cnn_train_img_per_s"] {
        assert!(v[k].as_f64().unwrap() > 0.0, "{k}");
    }
    // The transformer's cost is the ratio of the two models' times.
    for (cost, st, cnn) in [
        ("st_cost_train", "stcnn_train_ms", "cnn_train_ms"),
        ("st_cost_infer", "stcnn_infer_ms", "cnn_infer_ms"),
    ] {
        let want = v[st].as_f64().unwrap() / v[cnn].as_f64().unwrap() - 1.0;
        assert!((v[cost].as_f64().unwrap() - want).abs() < 1e-9, "{cost}");
    }
    assert_eq!(v["kernels"].as_array().unwrap().len(), 1);
    let o = stn(&["bench", "--cases", "q", "--json"]);
    assert!(!o.status.success() && text(&o).1.contains("unknown case"), "{}", text(&o).1);
    let o = stn(&["bench", "--modes", "cubic"]);
    assert_eq!(o.status.code(), Some(2));
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../stn-table/tests/fixtures").join(name)
}

#[test]
fn rectify_tables_and_sql_from_the_command_line() {
    let dir = tmp("tables");
    let run = dir.join("run");
    let o = stn(&[
        "train",
        "--model",
        "st-cnn",
        "--distortion",
        "rts",
        "--epochs",
        "1",
        "--train-size",
        "256",
        "--test-size",
        "64",
        "--out",
        s(&run),
    ]);
    assert!(o.status.success(), "{}", text(&o).1);
    let digits = dir.join("digits.parquet");
    let o = stn(&[
        "export-digits",
        "--distortion",
        "rts",
        "--rows",
        "300",
        "--row-group",
        "100",
        "--out",
        s(&digits),
    ]);
    assert!(o.status.success() && text(&o).0.contains("wrote 300 digits (42 x 42)"), "{:?}", text(&o));
    let before = std::fs::read(&digits).unwrap();
    let o = stn(&["export-digits", "--rows", "10", "--out", s(&digits)]);
    assert!(!o.status.success() && text(&o).1.contains("never overwritten"), "{}", text(&o).1);
    assert_eq!(std::fs::read(&digits).unwrap(), before);
    let out = dir.join("out.parquet");
    let o = stn(&["rectify", "--model", s(&run), "--table", s(&digits), "--out", s(&out), "--json"]);
    let (stdout, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!((v["rows"].as_u64(), v["failed"].as_u64()), (Some(300), Some(0)), "{v}");
    // What the transformer did to the table, from the output's theta column.
    let x = &v["explain"];
    assert_eq!(
        (x["family"].as_str(), x["rows"].as_u64(), x["failed"].as_u64()),
        (Some("affine"), Some(300), Some(0)),
        "{x}"
    );
    let (lo, mean, hi) = (
        x["angle_deg"]["min"].as_f64().unwrap(),
        x["angle_deg"]["mean"].as_f64().unwrap(),
        x["angle_deg"]["max"].as_f64().unwrap(),
    );
    assert!(lo <= mean && mean <= hi && x["angle_deg"]["count"] == 300, "{x}");
    let most = x["most_rotated"]["value"].as_f64().unwrap();
    assert!((most - lo.abs().max(hi.abs())).abs() < 1e-12, "{x}");
    assert!(
        x["most_rotated"]["row"].as_u64().unwrap() < 300 && x["zoom"]["min"].as_f64().unwrap() > 0.0,
        "{x}"
    );
    assert!(err.contains("rectifying 300 rows in 1 file(s)"), "plain progress lines off a terminal: {err}");
    assert!(err.contains("300 rows, 0 failed"), "{err}");
    // A re-run keeps the output it would make; with other options it is refused, never overwritten.
    let o = stn(&["rectify", "--model", s(&run), "--table", s(&digits), "--out", s(&out)]);
    assert!(o.status.success() && text(&o).1.contains("already rectified"), "{}", text(&o).1);
    let o =
        stn(&["rectify", "--model", s(&run), "--table", s(&digits), "--out", s(&out), "--png-level", "9"]);
    let e = text(&o).1;
    assert!(!o.status.success() && e.contains("never overwritten") && e.contains("option encoding"), "{e}");
    // Bad rows: reported with file, row and reason; exit code 1; good rows kept.
    let bad_out = dir.join("bad.parquet");
    let o = stn(&[
        "rectify",
        "--model",
        s(&run),
        "--table",
        s(&fixture("bad_rows.parquet")),
        "--out",
        s(&bad_out),
    ]);
    let (stdout, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("bad_rows.parquet row 1: null image") && err.contains("row 4: "), "{err}");
    assert!(stdout.contains("2 rows done, 6 failed"), "{stdout}");
    assert!(bad_out.is_file());
    let strict = dir.join("strict.parquet");
    let o = stn(&[
        "rectify",
        "--model",
        s(&run),
        "--table",
        s(&fixture("bad_rows.parquet")),
        "--out",
        s(&strict),
        "--on-error",
        "fail",
    ]);
    assert!(!o.status.success() && text(&o).1.contains("row 1: null image"), "{}", text(&o).1);
    assert!(!strict.exists());
    // Wrong column, corrupt file.
    let o = stn(&[
        "rectify",
        "--model",
        s(&run),
        "--table",
        s(&digits),
        "--column",
        "label",
        "--out",
        s(&dir.join("x.parquet")),
    ]);
    assert!(!o.status.success() && text(&o).1.contains("holds no images"), "{}", text(&o).1);
    std::fs::write(dir.join("junk.parquet"), b"PAR1 but not really").unwrap();
    let o = stn(&[
        "rectify",
        "--model",
        s(&run),
        "--table",
        s(&dir.join("junk.parquet")),
        "--out",
        s(&dir.join("y.parquet")),
    ]);
    assert!(
        !o.status.success() && text(&o).1.contains("junk.parquet: not a readable Parquet file"),
        "{}",
        text(&o).1
    );
    // SQL: theta per row as JSON lines, and COPY TO.
    let q = format!("SELECT id, stn_theta(image) AS theta FROM '{}' ORDER BY id LIMIT 3", s(&digits));
    let o = stn(&["sql", "--model", s(&run), &q, "--json"]);
    let (stdout, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let rows: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[2]["id"], 2);
    assert_eq!(rows[0]["theta"].as_array().unwrap().len(), 6);
    let copied = dir.join("copied.parquet");
    let q =
        format!("COPY (SELECT id, stn_rectify(image) AS image FROM '{}') TO '{}'", s(&digits), s(&copied));
    let o = stn(&["sql", "--model", s(&run), &q]);
    assert!(o.status.success() && copied.is_file(), "{}", text(&o).1);
    let o = stn(&["sql", "--model", s(&run), "SELECT stn_theta(1)"]);
    assert!(!o.status.success() && text(&o).1.contains("holds no images"), "{}", text(&o).1);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn training_on_the_digits_table_equals_training_on_idx() {
    let dir = tmp("table-train");
    let digits = dir.join("digits.parquet");
    assert!(stn(&["export-digits", "--out", s(&digits)]).status.success());
    let common = [
        "--model",
        "st-cnn",
        "--distortion",
        "rts",
        "--epochs",
        "1",
        "--train-size",
        "512",
        "--test-size",
        "256",
        "--json",
    ];
    let (idx_run, table_run) = (dir.join("idx"), dir.join("table"));
    let mut a = vec!["train", "--out", s(&idx_run)];
    a.extend(common);
    let mut b = vec!["train", "--table", s(&digits), "--label-column", "label", "--out", s(&table_run)];
    b.extend(common);
    let (oa, ob) = (stn(&a), stn(&b));
    assert!(oa.status.success() && ob.status.success(), "{} {}", text(&oa).1, text(&ob).1);
    let ma: serde_json::Value = serde_json::from_str(text(&oa).0.trim()).unwrap();
    let mb: serde_json::Value = serde_json::from_str(text(&ob).0.trim()).unwrap();
    assert_eq!(ma["test_error"], mb["test_error"], "same error at the same seed and budget");
    assert_eq!(ma["train_loss"], mb["train_loss"]);
    let o = stn(&["eval", "--model", s(&table_run), "--table", s(&digits), "--json"]);
    assert!(o.status.success(), "{}", text(&o).1);
    let e: serde_json::Value = serde_json::from_str(text(&o).0.trim()).unwrap();
    assert_eq!(e["images"], 10000);
    // A table without the label column is a clear error.
    let o = stn(&["train", "--table", s(&digits), "--label-column", "digit", "--out", s(&dir.join("x"))]);
    assert!(!o.status.success() && text(&o).1.contains("no label column `digit`"), "{}", text(&o).1);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn augment_images_and_tables_viz_train_and_bench() {
    let dir = tmp("augment");
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    for name in ["d0.png", "d1.png", "c0.png"] {
        std::fs::copy(fixture("images").join(name), images.join(name)).unwrap();
    }
    std::fs::write(images.join("zz-broken.png"), b"not a png").unwrap();
    let spec = "affine:rot=20,scale=0.9-1.1;tps:0.05;hflip";
    let out = dir.join("aug");
    let args = [
        "augment",
        "--spec",
        spec,
        "--images",
        s(&images),
        "--out",
        s(&out),
        "--copies",
        "2",
        "--seed",
        "5",
        "--json",
    ];
    let o = stn(&args);
    let (stdout, err) = text(&o);
    // The broken file fails (exit 1), the others are written.
    assert_eq!(o.status.code(), Some(1), "{err}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["written"], 6);
    assert_eq!(v["failed"].as_array().unwrap().len(), 1);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(out.join("augment.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6);
    for l in &lines {
        let img = stn_data::Image::load_native(Path::new(l["output"].as_str().unwrap())).unwrap();
        let input = stn_data::Image::load_native(Path::new(l["input"].as_str().unwrap())).unwrap();
        assert_eq!((img.height, img.width, img.channels), (input.height, input.width, input.channels));
        let warp: stn::augment::Warp = serde_json::from_value(l["warp"].clone()).unwrap();
        let aug = stn::augment::Augment::parse(spec).unwrap();
        let key = stn::augment::Key::new(5, l["copy"].as_u64().unwrap(), l["index"].as_u64().unwrap());
        assert_eq!(warp, aug.draw(&[key], [input.height, input.width])[0]);
    }
    // A re-run keeps what an earlier run of the same spec and seed made; another seed is refused.
    let record = std::fs::read_to_string(out.join("augment.jsonl")).unwrap();
    let o = stn(&args);
    let v: serde_json::Value = serde_json::from_str(text(&o).0.trim()).unwrap();
    assert_eq!((v["written"].as_u64(), v["done_before"].as_u64()), (Some(0), Some(6)), "{v}");
    assert_eq!(std::fs::read_to_string(out.join("augment.jsonl")).unwrap(), record);
    let mut other = args;
    let seed = other.iter().position(|a| *a == "--seed").unwrap();
    other[seed + 1] = "6";
    let o = stn(&other);
    assert!(!o.status.success() && text(&o).1.contains("made differently"), "{}", text(&o).1);
    // A table: every row twice.
    let table_out = dir.join("aug.parquet");
    let o = stn(&[
        "augment",
        "--spec",
        spec,
        "--table",
        s(&fixture("hf_bytes.parquet")),
        "--out",
        s(&table_out),
        "--copies",
        "2",
        "--json",
    ]);
    let (stdout, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["rows_out"], 14);
    assert!(table_out.is_file());
    // Bad specs are clear errors with nothing written.
    for (bad, needle) in
        [("affine:scale=2-1", "affine.scale"), ("hflip:p=2", "hflip.p"), ("warp:1", "unknown op")]
    {
        let o = stn(&["augment", "--spec", bad, "--images", s(&images), "--out", s(&dir.join("bad"))]);
        assert!(!o.status.success() && text(&o).1.contains(needle), "{bad}: {}", text(&o).1);
        assert!(!dir.join("bad").exists());
    }
    // The picture.
    let fig = dir.join("aug.png");
    let o = stn(&["viz", "--augment", spec, "--count", "4", "--copies", "3", "--out", s(&fig)]);
    assert!(o.status.success(), "{}", text(&o).1);
    let img = stn_data::Image::load(&fig, 3).unwrap();
    assert!(img.width >= 4 * 28 * 4 && img.height >= 4 * 28 * 4, "{}x{}", img.width, img.height);
    // Training with augmentation records the spec; a bad one stops before anything is written.
    let run = dir.join("run");
    let o = stn(&[
        "train",
        "--model",
        "cnn",
        "--augment",
        "affine:rot=20",
        "--epochs",
        "1",
        "--train-size",
        "128",
        "--test-size",
        "32",
        "--out",
        s(&run),
    ]);
    assert!(o.status.success(), "{}", text(&o).1);
    let (cfg, _) = stn::persist::load::<stn_cli::run::RunConfig>(&run.join("model.stn")).unwrap();
    assert_eq!(cfg.augment.as_deref(), Some("affine:rot=20"));
    let o = stn(&["train", "--augment", "affine:rot=nan", "--out", s(&dir.join("run2"))]);
    assert!(!o.status.success() && text(&o).1.contains("affine.rot"), "{}", text(&o).1);
    assert!(!dir.join("run2").exists());
    // The benchmark's rows, as the peer script prints them.
    let o = stn(&["bench", "--augment", "--min-time", "0", "--json"]);
    let (stdout, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 6);
    for r in rows {
        assert!(
            r["op"].is_string() && r["shape"].is_string() && r["img_per_s"].as_f64().unwrap() > 0.0,
            "{r}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn augmentation_makes_a_cnn_robust_to_rotation() {
    // The same CNN and budget on undistorted digits, with and without random rotations; tested
    // on rotated (R) digits. Measured: 56.9% error without, 36.6% with (3 epochs, 2,000 digits).
    let dir = tmp("robust");
    let mut errors = Vec::new();
    for augment in [None, Some("affine:rot=90,scale=0.9-1.1,shift=0.1")] {
        let run = dir.join(if augment.is_some() { "aug" } else { "plain" });
        let mut args =
            vec!["train", "--model", "cnn", "--epochs", "3", "--train-size", "2000", "--test-size", "200"];
        if let Some(a) = augment {
            args.extend(["--augment", a]);
        }
        args.extend(["--out", s(&run)]);
        let o = stn(&args);
        assert!(o.status.success(), "{}", text(&o).1);
        let o = stn(&["eval", "--model", s(&run), "--distortion", "r", "--json"]);
        assert!(o.status.success(), "{}", text(&o).1);
        let v: serde_json::Value = serde_json::from_str(text(&o).0.trim()).unwrap();
        errors.push(v["error_rate"].as_f64().unwrap());
    }
    assert!(errors[1] < errors[0] - 0.1, "error on R digits without / with augmentation: {errors:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// `--device`: an unknown name, and a device this build lacks, are clear errors with no output.
#[test]
fn device_flag_errors_are_clear() {
    let dir = tmp("device-err");
    let run = dir.join("run");
    let o = stn(&["train", "--device", "tpu", "--epochs", "1", "--out", s(&run)]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("unknown device"), "{}", text(&o).1);
    if !cfg!(feature = "cuda") {
        let o = stn(&["train", "--device", "cuda", "--epochs", "1", "--train-size", "64", "--out", s(&run)]);
        assert!(!o.status.success());
        assert!(text(&o).1.contains("no CUDA support"), "{}", text(&o).1);
        assert!(!run.join("model.stn").exists(), "a failed run left a model");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// Training, rectifying and benchmarking on the GPU (Vulkan; lavapipe where there is no GPU).
#[cfg(feature = "gpu")]
#[test]
fn train_rectify_and_bench_on_the_gpu() {
    let dir = tmp("gpu");
    let run = dir.join("run");
    let o = stn(&[
        "train",
        "--device",
        "vulkan",
        "--model",
        "st-cnn",
        "--distortion",
        "rts",
        "--epochs",
        "1",
        "--train-size",
        "128",
        "--test-size",
        "64",
        "--batch",
        "32",
        "--out",
        s(&run),
        "--json",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "stn train --device vulkan failed: {err}");
    let last: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON on stdout");
    assert!((0.0..=1.0).contains(&last["test_error"].as_f64().unwrap()));
    // The run rectifies on the GPU as on the CPU (the same images, pixel values within 1/255).
    let mut inputs = Vec::new();
    for (i, (c, h, w)) in [(1usize, 56usize, 56usize), (3, 30, 40)].into_iter().enumerate() {
        let img = stn_data::Image {
            data: (0..c * h * w).map(|k| ((k * 7 + i) % 13) as f32 / 12.0).collect(),
            channels: c,
            height: h,
            width: w,
        };
        let p = dir.join(format!("in{i}.png"));
        std::fs::write(&p, img.to_png().unwrap()).unwrap();
        inputs.push(p);
    }
    let mut outs = Vec::new();
    for dev in ["cpu", "vulkan"] {
        let out = dir.join(format!("rect-{dev}"));
        let mut args = vec!["rectify", "--device", dev, "--model", s(&run), "--out", s(&out)];
        args.extend(inputs.iter().map(|p| s(p)));
        let o = stn(&args);
        assert!(o.status.success(), "rectify on {dev}: {}", text(&o).1);
        outs.push(out);
    }
    for p in &inputs {
        let name = p.file_name().unwrap();
        let a = stn_data::Image::load_native(&outs[0].join(name).with_extension("png")).unwrap();
        let b = stn_data::Image::load_native(&outs[1].join(name).with_extension("png")).unwrap();
        let diff = a.data.iter().zip(&b.data).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(diff <= 1.5 / 255.0, "{name:?}: cpu and gpu rectifications differ by {diff}");
    }
    let o = stn(&["bench", "--device", "vulkan", "--warp-shape", "2x3x32x32", "--steps", "3", "--json"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "bench --device vulkan: {err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(v["api"], "Vulkan");
    for k in ["warp_fwd_ms", "warp_fb_ms", "stcnn_train_img_per_s", "cnn_infer_img_per_s"] {
        assert!(v[k].as_f64().unwrap() > 0.0, "{k}: {}", v[k]);
    }
    std::fs::remove_dir_all(dir).unwrap();
}
