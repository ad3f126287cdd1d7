//! Data augmentation: random warps of a batch, per sample, seeded, on the transformer's own
//! grids and sampler (so every backend that runs the transformer runs it, and the output is
//! differentiable with respect to the image).
//!
//! - **Ops** ([`Op`]): affine (rotation, scale with optional aspect, shear x/y, shift),
//!   rotation, perspective (corner jitter), thin-plate spline / elastic (control-point jitter),
//!   resized crop, horizontal and vertical flip; each with ranges and a probability `p`.
//! - **The convention**, shared by every op: coordinates normalized to [-1, 1] over the image
//!   (PyTorch's, with the options' `align_corners`), origin at the centre; rotation, scale and
//!   shear act in pixel units about the centre; angles in degrees, positive counter-clockwise
//!   as the image is viewed; shifts in fractions of the width and height. Keypoints and boxes
//!   are in pixels, (x, y) = (column, row), pixel centres at integers.
//! - **Once**: a sequence of ops composes its matrices and samples the image once; with a
//!   spline in the sequence it samples once through the combined map (fused when the spline
//!   is the last op, else through one grid).
//! - **What it did**: every call returns a [`Warp`] per sample (its matrix, or its stages
//!   with the spline's parameters), which [`warp_mask`], [`map_keypoints`], [`map_boxes`] and
//!   [`inverse`] apply exactly; points go through splines by Newton's method, their residual
//!   checked ([`warp::INVERSE_TOL`]), and a fold or a singular matrix is an error, never the
//!   input returned unchanged.
//! - **Randomness** from a [`Key`] (seed, epoch, index) per sample alone: results do not
//!   depend on the batch size, the thread count or the number of loader workers; the same keys
//!   give bitwise the same batch.
//!
//! ```
//! use burn::tensor::{Device, Distribution, Tensor};
//! use stn::augment::{self, Augment, Key};
//!
//! # fn main() -> stn::Result<()> {
//! let device = Device::flex();
//! let aug = Augment::parse("affine:rot=30,scale=0.8-1.2,shift=0.1;tps:0.05")?;
//! let images = Tensor::<4>::random([4, 3, 32, 32], Distribution::Default, &device);
//! let masks = Tensor::<4>::zeros([4, 1, 32, 32], &device);
//! // Samples 100..104 of the data set in epoch 3 of a run seeded 7.
//! let out = aug.forward(images, &Key::batch(7, 3, 100..104))?;
//! let masks = augment::warp_mask(masks, &out.warps, aug.options(), 255.0)?;
//! let points = augment::map_keypoints(&out.warps, &vec![vec![[16.0, 16.0]]; 4], [32, 32], [32, 32], false)?;
//! assert_eq!(out.image.dims(), [4, 3, 32, 32]);
//! assert_eq!(masks.dims(), [4, 1, 32, 32]);
//! assert_eq!(points.len(), 4);
//! # Ok(())
//! # }
//! ```

use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;
use stn_kernels::{base_coords, KernelError, SampleOptions, Tps};

use crate::error::{Result, StnError};
use crate::ops;

pub mod op;
pub mod rng;
pub mod spec;
pub mod warp;

pub use op::{Op, Range};
pub use rng::Key;
pub use warp::{Mat3, Stage, Warp};

use warp::{apply_h, inverse3, is_affine};

/// How an augmentation samples: interpolation, padding, corner alignment, and whether the
/// whole batch shares one draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AugmentOptions {
    /// Interpolation of images (masks always use nearest).
    pub mode: stn_kernels::Interpolation,
    /// What is read outside the input.
    pub padding: stn_kernels::Padding,
    /// PyTorch's `align_corners`: whether -1 and 1 are the centres of the corner pixels (true)
    /// or their outer edges (false, the default).
    pub align_corners: bool,
    /// Draw one set of parameters for the whole batch (from the first sample's key).
    pub same_on_batch: bool,
}

impl AugmentOptions {
    /// The sampler's options.
    pub fn sample_options(&self) -> SampleOptions {
        SampleOptions::new(self.mode, self.padding, self.align_corners)
    }
}

/// A sequence of ops with its options (build with [`Augment::new`] or [`Augment::parse`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Augment {
    ops: Vec<Op>,
    options: AugmentOptions,
}

