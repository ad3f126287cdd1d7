//! theta columns explained ([`stn::explain`]) as Arrow: the struct SQL's `stn_explain` returns
//! and the columns `stn explain` and `stn rectify --json` summarize.

use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Float64Builder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type};
use arrow_array::{Array, ArrayRef, StructArray};
use arrow_buffer::NullBuffer;
use arrow_schema::{DataType, Field, Fields};
use stn::explain::{explain, Explanation};
use stn::Transform;

/// The fields of an explanation struct, in order: `family`, the numbers of
/// [`stn::explain::Explanation`] (NaN written as null), `reflection`, `singular`.
pub fn explain_fields() -> Fields {
    let f = |name: &str| Field::new(name, DataType::Float64, true);
    Fields::from(vec![
        Field::new("family", DataType::Utf8, true),
        f("angle_deg"),
        f("scale_x"),
        f("scale_y"),
        f("shear"),
        f("tx"),
        f("ty"),
        f("zoom"),
        Field::new("reflection", DataType::Boolean, true),
        Field::new("singular", DataType::Boolean, true),
        f("perspective_x"),
        f("perspective_y"),
        f("bending_energy"),
        f("max_displacement"),
    ])
}

/// The struct column of [`explain_fields`] named `name`.
pub fn explain_field(name: &str) -> Field {
    Field::new(name, DataType::Struct(explain_fields()), true)
}

/// Whether a column of `t` holds thetas (a fixed-size or variable list per row) rather than
/// images: what `stn_explain` and `Rectifier.explain` decompose without decoding anything.
pub fn is_theta_type(t: &DataType) -> bool {
    matches!(t, DataType::FixedSizeList(..) | DataType::List(_) | DataType::LargeList(_))
}

/// The values of one theta row (a fixed-size or variable list of float32 or float64), None
/// for a null row.
pub fn theta_row(theta: &dyn Array, i: usize) -> Result<Option<Vec<f64>>, String> {
    if theta.is_null(i) {
        return Ok(None);
    }
    let values = match theta.data_type() {
        DataType::FixedSizeList(..) => theta.as_fixed_size_list().value(i),
        DataType::List(_) => theta.as_list::<i32>().value(i),
        DataType::LargeList(_) => theta.as_list::<i64>().value(i),
        t => return Err(format!("theta is {t}, not a list of numbers")),
    };
    match values.data_type() {
        DataType::Float32 => Ok(Some(
            values.as_primitive::<Float32Type>().iter().map(|v| v.map_or(f64::NAN, f64::from)).collect(),
        )),
        DataType::Float64 => {
            Ok(Some(values.as_primitive::<Float64Type>().iter().map(|v| v.unwrap_or(f64::NAN)).collect()))
        }
        t => Err(format!("theta holds {t}, not float32 or float64")),
    }
}

/// Explains every row of a theta column under `transform`: one struct per row
/// ([`explain_fields`]), null where theta is null or not finite (a row the transformer could
/// not place). A row with another number of parameters than the family's is an error (the
/// column is not this model's).
pub fn explain_column(transform: Transform, theta: &dyn Array) -> Result<ArrayRef, String> {
    let rows = (0..theta.len())
        .map(|i| {
            let Some(v) = theta_row(theta, i)? else { return Ok(None) };
            if v.iter().any(|x| !x.is_finite()) {
                return Ok(None);
            }
            explain(transform, &v).map(Some).map_err(|e| format!("row {i}: {e}"))
        })
        .collect::<Result<Vec<Option<Explanation>>, String>>()?;
    explanations_array(&rows)
}

