//! What a transformer did to one input, in quantities a person reads: its parameters (theta)
//! decomposed into rotation, scales, shear, translation and zoom, plus what only projective
//! maps (perspective) and thin-plate splines (bending) have.
//!
//! # Conventions
//!
//! Every family's parameters map an output pixel's normalized coordinates (x to the right,
//! y down, both in [-1, 1]) to the input position it is sampled from (PyTorch's convention). Of
//! that map, the **affine part** `p -> A p + t` is decomposed (for affine families the map
//! itself; for a projective map `H` its upper 2 x 3 block, `A = [[h11, h12], [h21, h22]]`,
//! `t = (h13, h23)`; for a thin-plate spline its affine part, [`stn_kernels::TpsMap::affine`]):
//!
//! ```text
//! A = R(angle) · [[scale_x, scale_x · shear], [0, scale_y]]      R(a) = [[cos a, -sin a], [sin a, cos a]]
//! ```
//!
//! a QR decomposition: `angle = atan2(a21, a11)`, `scale_x = hypot(a11, a21)` (> 0),
//! `scale_y = det(A) / scale_x`, `shear = (a11 a12 + a21 a22) / scale_x²`. It is unique
//! whenever `A`'s first column is not zero.
//!
//! - `angle_deg`: the rotation of the sampled region, in degrees, positive from x toward y
//!   (clockwise as an image is drawn, y down), in (-180, 180]. An input whose content was turned
//!   by `+a` degrees comes out upright when `angle_deg` is `+a`: it is the rotation the
//!   transformer undid.
//! - `scale_x`, `scale_y`: the sampled region's size along its own axes, relative to the
//!   output (below 1: the transformer zooms in). A **reflection** (`det A < 0`) shows as a
//!   negative `scale_y` and `reflection = true`.
//! - `shear`: the sampled region's x shift per unit of y, after rotation and scaling.
//! - `tx`, `ty`: `t`, where the output's centre is sampled (for a projective map and a spline
//!   the map's value at the centre), in the input's normalized coordinates.
//! - `zoom`: the area of the input region the whole output samples, relative to the output's
//!   area: `|det A|` for affine families; for projective maps and splines, the area inside the
//!   image of the output's border (64 points a side, the shoelace formula). Below 1 the
//!   transformer zooms in; the output shows `1 / zoom` times the detail.
//! - `perspective` (projective maps): `(h31, h32)`, 0 for an affine map.
//! - `bending_energy`, `max_displacement` (splines): [`stn_kernels::TpsMap::bending_energy`],
//!   0 for an affine map; the largest distance from a control point to where it lands
//!   (normalized units, 2 = the width of the image).
//!
//! A map whose affine part is (nearly) singular, `|det A| < 1e-9` or a zero first column, has
//! `singular = true`: its angle and shear are then not defined (NaN, `null` in JSON) when the
//! first column is zero, and its scales say how degenerate it is.

use serde::Serialize;
use stn_kernels::Tps;

use crate::error::{Result, StnError};
use crate::transform::Transform;

/// `|det A|` below which an affine part counts as singular (see the module docs).
pub const SINGULAR_DET: f64 = 1e-9;

/// Points per side of the output's border when the sampled area is measured as a polygon.
const BORDER_POINTS: usize = 64;

/// One input's transform decomposed (see the module docs for the conventions).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// The family: `translation`, `attention`, `similarity`, `affine`, `projective` or `tps`.
    pub family: &'static str,
    /// Rotation of the sampled region, degrees, in (-180, 180] (NaN where not defined).
    pub angle_deg: f64,
    /// Size of the sampled region along its first axis, relative to the output (> 0).
    pub scale_x: f64,
    /// Size along its second axis (negative for a reflection).
    pub scale_y: f64,
    /// x shift per unit of y after rotation and scaling (NaN where not defined).
    pub shear: f64,
    /// Where the output's centre is sampled, x (normalized input coordinates).
    pub tx: f64,
    /// Where the output's centre is sampled, y.
    pub ty: f64,
    /// Area of the sampled input region relative to the output's (below 1: zoomed in).
    pub zoom: f64,
    /// The affine part mirrors the image (`det A < 0`).
    pub reflection: bool,
    /// The affine part is (nearly) singular: the output samples a line or a point.
    pub singular: bool,
    /// Projective maps: the perspective terms `(h31, h32)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub perspective: Option<[f64; 2]>,
    /// Splines: the bending energy (0 for an affine map).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bending_energy: Option<f64>,
    /// Splines: the largest distance from a control point to where it lands.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_displacement: Option<f64>,
}