/// An augmented batch and what was done to each sample.
#[derive(Debug, Clone)]
pub struct Augmented {
    /// The warped images, (N, C, H, W) like the input.
    pub image: Tensor<4>,
    /// Each sample's warp.
    pub warps: Vec<Warp>,
}

impl Augment {
    /// A sequence of ops, applied in order; every op is validated.
    pub fn new(ops: Vec<Op>, options: AugmentOptions) -> Result<Self> {
        for op in &ops {
            op.validate()?;
        }
        Ok(Augment { ops, options })
    }

    /// The ops, in order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// The options.
    pub fn options(&self) -> &AugmentOptions {
        &self.options
    }

    /// Whether any op is a spline.
    pub fn has_spline(&self) -> bool {
        self.ops.iter().any(|o| !o.is_matrix())
    }

    /// Draws the warp of each key for images of `size` (H, W): sample i's from `keys[i]`
    /// alone (or every sample's from `keys[0]` with `same_on_batch`).
    pub fn draw(&self, keys: &[Key], size: [usize; 2]) -> Vec<Warp> {
        let one = |key: Key| {
            let mut w = Warp::identity();
            // The sampling map applies the last op's inverse first.
            for (j, op) in self.ops.iter().enumerate().rev() {
                if let Some(stage) = op.draw(&mut rng::Stream::new(key, j), size, self.options.align_corners)
                {
                    w.then(stage);
                }
            }
            w
        };
        if self.options.same_on_batch {
            keys.first().map(|&k| vec![one(k); keys.len()]).unwrap_or_default()
        } else {
            keys.iter().map(|&k| one(k)).collect()
        }
    }

    /// Augments a batch (N, C, H, W): draws each sample's warp from its key and samples the
    /// image once. Differentiable with respect to `image`.
    pub fn forward(&self, image: Tensor<4>, keys: &[Key]) -> Result<Augmented> {
        let [n, _, h, w] = image.dims();
        if keys.len() != n {
            return Err(
                KernelError::Batch { arg: "keys", other: "input", expected: n, got: keys.len() }.into()
            );
        }
        let warps = self.draw(keys, [h, w]);
        let image = warp_image(image, &warps, self.options.sample_options(), [h, w])?;
        Ok(Augmented { image, warps })
    }
}

fn check_batch(n: usize, warps: &[Warp]) -> Result<()> {
    if warps.len() != n {
        return Err(KernelError::Batch { arg: "warps", other: "input", expected: n, got: warps.len() }.into());
    }
    Ok(())
}

fn host<const R: usize>(v: Vec<f64>, shape: [usize; R], like: &Tensor<4>) -> Tensor<R> {
    Tensor::from_data(TensorData::new(v, shape), (&like.device(), like.dtype()))
}

/// How one sample is sampled. Chosen per sample (never per batch), so a sample's result does
/// not depend on the other samples of its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// The input itself.
    Identity,
    /// The fused affine sampler.
    Affine,
    /// The fused projective sampler.
    Projective,
    /// The fused spline sampler: `[Tps]` or `[Tps, affine]`.
    Spline(Tps),
    /// One sampling grid.
    Grid,
}

fn route(w: &Warp, same_size: bool) -> Route {
    match w.stages.as_slice() {
        [] if same_size => Route::Identity,
        [] => Route::Affine,
        [Stage::Matrix(m)] if is_affine(m) => Route::Affine,
        [Stage::Matrix(m)] if m[2][2] != 0.0 && m[2][2].is_finite() => Route::Projective,
        [Stage::Tps { rows, cols, .. }] | [Stage::Tps { rows, cols, .. }, Stage::Matrix(_)]
            if w.stages.get(1).is_none_or(|s| matches!(s, Stage::Matrix(m) if is_affine(m))) =>
        {
            Tps::new(*rows, *cols).map_or(Route::Grid, Route::Spline)
        }
        _ => Route::Grid,
    }
}

