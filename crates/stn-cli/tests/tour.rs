//! README's five-minute tour, run exactly as written there (the block between `<!-- tour -->`
//! and `<!-- /tour -->`), with `stn` standing for the program under test: the front door never
//! goes stale.

use std::path::Path;
use std::process::Command;

/// The alias the tour defines; the test replaces it with the binary under test.
const ALIAS: &str = "alias stn='cargo run -q --release --bin stn --'";

fn tour_commands() -> Vec<String> {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let text = std::fs::read_to_string(&readme).expect("README.md at the workspace root");
    let start = text.find("<!-- tour -->").expect("README has a <!-- tour --> block");
    let end = text.find("<!-- /tour -->").expect("README closes the tour block");
    let block = &text[start..end];
    let body = block.split("```sh\n").nth(1).expect("the tour is a ```sh block");
    let body = body.split("```").next().unwrap();
    let lines: Vec<&str> =
        body.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    assert_eq!(lines.first(), Some(&ALIAS), "the tour starts by defining stn");
    lines[1..].iter().map(|l| l.to_string()).collect()
}

#[test]
fn readme_tour_runs_as_written() {
    let commands = tour_commands();
    assert!(
        commands.iter().all(|c| c.starts_with("stn ")),
        "every tour command is an stn command: {commands:?}"
    );
    for step in [
        "stn train ",
        "stn rectify --model tour/run tour/scans/",
        "stn rectify --model tour/run --table ",
        "stn sql ",
        "stn explain ",
    ] {
        assert!(commands.iter().any(|c| c.starts_with(step)), "the tour shows `{step}...`");
    }
    let dir = std::env::temp_dir().join(format!("stn-tour-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut printed = String::new();
    for cmd in &commands {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!("stn() {{ \"$STN_BIN\" \"$@\"; }}\n{cmd}"))
            .env("STN_BIN", env!("CARGO_BIN_EXE_stn"))
            .current_dir(&dir)
            .output()
            .expect("run bash");
        assert!(out.status.success(), "`{cmd}` failed:\n{}", String::from_utf8_lossy(&out.stderr));
        printed.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    let t = dir.join("tour");
    let scans = std::fs::read_dir(t.join("scans")).unwrap().count();
    assert_eq!(scans, 8, "export-digits --rows 8 --images writes 8 files");
    let rectified = std::fs::read_dir(t.join("rectified")).unwrap().filter_map(Result::ok);
    let pngs = rectified.filter(|e| e.path().extension().is_some_and(|x| x == "png")).count();
    assert_eq!(pngs, 8, "one rectified file per scan");
    let thetas = std::fs::read_to_string(t.join("rectified/theta.jsonl")).unwrap();
    assert_eq!(thetas.lines().count(), 8, "one theta per file");
    for f in [
        "run/model.stn",
        "digits.parquet",
        "rectified.parquet",
        "sql.parquet",
        "figure.png",
        "report/report.html",
        "report/explain.json",
    ] {
        assert!(t.join(f).is_file(), "the tour writes tour/{f}");
    }
    // The SELECT printed the first three rows with their theta.
    let rows = printed.lines().filter(|l| l.starts_with("| ") && l.contains('[')).count();
    assert_eq!(rows, 3, "the SELECT shows three rows with theta:\n{printed}");
    let _ = std::fs::remove_dir_all(&dir);
}
