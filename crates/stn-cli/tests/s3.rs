//! Tables in S3: an S3-compatible server on loopback (moto's, from PyPI, started and stopped
//! here), tables uploaded with boto3, `stn sql` reading `s3://` tables and writing `COPY ... TO
//! 's3://...'`, the outputs read back by pyarrow through S3 and compared with the local run's;
//! an existing object never overwritten; a missing bucket and a stopped server are clear errors.
//!
//! The Python with moto, boto3 and pyarrow comes from `STN_PYTHON` (set by `.ci/run`); without
//! it, `python3` is tried, and where it lacks them the test says so and passes only outside CI.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::cli::{s, tmp};

fn python() -> Option<String> {
    crate::cli::python_with("moto.server, boto3, pyarrow.fs", "moto[server], boto3 and pyarrow")
}

fn tool() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/s3/s3_tool.py")
}

/// The S3 server, killed when dropped.
struct Server {
    _child: Killed,
    endpoint: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The secret of the test's credentials: it must never be printed.
const SECRET: &str = "stn-test-secret-Zq8vXw3";

fn env<'a>(c: &'a mut Command, endpoint: &str) -> &'a mut Command {
    c.env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "stn-test-key")
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_PROFILE")
}

fn start(py: &str) -> Server {
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let child = Command::new(py)
        .arg(tool())
        .args(["serve", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server { _child: Killed(child), endpoint };
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(30), "the S3 server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

fn py_tool(py: &str, endpoint: &str, args: &[&str]) -> Output {
    env(Command::new(py).arg(tool()).args(args), endpoint).output().unwrap()
}

fn stn(endpoint: &str, args: &[&str]) -> Output {
    env(&mut Command::new(env!("CARGO_BIN_EXE_stn")), endpoint).args(args).output().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn sql_reads_and_writes_tables_in_s3() {
    let Some(py) = python() else { return };
    let dir = tmp("s3");
    let run = crate::hostile::run_dir(&dir);
    let server = start(&py);
    let e = server.endpoint.clone();
    let table = dir.join("table");
    std::fs::create_dir_all(&table).unwrap();
    for (i, rows) in [(0, "120"), (1, "80")] {
        let f = table.join(format!("part-{i}.parquet"));
        ok(&stn(&e, &["export-digits", "--rows", rows, "--row-group", "50", "--out", s(&f)]));
    }
    ok(&py_tool(&py, &e, &["mkbucket", "images"]));
    for i in 0..2 {
        let name = format!("part-{i}.parquet");
        ok(&py_tool(&py, &e, &["put", s(&table.join(&name)), &format!("s3://images/in/{name}")]));
    }

    // The same rows from S3 as from the local folder.
    let q = |from: &str| format!("SELECT id, stn_theta(image) AS t FROM '{from}' ORDER BY id");
    let local = ok(&stn(&e, &["sql", "--model", s(&run), "--json", &q(&format!("{}/", table.display()))]));
    let remote = ok(&stn(&e, &["sql", "--model", s(&run), "--json", &q("s3://images/in/")]));
    assert_eq!(local.lines().count(), 200);
    // The two files repeat ids: the rows compared as sorted lines.
    let sorted = |t: &str| {
        let mut v: Vec<&str> = t.lines().collect();
        v.sort();
        v.join("\n")
    };
    assert_eq!(sorted(&remote), sorted(&local), "the rows of the table in S3");

    // COPY ... TO S3 (a multipart upload): pyarrow reads the same rows through S3 as from the
    // local COPY's output.
    let copy = |to: &str| {
        format!(
            "COPY (SELECT id, stn_rectify(image) AS image, stn_theta(image) AS t FROM 's3://images/in/') TO '{to}'"
        )
    };
    let local_out = dir.join("local.parquet");
    ok(&stn(&e, &["sql", "--model", s(&run), &copy(s(&local_out))]));
    ok(&stn(&e, &["sql", "--model", s(&run), &copy("s3://images/out/rect.parquet")]));
    let want = ok(&py_tool(&py, &e, &["read", s(&local_out)]));
    let got = ok(&py_tool(&py, &e, &["read", "s3://images/out/rect.parquet"]));
    assert_eq!(got, want, "pyarrow reads the COPY's object as the local output");
    assert!(got.contains("\"rows\": 200"), "{got}");

    // An existing object is never overwritten; a folder target that holds objects neither.
    let o = stn(&e, &["sql", "--model", s(&run), &copy("s3://images/out/rect.parquet")]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("already exists"), "{err}");
    assert_eq!(ok(&py_tool(&py, &e, &["read", "s3://images/out/rect.parquet"])), want, "unchanged");
    let o = stn(&e, &["sql", "--model", s(&run), &format!("{} STORED AS PARQUET", copy("s3://images/in/"))]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("already exists"), "{err}");
    assert_eq!(ok(&py_tool(&py, &e, &["ls", "s3://images/in/"])).lines().count(), 2, "nothing added");

    // A missing bucket names it; a stopped server is an error, not a hang; no secret printed.
    let o = stn(&e, &["sql", "--model", s(&run), &q("s3://no-such-bucket/in/")]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success() && err.contains("s3://no-such-bucket/in/: cannot be read"), "{err}");
    assert!(err.contains("NoSuchBucket") || err.contains("does not exist"), "{err}");
    let o = stn(&e, &["sql", "--model", s(&run), &q("s3://images/nothing-here/")]);
    let err_missing = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err_missing.contains("no such object or prefix"), "{err_missing}");
    drop(server);
    let t = Instant::now();
    let o = stn(&e, &["sql", "--model", s(&run), &copy("s3://images/out2/rect.parquet")]);
    let err2 = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success() && err2.contains("s3://images/in/: cannot be read"), "{err2}");
    assert!(t.elapsed() < Duration::from_secs(120), "gave up in {:?}", t.elapsed());
    for text in [&err, &err2, &local, &remote] {
        assert!(!text.contains(SECRET), "the secret key was printed: {text}");
    }
}

/// The rows of `url` (a file, or a prefix or folder) as pyarrow reads them, hashed per column in
/// a canonical order.
fn read(py: &str, endpoint: &str, url: &str) -> String {
    ok(&py_tool(py, endpoint, &["read", url]))
}

/// Writes the digits as `files` local Parquet files (`rows` rows each, row groups of 50) in
/// `dir/table` and uploads them to `s3://BUCKET/in/`.
fn table_in_s3(py: &str, e: &str, dir: &std::path::Path, bucket: &str, files: usize, rows: usize) -> PathBuf {
    let table = dir.join("table");
    std::fs::create_dir_all(&table).unwrap();
    ok(&py_tool(py, e, &["mkbucket", bucket]));
    for i in 0..files {
        let name = format!("part-{i}.parquet");
        let f = table.join(&name);
        ok(&stn(e, &["export-digits", "--rows", &rows.to_string(), "--row-group", "50", "--out", s(&f)]));
        ok(&py_tool(py, e, &["put", s(&f), &format!("s3://{bucket}/in/{name}")]));
    }
    table
}

#[test]
fn table_commands_read_and_write_s3() {
    let Some(py) = python() else { return };
    let dir = tmp("s3-table");
    let run = crate::hostile::run_dir(&dir);
    let server = start(&py);
    let e = server.endpoint.clone();
    let table = table_in_s3(&py, &e, &dir, "images", 3, 120);

    // rectify: from S3 to S3, the same rows as the local run's files, read by pyarrow through S3.
    let local = dir.join("local-out");
    ok(&stn(&e, &["rectify", "--model", s(&run), "--table", s(&table), "--out", s(&local)]));
    let o = stn(
        &e,
        &["rectify", "--model", s(&run), "--table", "s3://images/in/", "--out", "s3://images/out/", "--json"],
    );
    let summary: serde_json::Value = serde_json::from_str(ok(&o).trim()).unwrap();
    assert_eq!(summary["rows"], 360, "{summary}");
    for i in 0..3 {
        let name = format!("part-{i}.parquet");
        let got = read(&py, &e, &format!("s3://images/out/{name}"));
        assert_eq!(got, read(&py, &e, s(&local.join(&name))), "{name}");
        assert!(got.contains("\"rows\": 120") && got.contains("stn_theta"), "{got}");
    }
    let listed = ok(&py_tool(&py, &e, &["ls", "s3://images/out/"]));
    assert_eq!(listed.lines().count(), 3, "only the outputs, no temporary object: {listed}");
    // A re-run skips the complete outputs; a local table into S3 and back works too.
    let o =
        stn(&e, &["rectify", "--model", s(&run), "--table", "s3://images/in/", "--out", "s3://images/out/"]);
    assert_eq!(String::from_utf8_lossy(&o.stderr).matches("skipped").count(), 3, "{}", ok(&o));
    ok(&stn(
        &e,
        &[
            "rectify",
            "--model",
            s(&run),
            "--table",
            s(&table.join("part-1.parquet")),
            "--out",
            "s3://images/one.parquet",
        ],
    ));
    ok(&stn(
        &e,
        &[
            "rectify",
            "--model",
            s(&run),
            "--table",
            "s3://images/in/part-1.parquet",
            "--out",
            s(&dir.join("back.parquet")),
        ],
    ));
    let want = read(&py, &e, s(&local.join("part-1.parquet")));
    assert_eq!(read(&py, &e, "s3://images/one.parquet"), want);
    assert_eq!(read(&py, &e, s(&dir.join("back.parquet"))), want);

    // An object that is not our output is never overwritten, whatever is written there.
    let foreign = dir.join("foreign.parquet");
    std::fs::write(&foreign, b"not ours").unwrap();
    ok(&py_tool(&py, &e, &["put", s(&foreign), "s3://images/taken/part-0.parquet"]));
    let o = stn(
        &e,
        &[
            "rectify",
            "--model",
            s(&run),
            "--table",
            s(&table.join("part-0.parquet")),
            "--out",
            "s3://images/taken/part-0.parquet",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("never overwritten"), "{err}");
    let o = py_tool(&py, &e, &["read", "s3://images/taken/part-0.parquet"]);
    assert!(!o.status.success(), "the foreign object is still there, unchanged (not Parquet)");

    // augment and eval on a table in S3: the local run's results.
    let aug = |to: &str| {
        [
            "augment",
            "--spec",
            "rotate:20",
            "--table",
            "s3://images/in/",
            "--out",
            to,
            "--copies",
            "2",
            "--seed",
            "5",
        ]
        .map(str::to_string)
    };
    let local_aug = dir.join("aug");
    let args = aug(s(&local_aug));
    ok(&stn(&e, &args.iter().map(String::as_str).collect::<Vec<_>>()));
    let args = aug("s3://images/aug/");
    ok(&stn(&e, &args.iter().map(String::as_str).collect::<Vec<_>>()));
    assert_eq!(read(&py, &e, "s3://images/aug/"), read(&py, &e, s(&local_aug)), "augmented in S3 as locally");
    // train from S3: the same model, bit for bit, as from the local folder.
    let (tl, tr) = (dir.join("train-local"), dir.join("train-s3"));
    ok(&stn(&e, &["train", "--table", s(&table), "--epochs", "1", "--out", s(&tl)]));
    ok(&stn(&e, &["train", "--table", "s3://images/in/", "--epochs", "1", "--out", s(&tr)]));
    // The same training: every epoch's loss and test error to the last bit (timings aside).
    let metrics = |d: &PathBuf| {
        let text = std::fs::read_to_string(d.join("metrics.jsonl")).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        (v["train_loss"].as_f64().unwrap(), v["test_error"].as_f64().unwrap())
    };
    assert_eq!(metrics(&tl), metrics(&tr), "trained from S3 as from the local folder");
    let eval = |t: &str| ok(&stn(&e, &["eval", "--model", s(&run), "--table", t, "--json"]));
    assert_eq!(eval("s3://images/in/"), eval(s(&table)), "eval reads the table in S3 as the local folder");

    // Hugging Face `path` rows resolve under the table's prefix, and never outside it.
    let hf = dir.join("hf");
    ok(&stn(&e, &["export-digits", "--images", "--rows", "6", "--out", s(&hf.join("img"))]));
    let mut names: Vec<String> = std::fs::read_dir(hf.join("img"))
        .unwrap()
        .map(|f| f.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut paths: Vec<String> = names.iter().map(|n| format!("img/{n}")).collect();
    paths.push("../in/part-0.parquet".into());
    paths.push("img/missing.png".into());
    let script = format!(
        "import pyarrow as pa, pyarrow.parquet as pq, json\n\
         paths = json.loads({:?})\n\
         t = pa.table({{'image': pa.array([{{'bytes': None, 'path': p}} for p in paths], \
         pa.struct([('bytes', pa.binary()), ('path', pa.string())])), 'id': list(range(len(paths)))}})\n\
         pq.write_table(t, {:?})\n",
        serde_json::to_string(&paths).unwrap(),
        s(&hf.join("paths.parquet"))
    );
    let o = Command::new(&py).args(["-c", &script]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for n in &names {
        ok(&py_tool(&py, &e, &["put", s(&hf.join("img").join(n)), &format!("s3://images/hf/img/{n}")]));
    }
    ok(&py_tool(&py, &e, &["put", s(&hf.join("paths.parquet")), "s3://images/hf/paths.parquet"]));
    let local_hf = dir.join("hf-out.parquet");
    // Two bad rows: the output is written, and the exit code says rows failed.
    for (from, to) in [
        (s(&hf.join("paths.parquet")), s(&local_hf)),
        ("s3://images/hf/paths.parquet", "s3://images/hf-out/paths.parquet"),
    ] {
        let o = stn(&e, &["rectify", "--model", s(&run), "--table", from, "--out", to]);
        assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let errors = |t: &str| {
        let q = format!("SELECT id, stn_error FROM '{t}' ORDER BY id");
        ok(&stn(&e, &["sql", "--model", s(&run), "--json", &q]))
    };
    let remote_errors = errors("s3://images/hf-out/paths.parquet");
    let lines: Vec<&str> = remote_errors.lines().collect();
    assert_eq!(lines.len(), 8, "{remote_errors}");
    assert!(
        lines[..6].iter().all(|l| !l.contains("stn_error")),
        "the 6 images under the prefix: {remote_errors}"
    );
    assert!(lines[6].contains("goes up with `..`"), "{}", lines[6]);
    assert!(lines[7].contains("img/missing.png") && lines[7].contains("no such object"), "{}", lines[7]);
    let local_lines: Vec<String> = errors(s(&local_hf)).lines().map(str::to_string).collect();
    assert_eq!(&local_lines[..6], &lines[..6], "the same pixels as read from the local folder");
    let (want, got) = (read(&py, &e, s(&local_hf)), read(&py, &e, "s3://images/hf-out/paths.parquet"));
    let column =
        |r: &str, c: &str| serde_json::from_str::<serde_json::Value>(r).unwrap()["columns"][c].clone();
    for c in ["stn_image", "stn_theta"] {
        assert_ne!(column(&want, c), serde_json::Value::Null, "{want}");
        assert_eq!(column(&got, c), column(&want, c), "{c}: the rows read from S3 are the local folder's");
    }
    assert!(got.contains("\"rows\": 8"), "{got}");
    drop(server);
}

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `s3_tool.py ARGS` and waits for its first line on stdout (the tool prints one when it
/// serves); returns the process and the line.
fn serve(py: &str, args: &[&str]) -> (Killed, String) {
    use std::io::BufRead;
    let mut child =
        Command::new(py).arg(tool()).args(args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    (Killed(child), line)
}

#[test]
fn s3_faults_leave_nothing_partial() {
    use std::io::BufRead;
    let Some(py) = python() else { return };
    let dir = tmp("s3-faults");
    let run = crate::hostile::run_dir(&dir);
    let server = start(&py);
    let e = server.endpoint.clone();
    let table = table_in_s3(&py, &e, &dir, "faults", 6, 10_000);
    let local = dir.join("local-out");
    ok(&stn(&e, &["rectify", "--model", s(&run), "--table", s(&table), "--out", s(&local)]));

    // The server goes away in the middle of the run (a proxy in front of it is killed once the
    // first file is done): the run fails with the store's error, every object it made visible
    // is complete, and the re-run (the server back) skips those and completes the table.
    let server_port = e.rsplit(':').next().unwrap().to_string();
    let port = free_port().to_string();
    let via = format!("http://127.0.0.1:{port}");
    let args = ["rectify", "--model", s(&run), "--table", "s3://faults/in/", "--out", "s3://faults/out/"];
    let proxy = serve(&py, &["proxy", &port, &server_port]);
    let mut child = env(&mut Command::new(env!("CARGO_BIN_EXE_stn")), &via)
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = String::new();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        stderr += &line;
        stderr.push('\n');
        if line.contains(" -> ") {
            drop(proxy);
            break;
        }
    }
    for line in lines {
        stderr += &line.unwrap();
        stderr.push('\n');
    }
    let status = child.wait().unwrap();
    assert!(!status.success(), "the run failed: {stderr}");
    assert!(stderr.contains("error:") && stderr.contains("s3://faults/"), "{stderr}");
    let listed = ok(&py_tool(&py, &e, &["ls", "s3://faults/out/"]));
    let visible: Vec<&str> =
        listed.lines().filter(|k| !k.rsplit('/').next().unwrap().starts_with('.')).collect();
    assert!(!visible.is_empty() && visible.len() < 6, "some files done, not all: {listed}");
    for key in &visible {
        let got = read(&py, &e, &format!("s3://faults/{key}"));
        let name = key.rsplit('/').next().unwrap();
        assert_eq!(got, read(&py, &e, s(&local.join(name))), "{key} is complete");
    }
    let _proxy = serve(&py, &["proxy", &port, &server_port]);
    let o = env(&mut Command::new(env!("CARGO_BIN_EXE_stn")), &via).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(err.matches("skipped").count(), visible.len(), "{err}");
    assert_eq!(read(&py, &e, "s3://faults/out/"), read(&py, &e, s(&local)), "the table completed");

    // A missing bucket is named, in and out; nothing is written.
    let o = stn(
        &e,
        &["rectify", "--model", s(&run), "--table", "s3://no-such-bucket/in/", "--out", s(&dir.join("x"))],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("s3://no-such-bucket/in/") && err.contains("NoSuchBucket"),
        "{err}"
    );
    assert!(!dir.join("x").exists());
    let one = table.join("part-0.parquet");
    let o = stn(
        &e,
        &["rectify", "--model", s(&run), "--table", s(&one), "--out", "s3://no-such-bucket/o.parquet"],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("NoSuchBucket"), "{err}");
    drop(server);

    // Wrong credentials: a server that checks them refuses, the run says so, writes nothing,
    // and prints no secret; the right ones work.
    let auth_port = free_port().to_string();
    let (_auth, line) = serve(&py, &["serve-auth", &auth_port]);
    let creds: serde_json::Value = serde_json::from_str(&line).unwrap();
    let (key, secret) = (creds["key"].as_str().unwrap(), creds["secret"].as_str().unwrap());
    let ae = format!("http://127.0.0.1:{auth_port}");
    let with = |id: &str, secret: &str, c: &mut Command| -> Output {
        env(c, &ae).env("AWS_ACCESS_KEY_ID", id).env("AWS_SECRET_ACCESS_KEY", secret).output().unwrap()
    };
    let tool_as = |args: &[&str]| with(key, secret, Command::new(&py).arg(tool()).args(args));
    ok(&tool_as(&["mkbucket", "locked"]));
    ok(&tool_as(&["put", s(&one), "s3://locked/in/part-0.parquet"]));
    let wrong_secret = "wrong-secret-Kk29aa";
    for (id, sec, why) in
        [(key, wrong_secret, "SignatureDoesNotMatch"), ("AKIANOSUCHKEY0000000", secret, "InvalidAccessKeyId")]
    {
        for (from, to) in
            [("s3://locked/in/", s(&dir.join("y"))), (s(&one), "s3://locked/out/part-0.parquet")]
        {
            let mut c = Command::new(env!("CARGO_BIN_EXE_stn"));
            c.args(["rectify", "--model", s(&run), "--table", from, "--out", to]);
            let o = with(id, sec, &mut c);
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success() && err.contains(why), "{from} -> {to}: {err}");
            assert!(!err.contains(secret) && !err.contains(wrong_secret), "a secret printed: {err}");
        }
    }
    assert!(!dir.join("y").exists());
    assert_eq!(ok(&tool_as(&["ls", "s3://locked/out/"])), "", "nothing written");
    let mut c = Command::new(env!("CARGO_BIN_EXE_stn"));
    c.args(["rectify", "--model", s(&run), "--table", "s3://locked/in/", "--out", "s3://locked/out/"]);
    ok(&with(key, secret, &mut c));
    assert!(ok(&tool_as(&["read", "s3://locked/out/"])).contains("\"rows\": 10000"));
}

/// `tools/delta/delta_tool.py ARGS` against the S3 server: its JSON line.
fn delta_tool(py: &str, endpoint: &str, args: &[&str]) -> serde_json::Value {
    let tool = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/delta/delta_tool.py");
    let o = env(Command::new(py).arg(tool).args(args), endpoint).output().unwrap();
    assert!(o.status.success(), "delta_tool.py {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap_or(serde_json::Value::Null)
}

#[test]
fn delta_tables_in_s3() {
    let Some(py) = crate::cli::python_with(
        "moto.server, boto3, deltalake, pyroaring",
        "moto[server], boto3, deltalake and pyroaring",
    ) else {
        return;
    };
    let dir = tmp("s3-delta");
    let run = crate::hostile::run_dir(&dir);
    let server = start(&py);
    let e = server.endpoint.clone();
    let digits = dir.join("digits.parquet");
    ok(&stn(&e, &["export-digits", "--distortion", "rts", "--rows", "200", "--out", s(&digits)]));
    let reference = dir.join("reference.parquet");
    ok(&stn(&e, &["rectify", "--model", s(&run), "--table", s(&digits), "--out", s(&reference)]));
    ok(&py_tool(&py, &e, &["mkbucket", "lake"]));
    // Written by deltalake into S3: two versions, then a deletion vector (rows 0, 5, 7).
    delta_tool(&py, &e, &["make", "s3://lake/in", s(&digits), "--split", "120", "--delete-rows", "0,5,7"]);
    let want: Vec<i64> = (0..200).filter(|i| ![0, 5, 7].contains(i)).collect();
    let o = stn(
        &e,
        &[
            "rectify",
            "--model",
            s(&run),
            "--table",
            "s3://lake/in",
            "--out",
            "s3://lake/out",
            "--mode",
            "create",
            "--json",
        ],
    );
    let summary: serde_json::Value = serde_json::from_str(ok(&o).trim()).unwrap();
    assert_eq!(summary["rows"], 197, "{summary}");
    let back = delta_tool(&py, &e, &["read", "s3://lake/out"]);
    assert_eq!((back["version"].clone(), back["rows"].clone()), (0.into(), 197.into()), "{back}");
    let cmp = delta_tool(&py, &e, &["compare", "s3://lake/out", s(&reference)]);
    let ids: Vec<i64> = cmp["ids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    assert_eq!(ids, want, "{cmp}");
    assert_eq!(cmp["differ"], serde_json::json!([]), "the rows the local run rectified: {cmp}");
    // An append: version 1; SQL reads the input table by its URL.
    ok(&stn(
        &e,
        &["rectify", "--model", s(&run), "--table", s(&digits), "--out", "s3://lake/out", "--mode", "append"],
    ));
    let back = delta_tool(&py, &e, &["read", "s3://lake/out"]);
    assert_eq!((back["version"].clone(), back["rows"].clone()), (1.into(), 397.into()), "{back}");
    let o = stn(&e, &["sql", "--model", s(&run), "--json", "SELECT count(*) AS n FROM 's3://lake/in'"]);
    assert!(ok(&o).contains("\"n\":197"), "{}", String::from_utf8_lossy(&o.stdout));
    drop(server);
}