/// The names of [`Explanation`]'s numeric fields, in the order [`Explanation::values`] gives
/// them (a table's columns).
pub const FIELDS: [&str; 10] = [
    "angle_deg",
    "scale_x",
    "scale_y",
    "shear",
    "tx",
    "ty",
    "zoom",
    "perspective_x",
    "perspective_y",
    "bending_energy",
];

impl Explanation {
    /// The numeric fields in the order of [`FIELDS`] (NaN where the family has none), then
    /// `max_displacement`.
    pub fn values(&self) -> [f64; 11] {
        let [px, py] = self.perspective.unwrap_or([f64::NAN; 2]);
        [
            self.angle_deg,
            self.scale_x,
            self.scale_y,
            self.shear,
            self.tx,
            self.ty,
            self.zoom,
            px,
            py,
            self.bending_energy.unwrap_or(f64::NAN),
            self.max_displacement.unwrap_or(f64::NAN),
        ]
    }
}

/// The affine part `A` (row-major 2 x 2) and `t` decomposed, with `zoom` given.
fn decompose(family: &'static str, a: [[f64; 2]; 2], t: [f64; 2], zoom: f64) -> Explanation {
    let [[a11, a12], [a21, a22]] = a;
    let det = a11 * a22 - a12 * a21;
    let scale_x = a11.hypot(a21);
    let (angle_deg, scale_y, shear) = if scale_x > 0.0 {
        let mut angle = a21.atan2(a11).to_degrees();
        if angle <= -180.0 {
            angle += 360.0;
        }
        (angle, det / scale_x, (a11 * a12 + a21 * a22) / (scale_x * scale_x))
    } else {
        // The first column is zero: no rotation can be read off it.
        (f64::NAN, a12.hypot(a22), f64::NAN)
    };
    Explanation {
        family,
        angle_deg,
        scale_x,
        scale_y,
        shear,
        tx: t[0],
        ty: t[1],
        zoom,
        reflection: det < 0.0,
        singular: det.abs() < SINGULAR_DET || scale_x == 0.0,
        perspective: None,
        bending_energy: None,
        max_displacement: None,
    }
}

/// The output's border: points in order around the square [-1, 1]^2.
fn border() -> Vec<[f64; 2]> {
    let n = BORDER_POINTS;
    let at = |i: usize| -1.0 + 2.0 * i as f64 / n as f64;
    let mut pts = Vec::with_capacity(4 * n);
    pts.extend((0..n).map(|i| [at(i), -1.0]));
    pts.extend((0..n).map(|i| [1.0, at(i)]));
    pts.extend((0..n).map(|i| [-at(i), 1.0]));
    pts.extend((0..n).map(|i| [-1.0, -at(i)]));
    pts
}

/// The area inside the image of the output's border under `f`, relative to the output's (4).
fn sampled_area(f: impl Fn([f64; 2]) -> [f64; 2]) -> f64 {
    let pts: Vec<[f64; 2]> = border().into_iter().map(f).collect();
    let mut twice = 0.0;
    for (i, p) in pts.iter().enumerate() {
        let q = pts[(i + 1) % pts.len()];
        twice += p[0] * q[1] - q[0] * p[1];
    }
    (twice / 2.0).abs() / 4.0
}

