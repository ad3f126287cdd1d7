//! The IDX format of MNIST and its relatives: a 4-byte magic (two zero bytes, an element type,
//! the number of dimensions), the dimensions as big-endian u32, then the elements. Files may be
//! gzip-compressed (detected by content, not by name).

use std::io::Read;
use std::path::Path;

use crate::error::{DataError, Result};

/// An IDX array of unsigned bytes (the type MNIST, Fashion-MNIST, EMNIST and KMNIST use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// The dimensions, outermost first (images: N, rows, cols; labels: N).
    pub dims: Vec<usize>,
    /// The elements, row-major.
    pub data: Vec<u8>,
}

/// IDX element type code of unsigned bytes.
const U8: u8 = 0x08;
/// Largest decompressed file accepted (a corrupt header must not allocate without bound).
const MAX_BYTES: usize = 4 << 30;

fn format_err(what: &str, message: impl Into<String>) -> DataError {
    DataError::Format { what: what.to_string(), message: message.into() }
}

/// Decompresses `bytes` if they are gzip (magic 1f 8b), else returns them.
fn maybe_gunzip(bytes: Vec<u8>, what: &str) -> Result<Vec<u8>> {
    if bytes.len() < 2 || bytes[0] != 0x1f || bytes[1] != 0x8b {
        return Ok(bytes);
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .take(MAX_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format_err(what, format!("corrupt gzip data: {e}")))?;
    if out.len() > MAX_BYTES {
        return Err(format_err(what, "decompresses to more than 4 GiB"));
    }
    Ok(out)
}

/// Parses an IDX array (raw or gzip). `what` names the source in errors.
pub fn parse_idx(bytes: Vec<u8>, what: &str) -> Result<IdxArray> {
    let bytes = maybe_gunzip(bytes, what)?;
    if bytes.len() < 4 {
        return Err(format_err(what, format!("too short for an IDX header ({} bytes)", bytes.len())));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(format_err(what, "not an IDX file (the magic must start with two zero bytes)"));
    }
    if bytes[2] != U8 {
        return Err(format_err(
            what,
            format!("IDX element type 0x{:02x} is not supported (only unsigned bytes, 0x08)", bytes[2]),
        ));
    }
    let nd = bytes[3] as usize;
    if nd == 0 || nd > 4 {
        return Err(format_err(what, format!("IDX header says {nd} dimensions; expected 1 to 4")));
    }
    let head = 4 + 4 * nd;
    if bytes.len() < head {
        return Err(format_err(what, "truncated IDX header"));
    }
    let dims: Vec<usize> = (0..nd)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize)
        .collect();
    let count = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&c| c <= MAX_BYTES)
        .ok_or_else(|| format_err(what, format!("IDX dimensions {dims:?} are too large")))?;
    let body = bytes.len() - head;
    if body < count {
        return Err(format_err(
            what,
            format!("truncated: dimensions {dims:?} need {count} bytes of data, the file has {body}"),
        ));
    }
    if body > count {
        return Err(format_err(
            what,
            format!("{} unexpected bytes after the {count} data bytes of dimensions {dims:?}", body - count),
        ));
    }
    let mut data = bytes;
    data.drain(..head);
    Ok(IdxArray { dims, data })
}

/// Reads an IDX file (raw or gzip).
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let bytes = std::fs::read(path)
        .map_err(|e| DataError::Io { path: path.to_path_buf(), message: format!("cannot read: {e}") })?;
    parse_idx(bytes, &path.display().to_string())
}

/// Encodes an array as (uncompressed) IDX bytes.
pub fn encode_idx(a: &IdxArray) -> Vec<u8> {
    let mut out = vec![0, 0, U8, a.dims.len() as u8];
    for &d in &a.dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(&a.data);
    out
}
