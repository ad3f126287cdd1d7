//! Tables in object stores: `s3://BUCKET/KEY` (or `s3a://`) wherever a table path is taken.
//!
//! A location is carried as a `Path` holding the URL, so every report and error names it as the
//! user wrote it; the table code asks [`is_remote`] at the few places it touches storage.
//!
//! - Reads stream: [`RemoteFile`] is a Parquet [`ChunkReader`](parquet::file::reader::ChunkReader)
//!   that fetches the footer and then each column chunk the reader asks for with a ranged GET,
//!   so memory stays flat in the table's size.
//! - Writes go through [`Upload`]: a multipart upload (8 MiB parts, at most two in flight) to a
//!   temporary key beside the target (`.stn-partial-NAME-PID-NANOS`, which no reader takes for
//!   a table), then a copy to the target **only if it does not exist** (`If-None-Match: *`,
//!   honoured by S3 since 2024 and by its compatibles), then the temporary object is deleted.
//!   The target appears complete or not at all, an existing object is never overwritten (also
//!   when another writer creates it meanwhile), and a failed or dropped upload is aborted.
//!   Outputs over 5 GiB (one copy request's limit) are refused by the store.
//! - Credentials: the standard chain ([`s3_store`]); none is ever printed.

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use object_store::aws::{AmazonS3Builder, S3CopyIfNotExists};
use object_store::path::Path as Key;
use object_store::{
    CopyMode, CopyOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, WriteMultipart,
};

/// The schemes read and written through the S3 store.
const SCHEMES: [&str; 2] = ["s3://", "s3a://"];

/// Part size of uploads.
const PART_BYTES: usize = 8 << 20;

/// Temporary objects older than this are left by runs that were killed (a live run's exists for
/// the time of one copy request).
const STALE_AFTER: Duration = Duration::from_secs(600);

/// The prefix of temporary objects' names.
const PARTIAL_PREFIX: &str = ".stn-partial-";

/// Whether `path` names an object in an object store (`s3://...`), not a local file.
pub fn is_remote(path: &Path) -> bool {
    let s = path.as_os_str().to_string_lossy();
    SCHEMES.iter().any(|p| s.starts_with(p))
}

/// The runtime the object store's requests run on (its own, so callers need none).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("stn-object-store")
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start the object store's runtime: {e}"))
    })
}

/// Runs `f` to completion on [`runtime`], from any thread (also one of another runtime).
pub(crate) fn block<F>(f: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| {
            s.spawn(|| runtime().block_on(f)).join().unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    } else {
        runtime().block_on(f)
    }
}

/// The `[section]`s of an INI file (the AWS shared credentials and config files): key = value
/// pairs by section name.
fn ini(text: &str) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>> {
    let mut out: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>> =
        Default::default();
    let mut section = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_string();
        } else if let Some((k, v)) = line.split_once('=') {
            out.entry(section.clone())
                .or_default()
                .insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    out
}

fn home_file(env: &str, default: &str) -> Option<PathBuf> {
    std::env::var_os(env)
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(default)))
}