/// A family's map from an output point to the input point it is sampled from (normalized
/// coordinates), in f64: affine (the restricted families as their matrices), projective, or a
/// solved thin-plate spline.
#[derive(Debug, Clone)]
pub enum PointMap {
    /// `[a11, a12, a13, a21, a22, a23]`.
    Affine([f64; 6]),
    /// `[h11, h12, h13, h21, h22, h23, h31, h32]` (`h33 = 1`).
    Projective([f64; 8]),
    /// A spline and where its control points land.
    Tps(stn_kernels::TpsMap, Tps, Vec<[f64; 2]>),
}

impl PointMap {
    /// The map of `params` under `transform`. Errors: a family without a 2-D parametric map
    /// (`Affine3d`, `Dense`), a parameter count that is not the family's, a non-finite value.
    pub fn new(transform: Transform, params: &[f64]) -> Result<PointMap> {
        let bad = |message: String| StnError::Config { field: "theta", message };
        if matches!(transform, Transform::Affine3d | Transform::Dense) {
            return Err(bad(format!(
                "{transform:?} transforms are not decomposed (2-D parametric families only)"
            )));
        }
        let want = transform.num_params(&[1, 1]);
        if params.len() != want {
            return Err(bad(format!("{transform:?} has {want} parameters, got {}", params.len())));
        }
        if let Some(i) = params.iter().position(|v| !v.is_finite()) {
            return Err(bad(format!("parameter {i} is {}", params[i])));
        }
        let p = params;
        Ok(match transform {
            Transform::Translation => PointMap::Affine([1.0, 0.0, p[0], 0.0, 1.0, p[1]]),
            Transform::Attention => PointMap::Affine([p[0], 0.0, p[1], 0.0, p[0], p[2]]),
            Transform::Similarity => {
                let (s, c) = libm::sincos(p[1]);
                PointMap::Affine([p[0] * c, -p[0] * s, p[2], p[0] * s, p[0] * c, p[3]])
            }
            Transform::Affine => PointMap::Affine([p[0], p[1], p[2], p[3], p[4], p[5]]),
            Transform::Projective => PointMap::Projective([p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]]),
            Transform::Tps { rows, cols } => {
                let tps = Tps::new(rows, cols)?;
                let points: Vec<[f64; 2]> = p.chunks_exact(2).map(|c| [c[0], c[1]]).collect();
                PointMap::Tps(tps.solve(&points)?, tps, points)
            }
            Transform::Affine3d | Transform::Dense => {
                return Err(bad(format!("{transform:?} transforms are not decomposed")));
            }
        })
    }

    /// Where the output point `q` is sampled.
    pub fn apply(&self, q: [f64; 2]) -> [f64; 2] {
        match self {
            PointMap::Affine(a) => [a[0] * q[0] + a[1] * q[1] + a[2], a[3] * q[0] + a[4] * q[1] + a[5]],
            PointMap::Projective(h) => {
                let w = h[6] * q[0] + h[7] * q[1] + 1.0;
                [(h[0] * q[0] + h[1] * q[1] + h[2]) / w, (h[3] * q[0] + h[4] * q[1] + h[5]) / w]
            }
            PointMap::Tps(map, ..) => map.eval(q),
        }
    }

    /// Where the output's border is sampled: 64 points a side, in order around it (the outline
    /// of the sampled region).
    pub fn outline(&self) -> Vec<[f64; 2]> {
        border().into_iter().map(|q| self.apply(q)).collect()
    }

    /// The inverse map, for the families that have one in closed form (affine and
    /// projective); None for a spline or a singular matrix.
    pub fn inverse(&self) -> Option<PointMap> {
        match self {
            PointMap::Affine(a) => {
                let det = a[0] * a[4] - a[1] * a[3];
                if det.abs() < SINGULAR_DET {
                    return None;
                }
                let (i11, i12, i21, i22) = (a[4] / det, -a[1] / det, -a[3] / det, a[0] / det);
                Some(PointMap::Affine([
                    i11,
                    i12,
                    -(i11 * a[2] + i12 * a[5]),
                    i21,
                    i22,
                    -(i21 * a[2] + i22 * a[5]),
                ]))
            }
            PointMap::Projective(h) => {
                let m = [[h[0], h[1], h[2]], [h[3], h[4], h[5]], [h[6], h[7], 1.0]];
                let cof = |r: usize, c: usize| {
                    let (r0, r1) = ((r + 1) % 3, (r + 2) % 3);
                    let (c0, c1) = ((c + 1) % 3, (c + 2) % 3);
                    m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0]
                };
                let det = m[0][0] * cof(0, 0) + m[0][1] * cof(0, 1) + m[0][2] * cof(0, 2);
                // The inverse is the adjugate (transposed cofactors) over det; scaled so h33 = 1.
                let inv = |r: usize, c: usize| cof(c, r) / det;
                let h33 = inv(2, 2);
                if det.abs() < SINGULAR_DET || h33.abs() < SINGULAR_DET {
                    return None;
                }
                let g = |r, c| inv(r, c) / h33;
                Some(PointMap::Projective([
                    g(0, 0),
                    g(0, 1),
                    g(0, 2),
                    g(1, 0),
                    g(1, 1),
                    g(1, 2),
                    g(2, 0),
                    g(2, 1),
                ]))
            }
            PointMap::Tps(..) => None,
        }
    }

    /// The map decomposed (see the module docs), naming the family `family`.
    pub fn explain(&self, family: &'static str) -> Explanation {
        match self {
            PointMap::Affine(a) => {
                let det = a[0] * a[4] - a[1] * a[3];
                decompose(family, [[a[0], a[1]], [a[3], a[4]]], [a[2], a[5]], det.abs())
            }
            PointMap::Projective(h) => {
                let mut e = decompose(
                    family,
                    [[h[0], h[1]], [h[3], h[4]]],
                    [h[2], h[5]],
                    sampled_area(|q| self.apply(q)),
                );
                e.perspective = Some([h[6], h[7]]);
                e
            }
            PointMap::Tps(map, tps, points) => {
                let (a, _) = map.affine();
                let mut e = decompose(family, a, map.eval([0.0, 0.0]), sampled_area(|q| map.eval(q)));
                e.bending_energy = Some(map.bending_energy());
                e.max_displacement = Some(
                    tps.control_points()
                        .iter()
                        .zip(points)
                        .map(|(c, q)| (q[0] - c[0]).hypot(q[1] - c[1]))
                        .fold(0.0, f64::max),
                );
                e
            }
        }
    }
}

