//! Images out of a column's rows, and rectified images back into a column of the same
//! convention.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef};
use arrow_schema::{DataType, Field, Fields};
use rayon::prelude::*;
use stn_data::image_io::{Encoding, ImageInfo};
use stn_data::Image;

use crate::arrays::*;
use crate::convention::{Convention, FixedMark, ImageColumn, EXTENSION_METADATA, EXTENSION_NAME};

/// Largest image a row may hold (pixels) unless told otherwise: 64 megapixels. A header that
/// claims more is the row's error, before anything is allocated.
pub const DEFAULT_MAX_PIXELS: u64 = 1 << 26;

pub use stn_data::image_io::DEFAULT_MAX_FILE_BYTES;

/// How rows are read.
#[derive(Debug, Clone)]
pub struct DecodeOptions {
    /// Largest image (pixels) a row may hold.
    pub max_pixels: u64,
    /// The folder the `path`s of Hugging Face rows are read from, and must stay inside (the
    /// table's folder; None: the current folder).
    pub base_dir: Option<PathBuf>,
    /// Read `path`s outside `base_dir` too (absolute paths, `..`, symbolic links that leave
    /// it). Devices, FIFOs, sockets and files over `max_file_bytes` are refused even then.
    pub allow_outside_paths: bool,
    /// Largest image file a `path` may name (bytes).
    pub max_file_bytes: u64,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            max_pixels: DEFAULT_MAX_PIXELS,
            base_dir: None,
            allow_outside_paths: false,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
        }
    }
}

/// How a tensor row gave its shape, so the output row gives it the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowShape {
    /// (H, W): gray.
    Hw,
    /// (H, W, C).
    Hwc,
    /// (1, H, W): Ray's gray rows in a 3-D column.
    OneHw,
}

/// A decoded row: the image and what its convention needs to write it back.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// The image (planar f32, 1 to 4 channels).
    pub image: Image,
    /// How a tensor row gave its shape.
    pub shape: RowShape,
    /// Spark's `origin` or Daft's `mode` of the input row, copied to the output row.
    pub origin: Option<String>,
    /// Daft's `mode` / Spark's `mode` code of the input row.
    pub mode: Option<i64>,
}

impl Decoded {
    fn plain(image: Image) -> Self {
        Decoded { image, shape: RowShape::Hwc, origin: None, mode: None }
    }
}

fn child<'a>(a: &'a dyn Array, name: &str) -> Result<&'a ArrayRef, String> {
    a.as_struct_opt()
        .and_then(|s| s.column_by_name(name))
        .ok_or_else(|| format!("the image struct has no `{name}` field"))
}

fn dim(a: &dyn Array, i: usize, name: &str) -> Result<usize, String> {
    match int_at(a, i) {
        Some(v) if v > 0 => Ok(v as usize),
        Some(v) => Err(format!("`{name}` is {v}")),
        None => Err(format!("`{name}` is null")),
    }
}

fn decode_bytes(bytes: &[u8], opts: &DecodeOptions) -> Result<Image, String> {
    Image::decode(bytes, opts.max_pixels).map_err(|e| e.to_string())
}

fn check_pixels(h: usize, w: usize, opts: &DecodeOptions) -> Result<(), String> {
    if (h as u64).saturating_mul(w as u64) > opts.max_pixels {
        return Err(format!("{h} x {w} pixels is more than the limit of {}", opts.max_pixels));
    }
    Ok(())
}

