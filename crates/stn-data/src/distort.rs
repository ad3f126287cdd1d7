//! The distortions of the paper's distorted-MNIST experiments, made with the project's own
//! sampler (stn-kernels, bilinear, zero padding) and deterministic by seed: image `i` under
//! seed `s` is the same whatever the batch, thread count or machine.
//!
//! | name | what (for a 28 x 28 digit) | output |
//! |---|---|---|
//! | `none` | the digit as it is | 28 x 28 |
//! | `r` | rotated by an angle uniform in +-90 degrees | 28 x 28 |
//! | `rts` | rotated +-45 degrees, scaled 0.7 to 1.2, placed at a random position on a 42 x 42 canvas | 42 x 42 |
//! | `p` | projective: scaled 0.75 to 1.0, each corner moved by Gaussian noise (std 0.1, clipped at 0.3) | 28 x 28 |
//! | `e` | elastic: a 4 x 4 thin-plate spline whose control points move by up to +-0.2 | 28 x 28 |
//! | `tc` | translated to a random position on a 60 x 60 canvas, with 6 clutter patches of 6 x 6 cut from random other digits | 60 x 60 |
//!
//! Coordinates are normalized to [-1, 1] over the image (PyTorch's convention); for other image
//! sizes the canvases scale (RTS: 1.5 x the size, TC: the size + 32).

use std::fmt;
use std::str::FromStr;

use rayon::prelude::*;
use stn_kernels::{
    affine_sample, projective_sample, tps_sample, Interpolation, Padding, SampleOptions, TensorRef, Tps,
};

use crate::dataset::Dataset;
use crate::error::{DataError, Result};

/// A distortion of the paper's experiments (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Distortion {
    /// No distortion.
    None,
    /// Rotation, +-90 degrees.
    Rotation,
    /// Rotation +-45 degrees, scale 0.7-1.2, translation on a 1.5x canvas.
    Rts,
    /// Projective (perspective) distortion.
    Projective,
    /// Elastic (thin-plate spline) distortion.
    Elastic,
    /// Translation on a larger canvas with clutter.
    TranslatedCluttered,
}

/// Every distortion, in the paper's order.
pub const ALL: [Distortion; 6] = [
    Distortion::None,
    Distortion::Rotation,
    Distortion::Rts,
    Distortion::Projective,
    Distortion::Elastic,
    Distortion::TranslatedCluttered,
];

impl FromStr for Distortion {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "none" => Distortion::None,
            "r" => Distortion::Rotation,
            "rts" => Distortion::Rts,
            "p" => Distortion::Projective,
            "e" => Distortion::Elastic,
            "tc" => Distortion::TranslatedCluttered,
            _ => {
                return Err(DataError::Invalid {
                    arg: "distortion",
                    message: format!("unknown distortion {s:?}; use one of none, r, rts, p, e, tc"),
                })
            }
        })
    }
}

impl fmt::Display for Distortion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Distortion::None => "none",
            Distortion::Rotation => "r",
            Distortion::Rts => "rts",
            Distortion::Projective => "p",
            Distortion::Elastic => "e",
            Distortion::TranslatedCluttered => "tc",
        })
    }
}

/// A per-image random stream: SplitMix64 seeded by (seed, image index).
struct Stream(u64);

impl Stream {
    fn new(seed: u64, index: usize, salt: u64) -> Self {
        let mut s =
            Stream(seed ^ 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(index as u64 + 1) ^ salt.rotate_left(32));
        s.next_u64();
        s
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
    }
    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u = self.uniform(0.0, 1.0).max(1e-300);
        let v = self.uniform(0.0, 1.0);
        (-2.0 * libm::log(u)).sqrt() * libm::cos(2.0 * std::f64::consts::PI * v)
    }
    /// Uniform integer in [0, n).
    fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * n as f64) as usize % n.max(1)
    }
}

impl Distortion {
    /// Output size (H, W) for inputs of size (h, w).
    pub fn out_size(&self, h: usize, w: usize) -> (usize, usize) {
        match self {
            Distortion::Rts => ((3 * h).div_ceil(2), (3 * w).div_ceil(2)),
            Distortion::TranslatedCluttered => (h + 32, w + 32),
            _ => (h, w),
        }
    }

