//! # stn-fs: output files that appear only complete
//!
//! Every writer of the project (model checkpoints, rectified tables, augmented tables, image
//! files, the records beside them) goes through this crate, so one rule holds everywhere:
//!
//! - an output is written under a temporary name beside its target ([`Partial`]:
//!   `.NAME.stn-partial-PID-N`, created exclusively), synced (`fsync`), then moved into place
//!   with a rename that never replaces an existing file (`renameat2(RENAME_NOREPLACE)` on
//!   Linux, a hard link then an unlink where the file system lacks it), and the folder is synced
//!   so the new name survives a crash. A file that appears meanwhile is never overwritten: the
//!   check and the move are one system call, not a check followed by a rename;
//! - a writer that fails or is dropped removes its temporary file; one that is killed leaves it,
//!   and [`clean_stale_partials`] recognises it later (its process no longer runs) and removes
//!   it;
//! - records written as work is done ([`RecordLog`]: one JSON line per image) are appended and
//!   synced one by one, so a killed run loses at most the record being written, and
//!   [`read_records`] ignores a torn last line.
//!
//! ```no_run
//! use std::io::Write;
//! let (partial, mut file) = stn_fs::Partial::create(std::path::Path::new("out/result.bin"))?;
//! file.write_all(b"...")?;
//! partial.commit(file)?; // out/result.bin appears complete, or not at all
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// What marks a temporary output: `.NAME` + this + `PID-N`.
pub const PARTIAL_MARK: &str = ".stn-partial-";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Why an output could not be moved into place.
#[derive(Debug)]
pub enum CommitError {
    /// The target exists (made by someone else meanwhile): it was not overwritten, and the
    /// temporary file is removed.
    Exists(PathBuf),
    /// Writing, syncing or renaming failed.
    Io(PathBuf, io::Error),
}

impl std::fmt::Display for CommitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommitError::Exists(p) => {
                write!(f, "{}: appeared while it was written; not overwritten", p.display())
            }
            CommitError::Io(p, e) => write!(f, "{}: cannot write: {e}", p.display()),
        }
    }
}

impl std::error::Error for CommitError {}

fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The temporary name of `target` for this process (`.NAME.stn-partial-PID-N`, N counting the
/// process's partials).
pub fn partial_name(target: &Path) -> PathBuf {
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    folder_of(target).join(format!(".{name}{PARTIAL_MARK}{}-{n}", std::process::id()))
}

/// The process ID in a temporary output's file name, if it is one.
pub fn partial_pid(file_name: &str) -> Option<u32> {
    let rest = file_name.strip_prefix('.')?;
    let at = rest.rfind(PARTIAL_MARK)?;
    let tail = &rest[at + PARTIAL_MARK.len()..];
    let pid = tail.split('-').next()?;
    pid.parse().ok()
}

/// Whether process `pid` runs on this machine (a PID that cannot be checked counts as running,
/// so its files are kept).
pub fn process_runs(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(p) = libc::pid_t::try_from(pid) else { return true };
        // Signal 0 checks without sending: ESRCH means no such process.
        let r = unsafe { libc::kill(p, 0) };
        r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

/// Removes the temporary outputs in `dir` whose process no longer runs (a killed or crashed
/// run's), and returns them. Those of running processes (another run writing there now) stay.
pub fn clean_stale_partials(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e),
    };
    for entry in rd {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = partial_pid(&name) else { continue };
        if pid == std::process::id() || process_runs(pid) {
            continue;
        }
        if entry.file_type()?.is_file() {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed.push(entry.path()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    if !removed.is_empty() {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// Syncs a folder, so that files created, renamed or removed in it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Moves `from` to `to` unless `to` exists, in one step: `renameat2(RENAME_NOREPLACE)`, or a
/// hard link then an unlink where the file system lacks it. `Ok(false)`: `to` exists.
pub fn rename_no_replace(from: &Path, to: &Path) -> io::Result<bool> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        let cstr = |p: &Path| {
            std::ffi::CString::new(p.as_os_str().as_bytes())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
        };
        let (a, b) = (cstr(from)?, cstr(to)?);
        let r = unsafe {
            libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), libc::RENAME_NOREPLACE)
        };
        if r == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EEXIST) => return Ok(false),
            // Not supported by this file system or kernel: the portable way below.
            Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::ENOTSUP) => {}
            _ => return Err(e),
        }
    }
    match std::fs::hard_link(from, to) {
        Ok(()) => {
            std::fs::remove_file(from)?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// A temporary output beside its target, removed unless committed.
#[derive(Debug)]
pub struct Partial {
    tmp: PathBuf,
    target: PathBuf,
    done: bool,
}

impl Partial {
    /// Creates the temporary file for `target` (exclusively: never an existing file), in the
    /// target's folder, which must exist.
    pub fn create(target: &Path) -> io::Result<(Partial, File)> {
        let tmp = partial_name(target);
        let file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        Ok((Partial { tmp, target: target.to_path_buf(), done: false }, file))
    }

    /// The temporary file's path.
    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    /// The target's path.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Syncs and closes `file` (the one [`create`](Self::create) returned, written), then
    /// moves it to the target unless the target exists, and syncs the folder.
    pub fn commit(mut self, file: File) -> Result<(), CommitError> {
        let io = |e| CommitError::Io(self.target.clone(), e);
        file.sync_all().map_err(io)?;
        drop(file);
        match rename_no_replace(&self.tmp, &self.target) {
            Ok(true) => {}
            Ok(false) => return Err(CommitError::Exists(self.target.clone())),
            Err(e) => return Err(CommitError::Io(self.target.clone(), e)),
        }
        self.done = true;
        sync_dir(&folder_of(&self.target)).map_err(|e| CommitError::Io(self.target.clone(), e))
    }

    /// Syncs and closes `file`, then moves it to the target, replacing an existing target in
    /// one step (a checkpoint replacing the previous one: either the old or the new is there,
    /// never a mix), and syncs the folder.
    pub fn commit_replace(mut self, file: File) -> Result<(), CommitError> {
        let io = |e| CommitError::Io(self.target.clone(), e);
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&self.tmp, &self.target).map_err(|e| CommitError::Io(self.target.clone(), e))?;
        self.done = true;
        sync_dir(&folder_of(&self.target)).map_err(|e| CommitError::Io(self.target.clone(), e))
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes a whole new file: `bytes` appear at `target` complete, or nothing does; an existing
/// target is never overwritten ([`CommitError::Exists`]).
pub fn write_new(target: &Path, bytes: &[u8]) -> Result<(), CommitError> {
    let (p, mut f) = Partial::create(target).map_err(|e| CommitError::Io(target.to_path_buf(), e))?;
    f.write_all(bytes).map_err(|e| CommitError::Io(target.to_path_buf(), e))?;
    p.commit(f)
}

/// Writes a whole file, replacing the target in one step if it exists.
pub fn write_replace(target: &Path, bytes: &[u8]) -> Result<(), CommitError> {
    let (p, mut f) = Partial::create(target).map_err(|e| CommitError::Io(target.to_path_buf(), e))?;
    f.write_all(bytes).map_err(|e| CommitError::Io(target.to_path_buf(), e))?;
    p.commit_replace(f)
}

/// An append-only file of records, one line each, synced after every record: a killed run
/// loses at most the record it was writing (a torn last line, which [`read_records`] drops and
/// [`RecordLog::open`] cuts off before appending).
#[derive(Debug)]
pub struct RecordLog {
    file: File,
    path: PathBuf,
}

impl RecordLog {
    /// Opens `path` for appending (created if missing; a torn last line is cut off first), and
    /// returns the log and the complete records already in it.
    pub fn open(path: &Path) -> io::Result<(RecordLog, Vec<String>)> {
        let existed = path.exists();
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(path)?;
        let mut text = Vec::new();
        io::Read::read_to_end(&mut file, &mut text)?;
        let keep = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if keep < text.len() {
            file.set_len(keep as u64)?;
            file.sync_all()?;
        }
        let records = String::from_utf8_lossy(&text[..keep]).lines().map(str::to_string).collect();
        if !existed {
            sync_dir(&folder_of(path))?;
        }
        Ok((RecordLog { file, path: path.to_path_buf() }, records))
    }

    /// Appends one record (a line without newlines) and syncs it.
    pub fn append(&mut self, record: &str) -> io::Result<()> {
        if record.contains('\n') {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "a record is one line"));
        }
        let mut line = Vec::with_capacity(record.len() + 1);
        line.extend_from_slice(record.as_bytes());
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.file.sync_data()
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The complete records of a log (a torn last line, from a killed writer, is left out).
pub fn read_records(path: &Path) -> io::Result<Vec<String>> {
    let text = std::fs::read(path)?;
    let keep = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    Ok(String::from_utf8_lossy(&text[..keep]).lines().map(str::to_string).collect())
}
