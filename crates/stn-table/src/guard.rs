//! The Parquet reader (arrow-rs 59) panics on some corrupt files instead of returning an error:
//! varints longer than ten bytes, unknown physical or logical types, missing footer fields
//! (found by this project's fuzzing, `tests/fuzz.rs`). Every call into it from this crate goes
//! through [`guarded`] or [`GuardedBatches`], which turn such a panic into the file's error,
//! and keep the reader's panic message off the terminal: a corrupt file is a clear error naming
//! it, like any other bad input.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Once;

use arrow_array::RecordBatch;

use crate::error::{Result, TableError};

thread_local! {
    static GUARDED: Cell<bool> = const { Cell::new(false) };
}

/// Calls under [`guarded_anywhere`] running now: while any runs, panics print nowhere.
static QUIET_EVERYWHERE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Installs (once) a panic hook that stays silent for panics inside [`guarded`] on the same
/// thread and hands every other panic to the hook that was there before.
fn install_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !GUARDED.with(Cell::get) && QUIET_EVERYWHERE.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                previous(info);
            }
        }));
    });
}

fn message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "no message".into())
}

/// Runs `f`, a call into the Parquet reader for `path`; a panic in it is the file's error.
pub fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    install_hook();
    let was = GUARDED.with(|g| g.replace(true));
    let r = catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(was));
    r.unwrap_or_else(|p| {
        Err(TableError::Parquet {
            path: path.to_path_buf(),
            message: format!("corrupt file (the Parquet reader failed: {})", message(p.as_ref())),
        })
    })
}

/// Runs `f`, work that reads files on threads of its own (a DataFusion query), and turns a
/// panic that reaches this thread into an error: `what` and the panic's message. While it
/// runs, no panic message is printed by any thread (a query's worker threads re-raise theirs
/// on this one, where it becomes the error); a program that runs one query at a time loses
/// nothing by it.
pub fn guarded_anywhere<T>(what: &str, f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    install_hook();
    QUIET_EVERYWHERE.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let r = catch_unwind(AssertUnwindSafe(f));
    QUIET_EVERYWHERE.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    r.map_err(|p| format!("{what} failed (a corrupt file?): {}", message(p.as_ref())))
}

/// A reader's batches, each read under [`guarded`]; after an error nothing more is read.
pub struct GuardedBatches<R> {
    inner: Option<R>,
    path: PathBuf,
}

impl<R> GuardedBatches<R> {
    /// The batches of `reader`, a reader of `path`.
    pub fn new(path: &Path, reader: R) -> Self {
        GuardedBatches { inner: Some(reader), path: path.to_path_buf() }
    }
}

impl<R, E> Iterator for GuardedBatches<R>
where
    R: Iterator<Item = std::result::Result<RecordBatch, E>>,
    E: std::fmt::Display,
{
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        let reader = self.inner.as_mut()?;
        let path = self.path.clone();
        let r = guarded(&path, || {
            Ok(reader
                .next()
                .map(|b| b.map_err(|e| TableError::Parquet { path: path.clone(), message: e.to_string() })))
        });
        match r {
            Ok(Some(Ok(b))) => Some(Ok(b)),
            Ok(None) => {
                self.inner = None;
                None
            }
            Ok(Some(Err(e))) | Err(e) => {
                self.inner = None;
                Some(Err(e))
            }
        }
    }
}

/// Files up to this size are read into memory before the Parquet reader sees them.
pub const IN_MEMORY_BYTES: u64 = 64 << 20;

/// A Parquet file for the reader: read into memory when it is small ([`IN_MEMORY_BYTES`]),
/// else the open file. A corrupt footer can make the reader open a new reader at some offset
/// hundreds of thousands of times (found by fuzzing: 777,000 `read` calls and 10 s for a
/// 7 KB file); from memory that costs no system call.
#[derive(Debug)]
pub enum TableSource {
    /// The file's bytes.
    Memory(bytes::Bytes),
    /// The open file.
    File(std::fs::File),
    /// An object in a store, read with ranged GETs ([`crate::remote`]).
    Remote(crate::remote::RemoteFile),
}

impl TableSource {
    /// Opens `file` (its length decides where it is read from).
    pub fn new(mut file: std::fs::File) -> std::io::Result<TableSource> {
        let len = file.metadata()?.len();
        if len <= IN_MEMORY_BYTES {
            let mut v = Vec::with_capacity(len as usize);
            std::io::Read::read_to_end(&mut file, &mut v)?;
            Ok(TableSource::Memory(bytes::Bytes::from(v)))
        } else {
            Ok(TableSource::File(file))
        }
    }

    /// Opens the table file at `path`: a local file ([`TableSource::new`]) or an object in a
    /// store (`s3://...`, [`crate::remote::RemoteFile`]).
    pub fn open(path: &Path) -> std::io::Result<TableSource> {
        if crate::remote::is_remote(path) {
            crate::remote::RemoteFile::open(path).map(TableSource::Remote)
        } else {
            std::fs::File::open(path).and_then(TableSource::new)
        }
    }

    /// Another handle on the same bytes.
    pub fn try_clone(&self) -> std::io::Result<TableSource> {
        Ok(match self {
            TableSource::Memory(b) => TableSource::Memory(b.clone()),
            TableSource::File(f) => TableSource::File(f.try_clone()?),
            TableSource::Remote(r) => TableSource::Remote(r.clone()),
        })
    }
}

impl parquet::file::reader::Length for TableSource {
    fn len(&self) -> u64 {
        match self {
            TableSource::Memory(b) => b.len() as u64,
            TableSource::File(f) => parquet::file::reader::Length::len(f),
            TableSource::Remote(r) => parquet::file::reader::Length::len(r),
        }
    }
}

impl parquet::file::reader::ChunkReader for TableSource {
    type T = Box<dyn std::io::Read + Send>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        match self {
            TableSource::Memory(b) => Ok(Box::new(parquet::file::reader::ChunkReader::get_read(b, start)?)),
            TableSource::File(f) => Ok(Box::new(parquet::file::reader::ChunkReader::get_read(f, start)?)),
            TableSource::Remote(r) => Ok(Box::new(parquet::file::reader::ChunkReader::get_read(r, start)?)),
        }
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        match self {
            TableSource::Memory(b) => parquet::file::reader::ChunkReader::get_bytes(b, start, length),
            TableSource::File(f) => parquet::file::reader::ChunkReader::get_bytes(f, start, length),
            TableSource::Remote(r) => parquet::file::reader::ChunkReader::get_bytes(r, start, length),
        }
    }
}
