//! The digests a user compares across machines: `"output_digest"` of `stn rectify --json` (what
//! a rectified table holds, whatever its encoding) checked against an independent computation
//! (pyarrow and a pure-Python PNG decoder, `tools/digest/output_digest.py`), and
//! `"weights_digest"` of `stn train --json`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::cli::{s, tmp};

fn stn(env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stn")).envs(env.iter().copied()).args(args).output().unwrap()
}

/// The JSON summary a command printed, checked for success.
fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap()
}

fn python_digest(py: &str, files: &[PathBuf]) -> String {
    let tool = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/digest/output_digest.py");
    let o = Command::new(py).arg(tool).args(files).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn the_output_digest_is_the_content_not_the_encoding() {
    let Some(py) = crate::cli::python_with("pyarrow.parquet", "pyarrow") else { return };
    let dir = tmp("digest");
    let run = crate::hostile::run_dir(&dir);
    let table = dir.join("table");
    std::fs::create_dir_all(&table).unwrap();
    for (i, rows) in [(0, "150"), (1, "90")] {
        let f = table.join(format!("part-{i}.parquet"));
        let o = stn(
            &[],
            &["export-digits", "--distortion", "rts", "--rows", rows, "--row-group", "40", "--out", s(&f)],
        );
        assert!(o.status.success());
    }
    let rectify = |out: &Path, more: &[&str]| {
        let mut args = vec!["rectify", "--model", s(&run), "--table", s(&table), "--out", s(out), "--json"];
        args.extend(more);
        json(&stn(&[], &args))
    };
    let (fast, nine) = (dir.join("fast"), dir.join("nine"));
    let a = rectify(&fast, &[]);
    let b = rectify(&nine, &["--png-level", "9"]);
    let digest = a["output_digest"].as_str().unwrap().to_string();
    assert_eq!(digest.len(), 64, "{a}");
    let files = |d: &Path| (0..2).map(|i| d.join(format!("part-{i}.parquet"))).collect::<Vec<_>>();
    assert_ne!(
        std::fs::read(&files(&fast)[0]).unwrap(),
        std::fs::read(&files(&nine)[0]).unwrap(),
        "other bytes"
    );
    assert_eq!(b["output_digest"], a["output_digest"], "the same digest whatever the PNG level");
    // The independent computation: the same digest, for these files in this order.
    assert_eq!(python_digest(&py, &files(&fast)), digest, "pyarrow + a Python PNG decoder");
    assert_ne!(python_digest(&py, &files(&fast)[..1]), digest, "every file counts");
    // A re-run (every file skipped) reads its digest back from the outputs.
    let again = rectify(&fast, &[]);
    assert_eq!(again["skipped_files"], 2);
    assert_eq!(again["output_digest"], a["output_digest"]);
    // Other pixels, another digest: JPEG is lossy.
    let jpeg = rectify(&dir.join("jpeg"), &["--format", "jpeg"]);
    assert_ne!(jpeg["output_digest"], a["output_digest"]);
}

#[test]
fn the_weights_digest_names_the_trained_weights() {
    let dir = tmp("weights-digest");
    let train = |name: &str, threads: &str, seed: &str| {
        let out = dir.join(name);
        let args = [
            "train",
            "--model",
            "st-cnn",
            "--epochs",
            "1",
            "--train-size",
            "256",
            "--test-size",
            "64",
            "--seed",
            seed,
            "--json",
            "--out",
            s(&out),
        ];
        let doc = json(&stn(&[("RAYON_NUM_THREADS", threads)], &args));
        doc["weights_digest"].as_str().unwrap().to_string()
    };
    let one = train("one-thread", "1", "3");
    assert_eq!(one.len(), 64);
    assert_eq!(train("two-threads", "2", "3"), one, "the same weights on 1 and 2 threads");
    assert_ne!(train("other-seed", "2", "4"), one, "another seed, other weights");
    // The model files differ (their parameter IDs are random), the digest does not.
    let f = |n: &str| std::fs::read(dir.join(n).join("model.stn")).unwrap();
    assert_ne!(f("one-thread"), f("two-threads"));
}

/// Runs `stn ARGS` where gemm reads an unshared L1 data cache of `l1` (size, ways) from `/sys`
/// (`tools/cpu/with_l1.sh`), or as it is; None where this machine cannot fake it.
fn stn_with_l1(l1: Option<(&str, &str)>, args: &[&str]) -> Option<Output> {
    let o = match l1 {
        None => stn(&[], args),
        Some((size, ways)) => Command::new("bash")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/cpu/with_l1.sh"))
            .args([size, ways, env!("CARGO_BIN_EXE_stn")])
            .args(args)
            .output()
            .ok()?,
    };
    (o.status.code() != Some(97)).then_some(o)
}

/// Training and rectification give the same digests whatever L1 data cache gemm sees: this
/// machine's, a 32 KiB 8-way one (Zen 2 to 4) and a 48 KiB 12-way one (Zen 5, Intel since Ice
/// Lake), each unshared. The
/// 42x42 ST-CNN's convolution weight gradients (k = 900 and 784) and its localization and
/// classification layers, the FCN's first layer (k = 784), and rectification at batch 256 are
/// the products gemm would block by the cache.
#[test]
fn digests_do_not_follow_the_l1_cache() {
    let dir = tmp("digest-l1");
    let table = dir.join("digits.parquet");
    let o = stn(&[], &["export-digits", "--distortion", "rts", "--rows", "300", "--out", s(&table)]);
    assert!(o.status.success());
    let mut runs = Vec::new();
    for (i, l1) in [None, Some(("32K", "8")), Some(("48K", "12"))].into_iter().enumerate() {
        let mut digests = Vec::new();
        for (model, distortion) in [("st-cnn", "rts"), ("fcn", "none")] {
            let out = dir.join(format!("{model}-{i}"));
            let args = [
                "train",
                "--model",
                model,
                "--distortion",
                distortion,
                "--epochs",
                "1",
                "--train-size",
                "192",
                "--test-size",
                "64",
                "--seed",
                "2",
                "--json",
                "--out",
                s(&out),
            ];
            let Some(o) = stn_with_l1(l1, &args) else {
                eprintln!("SKIPPED: cannot fake the L1 cache here (unshare -m and bind mounts need root)");
                return;
            };
            digests.push(json(&o)["weights_digest"].as_str().unwrap().to_string());
            let rect = dir.join(format!("{model}-{i}.parquet"));
            let args = ["rectify", "--model", s(&out), "--table", s(&table), "--out", s(&rect), "--json"];
            if model == "st-cnn" {
                let o = stn_with_l1(l1, &args).unwrap();
                digests.push(json(&o)["output_digest"].as_str().unwrap().to_string());
            }
        }
        runs.push((l1, digests));
    }
    for (l1, digests) in &runs[1..] {
        assert_eq!(digests, &runs[0].1, "with an L1d of {l1:?}: the digests of this machine's cache");
    }
}

/// The reference digests, computed on an AMD EPYC Zen 2 (family 23 model 49: AVX2 and FMA, no
/// AVX-512, 32 KiB 8-way L1d, 2 threads). Every x86-64 CPU with AVX2 and FMA must reproduce
/// them bit for bit (docs/reliability.md, "Determinism across CPUs"); the CI machines differ
/// from one run to the next (AVX2-only and AVX-512 parts, other caches and core counts), so
/// this test is the cross-CPU check. They change only with a deliberate change of what is
/// computed (then recompute them with the commands below and say why in the commit).
///
/// `stn train --model st-cnn --distortion D [--transform T] --epochs 1 --train-size 320
/// --test-size 64 --seed 1 --json`: 28x28, 42x42 and 60x60 inputs; affine, TPS and projective.
const GOLDEN_WEIGHTS: [(&str, &str, &str); 5] = [
    ("none", "affine", "d94bf7e4e0c9613a70f4c311bfe12e3c5961c81af02f7084f3c3eb2c1a548888"),
    ("rts", "affine", "e5d966d2d3b1072aeb81f41aaf1136f207758d48fd470a772ba09fb01ed1d20d"),
    ("tc", "affine", "f1c1e3ee88665493695cb6c6877b6932042e404f0a475984e858bb86383f6a79"),
    ("rts", "tps", "115dce25d8dc29e5963425a1da1f32f0ca7233298d41f93ab5fff24158a10722"),
    ("rts", "projective", "68b3a9b90b28307bb205b25112740afd11421c3ca9365559976ea36d48b4cc29"),
];

/// `stn export-digits --distortion D --rows R --row-group 100` rectified by the model trained
/// above for (distortion, transform): `stn rectify --table ... --json`.
const GOLDEN_OUTPUTS: [(&str, &str, &str, &str); 3] = [
    ("rts", "affine", "300", "f87845a9f3245ec4d5a0a7d789d0616b51819fa2dedeca0bbcbfa83e0a70bdb2"),
    ("tc", "affine", "200", "4c2083c18c6d87bab2cfe8271a101bfb3387d8b7a3b7a4f4a62e3a1a557246e1"),
    ("rts", "tps", "300", "599b987096b2fde2002e65df8ce92f4d9d2d3a26c446f3455fc55c81d1c31b73"),
];

/// This CPU in a few words, for a failure message.
fn this_cpu() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split(':').nth(1))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let flags = field("flags");
    let simd: Vec<&str> = flags.split(' ').filter(|f| matches!(*f, "avx2" | "fma" | "avx512f")).collect();
    let l1 = std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cache/index0/size").unwrap_or_default();
    format!(
        "{} (family {}, model {}; {}; L1d {}; {} threads)",
        field("model name"),
        field("cpu family"),
        field("model\t"),
        simd.join(" "),
        l1.trim(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )
}