/// An S3 store for `bucket`, with credentials from the standard chain: the `AWS_*` environment
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` or
/// `AWS_DEFAULT_REGION`, and `AWS_ENDPOINT_URL` for an S3-compatible server, where an `http://`
/// endpoint is allowed as asked), else the profile `AWS_PROFILE` (default `default`) of the
/// shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`, default `~/.aws/credentials`) and
/// its region in `~/.aws/config` (`AWS_CONFIG_FILE`), else the machine's instance credentials.
/// Copies to a key that must not exist are conditional (`If-None-Match: *`).
pub fn s3_store(bucket: &str) -> Result<Arc<dyn ObjectStore>, String> {
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_copy_if_not_exists(S3CopyIfNotExists::Multipart);
    let endpoint =
        std::env::var("AWS_ENDPOINT_URL").or_else(|_| std::env::var("AWS_ENDPOINT")).unwrap_or_default();
    if endpoint.starts_with("http://") {
        // An S3-compatible server on plain HTTP (a test server, a local MinIO) was asked for.
        builder = builder.with_allow_http(true);
    }
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
        let read = |p: Option<PathBuf>| p.and_then(|p| std::fs::read_to_string(p).ok()).map(|t| ini(&t));
        if let Some(creds) = read(home_file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials")) {
            if let Some(p) = creds.get(&profile) {
                if let (Some(id), Some(secret)) = (p.get("aws_access_key_id"), p.get("aws_secret_access_key"))
                {
                    builder = builder.with_access_key_id(id).with_secret_access_key(secret);
                    if let Some(token) = p.get("aws_session_token") {
                        builder = builder.with_token(token);
                    }
                }
            }
        }
        if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none() {
            let section = if profile == "default" { profile.clone() } else { format!("profile {profile}") };
            if let Some(region) = read(home_file("AWS_CONFIG_FILE", ".aws/config"))
                .and_then(|c| c.get(&section)?.get("region").cloned())
            {
                builder = builder.with_region(region);
            }
        }
    }
    if let Ok(region) = std::env::var("AWS_DEFAULT_REGION") {
        if std::env::var_os("AWS_REGION").is_none() {
            builder = builder.with_region(region);
        }
    }
    let store = builder.build().map_err(|e| format!("s3://{bucket}: cannot set up the S3 client: {e}"))?;
    Ok(Arc::new(store))
}

/// The store of `bucket`, made once per process.
fn store_of(bucket: &str) -> Result<Arc<dyn ObjectStore>, String> {
    static STORES: OnceLock<Mutex<std::collections::HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
    let mut stores = STORES.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = stores.get(bucket) {
        return Ok(s.clone());
    }
    let s = s3_store(bucket)?;
    stores.insert(bucket.to_string(), s.clone());
    Ok(s)
}

/// An object (or prefix) in a store: the store, the key, and the URL as given.
#[derive(Clone)]
pub struct Location {
    store: Arc<dyn ObjectStore>,
    bucket: String,
    scheme: &'static str,
    key: Key,
    url: String,
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

impl Location {
    /// Parses `path`, an `s3://BUCKET/KEY` URL.
    pub fn parse(path: &Path) -> Result<Location, String> {
        let url = path.as_os_str().to_string_lossy().into_owned();
        let (scheme, rest) = SCHEMES
            .iter()
            .find_map(|s| url.strip_prefix(s).map(|r| (*s, r)))
            .ok_or_else(|| format!("{url}: not an s3:// URL"))?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("{url}: no bucket named"));
        }
        let key = Key::parse(key.trim_end_matches('/'))
            .map_err(|e| format!("{url}: not a valid object key: {e}"))?;
        Ok(Location { store: store_of(bucket)?, bucket: bucket.to_string(), scheme, key, url })
    }

    /// The URL, as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The location of `key` in the same bucket, as a path.
    fn path_of(&self, key: &Key) -> PathBuf {
        PathBuf::from(format!("{}{}/{}", self.scheme, self.bucket, key))
    }

    fn err(&self, what: &str, e: object_store::Error) -> String {
        match e {
            object_store::Error::NotFound { .. } => format!("{what}: no such object"),
            e => format!("{what}: {}", store_message(&e.to_string())),
        }
    }

    /// The object's size, or None where there is none.
    pub fn size(&self) -> Result<Option<u64>, String> {
        Ok(self.meta()?.map(|m| m.size))
    }

    /// The object's metadata (size, ETag), or None where there is none.
    fn meta(&self) -> Result<Option<object_store::ObjectMeta>, String> {
        match block(self.store.head(&self.key)) {
            Ok(m) => Ok(Some(m)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err("cannot be read", e)),
        }
    }

    /// Bytes `range` of the object, only while its ETag is `etag` (when known): an object
    /// replaced while it is read is an error, never a mix of two versions.
    fn get(&self, range: std::ops::Range<u64>, etag: Option<&str>) -> Result<Bytes, String> {
        block(self.get_async(range, etag.map(str::to_string)))
    }

    /// [`Location::get`], to be awaited.
    async fn get_async(&self, range: std::ops::Range<u64>, etag: Option<String>) -> Result<Bytes, String> {
        let opts = GetOptions { range: Some(GetRange::Bounded(range)), if_match: etag, ..Default::default() };
        let r = async {
            let r = self.store.get_opts(&self.key, opts).await?;
            r.bytes().await
        }
        .await;
        r.map_err(|e| match e {
            object_store::Error::Precondition { .. } => {
                "cannot be read: it changed while it was being read (its ETag no longer matches)".to_string()
            }
            e => self.err("cannot be read", e),
        })
    }

    /// The objects directly under this prefix (not in sub-prefixes), sorted by key.
    pub fn children(&self) -> Result<Vec<(PathBuf, object_store::ObjectMeta)>, String> {
        let prefix = (!self.key.as_ref().is_empty()).then(|| self.key.clone());
        let r = block(self.store.list_with_delimiter(prefix.as_ref()))
            .map_err(|e| self.err("cannot be listed", e))?;
        let mut out: Vec<_> = r.objects.into_iter().map(|m| (self.path_of(&m.location), m)).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The object's first `limit` bytes (or all of it when shorter) and its size, refused when
    /// it is larger than `max_bytes`.
    pub fn read_prefix(&self, limit: u64, max_bytes: u64) -> Result<(Bytes, u64), String> {
        let size = self.size()?.ok_or_else(|| "no such object".to_string())?;
        if size > max_bytes {
            return Err(format!("is {size} bytes, over the limit of {max_bytes}"));
        }
        let end = size.min(limit);
        let bytes = if end == 0 {
            Bytes::new()
        } else {
            block(self.store.get_range(&self.key, 0..end)).map_err(|e| self.err("cannot be read", e))?
        };
        Ok((bytes, size))
    }

    /// The whole object, refused when it is larger than `max_bytes`.
    pub fn read_all(&self, max_bytes: u64) -> Result<Bytes, String> {
        let size = self.size()?.ok_or_else(|| "no such object".to_string())?;
        if size > max_bytes {
            return Err(format!("is {size} bytes, over the limit of {max_bytes}"));
        }
        block(self.store.get_range(&self.key, 0..size)).map_err(|e| self.err("cannot be read", e))
    }
}

