//! One-file model storage: a module's Burn record (burnpack) with the configuration that
//! builds it, so another program can rebuild and load the module from the file alone.
//!
//! Layout: the magic `STN-MODEL`, a format version (u32, little-endian), the configuration's
//! JSON length (u64, little-endian), the JSON, then the burnpack bytes. Files are written to a
//! temporary name beside the target and renamed into place, so a failed save never leaves a
//! half-written file and never destroys the previous one.

use std::fs;
use std::path::Path;

use burn::config::Config;
use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;

use crate::error::{Result, StnError};

const MAGIC: &[u8; 9] = b"STN-MODEL";
const VERSION: u32 = 1;
/// Largest configuration accepted when reading (a corrupt length must not allocate gigabytes).
const MAX_CONFIG_BYTES: u64 = 16 << 20;

fn file_err(path: &Path, message: impl Into<String>) -> StnError {
    StnError::File { path: path.to_path_buf(), message: message.into() }
}

/// Writes `bytes` to `path` atomically ([`stn_fs::write_replace`]): a temporary file in the
/// same folder, synced, renamed over the old one, the folder synced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(file_err(path, format!("folder {} does not exist", dir.display())));
    }
    stn_fs::write_replace(path, bytes).map_err(|e| file_err(path, e.to_string()))
}

/// Saves `module` with `config` to `path` (see the module docs for the layout).
pub fn save<M: Module, C: Config>(module: M, config: &C, path: &Path) -> Result<()> {
    let json =
        serde_json::to_vec(config).map_err(|e| file_err(path, format!("cannot encode the config: {e}")))?;
    let weights = module
        .into_record()
        .into_bytes()
        .map_err(|e| file_err(path, format!("cannot encode the weights: {e:?}")))?;
    let mut out = Vec::with_capacity(MAGIC.len() + 12 + json.len() + weights.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&weights);
    write_atomic(path, &out)
}

/// Reads the configuration and the weights' record from a file written by [`save`].
pub fn load<C: Config>(path: &Path) -> Result<(C, ModuleRecord)> {
    let bytes = fs::read(path).map_err(|e| file_err(path, format!("cannot read: {e}")))?;
    let head = MAGIC.len() + 12;
    if bytes.len() < head || &bytes[..MAGIC.len()] != MAGIC {
        return Err(file_err(path, "not an stn model file (bad magic)"));
    }
    let version = u32::from_le_bytes(bytes[9..13].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(file_err(path, format!("model format version {version}, this build reads {VERSION}")));
    }
    let len = u64::from_le_bytes(bytes[13..21].try_into().expect("8 bytes"));
    if len > MAX_CONFIG_BYTES || (len as usize) > bytes.len() - head {
        return Err(file_err(path, "truncated or corrupt model file (config length)"));
    }
    let json = &bytes[head..head + len as usize];
    let config: C = serde_json::from_slice(json)
        .map_err(|e| file_err(path, format!("corrupt model configuration: {e}")))?;
    let weights = Bytes::from_bytes_vec(bytes[head + len as usize..].to_vec());
    let record = ModuleRecord::from_bytes(weights)
        .map_err(|e| file_err(path, format!("corrupt model weights: {e:?}")))?;
    Ok((config, record))
}

/// Applies a record read by [`load`] to a module built from its configuration.
pub fn apply<M: Module>(module: M, record: ModuleRecord, path: &Path) -> Result<M> {
    module.try_load_record(record).map_err(|e| file_err(path, format!("weights do not fit the model: {e:?}")))
}