/// Samples a batch (N, C, H, W) through one warp per sample to `out_size` (H_out, W_out),
/// once: matrices through the fused affine or projective sampler, a spline (with an affine
/// map after it) through the fused spline sampler, anything else through one grid; identity
/// warps at the input's size give the input itself (bit for bit). The route is chosen per
/// sample, so results do not depend on the batch.
pub fn warp_image(
    image: Tensor<4>,
    warps: &[Warp],
    options: SampleOptions,
    out_size: [usize; 2],
) -> Result<Tensor<4>> {
    let [n, _, h, w] = image.dims();
    check_batch(n, warps)?;
    let same_size = out_size == [h, w];
    let routes: Vec<Route> = warps.iter().map(|wp| route(wp, same_size)).collect();
    let mut groups: Vec<(Route, Vec<usize>)> = Vec::new();
    for (i, r) in routes.iter().enumerate() {
        match groups.iter_mut().find(|(g, _)| g == r) {
            Some((_, idx)) => idx.push(i),
            None => groups.push((*r, vec![i])),
        }
    }
    if groups.len() == 1 {
        return warp_group(image, warps, groups[0].0, options, out_size);
    }
    let device = image.device();
    let int = |v: Vec<i64>| {
        Tensor::<1, burn::tensor::Int>::from_data(TensorData::new(v.clone(), [v.len()]), &device)
    };
    let mut parts = Vec::with_capacity(groups.len());
    let mut order = Vec::with_capacity(n);
    for (r, idx) in &groups {
        let sub = image.clone().select(0, int(idx.iter().map(|&i| i as i64).collect()));
        let ws: Vec<Warp> = idx.iter().map(|&i| warps[i].clone()).collect();
        parts.push(warp_group(sub, &ws, *r, options, out_size)?);
        order.extend_from_slice(idx);
    }
    // Back to the batch's order: row j of the concatenation is sample order[j].
    let mut back = vec![0i64; n];
    for (j, &i) in order.iter().enumerate() {
        back[i] = j as i64;
    }
    Ok(Tensor::cat(parts, 0).select(0, int(back)))
}

/// Samples samples that all take `route`.
fn warp_group(
    image: Tensor<4>,
    warps: &[Warp],
    route: Route,
    options: SampleOptions,
    out_size: [usize; 2],
) -> Result<Tensor<4>> {
    let n = warps.len();
    match route {
        Route::Identity => Ok(image),
        Route::Affine => {
            let theta: Vec<f64> = warps
                .iter()
                .map(|w| w.matrix().expect("a matrix warp"))
                .flat_map(|m| m[0].into_iter().chain(m[1]))
                .collect();
            let theta = host(theta, [n, 2, 3], &image);
            ops::affine_sample(image, theta, &out_size, options)
        }
        Route::Projective => {
            let params: Vec<f64> = warps
                .iter()
                .map(|w| w.matrix().expect("a matrix warp"))
                .flat_map(|m| m.into_iter().flatten().take(8).map(move |v| v / m[2][2]))
                .collect();
            let params = host(params, [n, 8], &image);
            ops::projective_sample(image, params, out_size, options)
        }
        Route::Spline(tps) => {
            let k = tps.num_points();
            let mut theta = Vec::with_capacity(n * k * 2);
            for w in warps {
                let (points, outer) = match w.stages.as_slice() {
                    [Stage::Tps { theta, .. }] => (theta, None),
                    [Stage::Tps { theta, .. }, Stage::Matrix(m)] => (theta, Some(m)),
                    _ => unreachable!("routed as a spline"),
                };
                for p in points {
                    theta.extend_from_slice(&outer.map_or(*p, |m| apply_h(m, *p).expect("affine")));
                }
            }
            let theta = host(theta, [n, k, 2], &image);
            ops::tps_sample(image, theta, tps, out_size, options)
        }
        Route::Grid => {
            let grid = sampling_grid(warps, out_size, options.align_corners)?;
            let grid = host(grid, [n, out_size[0], out_size[1], 2], &image);
            ops::grid_sample(image, grid, options)
        }
    }
}

/// Far outside any image: where a point beyond a perspective's horizon reads from.
const FAR: f64 = 1e6;