/// Where the `path` of a row may be read from: under the base folder (the table's), after
/// following every symbolic link, unless `allow_outside_paths`. The result is the resolved
/// path, or the row's reason.
pub fn resolve_row_path(path: &str, opts: &DecodeOptions) -> Result<PathBuf, String> {
    if path.is_empty() {
        return Err("the image path is empty".into());
    }
    if path.contains('\0') {
        return Err(format!("the image path {path:?} holds a NUL byte"));
    }
    let p = Path::new(path);
    let base = opts.base_dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let full = if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
    if opts.allow_outside_paths {
        return Ok(full);
    }
    let outside = |why: &str| {
        format!(
            "image path `{path}` {why}: a row's path must stay inside the table's folder `{}` \
             (--base-dir to name another, --allow-outside-paths to read it anyway)",
            base.display()
        )
    };
    if p.is_absolute() {
        return Err(outside("is absolute"));
    }
    if crate::remote::is_remote(&base) {
        // A key under the table's prefix: no `..`, no `.`, no empty part (keys have no links).
        if p.components().any(|c| c == std::path::Component::ParentDir) {
            return Err(outside("goes up with `..`"));
        }
        if path.contains("//") || path.split('/').any(|part| part == ".") || path.contains('\\') {
            return Err(format!("image path `{path}` is not a plain key under the table's prefix"));
        }
        return Ok(full);
    }
    let root = std::fs::canonicalize(&base)
        .map_err(|e| format!("cannot resolve the table's folder `{}`: {e}", base.display()))?;
    let resolved = match std::fs::canonicalize(&full) {
        Ok(r) => r,
        // A missing file is reported as missing, unless its path leaves the folder anyway.
        Err(e) => {
            if p.components().any(|c| c == std::path::Component::ParentDir) {
                return Err(outside("goes up with `..`"));
            }
            return Err(format!("cannot read image path `{path}` ({}): {e}", full.display()));
        }
    };
    if !resolved.starts_with(&root) {
        let why = if p.components().any(|c| c == std::path::Component::ParentDir) {
            "goes up with `..` and out of it"
        } else {
            "is a symbolic link (or under one) that leads out of it"
        };
        return Err(outside(why));
    }
    Ok(resolved)
}

fn read_path(path: &str, opts: &DecodeOptions) -> Result<Vec<u8>, String> {
    let full = resolve_row_path(path, opts)?;
    if crate::remote::is_remote(&full) {
        let bytes = crate::remote::Location::parse(&full)
            .and_then(|l| l.read_all(opts.max_file_bytes))
            .map_err(|e| format!("image path `{path}` ({}): {e}", full.display()))?;
        return Ok(bytes.to_vec());
    }
    // Resolved already: a symbolic link appearing at the last component now is refused.
    stn_data::image_io::read_image_file(&full, opts.max_file_bytes, opts.allow_outside_paths)
        .map_err(|e| format!("image path `{path}` {e}"))
}

/// The size of row `i` as its fields give it, for the conventions that store pixels: (height,
/// width, channels, shape).
fn pixel_dims(conv: &Convention, a: &dyn Array, i: usize) -> Result<(usize, usize, usize, RowShape), String> {
    match conv {
        Convention::DaftImage => {
            let (h, w) = (dim(child(a, "height")?, i, "height")?, dim(child(a, "width")?, i, "width")?);
            let c = dim(child(a, "channel")?, i, "channel")?;
            if !(1..=4).contains(&c) {
                return Err(format!("`channel` is {c}, not 1 to 4"));
            }
            Ok((h, w, c, RowShape::Hwc))
        }
        Convention::Tensor => {
            let shape = int_list_at(child(a, "shape")?.as_ref(), i).ok_or("the shape is null")?;
            let pos = |v: i64| {
                if v > 0 {
                    Ok(v as usize)
                } else {
                    Err(format!("shape {shape:?} has a non-positive extent"))
                }
            };
            match shape.as_slice() {
                [h, w] => Ok((pos(*h)?, pos(*w)?, 1, RowShape::Hw)),
                [h, w, c] if (1..=4).contains(c) => Ok((pos(*h)?, pos(*w)?, *c as usize, RowShape::Hwc)),
                [1, h, w] => Ok((pos(*h)?, pos(*w)?, 1, RowShape::OneHw)),
                _ => Err(format!(
                    "tensor of shape {shape:?} is not an image (H, W), (H, W, C<=4) or (1, H, W)"
                )),
            }
        }
        Convention::FixedShape { height, width, channels, .. } => {
            Ok((*height, *width, *channels, RowShape::Hwc))
        }
        Convention::Spark => {
            let s = a.as_struct();
            let field = |n: &str| s.column_by_name(n).map(|c| int_at(c.as_ref(), i)).unwrap_or(None);
            let (h, w, c) = (field("height"), field("width"), field("nChannels"));
            match (h, w, c) {
                (Some(h), Some(w), Some(c)) if h > 0 && w > 0 && (1..=4).contains(&c) => {
                    Ok((h as usize, w as usize, c as usize, RowShape::Hwc))
                }
                _ => Err(format!("Spark image of height {h:?}, width {w:?}, nChannels {c:?} is invalid")),
            }
        }
        Convention::Encoded | Convention::HfImage => Err("an encoded image has no pixel fields".into()),
    }
}

