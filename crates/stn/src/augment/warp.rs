//! What an augmentation did to one sample: its sampling map as a chain of stages, and the
//! point maps both ways.

use serde::{Deserialize, Serialize};
use stn_kernels::{Tps, TpsMap};

use crate::error::{Result, StnError};

/// A 3 x 3 homogeneous matrix on normalized (x, y, 1), row-major.
pub type Mat3 = [[f64; 3]; 3];

/// The identity matrix.
pub const IDENTITY: Mat3 = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];

/// One stage of a sampling map (normalized coordinates, output side to input side).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// A homogeneous matrix (affine when its last row is `[0, 0, 1]`).
    Matrix(Mat3),
    /// A thin-plate spline on a `rows x cols` control grid over [-1, 1]: `theta[k]` is where
    /// control point `k` ([`Tps::control_points`]) is read from.
    Tps {
        /// Rows of control points.
        rows: usize,
        /// Columns of control points.
        cols: usize,
        /// Where each control point lands on the input side, (x, y).
        theta: Vec<[f64; 2]>,
    },
}

/// The warp one sample went through: its sampling map, the stages applied in order to an
/// output coordinate to find the input coordinate it reads (empty: the identity). Matrix ops
/// give one matrix stage in all; a spline adds one stage.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Warp {
    /// The stages, output side first.
    pub stages: Vec<Stage>,
}

/// Tolerance of the numerical spline inverse, in normalized units.
pub const INVERSE_TOL: f64 = 1e-9;

impl Warp {
    /// The identity warp.
    pub fn identity() -> Self {
        Warp::default()
    }

    /// Whether the warp is the identity (no stage).
    pub fn is_identity(&self) -> bool {
        self.stages.is_empty()
    }

    /// The warp's one matrix (output to input), when it is a matrix warp (the identity
    /// included); None when a spline is part of it.
    pub fn matrix(&self) -> Option<Mat3> {
        match self.stages.as_slice() {
            [] => Some(IDENTITY),
            [Stage::Matrix(m)] => Some(*m),
            _ => None,
        }
    }

    /// Adds a stage on the input side (applied after the stages already there), merging
    /// matrices.
    /// Stages that are exactly the identity (identity ranges) are dropped, so such a warp is
    /// [`Warp::is_identity`].
    pub(crate) fn then(&mut self, stage: Stage) {
        if let (Some(Stage::Matrix(a)), Stage::Matrix(m)) = (self.stages.last_mut(), &stage) {
            *a = mul(m, a);
            if *a == IDENTITY {
                self.stages.pop();
            }
            return;
        }
        let identity = match &stage {
            Stage::Matrix(m) => *m == IDENTITY,
            Stage::Tps { rows, cols, theta } => {
                Tps::new(*rows, *cols).is_ok_and(|t| t.control_points() == *theta)
            }
        };
        if !identity {
            self.stages.push(stage);
        }
    }

    /// Where output point `q` (normalized) reads from on the input side.
    pub fn sample_point(&self, q: [f64; 2]) -> Result<[f64; 2]> {
        let mut p = q;
        for s in &self.stages {
            p = match s {
                Stage::Matrix(m) => apply_h(m, p).ok_or_else(|| horizon(q))?,
                Stage::Tps { rows, cols, theta } => Tps::new(*rows, *cols)?.solve(theta)?.eval(p),
            };
        }
        Ok(p)
    }

    /// Where input point `p` (normalized) lands on the output side: the sampling map's
    /// inverse, exact for matrices and solved by Newton's method for splines, its residual
    /// checked against [`INVERSE_TOL`]. `sample` names the sample in errors.
    pub fn map_point(&self, p: [f64; 2], sample: usize) -> Result<[f64; 2]> {
        let mut inv = self.inverse_map(sample)?;
        inv.map(p, sample)
    }

    /// The inverse map prepared once (splines solved, matrices inverted), for many points.
    pub(crate) fn inverse_map(&self, sample: usize) -> Result<InverseMap> {
        let mut stages = Vec::with_capacity(self.stages.len());
        for s in self.stages.iter().rev() {
            stages.push(match s {
                Stage::Matrix(m) => InvStage::Matrix(inverse3(m).ok_or_else(|| StnError::NoInverse {
                    sample,
                    message: format!("its matrix {m:?} is singular"),
                })?),
                Stage::Tps { rows, cols, theta } => InvStage::Tps(Tps::new(*rows, *cols)?.solve(theta)?),
            });
        }
        Ok(InverseMap { stages })
    }
}

/// A warp's inverse, ready to map points from the input side to the output side.
pub(crate) struct InverseMap {
    stages: Vec<InvStage>,
}

enum InvStage {
    Matrix(Mat3),
    Tps(TpsMap),
}

impl InverseMap {
    /// Maps one input-side point to the output side.
    pub fn map(&mut self, p: [f64; 2], sample: usize) -> Result<[f64; 2]> {
        let mut q = p;
        for s in &self.stages {
            q = match s {
                InvStage::Matrix(m) => apply_h(m, q).ok_or_else(|| StnError::NoInverse {
                    sample,
                    message: format!("point {p:?} maps to infinity (the perspective's horizon)"),
                })?,
                InvStage::Tps(map) => {
                    invert_tps(map, q).map_err(|message| StnError::NoInverse { sample, message })?
                }
            };
        }
        Ok(q)
    }
}

