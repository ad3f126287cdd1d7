//! The output rules against the real file system: no overwrite even when the target appears
//! meanwhile, nothing left behind on failure, stale partials of dead processes removed and
//! those of live ones kept, torn records dropped.

use std::io::Write;
use std::path::PathBuf;

use stn_fs::*;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("stn-fs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn entries(d: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_target_that_appears_meanwhile_is_not_overwritten() {
    let d = tmp("noreplace");
    let target = d.join("out.bin");
    let (p, mut f) = Partial::create(&target).unwrap();
    f.write_all(b"ours").unwrap();
    std::fs::write(&target, b"theirs").unwrap();
    let e = p.commit(f).unwrap_err();
    assert!(matches!(e, CommitError::Exists(_)) && e.to_string().contains("not overwritten"), "{e}");
    assert_eq!(std::fs::read(&target).unwrap(), b"theirs");
    assert_eq!(entries(&d), ["out.bin"], "the partial is gone");
    write_new(&d.join("new.bin"), b"abc").unwrap();
    assert_eq!(std::fs::read(d.join("new.bin")).unwrap(), b"abc");
    assert!(matches!(write_new(&d.join("new.bin"), b"x"), Err(CommitError::Exists(_))));
    write_replace(&d.join("new.bin"), b"xyz").unwrap();
    assert_eq!(std::fs::read(d.join("new.bin")).unwrap(), b"xyz");
    assert_eq!(entries(&d), ["new.bin", "out.bin"]);
}

#[test]
fn a_dropped_writer_leaves_nothing() {
    let d = tmp("dropped");
    {
        let (p, mut f) = Partial::create(&d.join("x")).unwrap();
        f.write_all(b"half").unwrap();
        assert!(p.temp_path().exists());
    }
    assert!(entries(&d).is_empty());
}

#[test]
fn stale_partials_of_dead_processes_are_removed_and_live_ones_kept() {
    let d = tmp("stale");
    // A process that has exited: its PID is free (or reused by a process we cannot confuse
    // with a writer for long); a child we reaped is certain to be gone now.
    let dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    let mut dead = dead;
    dead.wait().unwrap();
    let live = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    let stale = d.join(format!(".out.parquet{PARTIAL_MARK}{dead_pid}-0"));
    let busy = d.join(format!(".other.parquet{PARTIAL_MARK}{}-3", live.id()));
    let own = partial_name(&d.join("mine.parquet"));
    for p in [&stale, &busy, &own] {
        std::fs::write(p, b"x").unwrap();
    }
    std::fs::write(d.join("keep.parquet"), b"x").unwrap();
    assert_eq!(partial_pid(&stale.file_name().unwrap().to_string_lossy()), Some(dead_pid));
    assert_eq!(partial_pid("out.parquet"), None);
    let removed = clean_stale_partials(&d).unwrap();
    assert_eq!(removed, vec![stale.clone()]);
    assert!(!stale.exists() && busy.exists() && own.exists() && d.join("keep.parquet").exists());
    let mut live = live;
    live.kill().unwrap();
    live.wait().unwrap();
    assert_eq!(clean_stale_partials(&d).unwrap(), vec![busy]);
}

#[test]
fn records_are_appended_and_a_torn_last_line_is_dropped() {
    let d = tmp("records");
    let path = d.join("theta.jsonl");
    let (mut log, old) = RecordLog::open(&path).unwrap();
    assert!(old.is_empty());
    log.append("{\"a\":1}").unwrap();
    log.append("{\"a\":2}").unwrap();
    assert!(log.append("two\nlines").is_err());
    drop(log);
    // A writer killed in the middle of a record.
    std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"a\":3").unwrap();
    assert_eq!(read_records(&path).unwrap(), ["{\"a\":1}", "{\"a\":2}"]);
    let (mut log, old) = RecordLog::open(&path).unwrap();
    assert_eq!(old, ["{\"a\":1}", "{\"a\":2}"]);
    log.append("{\"a\":3}").unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n");
}