/// Decodes row `i` of an image column.
pub fn decode_row(
    conv: &Convention,
    a: &dyn Array,
    i: usize,
    opts: &DecodeOptions,
) -> Result<Decoded, String> {
    if a.is_null(i) {
        return Err("null image".into());
    }
    match conv {
        Convention::Encoded => {
            let b = bytes_at(a, i).ok_or("null image")?;
            decode_bytes(b, opts).map(Decoded::plain)
        }
        Convention::HfImage => {
            if let Some(b) = bytes_at(child(a, "bytes")?.as_ref(), i) {
                return decode_bytes(b, opts).map(Decoded::plain);
            }
            match str_at(child(a, "path")?.as_ref(), i) {
                Some(p) => {
                    let bytes = read_path(p, opts)?;
                    decode_bytes(&bytes, opts)
                        .map(Decoded::plain)
                        .map_err(|e| format!("image path `{p}`: {e}"))
                }
                None => Err("no image: both `bytes` and `path` are null".into()),
            }
        }
        Convention::DaftImage | Convention::Tensor | Convention::FixedShape { .. } => {
            let (h, w, c, shape) = pixel_dims(conv, a, i)?;
            check_pixels(h, w, opts)?;
            let data = match conv {
                Convention::FixedShape { .. } => u8_list_at(a, i).ok_or("null image")?,
                Convention::DaftImage => {
                    u8_list_at(child(a, "data")?.as_ref(), i).ok_or("the pixel data is null")?
                }
                _ => u8_list_at(child(a, "data")?.as_ref(), i).ok_or("the tensor data is null")?,
            };
            let mode = match conv {
                Convention::DaftImage => {
                    a.as_struct().column_by_name("mode").and_then(|m| int_at(m.as_ref(), i))
                }
                _ => None,
            };
            let image = Image::from_interleaved_u8(&data, h, w, c).map_err(|e| e.to_string())?;
            Ok(Decoded { image, shape, origin: None, mode })
        }
        Convention::Spark => {
            let (h, w, c, _) = pixel_dims(conv, a, i)?;
            check_pixels(h, w, opts)?;
            let s = a.as_struct();
            let mut data = bytes_at(child(a, "data")?.as_ref(), i).ok_or("the pixel data is null")?.to_vec();
            if c >= 3 {
                for px in data.chunks_exact_mut(c) {
                    px.swap(0, 2); // BGR(A) -> RGB(A)
                }
            }
            let image = Image::from_interleaved_u8(&data, h, w, c).map_err(|e| e.to_string())?;
            let origin = s.column_by_name("origin").and_then(|o| str_at(o.as_ref(), i)).map(str::to_string);
            let mode = s.column_by_name("mode").and_then(|m| int_at(m.as_ref(), i));
            Ok(Decoded { image, shape: RowShape::Hwc, origin, mode })
        }
    }
}

/// Decodes every row of an image column, in parallel, all at once (for small batches and
/// tests: the writers decode through [`decode_in_pieces`], within the memory budget).
pub fn decode_column(conv: &Convention, a: &dyn Array, opts: &DecodeOptions) -> Vec<Result<Decoded, String>> {
    (0..a.len()).into_par_iter().map(|i| decode_row(conv, a, i, opts)).collect()
}

/// What a row will take to decode, known from its header or fields before anything is
/// allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowPlan {
    /// The decoded image's size and channels.
    pub info: ImageInfo,
    /// Bytes of the image file a `path` row reads (0 for images in the row).
    pub file_bytes: u64,
}

/// Bytes a `path` row's header is looked for in before the whole file is read for it.
const HEADER_PREFIX: u64 = 1 << 20;

