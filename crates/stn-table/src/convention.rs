//! How a column stores images: the conventions of the tools users have, told from the schema
//! once (never per row).
//!
//! | convention | Arrow type | written by |
//! |---|---|---|
//! | [`Convention::HfImage`] | `struct<bytes: binary, path: string>` | Hugging Face `datasets` `Image()` |
//! | [`Convention::Encoded`] | `binary`, `large_binary`, `binary_view` of PNG/JPEG | pyarrow, pandas, polars, DuckDB `read_blob`, img2dataset, Spark `binaryFile`, Daft `encode_image`, Ray `read_binary_files` |
//! | [`Convention::DaftImage`] | `struct<data: list<uint8>, channel, height, width, mode>` | Daft `Image` |
//! | [`Convention::Tensor`] | `struct<data: list<uint8>, shape: list<int>>` | Ray's variable-shaped tensors, Daft `Tensor` |
//! | [`Convention::FixedShape`] | `fixed_size_list<uint8>[H*W*C]` or, for Ray, `list<uint8>` rows of one shape | Daft fixed-shape images, `arrow.fixed_shape_tensor`, Ray fixed tensors |
//! | [`Convention::Spark`] | `struct<origin, height, width, nChannels, mode, data>` (BGR) | Spark `format("image")` |

use std::collections::HashMap;

use arrow_schema::{DataType, Field, Schema};

/// Schema metadata key of Hugging Face `datasets`.
pub const HF_METADATA: &str = "huggingface";
/// Field metadata key naming an Arrow extension type.
pub const EXTENSION_NAME: &str = "ARROW:extension:name";
/// Field metadata key of an extension type's parameters.
pub const EXTENSION_METADATA: &str = "ARROW:extension:metadata";

/// Which tool marked a fixed-shape column, so the output is marked the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FixedMark {
    /// Daft's `FixedShapeImage` (`daft.super_extension`).
    Daft,
    /// The canonical `arrow.fixed_shape_tensor` (also Ray's `ARROW_NATIVE` format).
    ArrowTensor,
    /// Ray's `ray.data.arrow_tensor` / `arrow_tensor_v2` (rows are lists).
    Ray,
}

/// How a column stores its images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Convention {
    /// Hugging Face `Image()`: `struct<bytes, path>`; a null `bytes` reads `path` (relative to
    /// the table's folder).
    HfImage,
    /// Encoded PNG or JPEG bytes in a binary column.
    Encoded,
    /// Daft's `Image` struct (decoded, interleaved, any size per row).
    DaftImage,
    /// A variable-shaped tensor struct `data` + `shape` (Ray, Daft `Tensor`); the shape is
    /// (H, W), (H, W, C), or Ray's (1, H, W) for gray rows.
    Tensor,
    /// Every row an image of one shape (H, W, C), interleaved.
    FixedShape {
        /// Height.
        height: usize,
        /// Width.
        width: usize,
        /// Channels (1 to 4).
        channels: usize,
        /// Whose marking.
        mark: FixedMark,
    },
    /// Spark's image struct: BGR(A) bytes, an OpenCV mode.
    Spark,
}

impl Convention {
    /// A short name for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Convention::HfImage => "Hugging Face Image struct<bytes, path>",
            Convention::Encoded => "encoded PNG/JPEG bytes",
            Convention::DaftImage => "Daft Image struct",
            Convention::Tensor => "tensor struct<data, shape>",
            Convention::FixedShape { mark: FixedMark::Daft, .. } => "Daft fixed-shape image",
            Convention::FixedShape { mark: FixedMark::ArrowTensor, .. } => "arrow.fixed_shape_tensor",
            Convention::FixedShape { mark: FixedMark::Ray, .. } => "Ray fixed-shape tensor",
            Convention::Spark => "Spark image struct",
        }
    }

    /// Whether the column holds encoded files (PNG/JPEG), as opposed to decoded pixels.
    pub fn is_encoded(&self) -> bool {
        matches!(self, Convention::HfImage | Convention::Encoded)
    }
}

/// The image column of a schema.
#[derive(Debug, Clone)]
pub struct ImageColumn {
    /// Its index in the schema.
    pub index: usize,
    /// Its field (name, type, metadata).
    pub field: Field,
    /// How it stores images.
    pub convention: Convention,
}

fn is_binary(t: &DataType) -> bool {
    matches!(t, DataType::Binary | DataType::LargeBinary | DataType::BinaryView)
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn is_int(t: &DataType) -> bool {
    t.is_integer()
}

fn is_u8_list(t: &DataType) -> bool {
    match t {
        DataType::List(f) | DataType::LargeList(f) | DataType::ListView(f) | DataType::LargeListView(f) => {
            f.data_type() == &DataType::UInt8
        }
        DataType::FixedSizeList(f, _) => f.data_type() == &DataType::UInt8,
        _ => false,
    }
}

fn is_int_list(t: &DataType) -> bool {
    match t {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => is_int(f.data_type()),
        _ => false,
    }
}

/// A struct field a convention needs: its name and a test of its type.
type FieldTest<'a> = (&'a str, fn(&DataType) -> bool);