/// Explanations as a struct array of [`explain_fields`] (None: a null row).
pub fn explanations_array(rows: &[Option<Explanation>]) -> Result<ArrayRef, String> {
    let n = rows.len();
    let mut family = StringBuilder::new();
    let mut numbers: Vec<Float64Builder> = (0..11).map(|_| Float64Builder::with_capacity(n)).collect();
    let mut reflection = BooleanBuilder::with_capacity(n);
    let mut singular = BooleanBuilder::with_capacity(n);
    for r in rows {
        match r {
            Some(e) => {
                family.append_value(e.family);
                for (b, v) in numbers.iter_mut().zip(e.values()) {
                    b.append_option(v.is_finite().then_some(v));
                }
                reflection.append_value(e.reflection);
                singular.append_value(e.singular);
            }
            None => {
                family.append_null();
                numbers.iter_mut().for_each(|b| b.append_null());
                reflection.append_null();
                singular.append_null();
            }
        }
    }
    // `values()` order: angle, scale_x, scale_y, shear, tx, ty, zoom, perspective x/y,
    // bending energy, max displacement; the struct puts the flags after zoom.
    let mut num: Vec<ArrayRef> = numbers.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef).collect();
    let tail = num.split_off(7);
    let mut columns: Vec<ArrayRef> = vec![Arc::new(family.finish())];
    columns.extend(num);
    columns.push(Arc::new(reflection.finish()));
    columns.push(Arc::new(singular.finish()));
    columns.extend(tail);
    let nulls = NullBuffer::from(rows.iter().map(Option::is_some).collect::<Vec<bool>>());
    let s = StructArray::try_new(explain_fields(), columns, Some(nulls)).map_err(|e| e.to_string())?;
    Ok(Arc::new(s))
}

/// Running statistics of one quantity: count, mean and standard deviation (Welford), min,
/// max. Memory does not grow with the rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Stat {
    /// Rows with a value.
    pub count: u64,
    /// Their mean.
    pub mean: f64,
    /// Their standard deviation (population).
    pub std: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
    #[serde(skip)]
    m2: f64,
}

impl Stat {
    /// Adds a value (NaN is not counted).
    pub fn add(&mut self, v: f64) {
        if !v.is_finite() {
            return;
        }
        if self.count == 0 {
            (self.min, self.max) = (v, v);
        }
        self.count += 1;
        let d = v - self.mean;
        self.mean += d / self.count as f64;
        self.m2 += d * (v - self.mean);
        self.std = (self.m2 / self.count as f64).sqrt();
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }
}

/// One row of a table, named: the output file it is in and its position there.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RowRef {
    /// The file (as given).
    pub file: String,
    /// The row, 0-based, in the file's order.
    pub row: u64,
    /// The value that made it the extreme one.
    pub value: f64,
}

/// What a transformer did to a whole table: each decomposed quantity's statistics, how many
/// rows were mirrored or singular, and the rows with the most extreme warps. Built row by row
/// ([`Summary::add`]) or from rectified files ([`Summary::add_file`]).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Summary {
    /// The transform family.
    pub family: String,
    /// Rows explained.
    pub rows: u64,
    /// Rows without a theta (failed rows).
    pub failed: u64,
    /// Rotation, degrees.
    pub angle_deg: Stat,
    /// Scale along the first axis.
    pub scale_x: Stat,
    /// Scale along the second axis.
    pub scale_y: Stat,
    /// Shear.
    pub shear: Stat,
    /// Translation x.
    pub tx: Stat,
    /// Translation y.
    pub ty: Stat,
    /// Sampled area relative to the output's.
    pub zoom: Stat,
    /// Splines: bending energy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bending_energy: Option<Stat>,
    /// Rows whose warp mirrors the image.
    pub reflections: u64,
    /// Rows whose warp is (nearly) singular.
    pub singular: u64,
    /// The row rotated most (largest |angle|).
    pub most_rotated: Option<RowRef>,
    /// The row zoomed in most (smallest zoom).
    pub most_zoomed_in: Option<RowRef>,
    /// The row zoomed out most (largest zoom).
    pub most_zoomed_out: Option<RowRef>,
}