fn probe_bytes(bytes: &[u8], opts: &DecodeOptions) -> Result<ImageInfo, String> {
    if bytes.is_empty() {
        return Err("empty bytes (0 bytes, not an image)".into());
    }
    let info = Image::probe(bytes).map_err(|e| e.to_string())?;
    if info.width == 0 || info.height == 0 {
        return Err(format!("image of {} x {} pixels is empty", info.width, info.height));
    }
    if info.pixels() > opts.max_pixels {
        return Err(format!(
            "image: the header claims {} x {} pixels, more than the limit of {}",
            info.width, info.height, opts.max_pixels
        ));
    }
    Ok(info)
}

/// What row `i` will take to decode (its header read, not its pixels), or the row's reason.
pub fn plan_row(conv: &Convention, a: &dyn Array, i: usize, opts: &DecodeOptions) -> Result<RowPlan, String> {
    if a.is_null(i) {
        return Err("null image".into());
    }
    let in_row = |bytes: &[u8]| probe_bytes(bytes, opts).map(|info| RowPlan { info, file_bytes: 0 });
    match conv {
        Convention::Encoded => in_row(bytes_at(a, i).ok_or("null image")?),
        Convention::HfImage => {
            if let Some(b) = bytes_at(child(a, "bytes")?.as_ref(), i) {
                return in_row(b);
            }
            let Some(p) = str_at(child(a, "path")?.as_ref(), i) else {
                return Err("no image: both `bytes` and `path` are null".into());
            };
            let full = resolve_row_path(p, opts)?;
            let read = |limit: u64| {
                if crate::remote::is_remote(&full) {
                    return crate::remote::Location::parse(&full)
                        .and_then(|l| l.read_prefix(limit, opts.max_file_bytes))
                        .map(|(b, len)| (b.to_vec(), len))
                        .map_err(|e| format!("image path `{p}` ({}): {e}", full.display()));
                }
                stn_data::image_io::read_image_file_prefix(
                    &full,
                    opts.max_file_bytes,
                    limit,
                    opts.allow_outside_paths,
                )
                .map_err(|e| format!("image path `{p}` {e}"))
            };
            let (head, len) = read(HEADER_PREFIX)?;
            let info = match probe_bytes(&head, opts) {
                Ok(info) => Ok(info),
                // The header lies further in (large metadata blocks): read it all once.
                Err(_) if len > head.len() as u64 => probe_bytes(&read(u64::MAX)?.0, opts),
                Err(e) => Err(e),
            }
            .map_err(|e| format!("image path `{p}`: {e}"))?;
            Ok(RowPlan { info, file_bytes: len })
        }
        _ => {
            let (h, w, c, _) = pixel_dims(conv, a, i)?;
            check_pixels(h, w, opts)?;
            Ok(RowPlan { info: ImageInfo { width: w, height: h, channels: c }, file_bytes: 0 })
        }
    }
}

/// Bytes that decoding a row of `conv` holds at its peak: for encoded images the decoder's own
/// buffer (up to 16 bits a sample), the interleaved floats and the planar image; for stored
/// pixels the planar image and a copy of the pixels.
pub fn decode_memory(conv: &Convention, plan: &RowPlan) -> u64 {
    let v = plan.info.pixels() * plan.info.channels as u64;
    plan.file_bytes + if conv.is_encoded() { 10 * v } else { 5 * v }
}

/// A piece of a batch as [`decode_in_pieces`] gives it: each row's index in the batch and the
/// row decoded, or its reason.
pub type Piece = Vec<(usize, Result<Decoded, String>)>;

