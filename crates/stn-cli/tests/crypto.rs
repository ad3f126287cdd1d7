//! Encrypted tables through the `stn` program, against pyarrow: tables that pyarrow encrypts
//! with a KMS (both test KMSs, every layout of `tools/crypto/encrypted_tables.py`, master keys
//! made here at random) are rectified and augmented into encrypted outputs that pyarrow opens
//! with the keys only, equal to the outputs of the same table in plaintext; what arrow-rs
//! cannot read is a clear error; and no key appears anywhere in what the program printed or
//! wrote.
//!
//! The Python with pyarrow and cryptography comes from `STN_PYTHON` (set by `.ci/run`); without
//! it, `python3` is tried, and where it lacks them the tests say so and pass only outside CI.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::cli::{s, tmp};

fn python() -> Option<String> {
    crate::cli::python_with("pyarrow.parquet.encryption, cryptography", "pyarrow and cryptography")
}

fn tool() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/crypto/encrypted_tables.py")
}

fn py_run(py: &str, args: &[&str]) -> Output {
    Command::new(py).arg(tool()).args(args).output().expect("run python")
}

/// Every output of every `stn` run here, to look for keys in.
struct Runs {
    printed: Vec<u8>,
}

impl Runs {
    fn stn<S: AsRef<std::ffi::OsStr>>(&mut self, args: &[S]) -> (bool, String) {
        self.stn_keys_env(args, None)
    }

    /// `stn` with `STN_KEYS` set to `keys` (None: unset).
    fn stn_keys_env<S: AsRef<std::ffi::OsStr>>(&mut self, args: &[S], keys: Option<&str>) -> (bool, String) {
        let mut c = Command::new(env!("CARGO_BIN_EXE_stn"));
        c.args(args).env("RUST_LOG", "trace").env("RUST_BACKTRACE", "full").env_remove("STN_KEYS");
        if let Some(k) = keys {
            c.env("STN_KEYS", k);
        }
        let o = c.output().expect("run stn");
        self.printed.extend_from_slice(&o.stdout);
        self.printed.extend_from_slice(&o.stderr);
        (
            o.status.success(),
            format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
        )
    }
}

/// 16 random bytes from the system.
fn random_key() -> Vec<u8> {
    let mut k = vec![0u8; 16];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut k).unwrap();
    k
}

fn b64(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The forms a key could leak in: raw, hex (both cases), base64.
fn forms(key: &[u8]) -> Vec<Vec<u8>> {
    vec![key.to_vec(), hex(key).into_bytes(), hex(key).to_uppercase().into_bytes(), b64(key).into_bytes()]
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A keys file of master keys `ids`, random.
fn keys_file(path: &Path, ids: &[&str]) -> Vec<Vec<u8>> {
    let keys: Vec<Vec<u8>> = ids.iter().map(|_| random_key()).collect();
    let json: Vec<String> =
        ids.iter().zip(&keys).map(|(id, k)| format!("\"{id}\": \"{}\"", b64(k))).collect();
    std::fs::write(path, format!("{{{}}}", json.join(", "))).unwrap();
    keys
}

fn read_json(py: &str, file: &Path, keys: Option<(&Path, &str)>) -> Result<serde_json::Value, String> {
    let mut args = vec!["read", s(file)];
    if let Some((k, w)) = keys {
        args.extend(["--keys", s(k), "--wrapping", w]);
    }
    let o = py_run(py, &args);
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&o.stdout).unwrap())
}