/// The name [`Explanation::family`] gives `transform`.
pub fn family(transform: Transform) -> &'static str {
    match transform {
        Transform::Translation => "translation",
        Transform::Attention => "attention",
        Transform::Similarity => "similarity",
        Transform::Affine => "affine",
        Transform::Projective => "projective",
        Transform::Tps { .. } => "tps",
        Transform::Affine3d => "affine3d",
        Transform::Dense => "dense",
    }
}

/// Decomposes the parameters `params` of one input under `transform` (see the module docs).
/// Errors: a family without a decomposition (`Affine3d`, `Dense`), a parameter count that is
/// not the family's, a non-finite parameter.
pub fn explain(transform: Transform, params: &[f64]) -> Result<Explanation> {
    Ok(PointMap::new(transform, params)?.explain(family(transform)))
}

/// The share of an output's samples that fall outside the input (and so read its zero
/// padding, at least in part): of a `grid x grid` lattice of output pixel centres, those
/// sampled at |x| > 1 or |y| > 1.
pub fn outside_share(map: &PointMap, grid: usize) -> f64 {
    let g = grid.max(1);
    let at = |i: usize| -1.0 + (2 * i + 1) as f64 / g as f64;
    let mut out = 0usize;
    for y in 0..g {
        for x in 0..g {
            let p = map.apply([at(x), at(y)]);
            if !(p[0].abs() <= 1.0 && p[1].abs() <= 1.0) {
                out += 1;
            }
        }
    }
    out as f64 / (g * g) as f64
}