/// Decodes the rows of `a` in pieces that fit the process's memory budget
/// ([`crate::memory`]): each row's header is read first, its memory estimated
/// ([`decode_memory`] plus `extra`, what the caller does with it), and rows are taken in order
/// until the budget has no more room; then the piece is decoded (in parallel) and given to
/// `each`, and its memory given back before the next. `each` sees every row once, in order,
/// with its index; a row that alone needs more than the whole budget is an error there. A row
/// is decoded at most to the size its header said when planned (a file that changes meanwhile
/// is an error, not a larger allocation).
pub fn decode_in_pieces(
    conv: &Convention,
    a: &dyn Array,
    opts: &DecodeOptions,
    extra: &(dyn Fn(&ImageInfo) -> u64 + Sync),
    each: &mut dyn FnMut(Piece) -> Result<(), String>,
) -> Result<(), String> {
    use crate::memory::{memory_budget, reserve, too_large, try_reserve, Reservation};
    let mut piece: Vec<(usize, Result<RowPlan, String>)> = Vec::new();
    let mut held: Vec<Reservation> = Vec::new();
    let mut flush = |piece: &mut Vec<(usize, Result<RowPlan, String>)>, held: &mut Vec<Reservation>| {
        let rows = std::mem::take(piece);
        let decoded: Vec<(usize, Result<Decoded, String>)> = rows
            .into_par_iter()
            .map(|(i, plan)| {
                let d = plan.and_then(|plan| {
                    let o = DecodeOptions {
                        max_pixels: plan.info.pixels().min(opts.max_pixels),
                        max_file_bytes: if plan.file_bytes > 0 {
                            plan.file_bytes
                        } else {
                            opts.max_file_bytes
                        },
                        ..opts.clone()
                    };
                    decode_row(conv, a, i, &o)
                });
                (i, d)
            })
            .collect();
        let r = each(decoded);
        held.clear();
        r
    };
    for i in 0..a.len() {
        let plan = match plan_row(conv, a, i, opts) {
            Ok(p) => p,
            Err(e) => {
                piece.push((i, Err(e)));
                continue;
            }
        };
        let need = decode_memory(conv, &plan).saturating_add(extra(&plan.info));
        if need > memory_budget() {
            piece.push((i, Err(too_large(need, memory_budget()))));
            continue;
        }
        match try_reserve(need) {
            Some(r) => held.push(r),
            None => {
                if piece.iter().any(|(_, p)| p.is_ok()) {
                    flush(&mut piece, &mut held)?;
                }
                match reserve(need) {
                    Ok(r) => held.push(r),
                    Err(e) => {
                        piece.push((i, Err(e)));
                        continue;
                    }
                }
            }
        }
        piece.push((i, Ok(plan)));
    }
    if !piece.is_empty() {
        flush(&mut piece, &mut held)?;
    }
    Ok(())
}

/// The output field (`name`) of an image column: the input's type and metadata, with the
/// shape of fixed-shape columns changed to the rectified size (`size` maps an input height and
/// width to the output's).
pub fn output_field(col: &ImageColumn, name: &str, size: impl Fn(usize, usize) -> [usize; 2]) -> Field {
    let mut meta = col.field.metadata().clone();
    let mut t = col.field.data_type().clone();
    if let Convention::FixedShape { height, width, channels, mark } = &col.convention {
        let [oh, ow] = size(*height, *width);
        let c = *channels;
        if let DataType::FixedSizeList(f, _) = &t {
            t = DataType::FixedSizeList(f.clone(), (oh * ow * c) as i32);
        }
        let shape = if c == 1 && *mark != FixedMark::Daft { vec![oh, ow, 1] } else { vec![oh, ow, c] };
        let ext_meta = match mark {
            FixedMark::Daft => {
                let mut v: serde_json::Value =
                    serde_json::from_str(meta.get(EXTENSION_METADATA).map(String::as_str).unwrap_or("{}"))
                        .unwrap_or_default();
                if let Some(f) = v.pointer_mut("/datatype/FixedShapeImage").and_then(|f| f.as_array_mut()) {
                    if f.len() >= 3 {
                        f[1] = oh.into();
                        f[2] = ow.into();
                    }
                }
                v.to_string()
            }
            FixedMark::ArrowTensor => {
                let mut v: serde_json::Value =
                    serde_json::from_str(meta.get(EXTENSION_METADATA).map(String::as_str).unwrap_or("{}"))
                        .unwrap_or_default();
                let keep_rank = v.get("shape").and_then(|s| s.as_array()).map_or(3, Vec::len);
                let s = if keep_rank == 2 { vec![oh, ow] } else { shape };
                v["shape"] = serde_json::json!(s);
                v.to_string()
            }
            FixedMark::Ray => {
                let old: Vec<usize> =
                    serde_json::from_str(meta.get(EXTENSION_METADATA).map(String::as_str).unwrap_or("[]"))
                        .unwrap_or_default();
                let s = if old.len() == 2 { vec![oh, ow] } else { shape };
                format!("[{}]", s.iter().map(usize::to_string).collect::<Vec<_>>().join(", "))
            }
        };
        if meta.contains_key(EXTENSION_NAME) {
            meta.insert(EXTENSION_METADATA.into(), ext_meta);
        }
    }
    Field::new(name, t, true).with_metadata(meta)
}