/// A store's error in few words: the S3 error code and message of its answer (`NoSuchBucket:
/// The specified bucket does not exist`), else the client's own message.
pub fn store_message(e: &str) -> String {
    let tag = |t: &str| {
        let open = format!("<{t}>");
        let i = e.find(&open)? + open.len();
        let j = e[i..].find("</")? + i;
        Some(e[i..j].to_string())
    };
    match (tag("Code"), tag("Message")) {
        (Some(c), Some(m)) => format!("the store answered {c}: {m}"),
        (Some(c), None) => format!("the store answered {c}"),
        _ => e.to_string(),
    }
}

/// The Parquet files of a table in a store: the object itself when `path` names one, else the
/// `.parquet` objects directly under the prefix (hidden names, starting with `.` or `_`, are not
/// tables), sorted by key. A missing bucket, refused credentials or an unreachable server is
/// the store's error, naming the URL.
pub fn table_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    let loc = Location::parse(path)?;
    if !loc.url().ends_with('/') && opened_size(path)?.is_some() {
        return Ok(vec![path.to_path_buf()]);
    }
    let files: Vec<PathBuf> = loc
        .children()?
        .into_iter()
        .filter(|(_, m)| {
            let name = m.location.filename().unwrap_or_default();
            !name.starts_with('.') && !name.starts_with('_') && name.ends_with(".parquet")
        })
        .map(|(p, _)| p)
        .collect();
    if files.is_empty() {
        return Err("no such object, and no .parquet objects under it as a prefix".into());
    }
    Ok(files)
}