/// The sampling grid of each warp, (N, H_out, W_out, 2) flattened.
fn sampling_grid(warps: &[Warp], [ho, wo]: [usize; 2], align: bool) -> Result<Vec<f64>> {
    let xs = base_coords::<f64>(wo, align);
    let ys = base_coords::<f64>(ho, align);
    let per: Vec<Result<Vec<f64>>> = warps
        .par_iter()
        .map(|w| {
            let maps: Vec<Option<stn_kernels::TpsMap>> = w
                .stages
                .iter()
                .map(|s| match s {
                    Stage::Tps { rows, cols, theta } => Tps::new(*rows, *cols)?.solve(theta).map(Some),
                    Stage::Matrix(_) => Ok(None),
                })
                .collect::<std::result::Result<_, _>>()?;
            let mut g = Vec::with_capacity(ho * wo * 2);
            for &y in &ys {
                for &x in &xs {
                    let mut p = [x, y];
                    for (s, map) in w.stages.iter().zip(&maps) {
                        p = match (s, map) {
                            (Stage::Matrix(m), _) => apply_h(m, p).unwrap_or([FAR, FAR]),
                            (_, Some(map)) => map.eval(p),
                            _ => unreachable!("a map per spline"),
                        };
                    }
                    g.extend_from_slice(&p);
                }
            }
            Ok(g)
        })
        .collect();
    let mut out = Vec::with_capacity(warps.len() * ho * wo * 2);
    for g in per {
        out.extend(g?);
    }
    Ok(out)
}

/// Applies the warps to masks (N, C, H, W) of labels: nearest sampling, so every value is one
/// of the mask's own values; with zero padding, pixels from outside the input get `fill`
/// (other paddings repeat the mask's border or reflection, as for the image).
pub fn warp_mask(mask: Tensor<4>, warps: &[Warp], options: &AugmentOptions, fill: f64) -> Result<Tensor<4>> {
    let [n, c, h, w] = mask.dims();
    check_batch(n, warps)?;
    if !fill.is_finite() {
        return Err(StnError::Augment {
            op: "mask".into(),
            message: format!("the fill value {fill} is not finite"),
        });
    }
    let opts =
        SampleOptions::new(stn_kernels::Interpolation::Nearest, options.padding, options.align_corners);
    if options.padding != stn_kernels::Padding::Zeros {
        return warp_image(mask, warps, opts, [h, w]);
    }
    // A ones channel says which pixels came from inside (exactly 0 or 1 under nearest).
    let ones = Tensor::<4>::ones([n, 1, h, w], (&mask.device(), mask.dtype()));
    let both = warp_image(Tensor::cat(vec![mask, ones], 1), warps, opts, [h, w])?;
    let labels = both.clone().narrow(1, 0, c);
    let inside = both.narrow(1, c, 1);
    let outside = inside.clone().neg().add_scalar(1.0);
    Ok(labels * inside + outside.mul_scalar(fill))
}

fn to_norm(v: f64, n: usize, align: bool) -> f64 {
    if align {
        2.0 * v / (n.max(2) - 1) as f64 - 1.0
    } else {
        (2.0 * v + 1.0) / n as f64 - 1.0
    }
}

fn to_pixel(v: f64, n: usize, align: bool) -> f64 {
    if align {
        (v + 1.0) * (n.max(2) - 1) as f64 / 2.0
    } else {
        ((v + 1.0) * n as f64 - 1.0) / 2.0
    }
}

/// Moves keypoints with their images: `points[i]` are sample i's points in pixels of the
/// input (`in_size` H, W), returned in pixels of the output (`out_size`). Exact for matrix
/// warps; through splines by Newton's method, an error naming the sample where the residual
/// exceeds [`warp::INVERSE_TOL`] (a fold).
pub fn map_keypoints(
    warps: &[Warp],
    points: &[Vec<[f64; 2]>],
    in_size: [usize; 2],
    out_size: [usize; 2],
    align_corners: bool,
) -> Result<Vec<Vec<[f64; 2]>>> {
    check_batch(points.len(), warps)?;
    warps
        .iter()
        .zip(points)
        .enumerate()
        .map(|(i, (w, pts))| {
            let mut inv = w.inverse_map(i)?;
            pts.iter()
                .map(|p| {
                    if !(p[0].is_finite() && p[1].is_finite()) {
                        return Err(StnError::Augment {
                            op: "keypoints".into(),
                            message: format!("sample {i}: point {p:?} is not finite"),
                        });
                    }
                    let q =
                        [to_norm(p[0], in_size[1], align_corners), to_norm(p[1], in_size[0], align_corners)];
                    let r = inv.map(q, i)?;
                    Ok([
                        to_pixel(r[0], out_size[1], align_corners),
                        to_pixel(r[1], out_size[0], align_corners),
                    ])
                })
                .collect()
        })
        .collect()
}