/// A rectified row, encoded for its convention.
enum Payload {
    Bytes(Vec<u8>),
    Pixels { data: Vec<u8>, h: usize, w: usize, c: usize },
}

/// One output row: the rectified image and what its input row said about itself.
pub struct OutRow<'a> {
    /// The rectified image.
    pub image: &'a Image,
    /// The decoded input row.
    pub input: &'a Decoded,
}

/// An output row encoded for its column ([`encode_rows`]), ready for [`build_column`]: the
/// image no longer needs to be held.
pub struct EncodedRow {
    payload: Payload,
    shape: RowShape,
    origin: Option<String>,
    mode: Option<i64>,
}

impl EncodedRow {
    /// Bytes the encoded row holds.
    pub fn len(&self) -> usize {
        match &self.payload {
            Payload::Bytes(b) => b.len(),
            Payload::Pixels { data, .. } => data.len(),
        }
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Encodes rectified rows for `col`'s convention, in parallel: PNG/JPEG bytes for encoded
/// columns, interleaved 8-bit pixels for the others. A row that cannot be encoded is its error.
pub fn encode_rows(
    col: &ImageColumn,
    rows: &[Option<OutRow<'_>>],
    encoding: Encoding,
) -> Vec<Option<Result<EncodedRow, String>>> {
    let encoded = col.convention.is_encoded();
    rows.par_iter()
        .map(|r| {
            r.as_ref().map(|r| {
                let payload = if encoded {
                    Payload::Bytes(r.image.encode(encoding).map_err(|e| e.to_string())?)
                } else {
                    let im = r.image;
                    let mut data = im.to_interleaved_u8();
                    if col.convention == Convention::Spark && im.channels >= 3 {
                        for px in data.chunks_exact_mut(im.channels) {
                            px.swap(0, 2); // RGB(A) -> BGR(A)
                        }
                    }
                    Payload::Pixels { data, h: im.height, w: im.width, c: im.channels }
                };
                Ok(EncodedRow {
                    payload,
                    shape: r.input.shape,
                    origin: r.input.origin.clone(),
                    mode: r.input.mode,
                })
            })
        })
        .collect()
}

/// Encodes the rectified rows (in parallel) and builds the output column of `field` (made by
/// [`output_field`]). A row that cannot be encoded becomes null, with its error in the second
/// value.
pub fn encode_column(
    col: &ImageColumn,
    field: &Field,
    rows: &[Option<OutRow<'_>>],
    encoding: Encoding,
) -> Result<(ArrayRef, Vec<Option<String>>), String> {
    let mut errors = vec![None; rows.len()];
    let encoded: Vec<Option<EncodedRow>> = encode_rows(col, rows, encoding)
        .into_iter()
        .zip(&mut errors)
        .map(|(r, e)| match r {
            Some(Ok(r)) => Some(r),
            Some(Err(m)) => {
                *e = Some(m);
                None
            }
            None => None,
        })
        .collect();
    Ok((build_column(col, field, &encoded)?, errors))
}

/// The output column of `field` (made by [`output_field`]) from encoded rows (None: a null row).
pub fn build_column(
    col: &ImageColumn,
    field: &Field,
    rows: &[Option<EncodedRow>],
) -> Result<ArrayRef, String> {
    let ok: Vec<Option<&Payload>> = rows.iter().map(|r| r.as_ref().map(|r| &r.payload)).collect();
    let valid: Vec<bool> = ok.iter().map(Option::is_some).collect();
    let bytes: Vec<Option<&[u8]>> = ok
        .iter()
        .map(|p| {
            p.map(|p| match p {
                Payload::Bytes(b) => b.as_slice(),
                Payload::Pixels { data, .. } => data.as_slice(),
            })
        })
        .collect();
    let dims = |f: &dyn Fn(usize, usize, usize) -> i64| -> Vec<Option<i64>> {
        ok.iter()
            .map(|p| match p {
                Some(Payload::Pixels { h, w, c, .. }) => Some(f(*h, *w, *c)),
                _ => None,
            })
            .collect()
    };
    let t = field.data_type();
    let array: ArrayRef = match &col.convention {
        Convention::Encoded => binary_array(t, &bytes)?,
        Convention::FixedShape { .. } => u8_list_array(t, &bytes)?,
        Convention::HfImage | Convention::DaftImage | Convention::Tensor | Convention::Spark => {
            let DataType::Struct(fields) = t else { return Err(format!("{t} is not a struct")) };
            let mut children = Vec::with_capacity(fields.len());
            let mut kept = Vec::with_capacity(fields.len());
            for f in fields.iter() {
                let ft = f.data_type();
                // Children of a non-nullable field get placeholder values in null rows.
                let fill = |v: Vec<Option<i64>>| -> Vec<Option<i64>> {
                    if f.is_nullable() {
                        v
                    } else {
                        v.into_iter().map(|x| Some(x.unwrap_or(0))).collect()
                    }
                };
                let child: ArrayRef = match (&col.convention, f.name().as_str()) {
                    (Convention::HfImage, "bytes") => binary_array(ft, &bytes)?,
                    (Convention::HfImage, "path") => string_array(ft, &vec![None; rows.len()])?,
                    (Convention::DaftImage, "data") | (Convention::Tensor, "data") => {
                        u8_list_array(ft, &bytes)?
                    }
                    (Convention::Spark, "data") => {
                        let b: Vec<Option<&[u8]>> = bytes.iter().map(|b| Some(b.unwrap_or(&[]))).collect();
                        binary_array(ft, &b)?
                    }
                    (Convention::DaftImage, "height") | (Convention::Spark, "height") => {
                        int_array(ft, &fill(dims(&|h, _, _| h as i64)))?
                    }
                    (Convention::DaftImage, "width") | (Convention::Spark, "width") => {
                        int_array(ft, &fill(dims(&|_, w, _| w as i64)))?
                    }
                    (Convention::DaftImage, "channel") | (Convention::Spark, "nChannels") => {
                        int_array(ft, &fill(dims(&|_, _, c| c as i64)))?
                    }
                    (Convention::DaftImage, "mode") | (Convention::Spark, "mode") => {
                        let modes: Vec<Option<i64>> =
                            rows.iter().map(|r| r.as_ref().and_then(|r| r.mode)).collect();
                        int_array(ft, &fill(modes))?
                    }
                    (Convention::Spark, "origin") => {
                        let o: Vec<Option<&str>> = rows
                            .iter()
                            .map(|r| {
                                let s = r.as_ref().and_then(|r| r.origin.as_deref());
                                if f.is_nullable() {
                                    s
                                } else {
                                    Some(s.unwrap_or(""))
                                }
                            })
                            .collect();
                        string_array(ft, &o)?
                    }
                    (Convention::Tensor, "shape") => {
                        let shapes: Vec<Option<Vec<i64>>> = rows
                            .iter()
                            .map(|r| match r {
                                Some(EncodedRow {
                                    payload: Payload::Pixels { h, w, c, .. }, shape, ..
                                }) => Some(match shape {
                                    RowShape::Hw => vec![*h as i64, *w as i64],
                                    RowShape::OneHw => vec![1, *h as i64, *w as i64],
                                    RowShape::Hwc => vec![*h as i64, *w as i64, *c as i64],
                                }),
                                _ => None,
                            })
                            .collect();
                        int_list_array(ft, &shapes)?
                    }
                    _ if f.is_nullable() => arrow_array::new_null_array(ft, rows.len()),
                    _ => return Err(format!("cannot fill the struct field `{}` of the output", f.name())),
                };
                children.push(child);
                kept.push(f.clone());
            }
            struct_array(Fields::from(kept), children, &valid)?
        }
    };
    Ok(array)
}

/// The field of `stn_theta`: `fixed_size_list<float32>[p]`.
pub fn theta_field(name: &str, p: usize) -> Field {
    Field::new(
        name,
        DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, true)), p as i32),
        true,
    )
}

/// The `stn_theta` column.
pub fn theta_column(p: usize, thetas: &[Option<&[f32]>]) -> Result<ArrayRef, String> {
    f32_fixed_list(Arc::new(Field::new("item", DataType::Float32, true)), p, thetas)
}