/// Training and rectification on this CPU give the reference digests computed on another.
#[test]
fn this_cpu_reproduces_the_reference_digests() {
    #[cfg(target_arch = "x86_64")]
    if !(std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")) {
        eprintln!("SKIPPED: the digests are promised on x86-64 with AVX2 and FMA; this CPU lacks one");
        return;
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        eprintln!("SKIPPED: the digests are promised on x86-64 with AVX2 and FMA");
        return;
    }
    let dir = tmp("golden");
    let run = |d: &str, t: &str| dir.join(format!("{d}-{t}"));
    let mut wrong = Vec::new();
    for (distortion, transform, want) in GOLDEN_WEIGHTS {
        let out = run(distortion, transform);
        let args = [
            "train",
            "--model",
            "st-cnn",
            "--distortion",
            distortion,
            "--transform",
            transform,
            "--epochs",
            "1",
            "--train-size",
            "320",
            "--test-size",
            "64",
            "--seed",
            "1",
            "--json",
            "--out",
            s(&out),
        ];
        let got = json(&stn(&[], &args))["weights_digest"].as_str().unwrap().to_string();
        if got != want {
            wrong.push(format!("weights {distortion}/{transform}: {got}, reference {want}"));
        }
    }
    for (distortion, transform, rows, want) in GOLDEN_OUTPUTS {
        let table = dir.join(format!("{distortion}-{rows}"));
        std::fs::create_dir_all(&table).unwrap();
        let part = table.join("part-0.parquet");
        if !part.exists() {
            let args = [
                "export-digits",
                "--distortion",
                distortion,
                "--rows",
                rows,
                "--row-group",
                "100",
                "--out",
                s(&part),
            ];
            assert!(stn(&[], &args).status.success());
        }
        let out = dir.join(format!("out-{distortion}-{transform}"));
        let model = run(distortion, transform);
        let args = ["rectify", "--model", s(&model), "--table", s(&table), "--out", s(&out), "--json"];
        let got = json(&stn(&[], &args))["output_digest"].as_str().unwrap().to_string();
        if got != want {
            wrong.push(format!("rectified {distortion} table ({transform} model): {got}, reference {want}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "this CPU, {}, does not reproduce the reference digests of an AMD EPYC Zen 2 (AVX2, FMA, \
         32 KiB 8-way L1d):\n{}",
        this_cpu(),
        wrong.join("\n")
    );
}