fn horizon(q: [f64; 2]) -> StnError {
    StnError::Augment { op: "perspective".into(), message: format!("output point {q:?} reads from infinity") }
}

/// Solves f(p) = q for a spline by damped Newton steps from the spline's affine part.
fn invert_tps(map: &TpsMap, q: [f64; 2]) -> std::result::Result<[f64; 2], String> {
    let mut p = q;
    let (f, mut j) = map.eval_jacobian(p);
    let mut r = [f[0] - q[0], f[1] - q[1]];
    let mut err = libm::hypot(r[0], r[1]);
    for _ in 0..100 {
        if err <= INVERSE_TOL * 0.01 {
            break;
        }
        let det = j[0][0] * j[1][1] - j[0][1] * j[1][0];
        if det.abs() < 1e-14 {
            break;
        }
        let dp = [(j[1][1] * r[0] - j[0][1] * r[1]) / det, (-j[1][0] * r[0] + j[0][0] * r[1]) / det];
        let mut step = 1.0;
        loop {
            let cand = [p[0] - step * dp[0], p[1] - step * dp[1]];
            let (f2, j2) = map.eval_jacobian(cand);
            let r2 = [f2[0] - q[0], f2[1] - q[1]];
            let e2 = libm::hypot(r2[0], r2[1]);
            if e2 < err || step < 1e-6 {
                p = cand;
                (j, r, err) = (j2, r2, e2);
                break;
            }
            step *= 0.5;
        }
    }
    let det = j[0][0] * j[1][1] - j[0][1] * j[1][0];
    if err.is_nan() || err > INVERSE_TOL || det.is_nan() || det <= 0.0 {
        return Err(format!(
            "the spline does not invert at {q:?} (residual {err:.3e}, Jacobian determinant {det:.3e}): it folds there"
        ));
    }
    Ok(p)
}

/// a * b.
pub(crate) fn mul(a: &Mat3, b: &Mat3) -> Mat3 {
    let mut c = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            c[i][j] = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    c
}

/// The inverse of a 3 x 3 matrix; None when singular (or not finite).
pub(crate) fn inverse3(m: &Mat3) -> Option<Mat3> {
    let c = |i: usize, j: usize| {
        let (r0, r1) = ((i + 1) % 3, (i + 2) % 3);
        let (c0, c1) = ((j + 1) % 3, (j + 2) % 3);
        m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0]
    };
    let det = m[0][0] * c(0, 0) + m[0][1] * c(0, 1) + m[0][2] * c(0, 2);
    let scale = m.iter().flatten().fold(0.0f64, |a, v| a.max(v.abs()));
    if !det.is_finite() || det.abs() <= 1e-12 * scale.powi(3) {
        return None;
    }
    Some(std::array::from_fn(|j| std::array::from_fn(|i| c(i, j) / det)))
}

/// m applied to (p, 1) with the perspective division; None at or beyond the horizon.
pub(crate) fn apply_h(m: &Mat3, p: [f64; 2]) -> Option<[f64; 2]> {
    let w = m[2][0] * p[0] + m[2][1] * p[1] + m[2][2];
    let x = m[0][0] * p[0] + m[0][1] * p[1] + m[0][2];
    let y = m[1][0] * p[0] + m[1][1] * p[1] + m[1][2];
    (w > 1e-12).then(|| [x / w, y / w])
}

/// Whether a matrix is affine (last row exactly `[0, 0, 1]`).
pub(crate) fn is_affine(m: &Mat3) -> bool {
    m[2] == [0.0, 0.0, 1.0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_inverse_and_merge() {
        let m = [[0.9, -0.2, 0.1], [0.3, 1.1, -0.05], [0.02, -0.01, 1.0]];
        let i = inverse3(&m).unwrap();
        let p = mul(&m, &i);
        for (r, row) in p.iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                assert!((v - IDENTITY[r][c]).abs() < 1e-12);
            }
        }
        assert!(inverse3(&[[1.0, 2.0, 0.0], [2.0, 4.0, 0.0], [0.0, 0.0, 1.0]]).is_none());
        let mut w = Warp::identity();
        w.then(Stage::Matrix(m));
        w.then(Stage::Matrix(i));
        assert_eq!(w.stages.len(), 1);
        let q = w.sample_point([0.3, -0.7]).unwrap();
        assert!((q[0] - 0.3).abs() < 1e-12 && (q[1] + 0.7).abs() < 1e-12);
    }

    #[test]
    fn spline_inverse_round_trips() {
        let tps = Tps::new(3, 3).unwrap();
        let theta: Vec<[f64; 2]> = tps
            .control_points()
            .iter()
            .enumerate()
            .map(|(i, c)| {
                [c[0] + 0.05 * ((i * 7 % 5) as f64 - 2.0) / 2.0, c[1] + 0.04 * ((i * 3 % 4) as f64 - 1.5)]
            })
            .collect();
        let w = Warp { stages: vec![Stage::Tps { rows: 3, cols: 3, theta }] };
        for p in [[0.0, 0.0], [0.5, -0.3], [-0.95, 0.9], [1.2, 1.1]] {
            let q = w.map_point(p, 0).unwrap();
            let back = w.sample_point(q).unwrap();
            assert!(
                (back[0] - p[0]).abs() < 1e-9 && (back[1] - p[1]).abs() < 1e-9,
                "{p:?} -> {q:?} -> {back:?}"
            );
        }
    }
}
