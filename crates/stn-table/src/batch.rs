//! One batch of an image column through the rectification core: decode every row, run the
//! transformer on the good ones, encode the results back in the column's convention. The table
//! writer, the SQL functions and the cluster all rectify through [`rectify_column`].

use std::time::{Duration, Instant};

use arrow_array::{Array, ArrayRef, StringArray};
use arrow_schema::Field;
use stn_data::image_io::Encoding;
use stn_data::Image;
use stn_models::rectify::Rectifier;

use crate::codec::{
    decode_column, encode_column, output_field, theta_column, DecodeOptions, Decoded, OutRow,
};
use crate::convention::ImageColumn;

/// Where a batch's time went.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    /// Decoding the input images.
    pub decode: Duration,
    /// The localization net (gray copies included).
    pub localize: Duration,
    /// The warp at full resolution.
    pub warp: Duration,
    /// Encoding the output images.
    pub encode: Duration,
}

impl Timings {
    /// Adds another batch's timings.
    pub fn add(&mut self, o: &Timings) {
        self.decode += o.decode;
        self.localize += o.localize;
        self.warp += o.warp;
        self.encode += o.encode;
    }
}

/// A rectified batch.
#[derive(Debug, Clone)]
pub struct RectifiedColumn {
    /// `stn_image`: the rectified images, in the input column's convention (null where a row failed).
    pub image: ArrayRef,
    /// Its field (see [`output_field`]).
    pub image_field: Field,
    /// `stn_theta`: `fixed_size_list<float32>[P]` (null where a row failed).
    pub theta: ArrayRef,
    /// `stn_error`: null where the row succeeded, else why it failed.
    pub error: ArrayRef,
    /// The rows that failed (index in the batch, reason), in order.
    pub failures: Vec<(usize, String)>,
    /// Where the time went.
    pub timings: Timings,
}

/// The output field `name` of `col` for `rectifier` (fixed-shape columns change shape).
pub fn image_field(rectifier: &Rectifier, col: &ImageColumn, name: &str) -> Field {
    output_field(col, name, |h, w| rectifier.output_size(h, w))
}

/// Rectifies every row of `array` (the column `col` of a batch).
pub fn rectify_column(
    rectifier: &Rectifier,
    col: &ImageColumn,
    array: &dyn Array,
    decode: &DecodeOptions,
    encoding: Encoding,
) -> Result<RectifiedColumn, String> {
    let mut timings = Timings::default();
    let t = Instant::now();
    let decoded = decode_column(&col.convention, array, decode);
    timings.decode = t.elapsed();
    let n = decoded.len();
    let mut errors: Vec<Option<String>> = decoded.iter().map(|d| d.as_ref().err().cloned()).collect();
    let good: Vec<(usize, &Decoded)> =
        decoded.iter().enumerate().filter_map(|(i, d)| d.as_ref().ok().map(|d| (i, d))).collect();
    let images: Vec<&Image> = good.iter().map(|(_, d)| &d.image).collect();
    let t = Instant::now();
    let thetas = rectifier.thetas(&images)?;
    timings.localize = t.elapsed();
    let t = Instant::now();
    let warped = rectifier.warp(&images, &thetas);
    timings.warp = t.elapsed();
    let mut out: Vec<Option<Image>> = (0..n).map(|_| None).collect();
    let mut theta_rows: Vec<Option<&[f32]>> = vec![None; n];
    for ((&(i, _), w), th) in good.iter().zip(warped).zip(&thetas) {
        match w {
            Ok(img) => {
                out[i] = Some(img);
                theta_rows[i] = Some(th.as_slice());
            }
            Err(e) => errors[i] = Some(e),
        }
    }
    let field = image_field(rectifier, col, "stn_image");
    let rows: Vec<Option<OutRow<'_>>> = out
        .iter()
        .zip(&decoded)
        .map(|(o, d)| match (o, d) {
            (Some(image), Ok(input)) => Some(OutRow { image, input }),
            _ => None,
        })
        .collect();
    let t = Instant::now();
    let (image, encode_errors) = encode_column(col, &field, &rows, encoding)?;
    timings.encode = t.elapsed();
    for (i, e) in encode_errors.into_iter().enumerate() {
        if let Some(e) = e {
            errors[i] = Some(e);
            theta_rows[i] = None;
        }
    }
    let failures: Vec<(usize, String)> =
        errors.iter().enumerate().filter_map(|(i, e)| e.clone().map(|e| (i, e))).collect();
    let theta = theta_column(rectifier.num_params(), &theta_rows)?;
    let error: ArrayRef = std::sync::Arc::new(StringArray::from_iter(errors.iter().map(|e| e.as_deref())));
    Ok(RectifiedColumn { image, image_field: field, theta, error, failures, timings })
}

/// The transformer's parameters for every row of `array` (no warp, no encoding): the
/// `stn_theta` column (null where a row failed) and the failures.
pub fn theta_column_of(
    rectifier: &Rectifier,
    col: &ImageColumn,
    array: &dyn Array,
    decode: &DecodeOptions,
) -> Result<(ArrayRef, Vec<(usize, String)>), String> {
    let decoded = decode_column(&col.convention, array, decode);
    let good: Vec<(usize, &Image)> =
        decoded.iter().enumerate().filter_map(|(i, d)| d.as_ref().ok().map(|d| (i, &d.image))).collect();
    let images: Vec<&Image> = good.iter().map(|(_, im)| *im).collect();
    let thetas = rectifier.thetas(&images)?;
    let mut rows: Vec<Option<&[f32]>> = vec![None; decoded.len()];
    for ((i, _), th) in good.iter().zip(&thetas) {
        rows[*i] = Some(th.as_slice());
    }
    let failures =
        decoded.iter().enumerate().filter_map(|(i, d)| d.as_ref().err().map(|e| (i, e.clone()))).collect();
    Ok((theta_column(rectifier.num_params(), &rows)?, failures))
}