fn ends_with_pare(p: &Path) -> bool {
    std::fs::read(p).unwrap().ends_with(b"PARE")
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn encrypted_tables_from_pyarrow_give_encrypted_outputs_and_no_key_leaks() {
    let Some(py) = python() else { return };
    let dir = tmp("crypto");
    let mut runs = Runs { printed: Vec::new() };
    // A small model and the digits as a table (Hugging Face image structs).
    let run = crate::hostile::run_dir(&dir);
    let plain = dir.join("plain.parquet");
    let (ok, e) = runs.stn(&["export-digits", "--rows", "150", "--row-group", "64", "--out", s(&plain)]);
    assert!(ok, "{e}");
    // Master keys of IDs stn has never seen: the footer's, the image column's, the label's.
    let keys_path = dir.join("keys.json");
    let master = keys_file(&keys_path, &["hr-footer", "scans-2026", "labels-q3"]);
    let wrong_path = dir.join("wrong-keys.json");
    let wrong = keys_file(&wrong_path, &["hr-footer", "scans-2026", "labels-q3"]);
    let enc = dir.join("enc");
    let o = py_run(&py, &["write", s(&plain), s(&enc), s(&keys_path)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let manifest: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();

    // The reference: the plaintext table rectified, as pyarrow reads it.
    let reference = dir.join("reference.parquet");
    let (ok, e) = runs.stn(&["rectify", "--model", s(&run), "--table", s(&plain), "--out", s(&reference)]);
    assert!(ok, "{e}");
    assert!(!ends_with_pare(&reference), "a plaintext input without --encrypt stays plaintext");
    let want = read_json(&py, &reference, None).unwrap();
    assert_eq!(want["rows"], 150);

    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let mut outputs = Vec::new();
    for (name, m) in manifest.as_object().unwrap() {
        let wrapping = m["wrapping"].as_str().unwrap();
        let input = enc.join(format!("{name}.parquet"));
        let output = out.join(format!("{name}.parquet"));
        let (ok, text) = runs.stn(&[
            "rectify",
            "--model",
            s(&run),
            "--table",
            s(&input),
            "--out",
            s(&output),
            "--keys",
            s(&keys_path),
            "--key-wrapping",
            wrapping,
        ]);
        if m["readable"] == false {
            assert!(!ok, "{name}: {text}");
            let why = if name.contains("192") { "192-bit data key" } else { "AES_GCM_CTR_V1" };
            assert!(text.contains(why) && text.contains(name.as_str()), "{name}: {text}");
            assert!(!output.exists(), "{name}: no output");
            continue;
        }
        assert!(ok, "{name}: {text}");
        assert!(ends_with_pare(&output), "{name}: the output's footer is encrypted");
        let got =
            read_json(&py, &output, Some((&keys_path, wrapping))).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got, want, "{name}: pyarrow reads the rows of the plaintext run");
        let refused = read_json(&py, &output, None).unwrap_err();
        assert!(refused.contains("encrypted") || refused.contains("decrypt"), "{name}: {refused}");
        assert!(read_json(&py, &output, Some((&wrong_path, wrapping))).is_err(), "{name}: other keys fail");
        outputs.push((output, wrapping));

        // Without keys, and with keys that are not the file's: clear errors, no output.
        let none = out.join(format!("{name}.nokeys.parquet"));
        let (ok, text) = runs.stn(&["rectify", "--model", s(&run), "--table", s(&input), "--out", s(&none)]);
        assert!(!ok && text.contains("encrypted") && text.contains("--keys"), "{name}: {text}");
        let (ok, text) = runs.stn(&[
            "rectify",
            "--model",
            s(&run),
            "--table",
            s(&input),
            "--out",
            s(&none),
            "--keys",
            s(&wrong_path),
            "--key-wrapping",
            wrapping,
        ]);
        assert!(!ok && text.contains("does not unwrap"), "{name}: {text}");
        assert!(!none.exists(), "{name}: nothing written");
    }
    assert_eq!(outputs.len(), 5, "five layouts are readable");

    // A re-run skips the complete encrypted outputs (read with the keys).
    let rerun_in = enc.join("aesgcm_double_encfooter.parquet");
    let rerun_out = out.join("aesgcm_double_encfooter.parquet");
    let (ok, text) = runs.stn(&[
        "rectify",
        "--model",
        s(&run),
        "--table",
        s(&rerun_in),
        "--out",
        s(&rerun_out),
        "--keys",
        s(&keys_path),
    ]);
    assert!(ok && text.contains("skipped"), "{text}");

    // Augmentation: an encrypted input gives an encrypted output.
    let aug = dir.join("aug.parquet");
    let (ok, text) = runs.stn(&[
        "augment",
        "--spec",
        "affine:rot=20",
        "--copies",
        "2",
        "--table",
        s(&rerun_in),
        "--out",
        s(&aug),
        "--keys",
        s(&keys_path),
    ]);
    assert!(ok, "{text}");
    assert!(ends_with_pare(&aug));
    let a = read_json(&py, &aug, Some((&keys_path, "aes-gcm"))).unwrap();
    assert_eq!(a["rows"], 300);
    assert!(read_json(&py, &aug, None).is_err());
    outputs.push((aug, "aes-gcm"));

    // --encrypt: a plaintext input's output encrypted under a chosen master key.
    let chosen = dir.join("chosen.parquet");
    let (ok, text) = runs.stn(&[
        "rectify",
        "--model",
        s(&run),
        "--table",
        s(&plain),
        "--out",
        s(&chosen),
        "--keys",
        s(&keys_path),
        "--encrypt",
        "labels-q3",
        "--json",
    ]);
    assert!(ok, "{text}");
    assert_eq!(read_json(&py, &chosen, Some((&keys_path, "aes-gcm"))).unwrap(), want);
    outputs.push((chosen, "aes-gcm"));
    // An existing plaintext output is not taken as the encrypted one a re-run asks for.
    let (ok, text) = runs.stn(&[
        "rectify",
        "--model",
        s(&run),
        "--table",
        s(&plain),
        "--out",
        s(&reference),
        "--keys",
        s(&keys_path),
        "--encrypt",
        "hr-footer",
    ]);
    assert!(!ok && text.contains("is not encrypted"), "{text}");
    // Training on an encrypted table would write plaintext checkpoints: refused unless asked.
    let (ok, text) = runs.stn(&[
        "train",
        "--model",
        "st-cnn",
        "--epochs",
        "1",
        "--table",
        s(&rerun_in),
        "--keys",
        s(&keys_path),
        "--out",
        s(&dir.join("run-enc")),
    ]);
    assert!(!ok && text.contains("--allow-plaintext-output"), "{text}");
    // Keys from the environment work as --keys does.
    let env_out = dir.join("env.parquet");
    let (ok, text) = runs.stn_keys_env(
        &["rectify", "--model", s(&run), "--table", s(&rerun_in), "--out", s(&env_out)],
        Some(&std::fs::read_to_string(&keys_path).unwrap()),
    );
    assert!(ok, "{text}");
    assert_eq!(read_json(&py, &env_out, Some((&keys_path, "aes-gcm"))).unwrap(), want);
    // ... and so does the path of the keys file there.
    let env_file_out = dir.join("env-file.parquet");
    let (ok, text) = runs.stn_keys_env(
        &["rectify", "--model", s(&run), "--table", s(&rerun_in), "--out", s(&env_file_out)],
        Some(s(&keys_path)),
    );
    assert!(ok, "{text}");
    assert!(ends_with_pare(&env_file_out));

    // `stn sql STATEMENT` with the keys, Parquet outputs encrypted under `scans-2026`.
    let sql_encrypting = |statement: &str| -> Vec<String> {
        ["sql", "--model", s(&run), "--keys", s(&keys_path), "--encrypt", "scans-2026", statement]
            .map(String::from)
            .to_vec()
    };
    // SQL: encrypted tables read with the keys; COPY writes encrypted Parquet that pyarrow
    // opens with the keys only; plaintext formats and crypto options in SQL are refused.
    let q = format!(
        "SELECT count(*) AS n, sum(label) AS s FROM '{}'",
        s(&enc.join("aesgcm_single_plainfooter.parquet"))
    );
    let (ok, text) = runs.stn(&["sql", "--model", s(&run), "--json", &q]);
    assert!(!ok, "no keys: {text}");
    let (ok, text) = runs.stn(&["sql", "--model", s(&run), "--json", "--keys", s(&keys_path), &q]);
    assert!(ok, "{text}");
    let (ok, plain_text) = runs.stn(&[
        "sql",
        "--model",
        s(&run),
        "--json",
        &format!("SELECT count(*) AS n, sum(label) AS s FROM '{}'", s(&plain)),
    ]);
    assert!(ok && text == plain_text && text.contains("\"n\":150"), "{text} / {plain_text}");
    let copied = dir.join("copied.parquet");
    let copy = format!(
        "COPY (SELECT id, label, stn_rectify(image) AS r FROM '{}') TO '{}'",
        s(&rerun_in),
        s(&copied)
    );
    let (ok, text) = runs.stn(&["sql", "--model", s(&run), "--keys", s(&keys_path), &copy]);
    assert!(!ok && text.contains("--encrypt") && !copied.exists(), "{text}");
    let (ok, text) = runs.stn(&sql_encrypting(&copy));
    assert!(ok, "{text}");
    assert!(ends_with_pare(&copied));
    assert_eq!(read_json(&py, &copied, Some((&keys_path, "aes-gcm"))).unwrap()["rows"], 150);
    assert!(read_json(&py, &copied, None).is_err());
    outputs.push((copied.clone(), "aes-gcm"));
    for (statement, why) in [
        (format!("COPY (SELECT id FROM '{}') TO '{}'", s(&rerun_in), s(&dir.join("c.csv"))), "plaintext"),
        (
            format!(
                "COPY (SELECT id FROM '{}') TO '{}' OPTIONS ('format.crypto.factory_id' '')",
                s(&rerun_in),
                s(&dir.join("c2.parquet"))
            ),
            "encryption options",
        ),
    ] {
        let (ok, text) = runs.stn(&sql_encrypting(&statement));
        assert!(!ok && text.contains(why), "{statement}: {text}");
    }
    assert!(!dir.join("c.csv").exists() && !dir.join("c2.parquet").exists());
    let (ok, text) = runs.stn(&sql_encrypting(&format!("EXPLAIN VERBOSE {copy}")));
    assert!(ok, "{text}");

    // No key anywhere: master keys (right and wrong) and every output's data key, in what was
    // printed and in every file written (the keys files aside).
    let mut secrets: Vec<Vec<u8>> = master.iter().chain(&wrong).cloned().collect();
    for (file, wrapping) in outputs.iter().filter(|(_, w)| *w == "aes-gcm") {
        let o = py_run(&py, &["footer-key", s(file), s(&keys_path), "--wrapping", wrapping]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let h = String::from_utf8_lossy(&o.stdout).trim().to_string();
        assert_eq!(h.len(), 64, "a 256-bit data key per output");
        secrets.push((0..32).map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap()).collect());
    }
    // The keys files aside, and the files wrapped by pyarrow's test KMS (base64 of master key
    // and data key: not a cipher, as its warning says): pyarrow's inputs, and our outputs of
    // theirs.
    let files: Vec<PathBuf> = files_under(&dir)
        .into_iter()
        .filter(|p| {
            p != &keys_path && p != &wrong_path && !p.starts_with(&enc) && !s(p).contains("pyarrowtest")
        })
        .collect();
    assert!(files.len() >= 8, "{files:?}");
    for secret in &secrets {
        for form in forms(secret) {
            assert!(!contains(&runs.printed, &form), "a key was printed");
            for f in &files {
                assert!(!contains(&std::fs::read(f).unwrap(), &form), "a key is in {}", f.display());
            }
        }
    }
    // The data keys differ from file to file.
    let mut dek = secrets[6..].to_vec();
    let n = dek.len();
    assert!(n >= 5, "{n}");
    dek.sort();
    dek.dedup();
    assert_eq!(dek.len(), n, "a fresh data key per output");
    std::fs::remove_dir_all(dir).unwrap();
}
