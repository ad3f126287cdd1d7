//! Images out of a column's rows, and rectified images back into a column of the same
//! convention.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef};
use arrow_schema::{DataType, Field, Fields};
use rayon::prelude::*;
use stn_data::image_io::Encoding;
use stn_data::Image;

use crate::arrays::*;
use crate::convention::{Convention, FixedMark, ImageColumn, EXTENSION_METADATA, EXTENSION_NAME};

/// Largest image a row may hold (pixels) unless told otherwise: 64 megapixels. A header that
/// claims more is the row's error, before anything is allocated.
pub const DEFAULT_MAX_PIXELS: u64 = 1 << 26;

/// How rows are read.
#[derive(Debug, Clone)]
pub struct DecodeOptions {
    /// Largest image (pixels) a row may hold.
    pub max_pixels: u64,
    /// The folder relative `path`s of Hugging Face rows are read from (the table's folder).
    pub base_dir: Option<PathBuf>,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions { max_pixels: DEFAULT_MAX_PIXELS, base_dir: None }
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

fn read_path(path: &str, opts: &DecodeOptions) -> Result<Image, String> {
    let p = Path::new(path);
    let full = match (&opts.base_dir, p.is_absolute()) {
        (Some(base), false) => base.join(p),
        _ => p.to_path_buf(),
    };
    let bytes = std::fs::read(&full)
        .map_err(|e| format!("cannot read image path `{path}` ({}): {e}", full.display()))?;
    decode_bytes(&bytes, opts).map_err(|e| format!("image path `{path}`: {e}"))
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
                Some(p) => read_path(p, opts).map(Decoded::plain),
                None => Err("no image: both `bytes` and `path` are null".into()),
            }
        }
        Convention::DaftImage => {
            let (h, w) = (dim(child(a, "height")?, i, "height")?, dim(child(a, "width")?, i, "width")?);
            let c = dim(child(a, "channel")?, i, "channel")?;
            check_pixels(h, w, opts)?;
            let data = u8_list_at(child(a, "data")?.as_ref(), i).ok_or("the pixel data is null")?;
            let mode = a.as_struct().column_by_name("mode").and_then(|m| int_at(m.as_ref(), i));
            let image = Image::from_interleaved_u8(&data, h, w, c).map_err(|e| e.to_string())?;
            Ok(Decoded { image, shape: RowShape::Hwc, origin: None, mode })
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
            let (h, w, c, s) = match shape.as_slice() {
                [h, w] => (pos(*h)?, pos(*w)?, 1, RowShape::Hw),
                [h, w, c] if (1..=4).contains(c) => (pos(*h)?, pos(*w)?, *c as usize, RowShape::Hwc),
                [1, h, w] => (pos(*h)?, pos(*w)?, 1, RowShape::OneHw),
                _ => {
                    return Err(format!(
                        "tensor of shape {shape:?} is not an image (H, W), (H, W, C<=4) or (1, H, W)"
                    ))
                }
            };
            check_pixels(h, w, opts)?;
            let data = u8_list_at(child(a, "data")?.as_ref(), i).ok_or("the tensor data is null")?;
            let image = Image::from_interleaved_u8(&data, h, w, c).map_err(|e| e.to_string())?;
            Ok(Decoded { image, shape: s, origin: None, mode: None })
        }
        Convention::FixedShape { height, width, channels, .. } => {
            let data = u8_list_at(a, i).ok_or("null image")?;
            Image::from_interleaved_u8(&data, *height, *width, *channels)
                .map(Decoded::plain)
                .map_err(|e| e.to_string())
        }
        Convention::Spark => {
            let s = a.as_struct();
            let field = |n: &str| s.column_by_name(n).map(|c| int_at(c.as_ref(), i)).unwrap_or(None);
            let (h, w, c) = (field("height"), field("width"), field("nChannels"));
            let (h, w, c) = match (h, w, c) {
                (Some(h), Some(w), Some(c)) if h > 0 && w > 0 && (1..=4).contains(&c) => {
                    (h as usize, w as usize, c as usize)
                }
                _ => {
                    return Err(format!(
                        "Spark image of height {h:?}, width {w:?}, nChannels {c:?} is invalid"
                    ))
                }
            };
            check_pixels(h, w, opts)?;
            let mut data = bytes_at(child(a, "data")?.as_ref(), i).ok_or("the pixel data is null")?.to_vec();
            if c >= 3 {
                for px in data.chunks_exact_mut(c) {
                    px.swap(0, 2); // BGR(A) -> RGB(A)
                }
            }
            let image = Image::from_interleaved_u8(&data, h, w, c).map_err(|e| e.to_string())?;
            let origin = s.column_by_name("origin").and_then(|o| str_at(o.as_ref(), i)).map(str::to_string);
            Ok(Decoded { image, shape: RowShape::Hwc, origin, mode: field("mode") })
        }
    }
}

/// Decodes every row of an image column, in parallel.
pub fn decode_column(conv: &Convention, a: &dyn Array, opts: &DecodeOptions) -> Vec<Result<Decoded, String>> {
    (0..a.len()).into_par_iter().map(|i| decode_row(conv, a, i, opts)).collect()
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

/// Encodes the rectified rows (in parallel) and builds the output column of `field` (made by
/// [`output_field`]). A row that cannot be encoded becomes null, with its error in the second
/// value.
pub fn encode_column(
    col: &ImageColumn,
    field: &Field,
    rows: &[Option<OutRow<'_>>],
    encoding: Encoding,
) -> Result<(ArrayRef, Vec<Option<String>>), String> {
    let encoded = col.convention.is_encoded();
    let payloads: Vec<Option<Result<Payload, String>>> = rows
        .par_iter()
        .map(|r| {
            r.as_ref().map(|r| {
                if encoded {
                    r.image.encode(encoding).map(Payload::Bytes).map_err(|e| e.to_string())
                } else {
                    let im = r.image;
                    let mut data = im.to_interleaved_u8();
                    if col.convention == Convention::Spark && im.channels >= 3 {
                        for px in data.chunks_exact_mut(im.channels) {
                            px.swap(0, 2); // RGB(A) -> BGR(A)
                        }
                    }
                    Ok(Payload::Pixels { data, h: im.height, w: im.width, c: im.channels })
                }
            })
        })
        .collect();
    let errors: Vec<Option<String>> =
        payloads.iter().map(|p| p.as_ref().and_then(|r| r.as_ref().err().cloned())).collect();
    let ok: Vec<Option<&Payload>> =
        payloads.iter().map(|p| p.as_ref().and_then(|r| r.as_ref().ok())).collect();
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
                        let modes: Vec<Option<i64>> = rows
                            .iter()
                            .zip(&valid)
                            .map(|(r, &v)| if v { r.as_ref().and_then(|r| r.input.mode) } else { None })
                            .collect();
                        int_array(ft, &fill(modes))?
                    }
                    (Convention::Spark, "origin") => {
                        let o: Vec<Option<&str>> = rows
                            .iter()
                            .zip(&valid)
                            .map(|(r, &v)| {
                                let s =
                                    if v { r.as_ref().and_then(|r| r.input.origin.as_deref()) } else { None };
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
                            .zip(&ok)
                            .map(|(r, p)| match (r, p) {
                                (Some(r), Some(Payload::Pixels { h, w, c, .. })) => {
                                    Some(match r.input.shape {
                                        RowShape::Hw => vec![*h as i64, *w as i64],
                                        RowShape::OneHw => vec![1, *h as i64, *w as i64],
                                        RowShape::Hwc => vec![*h as i64, *w as i64, *c as i64],
                                    })
                                }
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
    Ok((array, errors))
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