/// The size of the object at `path` ([`RemoteFile::open`], remembered), None where there is none.
fn opened_size(path: &Path) -> Result<Option<u64>, String> {
    match RemoteFile::open(path) {
        Ok(f) => Ok(Some(f.len)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// The size of the file or object at `path`, or None where it cannot be found.
pub fn file_size(path: &Path) -> Option<u64> {
    if is_remote(path) {
        RemoteFile::open(path).ok().map(|f| f.len)
    } else {
        std::fs::metadata(path).ok().map(|m| m.len())
    }
}

/// Whether `path` is a prefix of several objects (a "folder") rather than one object: it ends
/// with `/`, or no object has its exact key.
pub fn is_prefix(path: &Path) -> Result<bool, String> {
    let loc = Location::parse(path)?;
    Ok(loc.url().ends_with('/') || opened_size(path)?.is_none())
}

/// An opened object remembered: when, its size, ETag and last bytes.
type Opened = (std::time::Instant, u64, Option<String>, Bytes);

/// The objects opened in the last minute, by URL ([`RemoteFile::open`]).
fn opened() -> &'static Mutex<std::collections::HashMap<PathBuf, Opened>> {
    static OPENED: OnceLock<Mutex<std::collections::HashMap<PathBuf, Opened>>> = OnceLock::new();
    OPENED.get_or_init(Default::default)
}

/// An object opened for reading: its size known, every read a ranged GET.
#[derive(Clone, Debug)]
pub struct RemoteFile {
    loc: Location,
    len: u64,
    /// The object's ETag when opened: every later read asks for this version.
    etag: Option<String>,
    /// The object's last bytes (up to [`TAIL_BYTES`]), fetched at open: the footer and its
    /// length and magic come from here without more requests.
    tail: Bytes,
    /// The byte ranges of the row groups, once the footer is known ([`RemoteFile::set_row_groups`]).
    groups: Arc<OnceLock<Vec<std::ops::Range<u64>>>>,
    /// The last row group fetched: its range and bytes.
    cached: Arc<Mutex<Option<(u64, Bytes)>>>,
    /// The next row group, being fetched in the background while this one is decoded.
    ahead: Arc<Mutex<Option<Prefetch>>>,
}

/// A row group's fetch under way: its range and the task.
type Prefetch = (std::ops::Range<u64>, tokio::task::JoinHandle<Result<Bytes, String>>);

/// How much of an object's end is fetched when it is opened.
const TAIL_BYTES: u64 = 64 << 10;

impl RemoteFile {
    /// Opens the object at `path`: a HEAD request and a GET of its last 64 KiB, remembered for
    /// a minute (a table's files are opened several times while a run is planned; every read
    /// asks for the ETag seen here, so a replaced object is an error, not stale bytes).
    pub fn open(path: &Path) -> std::io::Result<RemoteFile> {
        let loc = Location::parse(path).map_err(std::io::Error::other)?;
        let opened = opened();
        let fresh = |(at, ..): &Opened| at.elapsed() < Duration::from_secs(60);
        let hit = opened.lock().unwrap_or_else(|p| p.into_inner()).get(path).filter(|o| fresh(o)).cloned();
        let (len, etag, tail) = match hit {
            Some((_, len, etag, tail)) => (len, etag, tail),
            None => {
                let meta = loc
                    .meta()
                    .map_err(std::io::Error::other)?
                    .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such object"))?;
                let (len, etag) = (meta.size, meta.e_tag);
                let tail = if len == 0 {
                    Bytes::new()
                } else {
                    loc.get(len.saturating_sub(TAIL_BYTES)..len, etag.as_deref())
                        .map_err(std::io::Error::other)?
                };
                let mut o = opened.lock().unwrap_or_else(|p| p.into_inner());
                o.retain(|_, v| fresh(v));
                if o.len() < 256 {
                    o.insert(
                        path.to_path_buf(),
                        (std::time::Instant::now(), len, etag.clone(), tail.clone()),
                    );
                }
                (len, etag, tail)
            }
        };
        Ok(RemoteFile {
            loc,
            len,
            etag,
            tail,
            groups: Default::default(),
            cached: Default::default(),
            ahead: Default::default(),
        })
    }

    /// Tells the file where its row groups lie (from its footer): a read inside one then
    /// fetches the whole row group with one ranged GET, and the reads of its other column
    /// chunks are served from it (one request per row group, not per column chunk).
    pub fn set_row_groups(&self, meta: &parquet::file::metadata::ParquetMetaData) {
        let ranges = meta
            .row_groups()
            .iter()
            .filter_map(|rg| {
                let spans = rg.columns().iter().map(|c| {
                    let s = c.dictionary_page_offset().unwrap_or(c.data_page_offset()).max(0) as u64;
                    (s, s.saturating_add(c.compressed_size().max(0) as u64))
                });
                let (lo, hi) = spans.fold((u64::MAX, 0), |(lo, hi), (s, e)| (lo.min(s), hi.max(e)));
                (lo < hi && hi <= self.len).then_some(lo..hi)
            })
            .collect();
        let _ = self.groups.set(ranges);
    }

    /// Bytes `start..start + length`: from the cached row group or the footer's tail, else the
    /// enclosing row group (one ranged GET, kept for the next reads), else exactly these.
    pub fn range(&self, start: u64, length: usize) -> std::io::Result<Bytes> {
        let end = start.saturating_add(length as u64);
        if end > self.len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("bytes {start}..{end} asked of an object of {}", self.len),
            ));
        }
        if length == 0 {
            return Ok(Bytes::new());
        }
        let tail_start = self.len - self.tail.len() as u64;
        if start >= tail_start {
            let from = (start - tail_start) as usize;
            return Ok(self.tail.slice(from..from + length));
        }
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, bytes)) = cached.as_ref() {
            if start >= *at && end <= at + bytes.len() as u64 {
                return Ok(bytes.slice((start - at) as usize..(end - at) as usize));
            }
        }
        let groups = self.groups.get().map(Vec::as_slice).unwrap_or_default();
        let index = groups.iter().position(|r| r.start <= start && end <= r.end);
        let fetch = index.map_or(start..end, |i| groups[i].clone());
        let mut ahead = self.ahead.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = match ahead.take() {
            Some((r, task)) if r == fetch => {
                block(task).unwrap_or_else(|e| Err(format!("cannot be read: the fetch failed: {e}")))
            }
            other => {
                if let Some((_, task)) = other {
                    task.abort();
                }
                self.loc.get(fetch.clone(), self.etag.as_deref())
            }
        }
        .map_err(std::io::Error::other)?;
        let out = bytes.slice((start - fetch.start) as usize..(end - fetch.start) as usize);
        if let Some(i) = index {
            *cached = Some((fetch.start, bytes));
            // Read ahead: the next row group comes while this one is decoded and rectified.
            if let Some(next) = groups.get(i + 1).cloned() {
                let (loc, etag, r) = (self.loc.clone(), self.etag.clone(), next.clone());
                let task = runtime().spawn(async move { loc.get_async(r, etag).await });
                *ahead = Some((next, task));
            }
        }
        Ok(out)
    }
}