/// Moves boxes `[x0, y0, x1, y1]` (pixels, as keypoints) with their images: the axis-aligned
/// box around the moved outline (corners for matrix warps, which keep lines straight; 32
/// points per edge through splines). Not clipped to the image.
pub fn map_boxes(
    warps: &[Warp],
    boxes: &[Vec<[f64; 4]>],
    in_size: [usize; 2],
    out_size: [usize; 2],
    align_corners: bool,
) -> Result<Vec<Vec<[f64; 4]>>> {
    check_batch(boxes.len(), warps)?;
    let outline = |w: &Warp, b: &[f64; 4]| -> Vec<[f64; 2]> {
        let steps = if w.matrix().is_some() { 1 } else { 32 };
        let mut pts = Vec::with_capacity(4 * steps);
        for s in 0..steps {
            let t = s as f64 / steps as f64;
            let (x, y) = (b[0] + t * (b[2] - b[0]), b[1] + t * (b[3] - b[1]));
            pts.extend_from_slice(&[
                [x, b[1]],
                [b[2], y],
                [b[2] - (x - b[0]), b[3]],
                [b[0], b[3] - (y - b[1])],
            ]);
        }
        pts
    };
    warps
        .iter()
        .zip(boxes)
        .enumerate()
        .map(|(i, (w, bs))| {
            bs.iter()
                .map(|b| {
                    let pts = map_keypoints(
                        std::slice::from_ref(w),
                        &[outline(w, b)],
                        in_size,
                        out_size,
                        align_corners,
                    )
                    .map_err(|e| match e {
                        StnError::NoInverse { message, .. } => StnError::NoInverse { sample: i, message },
                        e => e,
                    })?;
                    let mut r = [f64::INFINITY, f64::INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY];
                    for p in &pts[0] {
                        r = [r[0].min(p[0]), r[1].min(p[1]), r[2].max(p[0]), r[3].max(p[1])];
                    }
                    Ok(r)
                })
                .collect()
        })
        .collect()
}

/// Undoes the warps: samples an augmented batch back onto the input frame (`in_size` H, W),
/// through each warp's inverse (exact for matrices; splines solved by Newton's method per
/// pixel, residual checked). A singular matrix or a folding spline is an error naming the
/// sample. What the warp moved out of the image does not come back (padding fills it).
pub fn inverse(
    image: Tensor<4>,
    warps: &[Warp],
    options: SampleOptions,
    in_size: [usize; 2],
) -> Result<Tensor<4>> {
    let [n, _, _, _] = image.dims();
    check_batch(n, warps)?;
    if let Some(ms) = warps.iter().map(Warp::matrix).collect::<Option<Vec<_>>>() {
        let inv: Vec<Warp> = ms
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mut inv = inverse3(m).ok_or_else(|| StnError::NoInverse {
                    sample: i,
                    message: format!("its matrix {m:?} is singular"),
                })?;
                if is_affine(m) {
                    inv[2] = [0.0, 0.0, 1.0];
                }
                Ok(if warps[i].is_identity() {
                    Warp::identity()
                } else {
                    Warp { stages: vec![Stage::Matrix(inv)] }
                })
            })
            .collect::<Result<_>>()?;
        return warp_image(image, &inv, options, in_size);
    }
    let [h, w] = in_size;
    let xs = base_coords::<f64>(w, options.align_corners);
    let ys = base_coords::<f64>(h, options.align_corners);
    let per: Vec<Result<Vec<f64>>> = warps
        .par_iter()
        .enumerate()
        .map(|(i, wp)| {
            let mut inv = wp.inverse_map(i)?;
            let mut g = Vec::with_capacity(h * w * 2);
            for &y in &ys {
                for &x in &xs {
                    g.extend_from_slice(&inv.map([x, y], i)?);
                }
            }
            Ok(g)
        })
        .collect();
    let mut grid = Vec::with_capacity(n * h * w * 2);
    for g in per {
        grid.extend(g?);
    }
    let grid = host(grid, [n, h, w, 2], &image);
    ops::grid_sample(image, grid, options)
}
