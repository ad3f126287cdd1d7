//! The ops: their parameters, their checks, and the stage each draws for one sample.

use serde::{Deserialize, Serialize};
use stn_kernels::{homography, Tps};

use super::rng::Stream;
use super::warp::{inverse3, Mat3, Stage};
use crate::error::{Result, StnError};

/// A closed range `[lo, hi]` a parameter is drawn from, uniformly.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Range {
    /// Lower end.
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
}

impl Range {
    /// `[lo, hi]`.
    pub const fn new(lo: f64, hi: f64) -> Self {
        Range { lo, hi }
    }

    /// The single value `v`.
    pub const fn fixed(v: f64) -> Self {
        Range { lo: v, hi: v }
    }

    /// `[-v, v]`.
    pub const fn sym(v: f64) -> Self {
        Range { lo: -v, hi: v }
    }

    fn check(&self, op: &str, min: f64, max: f64) -> Result<()> {
        let bad = |message: String| Err(StnError::Augment { op: op.into(), message });
        if !self.lo.is_finite() || !self.hi.is_finite() {
            return bad(format!("the range {}..{} is not finite", self.lo, self.hi));
        }
        if self.lo > self.hi {
            return bad(format!(
                "the range {}..{} is negative (its low end is above its high end)",
                self.lo, self.hi
            ));
        }
        if self.lo < min || self.hi > max {
            return bad(format!("the range {}..{} leaves [{min}, {max}]", self.lo, self.hi));
        }
        Ok(())
    }

    fn draw(&self, s: &mut Stream) -> f64 {
        s.range(self.lo, self.hi)
    }
}

/// One augmentation op. Every op applies with probability `p` (drawn per sample), and draws
/// its parameters per sample (or once per batch with
/// [`AugmentOptions::same_on_batch`](super::AugmentOptions)).
///
/// The convention, shared by every op: coordinates are normalized to [-1, 1] over the image
/// (PyTorch's, with the `align_corners` of the options), the origin at the image's centre;
/// geometric ops (rotation, scale, shear) act in pixel units about the centre, so a rotation
/// is a rotation on non-square images too. Angles are in degrees, positive counter-clockwise as
/// the image is viewed (y points down). Shifts are fractions of the image's width and height.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Affine: the content is scaled (`scale`, and `aspect` = width/height stretch), sheared
    /// (`shear_x` then `shear_y`, angles), rotated (`rot`), then shifted (`shift_x`,
    /// `shift_y`), about the centre.
    Affine {
        /// Rotation, degrees.
        rot: Range,
        /// Isotropic scale (> 0).
        scale: Range,
        /// Aspect factor a: x scales by s * sqrt(a), y by s / sqrt(a) (> 0; 1: none).
        aspect: Range,
        /// Shear along x, degrees (|angle| < 90).
        shear_x: Range,
        /// Shear along y, degrees (|angle| < 90).
        shear_y: Range,
        /// Shift along x, fraction of the width.
        shift_x: Range,
        /// Shift along y, fraction of the height.
        shift_y: Range,
        /// Probability of applying the op.
        p: f64,
    },
    /// Rotation about the centre, degrees.
    Rotation {
        /// Angle, degrees.
        deg: Range,
        /// Probability.
        p: f64,
    },
    /// Perspective: each corner moves towards the centre by up to `distortion` of the half
    /// width and half height (uniform per corner and axis), as in torchvision and kornia.
    Perspective {
        /// In [0, 1].
        distortion: f64,
        /// Probability.
        p: f64,
    },
    /// Thin-plate spline (elastic): every control point of a `rows x cols` grid over [-1, 1]
    /// is read from a position jittered uniformly by up to `scale` (normalized units) per axis.
    Tps {
        /// Jitter, normalized units (>= 0).
        scale: f64,
        /// Rows of control points (>= 2).
        rows: usize,
        /// Columns of control points (>= 2).
        cols: usize,
        /// Probability.
        p: f64,
    },
    /// Random resized crop: a region of `scale` times the area and width/height `ratio`
    /// (log-uniform), placed uniformly inside the image, stretched over the output
    /// (torchvision's sampling: 10 tries, then the centre crop).
    ResizedCrop {
        /// Area fraction, in (0, 1].
        scale: Range,
        /// Aspect ratio width/height (> 0).
        ratio: Range,
        /// Probability.
        p: f64,
    },
    /// Mirror left-right.
    HFlip {
        /// Probability.
        p: f64,
    },
    /// Mirror top-bottom.
    VFlip {
        /// Probability.
        p: f64,
    },
}

