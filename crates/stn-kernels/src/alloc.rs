//! A process-wide allocator setting that matters for large tensors.
//!
//! glibc's malloc serves large buffers (above a threshold that adapts up to 32 MiB) with fresh
//! `mmap` pages and returns them to the system on free. A training loop allocates and frees
//! the same large buffers every step (outputs, gradients), so each step pays first-touch page
//! faults again: measured here, a 12.8 MB forward + backward spent 30-40% of its time in them,
//! and a 50 MB one almost half. Burn's autodiff keeps several such buffers alive at once, which
//! defeats glibc's adaptive threshold. [`keep_freed_memory`] makes malloc reuse freed memory.

/// Makes glibc's malloc serve every allocation from its heap (no per-buffer `mmap`) and keep
/// freed memory for reuse (no trimming), so large buffers freed in one step are reused in the
/// next without page faults. Call once at the start of a program that allocates large
/// tensors repeatedly; the cost is that the process keeps its peak memory until it exits.
/// Returns whether the setting was applied (only on Linux with glibc; elsewhere it does
/// nothing and returns `false`). The same effect, without code:
/// `GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647`.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; it is safe to call at any time.
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0) == 1 && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
