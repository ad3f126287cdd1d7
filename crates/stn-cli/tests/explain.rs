//! `stn explain`: the report's numbers hold together (rows, classes, the recovered-vs-applied
//! comparison), the page is self-contained (no script, nothing fetched), bad arguments are
//! clear errors, and a real browser (headless Chromium, Debian's package) renders the page
//! without console errors into a screenshot that is not blank.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::cli::{s, tmp};

fn stn(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stn")).args(args).output().unwrap()
}

/// Chromium (`STN_CHROMIUM`, else `chromium` or `chromium-browser` on the PATH), or None, said
/// on stderr; in CI that is a failure instead.
fn chromium() -> Option<PathBuf> {
    let candidates = std::env::var_os("STN_CHROMIUM")
        .map(|p| vec![PathBuf::from(p)])
        .unwrap_or_else(|| vec!["chromium".into(), "chromium-browser".into()]);
    for c in candidates {
        if Command::new(&c).arg("--version").output().is_ok_and(|o| o.status.success()) {
            return Some(c);
        }
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must provide Chromium (.ci/run installs Debian's chromium)"
    );
    eprintln!("SKIPPED: no Chromium (install Debian's chromium or set STN_CHROMIUM)");
    None
}

/// Renders `page` headless into `shot`: the console messages the page caused (Chromium logs
/// them as `INFO:CONSOLE` lines) and whether it succeeded.
fn render(chromium: &Path, page: &Path, shot: &Path) -> (bool, Vec<String>) {
    let url = format!("file://{}", page.canonicalize().unwrap().display());
    let o = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1200,1800",
            "--enable-logging=stderr",
            "--v=0",
            &format!("--screenshot={}", shot.display()),
            &url,
        ])
        .output()
        .unwrap();
    let console = String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect();
    (o.status.success() && shot.is_file(), console)
}

#[test]
fn the_report_holds_together_and_a_browser_renders_it() {
    let dir = tmp("explain");
    let run = crate::hostile::run_dir(&dir);
    let out = dir.join("report");
    let o = stn(&[
        "explain",
        "--model",
        s(&run),
        "--data",
        "mnist10k",
        "--distortion",
        "rts",
        "--rows",
        "120",
        "--out",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("explain.json")).unwrap()).unwrap();
    assert_eq!(doc["summary"]["rows"], 120, "{doc}");
    assert_eq!(doc["summary"]["family"], "affine");
    let per_class: u64 =
        doc["classes"].as_array().unwrap().iter().map(|c| c["images"].as_u64().unwrap()).sum();
    assert_eq!(per_class, 120, "every image in one class");
    let applied = &doc["recovered_vs_applied"];
    assert_eq!(applied["images"], 120, "{applied}");
    let (r, e) = (applied["angle_correlation"].as_f64().unwrap(), applied["mean_error"].as_f64().unwrap());
    assert!((-1.0..=1.0).contains(&r) && e >= 0.0, "{applied}");
    let share = doc["outside_share"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&share), "{doc}");
    // One page, nothing fetched: no script, no URL but data: and the SVG namespace.
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(!html.contains("<script"), "no script");
    for attr in ["src=\"", "href=\""] {
        for (i, _) in html.match_indices(attr) {
            let url = &html[i + attr.len()..];
            assert!(
                url.starts_with("data:") || url.starts_with("report"),
                "{attr}{}",
                &url[..url.len().min(40)]
            );
        }
    }
    assert!(html.matches("<svg").count() >= 8, "figures as inline SVG");
    assert!(html.matches("data:image/png;base64,").count() >= 40, "thumbnails before and after");
    for legend in ["train loss", "test error", "recovered = applied", "mean ± std"] {
        assert!(html.contains(legend), "the figures carry their legends: {legend}");
    }
    // Bad arguments: clear errors, nothing written.
    let e = stn(&["explain", "--model", s(&dir.join("nope")), "--out", s(&dir.join("r2"))]);
    assert!(!e.status.success() && String::from_utf8_lossy(&e.stderr).contains("nope"));
    assert!(!dir.join("r2").exists());
    let e = stn(&["explain", "--model", s(&run), "--rows", "0", "--out", s(&dir.join("r3"))]);
    assert!(!e.status.success() && !dir.join("r3").exists());

    // A folder of image files, without labels: explained as one class, no error rate.
    let scans = dir.join("scans");
    let o = stn(&["export-digits", "--distortion", "rts", "--rows", "8", "--images", "--out", s(&scans)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::write(scans.join("notes.png"), b"not a png").unwrap();
    let o = stn(&["explain", "--model", s(&run), "--images", s(&scans), "--out", s(&dir.join("r4"))]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("left out"), "the bad file is said");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("r4/explain.json")).unwrap()).unwrap();
    assert_eq!(
        (doc["summary"]["rows"].as_u64(), doc["classes"].as_array().map(Vec::len)),
        (Some(8), Some(1)),
        "{doc}"
    );
    assert!(doc["recovered_vs_applied"].is_null(), "no distortion known: {doc}");

    let Some(chromium) = chromium() else { return };
    // The detector itself first: a page with console errors is caught.
    let bad = dir.join("bad.html");
    std::fs::write(&bad, "<!DOCTYPE html><html><body><script>console.error('boom')</script></body></html>")
        .unwrap();
    let (_, console) = render(&chromium, &bad, &dir.join("bad.png"));
    assert!(console.iter().any(|l| l.contains("boom")), "console messages are seen: {console:?}");
    // The report: rendered, no console message at all, and a screenshot that is not blank.
    let shot = dir.join("report.png");
    let (ok, console) = render(&chromium, &out.join("report.html"), &shot);
    assert!(ok, "Chromium rendered the page");
    assert!(console.is_empty(), "no console messages: {console:?}");
    let img = stn_data::Image::load_native(&shot).unwrap().to_gray();
    let n = img.data.len() as f64;
    let dark = img.data.iter().filter(|&&v| v < 0.9).count() as f64;
    let mean = img.data.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let std = (img.data.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n).sqrt();
    assert!(
        dark / n > 0.02 && std > 0.05,
        "the screenshot shows the page ({:.1}% ink, std {std:.3})",
        100.0 * dark / n
    );
}