impl Summary {
    /// An empty summary.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a row of `file` (its position `row`): its explanation, or None for a failed row.
    pub fn add(&mut self, file: &str, row: u64, e: Option<&Explanation>) {
        let Some(e) = e else {
            self.failed += 1;
            return;
        };
        if self.family.is_empty() {
            self.family = e.family.to_string();
        }
        self.rows += 1;
        self.angle_deg.add(e.angle_deg);
        self.scale_x.add(e.scale_x);
        self.scale_y.add(e.scale_y);
        self.shear.add(e.shear);
        self.tx.add(e.tx);
        self.ty.add(e.ty);
        self.zoom.add(e.zoom);
        if let Some(b) = e.bending_energy {
            self.bending_energy.get_or_insert_with(Stat::default).add(b);
        }
        self.reflections += u64::from(e.reflection);
        self.singular += u64::from(e.singular);
        let keep = |slot: &mut Option<RowRef>, value: f64, better: fn(f64, f64) -> bool| {
            if value.is_finite() && slot.as_ref().is_none_or(|r| better(value, r.value)) {
                *slot = Some(RowRef { file: file.to_string(), row, value });
            }
        };
        keep(&mut self.most_rotated, e.angle_deg.abs(), |a, b| a > b);
        keep(&mut self.most_zoomed_in, e.zoom, |a, b| a < b);
        keep(&mut self.most_zoomed_out, e.zoom, |a, b| a > b);
    }

    /// Adds every row of the rectified table file `path` (its `stn_theta` column, read alone)
    /// decomposed under `transform`.
    pub fn add_file(
        &mut self,
        path: &std::path::Path,
        keys: Option<&crate::crypto::Keys>,
        transform: Transform,
    ) -> crate::error::Result<()> {
        use crate::error::TableError;
        let column = |message: String| TableError::Column { path: path.to_path_buf(), message };
        let (batches, _) = crate::digest::read_rectified(path, keys, |_| Ok(Vec::new()))?;
        let name = path.display().to_string();
        let mut row = 0u64;
        for batch in batches {
            let batch = batch?;
            let theta = batch.column(0);
            for i in 0..theta.len() {
                let values = theta_row(theta.as_ref(), i).map_err(column)?;
                let e = match values.filter(|v| v.iter().all(|x| x.is_finite())) {
                    None => None,
                    Some(v) => Some(explain(transform, &v).map_err(|e| column(format!("row {row}: {e}")))?),
                };
                self.add(&name, row, e.as_ref());
                row += 1;
            }
        }
        Ok(())
    }
}

/// One image of an explained set ([`explain_dataset`]).
#[derive(Debug, Clone)]
pub struct ExplainedRow {
    /// Its position in the set.
    pub index: usize,
    /// Its class.
    pub label: u8,
    /// The transformer's parameters for it.
    pub theta: Vec<f64>,
    /// Theta decomposed.
    pub explanation: Explanation,
    /// The share of its output's samples that fall outside the input, reading the zero
    /// padding ([`stn::explain::outside_share`] on a [`OUTSIDE_GRID`]-square lattice).
    pub outside: f64,
    /// For a known distortion, how the recovered warp compares with its true inverse.
    pub applied: Option<Applied>,
}

/// The recovered warp against the distortion it should undo ([`explain_dataset`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Applied {
    /// The rotation the distortion applied to the content: the angle of its true inverse
    /// (the map from the original's frame to the distorted image's, which the transformer
    /// should find); NaN where that inverse has no closed form (elastic).
    pub angle_deg: f64,
    /// The zoom of the true inverse.
    pub zoom: f64,
    /// How far the recovered warp is from the true inverse: the mean distance, in normalized
    /// units of the original (2 = its width), between each point of a 9 x 9 lattice over the
    /// output and where the distortion's own map sends the point the transformer sampled for
    /// it (0: the output is the undistorted original, pixel for pixel).
    pub error: f64,
}

/// Side of the lattice [`ExplainedRow::outside`] is measured on.
pub const OUTSIDE_GRID: usize = 28;

