//! One batch of an image column through the rectification core: decode every row, run the
//! transformer on the good ones, encode the results back in the column's convention. The table
//! writer, the SQL functions and the cluster all rectify through [`rectify_column`].

use std::time::{Duration, Instant};

use arrow_array::{Array, ArrayRef, StringArray};
use arrow_schema::Field;
use stn_data::image_io::{Encoding, ImageInfo};
use stn_data::Image;
use stn_models::rectify::Rectifier;

use crate::codec::{
    build_column, decode_in_pieces, encode_rows, output_field, theta_column, DecodeOptions, Decoded,
    EncodedRow, OutRow,
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

/// Bytes that rectifying a decoded image of `info` holds beyond its decoding: the copy the
/// warp reads, the gray copy the localization net sees, the warped image twice (the tensor and
/// the image) and its 8-bit pixels for encoding.
pub fn rectify_memory(rectifier: &Rectifier, info: &ImageInfo) -> u64 {
    let (c, h, w) = (info.channels as u64, info.height as u64, info.width as u64);
    let [oh, ow] = rectifier.output_size(info.height, info.width);
    let out = c * oh as u64 * ow as u64;
    4 * c * h * w + 4 * h * w + 9 * out
}

/// Rectifies every row of `array` (the column `col` of a batch), in pieces within the
/// process's memory budget ([`crate::memory`]).
pub fn rectify_column(
    rectifier: &Rectifier,
    col: &ImageColumn,
    array: &dyn Array,
    decode: &DecodeOptions,
    encoding: Encoding,
) -> Result<RectifiedColumn, String> {
    let mut timings = Timings::default();
    let n = array.len();
    let mut errors: Vec<Option<String>> = vec![None; n];
    let mut encoded: Vec<Option<EncodedRow>> = (0..n).map(|_| None).collect();
    let mut theta_rows: Vec<Option<Vec<f32>>> = vec![None; n];
    let mut t = Instant::now();
    decode_in_pieces(
        &col.convention,
        array,
        decode,
        &|info| rectify_memory(rectifier, info),
        &mut |piece| {
            timings.decode += t.elapsed();
            let mut good: Vec<(usize, Decoded)> = Vec::with_capacity(piece.len());
            for (i, d) in piece {
                match d {
                    Ok(d) => good.push((i, d)),
                    Err(e) => errors[i] = Some(e),
                }
            }
            let images: Vec<&Image> = good.iter().map(|(_, d)| &d.image).collect();
            let t1 = Instant::now();
            let thetas = rectifier.thetas(&images)?;
            timings.localize += t1.elapsed();
            let t1 = Instant::now();
            let warped = rectifier.warp(&images, &thetas);
            timings.warp += t1.elapsed();
            let mut out: Vec<Option<Image>> = Vec::with_capacity(good.len());
            for (((i, _), w), th) in good.iter().zip(warped).zip(thetas) {
                match w {
                    Ok(img) => {
                        out.push(Some(img));
                        theta_rows[*i] = Some(th);
                    }
                    Err(e) => {
                        out.push(None);
                        errors[*i] = Some(e);
                    }
                }
            }
            let rows: Vec<Option<OutRow<'_>>> = out
                .iter()
                .zip(&good)
                .map(|(o, (_, input))| o.as_ref().map(|image| OutRow { image, input }))
                .collect();
            let t1 = Instant::now();
            for (r, (i, _)) in encode_rows(col, &rows, encoding).into_iter().zip(&good) {
                match r {
                    Some(Ok(r)) => encoded[*i] = Some(r),
                    Some(Err(e)) => {
                        errors[*i] = Some(e);
                        theta_rows[*i] = None;
                    }
                    None => {}
                }
            }
            timings.encode += t1.elapsed();
            t = Instant::now();
            Ok(())
        },
    )?;
    let field = image_field(rectifier, col, "stn_image");
    let image = build_column(col, &field, &encoded)?;
    let failures: Vec<(usize, String)> =
        errors.iter().enumerate().filter_map(|(i, e)| e.clone().map(|e| (i, e))).collect();
    let theta_refs: Vec<Option<&[f32]>> = theta_rows.iter().map(|t| t.as_deref()).collect();
    let theta = theta_column(rectifier.num_params(), &theta_refs)?;
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
    let n = array.len();
    let mut rows: Vec<Option<Vec<f32>>> = vec![None; n];
    let mut failures = Vec::new();
    let gray = |info: &ImageInfo| 4 * info.height as u64 * info.width as u64;
    decode_in_pieces(&col.convention, array, decode, &gray, &mut |piece| {
        let mut good: Vec<(usize, Decoded)> = Vec::with_capacity(piece.len());
        for (i, d) in piece {
            match d {
                Ok(d) => good.push((i, d)),
                Err(e) => failures.push((i, e)),
            }
        }
        let images: Vec<&Image> = good.iter().map(|(_, d)| &d.image).collect();
        for ((i, _), th) in good.iter().zip(rectifier.thetas(&images)?) {
            rows[*i] = Some(th);
        }
        Ok(())
    })?;
    let refs: Vec<Option<&[f32]>> = rows.iter().map(|t| t.as_deref()).collect();
    Ok((theta_column(rectifier.num_params(), &refs)?, failures))
}