fn has_fields(t: &DataType, want: &[FieldTest<'_>]) -> bool {
    let DataType::Struct(fields) = t else { return false };
    want.iter().all(|(name, ok)| fields.iter().any(|f| f.name() == name && ok(f.data_type())))
}

/// (H, W, C) from a shape given as H, W[, C] (C from 1 to 4).
fn hwc(shape: &[usize]) -> Option<(usize, usize, usize)> {
    match shape {
        [h, w] => Some((*h, *w, 1)),
        [h, w, c] if (1..=4).contains(c) => Some((*h, *w, *c)),
        _ => None,
    }
}

fn daft_channels(mode: &str) -> Option<usize> {
    match mode {
        "L" => Some(1),
        "LA" => Some(2),
        "RGB" => Some(3),
        "RGBA" => Some(4),
        _ => None,
    }
}

/// The field names the Hugging Face `huggingface` metadata marks as `Image()`.
pub fn hf_image_columns(metadata: &HashMap<String, String>) -> Vec<String> {
    let Some(json) = metadata.get(HF_METADATA) else { return Vec::new() };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else { return Vec::new() };
    let Some(features) = v.pointer("/info/features").and_then(|f| f.as_object()) else { return Vec::new() };
    features
        .iter()
        .filter(|(_, f)| f.get("_type").and_then(|t| t.as_str()) == Some("Image"))
        .map(|(k, _)| k.clone())
        .collect()
}

/// The convention of one field, from its type and metadata alone (`Err` names why a field that
/// looks like an image column cannot be read; `Ok(None)`: not an image column).
pub fn convention_of(field: &Field) -> Result<Option<Convention>, String> {
    let t = field.data_type();
    let meta = field.metadata();
    let ext = meta.get(EXTENSION_NAME).map(String::as_str);
    let ext_meta = meta.get(EXTENSION_METADATA).map(String::as_str).unwrap_or("");
    let bad = |m: String| Err(format!("column `{}` ({}): {m}", field.name(), t));
    match ext {
        Some("daft.super_extension") => {
            let v: serde_json::Value = serde_json::from_str(ext_meta).unwrap_or_default();
            let dt = v.get("datatype").cloned().unwrap_or_default();
            if let Some(fixed) = dt.get("FixedShapeImage").and_then(|f| f.as_array()) {
                let mode = fixed.first().and_then(|m| m.as_str()).unwrap_or("");
                let (h, w) = (fixed.get(1).and_then(|x| x.as_u64()), fixed.get(2).and_then(|x| x.as_u64()));
                return match (daft_channels(mode), h, w, is_u8_list(t)) {
                    (Some(c), Some(h), Some(w), true) => Ok(Some(Convention::FixedShape {
                        height: h as usize,
                        width: w as usize,
                        channels: c,
                        mark: FixedMark::Daft,
                    })),
                    _ => bad(format!(
                        "Daft fixed-shape image of mode `{mode}` is not 8-bit L, LA, RGB or RGBA"
                    )),
                };
            }
            if dt.get("Image").is_some() {
                return if has_fields(
                    t,
                    &[("data", is_u8_list), ("height", is_int), ("width", is_int), ("channel", is_int)],
                ) {
                    Ok(Some(Convention::DaftImage))
                } else {
                    bad("a Daft image whose pixels are not 8-bit (only L, LA, RGB and RGBA are read)".into())
                };
            }
            if dt.get("Tensor").is_some() {
                return if has_fields(t, &[("data", is_u8_list), ("shape", is_int_list)]) {
                    Ok(Some(Convention::Tensor))
                } else {
                    bad("a Daft tensor that is not uint8".into())
                };
            }
            Ok(None)
        }
        Some("arrow.fixed_shape_tensor") => {
            let v: serde_json::Value = serde_json::from_str(ext_meta).unwrap_or_default();
            let shape: Vec<usize> = v
                .get("shape")
                .and_then(|s| s.as_array())
                .map(|a| a.iter().filter_map(|x| x.as_u64().map(|x| x as usize)).collect())
                .unwrap_or_default();
            let identity = v
                .get("permutation")
                .and_then(|p| p.as_array())
                .is_none_or(|p| p.iter().enumerate().all(|(i, x)| x.as_u64() == Some(i as u64)));
            if !identity {
                return bad("a permuted fixed_shape_tensor is not read; store (H, W, C) row-major".into());
            }
            match (hwc(&shape), is_u8_list(t)) {
                (Some((h, w, c)), true) => Ok(Some(Convention::FixedShape {
                    height: h,
                    width: w,
                    channels: c,
                    mark: FixedMark::ArrowTensor,
                })),
                _ => bad(format!("fixed_shape_tensor of shape {shape:?} is not a uint8 (H, W[, C]) image")),
            }
        }
        Some("ray.data.arrow_tensor") | Some("ray.data.arrow_tensor_v2") => {
            let shape: Vec<usize> = serde_json::from_str(ext_meta).unwrap_or_default();
            match (hwc(&shape), is_u8_list(t)) {
                (Some((h, w, c)), true) => Ok(Some(Convention::FixedShape {
                    height: h,
                    width: w,
                    channels: c,
                    mark: FixedMark::Ray,
                })),
                _ => bad(format!("Ray tensor of shape {shape:?} is not a uint8 (H, W[, C]) image")),
            }
        }
        Some("ray.data.arrow_variable_shaped_tensor") => {
            if has_fields(t, &[("data", is_u8_list), ("shape", is_int_list)]) {
                Ok(Some(Convention::Tensor))
            } else {
                bad("a Ray variable-shaped tensor that is not uint8".into())
            }
        }
        _ => {
            if is_binary(t) {
                Ok(Some(Convention::Encoded))
            } else if has_fields(t, &[("bytes", is_binary), ("path", is_string)]) {
                Ok(Some(Convention::HfImage))
            } else if has_fields(
                t,
                &[
                    ("origin", is_string),
                    ("height", is_int),
                    ("width", is_int),
                    ("nChannels", is_int),
                    ("mode", is_int),
                    ("data", is_binary),
                ],
            ) {
                Ok(Some(Convention::Spark))
            } else if has_fields(
                t,
                &[("data", is_u8_list), ("height", is_int), ("width", is_int), ("channel", is_int)],
            ) {
                Ok(Some(Convention::DaftImage))
            } else if has_fields(t, &[("data", is_u8_list), ("shape", is_int_list)]) {
                Ok(Some(Convention::Tensor))
            } else {
                Ok(None)
            }
        }
    }
}

/// Rank of a convention when several columns could hold images: marked ones first.
fn rank(field: &Field, c: &Convention, hf: &[String]) -> u8 {
    if hf.iter().any(|n| n == field.name()) {
        0
    } else if field.metadata().contains_key(EXTENSION_NAME) {
        1
    } else if matches!(c, Convention::Spark | Convention::HfImage | Convention::DaftImage) {
        2
    } else {
        3
    }
}

/// Finds the image column of `schema`: `column` if given (it must exist and hold images), else
/// the one column that holds images, preferring one marked as an image (Hugging Face metadata,
/// an extension type) over plain binary columns. Errors name the columns there are.
pub fn detect(schema: &Schema, column: Option<&str>) -> Result<ImageColumn, String> {
    let names = || {
        schema
            .fields()
            .iter()
            .map(|f| format!("{} ({})", f.name(), f.data_type()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(name) = column {
        let (index, field) = schema
            .column_with_name(name)
            .ok_or_else(|| format!("no column `{name}`; the columns are: {}", names()))?;
        return match convention_of(field)? {
            Some(convention) => Ok(ImageColumn { index, field: field.clone(), convention }),
            None => Err(format!(
                "column `{name}` has type {}, which holds no images (binary PNG/JPEG bytes, a Hugging Face \
                 struct<bytes, path>, a Daft, Ray or Spark image, or a fixed-shape uint8 tensor)",
                field.data_type()
            )),
        };
    }
    let hf = hf_image_columns(schema.metadata());
    let mut found: Vec<(u8, usize, Convention)> = Vec::new();
    let mut problems = Vec::new();
    for (i, f) in schema.fields().iter().enumerate() {
        match convention_of(f) {
            Ok(Some(c)) => found.push((rank(f, &c, &hf), i, c)),
            Ok(None) => {}
            Err(e) => problems.push(e),
        }
    }
    found.sort_by_key(|(r, i, _)| (*r, *i));
    match found.as_slice() {
        [] => Err(match problems.first() {
            Some(p) => p.clone(),
            None => format!("no image column (the columns are: {}); name one with --column", names()),
        }),
        [(r0, i, c), rest @ ..] => {
            if let Some((_, j, _)) = rest.iter().find(|(r, _, _)| r == r0) {
                return Err(format!(
                    "several columns could hold the images (`{}` and `{}`); choose one with --column",
                    schema.field(*i).name(),
                    schema.field(*j).name()
                ));
            }
            Ok(ImageColumn { index: *i, field: schema.field(*i).clone(), convention: c.clone() })
        }
    }
}