impl parquet::file::reader::Length for RemoteFile {
    fn len(&self) -> u64 {
        self.len
    }
}

impl parquet::file::reader::ChunkReader for RemoteFile {
    type T = RemoteRead;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(RemoteRead { file: self.clone(), pos: start, chunk: Bytes::new() })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.range(start, length).map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))
    }
}

/// A [`RemoteFile`] read forward from some offset (the pages of a column chunk): fetched a row
/// group (or 1 MiB outside row groups) at a time, as it is consumed.
pub struct RemoteRead {
    file: RemoteFile,
    pos: u64,
    chunk: Bytes,
}

impl std::io::Read for RemoteRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.chunk.is_empty() {
            if self.pos >= self.file.len || buf.is_empty() {
                return Ok(0);
            }
            let group_end = self
                .file
                .groups
                .get()
                .and_then(|g| g.iter().find(|r| r.start <= self.pos && self.pos < r.end).map(|r| r.end));
            let end = group_end.unwrap_or_else(|| self.pos.saturating_add(1 << 20)).min(self.file.len);
            self.chunk = self.file.range(self.pos, (end - self.pos) as usize)?;
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk = self.chunk.slice(n..);
        self.pos += n as u64;
        Ok(n)
    }
}

/// Why an upload could not be completed.
#[derive(Debug)]
pub enum UploadError {
    /// The target exists (or appeared meanwhile): nothing was overwritten.
    Exists(String),
    /// The store failed.
    Store(String),
}