impl Op {
    /// An affine op with identity ranges (set the fields you need) applied always.
    pub fn affine() -> Self {
        Op::Affine {
            rot: Range::fixed(0.0),
            scale: Range::fixed(1.0),
            aspect: Range::fixed(1.0),
            shear_x: Range::fixed(0.0),
            shear_y: Range::fixed(0.0),
            shift_x: Range::fixed(0.0),
            shift_y: Range::fixed(0.0),
            p: 1.0,
        }
    }

    /// The op's name in a spec.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Affine { .. } => "affine",
            Op::Rotation { .. } => "rotation",
            Op::Perspective { .. } => "perspective",
            Op::Tps { .. } => "tps",
            Op::ResizedCrop { .. } => "crop",
            Op::HFlip { .. } => "hflip",
            Op::VFlip { .. } => "vflip",
        }
    }

    /// The probability of applying the op.
    pub fn p(&self) -> f64 {
        match *self {
            Op::Affine { p, .. }
            | Op::Rotation { p, .. }
            | Op::Perspective { p, .. }
            | Op::Tps { p, .. }
            | Op::ResizedCrop { p, .. }
            | Op::HFlip { p }
            | Op::VFlip { p } => p,
        }
    }

    /// Whether the op is a matrix op (everything but the spline).
    pub fn is_matrix(&self) -> bool {
        !matches!(self, Op::Tps { .. })
    }

    /// Checks every parameter; the error names the op and the parameter.
    pub fn validate(&self) -> Result<()> {
        let name = self.name();
        let p = self.p();
        if !(0.0..=1.0).contains(&p) {
            return Err(StnError::Augment {
                op: format!("{name}.p"),
                message: format!("p must be in [0, 1], got {p}"),
            });
        }
        let at = |k: &str| format!("{name}.{k}");
        match self {
            Op::Affine { rot, scale, aspect, shear_x, shear_y, shift_x, shift_y, .. } => {
                rot.check(&at("rot"), -360.0, 360.0)?;
                scale.check(&at("scale"), 1e-6, 1e6)?;
                aspect.check(&at("aspect"), 1e-6, 1e6)?;
                shear_x.check(&at("shear_x"), -89.0, 89.0)?;
                shear_y.check(&at("shear_y"), -89.0, 89.0)?;
                shift_x.check(&at("shift_x"), -10.0, 10.0)?;
                shift_y.check(&at("shift_y"), -10.0, 10.0)?;
            }
            Op::Rotation { deg, .. } => deg.check(&at("deg"), -360.0, 360.0)?,
            Op::Perspective { distortion, .. } => {
                Range::fixed(*distortion).check(&at("distortion"), 0.0, 1.0)?
            }
            Op::Tps { scale, rows, cols, .. } => {
                Range::fixed(*scale).check(&at("scale"), 0.0, 1.0)?;
                Tps::new(*rows, *cols)
                    .map_err(|e| StnError::Augment { op: at("grid"), message: e.to_string() })?;
            }
            Op::ResizedCrop { scale, ratio, .. } => {
                scale.check(&at("scale"), 1e-6, 1.0)?;
                ratio.check(&at("ratio"), 1e-3, 1e3)?;
            }
            Op::HFlip { .. } | Op::VFlip { .. } => {}
        }
        Ok(())
    }

    /// The stage this op gives one sample (None: not applied), in normalized coordinates of an
    /// `h x w` image, sampling direction (output to input).
    pub(crate) fn draw(&self, s: &mut Stream, [h, w]: [usize; 2], align_corners: bool) -> Option<Stage> {
        // The probability is drawn first, always, so parameters do not depend on p.
        let applied = s.uniform() < self.p();
        let stage = match self {
            Op::Affine { rot, scale, aspect, shear_x, shear_y, shift_x, shift_y, .. } => {
                let (a, sc, asp) = (rot.draw(s), scale.draw(s), aspect.draw(s));
                let (shx, shy, tx, ty) = (shear_x.draw(s), shear_y.draw(s), shift_x.draw(s), shift_y.draw(s));
                let fwd = affine_forward(a, sc, asp, shx, shy);
                Stage::Matrix(pixel_to_sampling(&fwd, [tx, ty], [h, w], align_corners))
            }
            Op::Rotation { deg, .. } => {
                let fwd = affine_forward(deg.draw(s), 1.0, 1.0, 0.0, 0.0);
                Stage::Matrix(pixel_to_sampling(&fwd, [0.0, 0.0], [h, w], align_corners))
            }
            Op::Perspective { distortion, .. } => {
                let corners = [[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]];
                let moved: Vec<[f64; 2]> = corners
                    .iter()
                    .map(|c| {
                        let (u, v) = (s.uniform(), s.uniform());
                        [c[0] - c[0] * distortion * u, c[1] - c[1] * distortion * v]
                    })
                    .collect();
                // Content at the corners moves to `moved`: sampling takes `moved` back to them.
                let h8 = homography(&moved, &corners);
                Stage::Matrix([[h8[0], h8[1], h8[2]], [h8[3], h8[4], h8[5]], [h8[6], h8[7], 1.0]])
            }
            Op::Tps { scale, rows, cols, .. } => {
                let tps = Tps::new(*rows, *cols).expect("validated");
                let theta = tps
                    .control_points()
                    .iter()
                    .map(|c| [c[0] + s.range(-scale, *scale), c[1] + s.range(-scale, *scale)])
                    .collect();
                Stage::Tps { rows: *rows, cols: *cols, theta }
            }
            Op::ResizedCrop { scale, ratio, .. } => {
                let (fw, fh, cx, cy) = crop_box(s, *scale, *ratio, [h, w]);
                Stage::Matrix([[fw, 0.0, cx], [0.0, fh, cy], [0.0, 0.0, 1.0]])
            }
            Op::HFlip { .. } => Stage::Matrix([[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),
            Op::VFlip { .. } => Stage::Matrix([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]]),
        };
        applied.then_some(stage)
    }
}

