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
    child: Child,
    endpoint: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    let server = Server { child, endpoint };
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