impl std::fmt::Display for UploadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UploadError::Exists(t) => write!(f, "{t} exists; it was not overwritten"),
            UploadError::Store(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for UploadError {}

/// An output object being written: a multipart upload to a temporary key, made the target's
/// only by [`Upload::commit`]. Dropped without commit, the upload is aborted and nothing is
/// left.
pub struct Upload {
    target: Location,
    temp: Key,
    writer: Option<WriteMultipart>,
    failed: Option<String>,
}

impl Upload {
    /// Starts an upload for `target`, refused when an object is there already.
    pub fn create(target: &Path) -> Result<Upload, UploadError> {
        let target = Location::parse(target).map_err(UploadError::Store)?;
        if target.size().map_err(UploadError::Store)?.is_some() {
            return Err(UploadError::Exists(target.url.clone()));
        }
        let name = target.key.filename().unwrap_or("output").to_string();
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let temp_name = format!("{PARTIAL_PREFIX}{name}-{}-{nanos}", std::process::id());
        let parts: Vec<_> = target.key.parts().collect();
        let mut temp_parts = parts[..parts.len().saturating_sub(1)].to_vec();
        temp_parts.push(object_store::path::PathPart::from(temp_name.as_str()));
        let temp = Key::from_iter(temp_parts);
        let store = target.store.clone();
        let t = temp.clone();
        let upload = block(async move { store.put_multipart(&t).await })
            .map_err(|e| UploadError::Store(target.err("cannot start an upload", e)))?;
        let _guard = runtime().enter();
        let writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        Ok(Upload { target, temp, writer: Some(writer), failed: None })
    }

    /// Finishes the upload and copies it to the target if no object is there (never
    /// overwriting one), then deletes the temporary object. On error nothing is left.
    pub fn commit(mut self) -> Result<(), UploadError> {
        if let Some(m) = self.failed.take() {
            return Err(UploadError::Store(m));
        }
        let Some(writer) = self.writer.take() else {
            return Err(UploadError::Store("the upload was already finished".into()));
        };
        let store = self.target.store.clone();
        let (temp, target) = (self.temp.clone(), self.target.key.clone());
        opened().lock().unwrap_or_else(|p| p.into_inner()).remove(Path::new(&self.target.url));
        let r = block(async move {
            writer.finish().await.map_err(|e| ("cannot complete the upload", e))?;
            let copied = store
                .copy_opts(&temp, &target, CopyOptions { mode: CopyMode::Create, ..Default::default() })
                .await;
            let deleted = store.delete(&temp).await;
            copied.map_err(|e| ("cannot move the upload to its name", e))?;
            deleted.map_err(|e| ("cannot delete the temporary object", e))
        });
        match r {
            Ok(()) => Ok(()),
            Err((_, object_store::Error::AlreadyExists { .. }))
            | Err((_, object_store::Error::Precondition { .. })) => {
                Err(UploadError::Exists(self.target.url.clone()))
            }
            Err((what, e)) => Err(UploadError::Store(self.target.err(what, e))),
        }
    }
}

impl Write for Upload {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(m) = &self.failed {
            return Err(std::io::Error::other(m.clone()));
        }
        let w = self.writer.as_mut().ok_or_else(|| std::io::Error::other("the upload is finished"))?;
        {
            let _guard = runtime().enter();
            w.write(buf);
        }
        // At most two parts in flight: memory stays at a few parts whatever the output's size.
        if let Err(e) = block(w.wait_for_capacity(2)) {
            let m = self.target.err("upload failed", e);
            self.failed = Some(m.clone());
            return Err(std::io::Error::other(m));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(w) = self.writer.take() {
            // Not committed: the parts are discarded (an aborted upload is no object).
            let _ = block(async move { tokio::time::timeout(Duration::from_secs(10), w.abort()).await });
        }
    }
}

/// Deletes the object at `path` (a data file of a Delta commit that failed).
pub fn delete(path: &Path) -> Result<(), String> {
    let loc = Location::parse(path)?;
    opened().lock().unwrap_or_else(|p| p.into_inner()).remove(path);
    block(loc.store.delete(&loc.key)).map_err(|e| loc.err("cannot delete", e))
}

/// Removes the temporary objects that killed runs left under the prefix `dir` (older than ten
/// minutes; a live run's exists only for one copy request) and returns their URLs.
pub fn clean_stale_partials(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let loc = Location::parse(dir)?;
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let mut removed = Vec::new();
    for (path, meta) in loc.children()? {
        let name = meta.location.filename().unwrap_or_default();
        let old = now - meta.last_modified.timestamp() > STALE_AFTER.as_secs() as i64;
        if name.starts_with(PARTIAL_PREFIX) && old {
            block(loc.store.delete(&meta.location))
                .map_err(|e| loc.err("cannot delete a temporary object", e))?;
            removed.push(path);
        }
    }
    Ok(removed)
}

/// An output file being written, local or in a store: appears under its name only on
/// [`OutputFile::commit`], complete, never over an existing one; dropped, it leaves nothing.
pub enum OutputFile {
    /// A local file: a temporary file beside the target ([`stn_fs::Partial`]).
    Local(stn_fs::Partial, std::fs::File),
    /// An object: an [`Upload`].
    Remote(Upload),
}

impl OutputFile {
    /// Starts writing `target` (a path or an `s3://` URL), refused when it exists.
    pub fn create(target: &Path) -> Result<OutputFile, String> {
        if is_remote(target) {
            Upload::create(target).map(OutputFile::Remote).map_err(|e| match e {
                UploadError::Exists(_) => {
                    "exists; an output is never overwritten (remove it, or choose another --out)".to_string()
                }
                UploadError::Store(m) => m,
            })
        } else {
            if target.exists() {
                return Err(
                    "exists; an output is never overwritten (remove it, or choose another --out)".into()
                );
            }
            let (p, f) = stn_fs::Partial::create(target)
                .map_err(|e| format!("cannot create a temporary file: {e}"))?;
            Ok(OutputFile::Local(p, f))
        }
    }

    /// Makes the output appear under its name, complete (a local file is synced first).
    pub fn commit(self) -> Result<(), String> {
        match self {
            OutputFile::Local(p, f) => p.commit(f).map_err(|e| match e {
                stn_fs::CommitError::Exists(_) => "appeared while writing; not overwritten".to_string(),
                e => e.to_string(),
            }),
            OutputFile::Remote(u) => u.commit().map_err(|e| match e {
                UploadError::Exists(_) => "appeared while writing; not overwritten".to_string(),
                UploadError::Store(m) => m,
            }),
        }
    }
}

impl Write for OutputFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            OutputFile::Local(_, f) => f.write(buf),
            OutputFile::Remote(u) => u.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            OutputFile::Local(_, f) => f.flush(),
            OutputFile::Remote(u) => u.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_files_are_read_by_section() {
        let f = ini("[default]\naws_access_key_id = AK\n# c\n[profile dev]\nregion=eu-west-3\n");
        assert_eq!(f["default"]["aws_access_key_id"], "AK");
        assert_eq!(f["profile dev"]["region"], "eu-west-3");
    }

    #[test]
    fn store_answers_are_put_in_few_words() {
        let e = "Generic S3 error: Error performing list request: 404 Not Found: <?xml version=\"1.0\"?>\
                 <Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message></Error>";
        assert_eq!(store_message(e), "the store answered NoSuchBucket: The specified bucket does not exist");
        assert_eq!(store_message("connection refused"), "connection refused");
    }

    #[test]
    fn urls_are_told_from_paths() {
        assert!(is_remote(Path::new("s3://bucket/a/b.parquet")));
        assert!(is_remote(Path::new("s3a://bucket/")));
        assert!(!is_remote(Path::new("data/s3://x")));
        assert!(!is_remote(Path::new("/tmp/s3/x.parquet")));
    }
}