/// The forward linear part in pixel units (y down): R(angle) * ShearY * ShearX * Scale.
pub(crate) fn affine_forward(deg: f64, scale: f64, aspect: f64, shear_x: f64, shear_y: f64) -> [[f64; 2]; 2] {
    let (sn, cs) = libm::sincos(deg.to_radians());
    let r = [[cs, sn], [-sn, cs]];
    let (kx, ky) = (libm::tan(shear_x.to_radians()), libm::tan(shear_y.to_radians()));
    // ShearY * ShearX = [[1, kx], [ky, ky * kx + 1]].
    let sh = [[1.0, kx], [ky, ky * kx + 1.0]];
    let sq = aspect.sqrt();
    let sc = [scale * sq, scale / sq];
    let mut out = [[0.0; 2]; 2];
    for i in 0..2 {
        for j in 0..2 {
            out[i][j] = (r[i][0] * sh[0][j] + r[i][1] * sh[1][j]) * sc[j];
        }
    }
    out
}

/// Half the image's extent in pixels along an axis of `n` pixels: the unit of normalized
/// coordinates.
fn half_extent(n: usize, align_corners: bool) -> f64 {
    if align_corners {
        (n.max(2) - 1) as f64 / 2.0
    } else {
        n as f64 / 2.0
    }
}

/// The sampling matrix (normalized, output to input) of a forward map given in pixel units
/// about the centre, `lin` then a shift of `shift` (fractions of the width and height).
pub(crate) fn pixel_to_sampling(
    lin: &[[f64; 2]; 2],
    shift: [f64; 2],
    [h, w]: [usize; 2],
    align: bool,
) -> Mat3 {
    let (sx, sy) = (half_extent(w, align), half_extent(h, align));
    // Normalized forward map: S^-1 * lin * S, then the shift (2 * fraction in normalized units).
    let fwd: Mat3 = [
        [lin[0][0], lin[0][1] * sy / sx, 2.0 * shift[0]],
        [lin[1][0] * sx / sy, lin[1][1], 2.0 * shift[1]],
        [0.0, 0.0, 1.0],
    ];
    // Validated scales and shears keep the map invertible; exact zeros in the last row keep
    // the matrix affine.
    let mut m = inverse3(&fwd).unwrap_or(fwd);
    m[2] = [0.0, 0.0, 1.0];
    m
}

/// torchvision's RandomResizedCrop box: (half width, half height, centre x, centre y) in
/// normalized units.
fn crop_box(s: &mut Stream, scale: Range, ratio: Range, [h, w]: [usize; 2]) -> (f64, f64, f64, f64) {
    let (hf, wf) = (h as f64, w as f64);
    let area = hf * wf;
    let (lr0, lr1) = (libm::log(ratio.lo), libm::log(ratio.hi));
    for _ in 0..10 {
        let target = area * s.range(scale.lo, scale.hi);
        let r = libm::exp(s.range(lr0, lr1));
        let (cw, ch) = ((target * r).sqrt(), (target / r).sqrt());
        let (u, v) = (s.uniform(), s.uniform());
        if cw <= wf && ch <= hf {
            let x0 = u * (wf - cw);
            let y0 = v * (hf - ch);
            return (cw / wf, ch / hf, (2.0 * x0 + cw) / wf - 1.0, (2.0 * y0 + ch) / hf - 1.0);
        }
    }
    // The centre crop with the ratio clamped to the range.
    let r = wf / hf;
    let (cw, ch) = if r < ratio.lo {
        (wf, wf / ratio.lo)
    } else if r > ratio.hi {
        (hf * ratio.hi, hf)
    } else {
        (wf, hf)
    };
    (cw / wf, ch / hf, 0.0, 0.0)
}
