//! A small fuzzer on stable Rust, bounded in time: seeds (the fixtures and a committed corpus)
//! mutated byte-wise (bit flips, interesting values, inserts, deletes, splices, truncation;
//! PNG chunks get their CRCs fixed so the decoder goes past them), each input run through a
//! harness under `catch_unwind`. A panic or a run slower than the hang limit is a failure: the
//! input is written to a file and named, to be added to the harness's regression folder
//! (`tests/fuzz/regressions/<harness>/`), whose every file is replayed by the tests.
//!
//! `STN_FUZZ_SECONDS` (default 2) sets each harness's time; `STN_FUZZ_SEED` the mutation seed.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Panics on fuzzing threads are expected and caught: not printed. Other threads' panics print
/// as before.
fn quiet_panics_here() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// What a fuzzing run did.
#[derive(Debug)]
pub struct FuzzReport {
    /// The harness.
    pub name: String,
    /// Inputs run.
    pub execs: u64,
    /// Inputs that panicked or hung, each saved to a file: (file, what happened).
    pub failures: Vec<(PathBuf, String)>,
    /// The slowest input, seconds.
    pub slowest: f64,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// Rewrites the CRC of every PNG chunk whose length fits, so that a mutated chunk is read.
fn fix_png_crcs(b: &mut [u8]) {
    if !b.starts_with(b"\x89PNG\r\n\x1a\n") {
        return;
    }
    let mut at = 8;
    while at + 12 <= b.len() {
        let len = u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize;
        let end = match at.checked_add(8 + len) {
            Some(e) if e + 4 <= b.len() => e,
            _ => return,
        };
        let crc = crc32(&b[at + 4..end]);
        b[end..end + 4].copy_from_slice(&crc.to_be_bytes());
        at = end + 4;
    }
}

const INTERESTING: [u64; 12] =
    [0, 1, 2, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0xffff, 0x7fff_ffff, 0xffff_ffff, u64::MAX];

fn mutate(rng: &mut Rng, input: &[u8], seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut b = input.to_vec();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        let len = b.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                b[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                b[i] = rng.next() as u8;
            }
            2 if len >= 4 => {
                // An interesting value, 1, 2, 4 or 8 bytes, either byte order.
                let v = INTERESTING[rng.below(INTERESTING.len())];
                let w = [1, 2, 4, 8][rng.below(4)].min(len);
                let i = rng.below(len - w + 1);
                let bytes = if rng.below(2) == 0 { v.to_be_bytes() } else { v.to_le_bytes() };
                let src = if rng.below(2) == 0 { &bytes[8 - w..] } else { &bytes[..w] };
                b[i..i + w].copy_from_slice(src);
            }
            3 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let fill: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                b.splice(i..i, fill);
            }
            4 if len > 1 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                b.drain(i..i + n);
            }
            5 if len > 1 => b.truncate(rng.below(len)),
            6 if !seeds.is_empty() => {
                // Splice: a piece of another seed over this one.
                let other = &seeds[rng.below(seeds.len())];
                if !other.is_empty() && len > 0 {
                    let (i, j) = (rng.below(len), rng.below(other.len()));
                    let n = (1 + rng.below(256)).min(len - i).min(other.len() - j);
                    b[i..i + n].copy_from_slice(&other[j..j + n]);
                }
            }
            7 if len > 8 => {
                // Duplicate a block (repeated chunks, markers).
                let i = rng.below(len);
                let n = (1 + rng.below(64)).min(len - i);
                let block = b[i..i + n].to_vec();
                let at = rng.below(len);
                b.splice(at..at, block);
            }
            _ if len > 0 => {
                let i = rng.below(len);
                b[i] = b[i].wrapping_add(1 + rng.below(4) as u8);
            }
            _ => b.push(rng.next() as u8),
        }
    }
    if rng.below(4) != 0 {
        fix_png_crcs(&mut b);
    }
    b
}

/// Seconds each harness runs (`STN_FUZZ_SECONDS`, default 2).
pub fn fuzz_seconds() -> f64 {
    std::env::var("STN_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(2.0)
}

/// The files of a folder (sorted; none if it does not exist).
pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// The committed fuzzing folder of the project (`crates/stn-table/tests/fuzz`).
pub fn fuzz_dir() -> PathBuf {
    super::fixtures().join("../fuzz")
}

/// Runs `harness` on every seed (which must not fail), on every file of its regression folder,
/// then on mutations of the seeds for `seconds`. Inputs that panic or take longer than `hang`
/// are saved under the system's temporary folder and reported.
pub fn fuzz(
    name: &str,
    seeds: Vec<Vec<u8>>,
    seconds: f64,
    hang: Duration,
    harness: &(dyn Fn(&[u8]) + Sync),
) -> FuzzReport {
    quiet_panics_here();
    let seed =
        std::env::var("STN_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x9e37_79b9_7f4a_7c15u64);
    let mut rng = Rng(seed | 1);
    let mut report = FuzzReport { name: name.into(), execs: 0, failures: Vec::new(), slowest: 0.0 };
    let out = std::env::temp_dir().join(format!("stn-fuzz-{name}-{}", std::process::id()));
    let run = |input: &[u8], report: &mut FuzzReport| {
        QUIET.with(|q| q.set(true));
        let t = Instant::now();
        let r = catch_unwind(AssertUnwindSafe(|| harness(input)));
        let took = t.elapsed();
        QUIET.with(|q| q.set(false));
        report.execs += 1;
        report.slowest = report.slowest.max(took.as_secs_f64());
        let what = match r {
            Err(p) => Some(format!(
                "panicked: {}",
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            )),
            Ok(()) if took > hang => {
                Some(format!("took {:.1} s (hang limit {:.1} s)", took.as_secs_f64(), hang.as_secs_f64()))
            }
            Ok(()) => None,
        };
        if let Some(what) = what {
            std::fs::create_dir_all(&out).unwrap();
            let file = out.join(format!("crash-{}", report.failures.len()));
            std::fs::write(&file, input).unwrap();
            report.failures.push((file, what));
        }
    };
    for s in &seeds {
        run(s, &mut report);
    }
    for f in files_in(&fuzz_dir().join("regressions").join(name)) {
        run(&std::fs::read(&f).unwrap(), &mut report);
    }
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < seconds && report.failures.len() < 5 && !seeds.is_empty() {
        let base = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, base, &seeds);
        run(&input, &mut report);
    }
    eprintln!(
        "fuzz {name}: {} executions in {:.1} s, {} failures, slowest input {:.3} s",
        report.execs,
        start.elapsed().as_secs_f64(),
        report.failures.len(),
        report.slowest
    );
    report
}

/// Fails with every failure of `report`, naming the saved inputs.
pub fn assert_clean(report: &FuzzReport) {
    assert!(
        report.failures.is_empty(),
        "fuzz {}: {} failing inputs (add each to tests/fuzz/regressions/{}/ once fixed):\n{}",
        report.name,
        report.failures.len(),
        report.name,
        report.failures.iter().map(|(f, w)| format!("  {}: {w}", f.display())).collect::<Vec<_>>().join("\n")
    );
}