    /// Distorts every image of `data` with `seed`; labels are kept.
    pub fn apply(&self, data: &Dataset, seed: u64) -> Result<Dataset> {
        let (h, w) = (data.height, data.width);
        let (oh, ow) = self.out_size(h, w);
        let n = data.len();
        let salt = *self as u64 + 1;
        let opts = SampleOptions::new(Interpolation::Bilinear, Padding::Zeros, false);
        let mut out = Vec::new();
        out.try_reserve_exact(n * oh * ow).map_err(|_| DataError::Invalid {
            arg: "data",
            message: format!("cannot allocate {n} distorted images of {oh} x {ow}"),
        })?;
        // Chunks bound the sampler's memory; parameters depend only on (seed, index).
        const CHUNK: usize = 1024;
        for start in (0..n).step_by(CHUNK) {
            let m = CHUNK.min(n - start);
            let x = &data.images[start * h * w..(start + m) * h * w];
            let xs = [m, 1, h, w];
            let input = TensorRef::new(x, &xs);
            let params = |k: usize| -> Vec<f32> {
                (0..m)
                    .flat_map(|i| {
                        let mut r = Stream::new(seed, start + i, salt);
                        self.params(&mut r, h, w, oh, ow)
                    })
                    .map(|v| v as f32)
                    .take(m * k)
                    .collect()
            };
            let chunk = match self {
                Distortion::None => x.to_vec(),
                Distortion::Rotation | Distortion::Rts => {
                    let p = params(6);
                    affine_sample(input, TensorRef::new(&p, &[m, 2, 3]), &[oh, ow], &opts)?.data
                }
                Distortion::Projective => {
                    let p = params(8);
                    projective_sample(input, TensorRef::new(&p, &[m, 8]), &[oh, ow], &opts)?.data
                }
                Distortion::Elastic => {
                    let p = params(32);
                    tps_sample(input, TensorRef::new(&p, &[m, 16, 2]), &Tps::default(), &[oh, ow], &opts)?
                        .data
                }
                Distortion::TranslatedCluttered => {
                    let mut c = vec![0f32; m * oh * ow];
                    c.par_chunks_mut(oh * ow).enumerate().for_each(|(i, canvas)| {
                        clutter(canvas, data, start + i, seed, salt, (oh, ow));
                    });
                    c
                }
            };
            out.extend_from_slice(&chunk);
        }
        Ok(Dataset { images: out, labels: data.labels.clone(), height: oh, width: ow })
    }

