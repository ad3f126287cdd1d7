//! One memory budget for the images a process holds decoded, across every batch and thread.
//!
//! A row's header says how large it decodes before anything is allocated; each batch is decoded
//! and processed in pieces whose estimated memory fits what the budget has left ([`reserve`]),
//! and a row that alone needs more than the whole budget fails with that reason. The table
//! writer, the SQL functions (and so the cluster's executors), the augmenter and the training
//! reader all decode through [`crate::codec::decode_in_pieces`], so the bound holds whatever
//! runs at once in the process.
//!
//! A piece reserves all it needs at once, and a thread waits for memory only while it holds
//! none, so threads waiting on each other cannot deadlock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

/// The smallest budget [`set_memory_budget`] accepts: 64 MiB.
pub const MIN_MEMORY_BUDGET: u64 = 64 << 20;

struct Budget {
    limit: AtomicU64,
    used: Mutex<u64>,
    freed: Condvar,
}

static BUDGET: Budget = Budget { limit: AtomicU64::new(0), used: Mutex::new(0), freed: Condvar::new() };

/// The default budget: half the machine's memory (`MemTotal` of `/proc/meminfo`, or of the
/// cgroup's limit when that is lower), 4 GiB where neither can be read.
pub fn default_memory_budget() -> u64 {
    let mem_total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    let cgroup =
        std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok().and_then(|s| s.trim().parse::<u64>().ok());
    let total = match (mem_total, cgroup) {
        (Some(m), Some(c)) => m.min(c),
        (Some(m), None) => m,
        (None, Some(c)) => c,
        (None, None) => 8 << 30,
    };
    (total / 2).max(MIN_MEMORY_BUDGET)
}

/// The process's budget (bytes) for decoded images: what [`set_memory_budget`] set, else
/// [`default_memory_budget`].
pub fn memory_budget() -> u64 {
    match BUDGET.limit.load(Ordering::Relaxed) {
        0 => {
            let d = default_memory_budget();
            let _ = BUDGET.limit.compare_exchange(0, d, Ordering::Relaxed, Ordering::Relaxed);
            BUDGET.limit.load(Ordering::Relaxed)
        }
        l => l,
    }
}

/// Sets the process's budget (bytes) for decoded images (`--max-memory`). Less than
/// [`MIN_MEMORY_BUDGET`] is an error: the model and the readers need that much anyway.
pub fn set_memory_budget(bytes: u64) -> Result<(), String> {
    if bytes < MIN_MEMORY_BUDGET {
        return Err(format!(
            "a memory budget of {bytes} bytes is less than the least usable, {MIN_MEMORY_BUDGET} bytes (64 MiB)"
        ));
    }
    BUDGET.limit.store(bytes, Ordering::Relaxed);
    BUDGET.freed.notify_all();
    Ok(())
}

/// Parses a size as `--max-memory` takes it: bytes, or a number with K, M, G or T (powers of
/// 1024; `KiB`, `MB` and the like also read as powers of 1024).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let mult: u64 = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(format!("`{s}` is not a size: a number of bytes, or with K, M, G or T")),
    };
    let v: f64 =
        num.parse().map_err(|_| format!("`{s}` is not a size: a number of bytes, or with K, M, G or T"))?;
    let bytes = v * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 / 2.0 {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(bytes as u64)
}

/// Memory taken from the budget, given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    bytes: u64,
}

impl Reservation {
    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            let mut used = BUDGET.used.lock().unwrap_or_else(|e| e.into_inner());
            *used = used.saturating_sub(self.bytes);
            BUDGET.freed.notify_all();
        }
    }
}

/// Takes `bytes` from the budget, waiting while other threads hold too much of it. More than
/// the whole budget is an error naming both (the row or piece cannot be processed at all).
pub fn reserve(bytes: u64) -> Result<Reservation, String> {
    let limit = memory_budget();
    if bytes > limit {
        return Err(too_large(bytes, limit));
    }
    let mut used = BUDGET.used.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let limit = memory_budget();
        if bytes > limit {
            return Err(too_large(bytes, limit));
        }
        if *used + bytes <= limit {
            *used += bytes;
            return Ok(Reservation { bytes });
        }
        used = BUDGET.freed.wait(used).unwrap_or_else(|e| e.into_inner());
    }
}

/// Takes `bytes` from the budget if that much is free now, without waiting.
pub fn try_reserve(bytes: u64) -> Option<Reservation> {
    let limit = memory_budget();
    let mut used = BUDGET.used.lock().unwrap_or_else(|e| e.into_inner());
    if *used + bytes <= limit {
        *used += bytes;
        Some(Reservation { bytes })
    } else {
        None
    }
}

/// Bytes of the budget held now, by every thread.
pub fn memory_in_use() -> u64 {
    *BUDGET.used.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn too_large(bytes: u64, limit: u64) -> String {
    format!(
        "needs about {} MiB decoded, more than the memory budget of {} MiB (--max-memory)",
        bytes.div_ceil(1 << 20),
        limit >> 20
    )
}