/// The map of a distortion's sampler ([`stn_data::distort::Distortion::sampler`]).
pub fn sampler_map(s: &stn_data::distort::SamplerMap) -> Result<stn::explain::PointMap, String> {
    use stn_data::distort::SamplerMap;
    let (t, p): (Transform, Vec<f64>) = match s {
        SamplerMap::Affine(a) => (Transform::Affine, a.to_vec()),
        SamplerMap::Projective(h) => (Transform::Projective, h.to_vec()),
        SamplerMap::Tps4x4(v) => (Transform::tps16(), v.clone()),
    };
    stn::explain::PointMap::new(t, &p).map_err(|e| e.to_string())
}

/// Explains every image of `data` under `rectifier` (theta by batches of 64, each decomposed,
/// its outside share measured). With `samplers` (one per image: how each was distorted, from
/// original to distorted), each row also compares the recovered warp with the distortion's
/// true inverse ([`Applied`]). A row whose theta cannot be decomposed (not finite) is left
/// out.
pub fn explain_dataset(
    rectifier: &stn_models::rectify::Rectifier,
    data: &stn_data::Dataset,
    samplers: Option<&[stn_data::distort::SamplerMap]>,
) -> Result<Vec<ExplainedRow>, String> {
    use stn::explain::{outside_share, PointMap};
    if samplers.is_some_and(|s| s.len() != data.len()) {
        return Err("one distortion map per image is needed".into());
    }
    let transform = rectifier.transform();
    let mut rows = Vec::with_capacity(data.len());
    const BATCH: usize = 64;
    for start in (0..data.len()).step_by(BATCH) {
        let end = (start + BATCH).min(data.len());
        let images: Vec<stn_data::Image> = (start..end)
            .map(|i| stn_data::Image {
                data: data.image(i).to_vec(),
                channels: 1,
                height: data.height,
                width: data.width,
            })
            .collect();
        let refs: Vec<&stn_data::Image> = images.iter().collect();
        for (k, theta) in rectifier.thetas(&refs)?.into_iter().enumerate() {
            let i = start + k;
            let theta: Vec<f64> = theta.iter().map(|&v| f64::from(v)).collect();
            let Ok(map) = PointMap::new(transform, &theta) else { continue };
            let explanation = map.explain(stn::explain::family(transform));
            let applied = match samplers {
                None => None,
                Some(s) => {
                    let d = sampler_map(&s[i])?;
                    let n = 9;
                    let at = |j: usize| -1.0 + 2.0 * j as f64 / (n - 1) as f64;
                    let mut sum = 0.0;
                    for y in 0..n {
                        for x in 0..n {
                            let q = [at(x), at(y)];
                            let back = d.apply(map.apply(q));
                            sum += (back[0] - q[0]).hypot(back[1] - q[1]);
                        }
                    }
                    let inverse = d.inverse().map(|inv| inv.explain("true inverse"));
                    Some(Applied {
                        angle_deg: inverse.as_ref().map_or(f64::NAN, |e| e.angle_deg),
                        zoom: inverse.as_ref().map_or(f64::NAN, |e| e.zoom),
                        error: sum / (n * n) as f64,
                    })
                }
            };
            rows.push(ExplainedRow {
                index: i,
                label: data.labels[i],
                theta,
                outside: outside_share(&map, OUTSIDE_GRID),
                explanation,
                applied,
            });
        }
    }
    Ok(rows)
}

/// The Pearson correlation of two equally long series (NaN pairs left out); NaN when fewer
/// than two pairs or no spread.
pub fn correlation(xs: &[f64], ys: &[f64]) -> f64 {
    let pairs: Vec<(f64, f64)> =
        xs.iter().zip(ys).filter(|(x, y)| x.is_finite() && y.is_finite()).map(|(x, y)| (*x, *y)).collect();
    let n = pairs.len() as f64;
    if pairs.len() < 2 {
        return f64::NAN;
    }
    let (mx, my) = (pairs.iter().map(|p| p.0).sum::<f64>() / n, pairs.iter().map(|p| p.1).sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in &pairs {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
        syy += (y - my) * (y - my);
    }
    if sxx == 0.0 || syy == 0.0 {
        return f64::NAN;
    }
    sxy / (sxx * syy).sqrt()
}