    /// How image `index` of `h x w` images was distorted under `seed` ([`Distortion::apply`]):
    /// the map from the distorted image's normalized coordinates to the original's, the one
    /// its sampler used. The distortion's true inverse is the map a transformer should find
    /// to undo it. `none` is the identity; `tc` the translation that placed the digit.
    pub fn sampler(&self, seed: u64, index: usize, h: usize, w: usize) -> SamplerMap {
        let (oh, ow) = self.out_size(h, w);
        let mut r = Stream::new(seed, index, *self as u64 + 1);
        match self {
            Distortion::None => SamplerMap::Affine([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
            Distortion::TranslatedCluttered => {
                // The digit's top-left corner sits at (ox, oy) pixels on the canvas (as
                // `clutter` draws it): original pixel = canvas pixel - offset, pixel centres
                // at (2i + 1) / n - 1.
                let (oy, ox) = (r.below(oh - h + 1), r.below(ow - w + 1));
                let (sx, sy) = (ow as f64 / w as f64, oh as f64 / h as f64);
                SamplerMap::Affine([
                    sx,
                    0.0,
                    (ow as f64 - 2.0 * ox as f64) / w as f64 - 1.0,
                    0.0,
                    sy,
                    (oh as f64 - 2.0 * oy as f64) / h as f64 - 1.0,
                ])
            }
            Distortion::Rotation | Distortion::Rts => {
                let p = self.params(&mut r, h, w, oh, ow);
                SamplerMap::Affine([p[0], p[1], p[2], p[3], p[4], p[5]])
            }
            Distortion::Projective => {
                let p = self.params(&mut r, h, w, oh, ow);
                SamplerMap::Projective([p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]])
            }
            Distortion::Elastic => SamplerMap::Tps4x4(self.params(&mut r, h, w, oh, ow)),
        }
    }

    /// The sampler parameters of one image (output to input, normalized coordinates).
    fn params(&self, r: &mut Stream, h: usize, w: usize, oh: usize, ow: usize) -> Vec<f64> {
        match self {
            Distortion::Rotation => {
                let a = r.uniform(-90.0, 90.0).to_radians();
                let (s, c) = libm::sincos(a);
                vec![c, -s, 0.0, s, c, 0.0]
            }
            Distortion::Rts => {
                // The digit, scaled by k and rotated by a, sits at offset t (pixels) from the
                // canvas centre: out = k R in + t, so in = R^T (out - t) / k.
                let a = r.uniform(-45.0, 45.0).to_radians();
                let k = r.uniform(0.7, 1.2);
                let (s, c) = libm::sincos(a);
                let mx = (ow as f64 - k * w as f64).max(0.0) / 2.0;
                let my = (oh as f64 - k * h as f64).max(0.0) / 2.0;
                let (tx, ty) = (r.uniform(-mx, mx), r.uniform(-my, my));
                // Normalized: out_px = u * (ow / 2, oh / 2), v = in_px / (w / 2, h / 2).
                let (kw, kh) = (k * w as f64, k * h as f64);
                let (ow, oh) = (ow as f64, oh as f64);
                vec![
                    c * ow / kw,
                    s * oh / kw,
                    -(c * tx + s * ty) * 2.0 / kw,
                    -s * ow / kh,
                    c * oh / kh,
                    -(-s * tx + c * ty) * 2.0 / kh,
                ]
            }
            Distortion::Projective => {
                let k = r.uniform(0.75, 1.0);
                let corners = [[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]];
                let moved: Vec<[f64; 2]> = corners
                    .iter()
                    .map(|c| {
                        [
                            k * c[0] + (0.1 * r.normal()).clamp(-0.3, 0.3),
                            k * c[1] + (0.1 * r.normal()).clamp(-0.3, 0.3),
                        ]
                    })
                    .collect();
                // The homography taking where the corners landed (output) back to the corners (input).
                homography(&moved, &corners)
            }
            Distortion::Elastic => {
                let id = Tps::default().identity::<f64>(1);
                id.iter().map(|v| v + r.uniform(-0.2, 0.2)).collect()
            }
            Distortion::None | Distortion::TranslatedCluttered => Vec::new(),
        }
    }
}

/// A distortion's sampler for one image ([`Distortion::sampler`]): distorted-image
/// coordinates to original-image coordinates, normalized to [-1, 1].
#[derive(Debug, Clone, PartialEq)]
pub enum SamplerMap {
    /// `[a11, a12, a13, a21, a22, a23]`.
    Affine([f64; 6]),
    /// A homography without `h33 = 1`.
    Projective([f64; 8]),
    /// The landing points of a 4 x 4 thin-plate spline, (x, y) each.
    Tps4x4(Vec<f64>),
}

/// Places image `i` at a random position on the canvas and adds 6 clutter patches of 6 x 6 cut
/// from random other images (pixel-wise maximum).
fn clutter(canvas: &mut [f32], data: &Dataset, i: usize, seed: u64, salt: u64, (oh, ow): (usize, usize)) {
    let (h, w) = (data.height, data.width);
    let mut r = Stream::new(seed, i, salt);
    let (oy, ox) = (r.below(oh - h + 1), r.below(ow - w + 1));
    let img = data.image(i);
    for y in 0..h {
        canvas[(oy + y) * ow + ox..][..w].copy_from_slice(&img[y * w..][..w]);
    }
    let p = 6.min(h).min(w);
    for _ in 0..6 {
        let mut j = r.below(data.len());
        if j == i && data.len() > 1 {
            j = (j + 1) % data.len();
        }
        let (sy, sx) = (r.below(h - p + 1), r.below(w - p + 1));
        let (dy, dx) = (r.below(oh - p + 1), r.below(ow - p + 1));
        let src = data.image(j);
        for y in 0..p {
            for x in 0..p {
                let d = &mut canvas[(dy + y) * ow + dx + x];
                *d = d.max(src[(sy + y) * w + sx + x]);
            }
        }
    }
}

/// The homography mapping 4 points onto 4 others (kept here for callers of `distort`; it lives
/// in stn-kernels, shared with `stn::augment`).
pub use stn_kernels::homography;
