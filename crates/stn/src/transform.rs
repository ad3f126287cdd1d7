//! Transform families: how a parameter vector per sample becomes a sampling grid.
//!
//! Each family knows its parameter count and identity parameters, and warps an input (fused:
//! parameters straight into the sampler, no stored grid) or makes its grid. Matrix families
//! (translation, attention, similarity, affine, projective, affine 3-D) also give their
//! homogeneous matrix, so chains of transformers compose before sampling.

use burn::config::Config;
use burn::tensor::Tensor;
use stn_kernels::{base_coords, KernelError, SampleOptions, Tps};

use crate::error::{Result, StnError};
use crate::ops;

/// A transform family. Parameters per sample, in order:
///
/// | family | params | meaning | identity |
/// |---|---|---|---|
/// | `Translation` | 2 | `[tx, ty]` | `[0, 0]` |
/// | `Attention` | 3 | `[s, tx, ty]`: isotropic scale + translation (the paper's attention) | `[1, 0, 0]` |
/// | `Similarity` | 4 | `[s, angle, tx, ty]`, angle in radians | `[1, 0, 0, 0]` |
/// | `Affine` | 6 | the 2 x 3 matrix, row-major | `[1, 0, 0, 0, 1, 0]` |
/// | `Projective` | 8 | the 3 x 3 homography without `h33 = 1` | `[1, 0, 0, 0, 1, 0, 0, 0]` |
/// | `Tps { rows, cols }` | 2K | where the K = rows x cols control points land, (x, y) each | the control points |
/// | `Affine3d` | 12 | the 3 x 4 matrix, row-major (5-D inputs) | `[1,0,0,0, 0,1,0,0, 0,0,1,0]` |
/// | `Dense` | 2 H_out W_out | the sampling grid itself, (x, y) per output pixel | the identity grid |
///
/// Coordinates are normalized to [-1, 1] (PyTorch's convention); a matrix maps output
/// coordinates to input coordinates.
#[derive(Config, Debug, PartialEq, Copy)]
pub enum Transform {
    /// Translation only.
    Translation,
    /// Isotropic scale and translation (crop and zoom).
    Attention,
    /// Scale, rotation and translation.
    Similarity,
    /// General 2-D affine.
    Affine,
    /// Homography (perspective).
    Projective,
    /// Thin-plate spline on a `rows x cols` grid of control points over [-1, 1].
    Tps {
        /// Rows of control points (at least 2).
        rows: usize,
        /// Columns of control points (at least 2).
        cols: usize,
    },
    /// 3-D affine, for volumes (N, C, D, H, W).
    Affine3d,
    /// A dense sampling grid given directly (no parametric structure).
    Dense,
}

impl Transform {
    /// The paper's thin-plate spline: 4 x 4 = 16 control points.
    pub fn tps16() -> Self {
        Transform::Tps { rows: 4, cols: 4 }
    }

    /// Spatial dimensions of the inputs this family warps: 3 for [`Transform::Affine3d`], else 2.
    pub fn spatial_dims(&self) -> usize {
        if *self == Transform::Affine3d {
            3
        } else {
            2
        }
    }

    /// Whether the family is a matrix family (composes by matrix product).
    pub fn is_matrix(&self) -> bool {
        !matches!(self, Transform::Tps { .. } | Transform::Dense)
    }

    /// The spline layout of a [`Transform::Tps`] family.
    pub fn tps(&self) -> Result<Option<Tps>> {
        match *self {
            Transform::Tps { rows, cols } => Ok(Some(Tps::new(rows, cols)?)),
            _ => Ok(None),
        }
    }

    /// Checks the family's own settings (a TPS control grid of at least 2 x 2 points) and the
    /// spatial output size it will produce.
    pub fn validate(&self, out_size: &[usize]) -> Result<()> {
        self.tps()?;
        let d = self.spatial_dims();
        if out_size.len() != d {
            return Err(StnError::Config {
                field: "out_size",
                message: format!("{self:?} needs {d} output sizes, got {out_size:?}"),
            });
        }
        ops::check_sizes("out_size", out_size, 1)?;
        Ok(())
    }

    /// Parameters per sample for spatial output size `out_size` (only [`Transform::Dense`]
    /// depends on it).
    pub fn num_params(&self, out_size: &[usize]) -> usize {
        match *self {
            Transform::Translation => 2,
            Transform::Attention => 3,
            Transform::Similarity => 4,
            Transform::Affine => 6,
            Transform::Projective => 8,
            Transform::Tps { rows, cols } => 2 * rows * cols,
            Transform::Affine3d => 12,
            Transform::Dense => 2 * out_size.iter().product::<usize>(),
        }
    }

    /// The parameters of the identity transform: they give the identity grid (sampling them
    /// reproduces the input when the output size equals the input size). Only
    /// [`Transform::Dense`] depends on `out_size` and `align_corners`.
    pub fn identity(&self, out_size: &[usize], align_corners: bool) -> Result<Vec<f64>> {
        Ok(match *self {
            Transform::Translation => vec![0.0, 0.0],
            Transform::Attention => vec![1.0, 0.0, 0.0],
            Transform::Similarity => vec![1.0, 0.0, 0.0, 0.0],
            Transform::Affine => vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            Transform::Projective => stn_kernels::PROJECTIVE_IDENTITY.to_vec(),
            Transform::Tps { .. } => self.tps()?.expect("tps family").identity::<f64>(1),
            Transform::Affine3d => vec![1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            Transform::Dense => {
                self.validate(out_size)?;
                let (h, w) = (out_size[0], out_size[1]);
                let (ys, xs) = (base_coords::<f64>(h, align_corners), base_coords::<f64>(w, align_corners));
                ys.iter().flat_map(|&y| xs.iter().flat_map(move |&x| [x, y])).collect()
            }
        })
    }

    fn check_params(&self, params: &Tensor<2>, out_size: &[usize]) -> Result<()> {
        let [n, p] = params.dims();
        let want = self.num_params(out_size);
        if p != want {
            return Err(KernelError::Shape {
                arg: "params",
                expected: format!("({n}, {want}) for {self:?}"),
                got: vec![n, p],
            }
            .into());
        }
        Ok(())
    }

    /// The 2 x 3 affine matrices (N, 2, 3) of the 2-D affine-type families (translation,
    /// attention, similarity, affine), as differentiable tensor ops on `params` (N, P).
    pub fn affine_theta(&self, params: Tensor<2>) -> Result<Tensor<3>> {
        self.check_params(&params, &[])?;
        let n = params.dims()[0];
        let col = |i: usize| params.clone().narrow(1, i, 1);
        let one = || col(0).ones_like();
        let zero = || col(0).zeros_like();
        let rows = match self {
            Transform::Translation => vec![one(), zero(), col(0), zero(), one(), col(1)],
            Transform::Attention => vec![col(0), zero(), col(1), zero(), col(0), col(2)],
            Transform::Similarity => {
                let (s, a) = (col(0), col(1));
                let (sin, cos) = (s.clone() * crate::repro::sin(a.clone()), s * crate::repro::cos(a));
                vec![cos.clone(), sin.clone().neg(), col(2), sin, cos, col(3)]
            }
            Transform::Affine => return Ok(params.reshape([n, 2, 3])),
            other => {
                return Err(StnError::Config {
                    field: "transform",
                    message: format!("{other:?} has no 2 x 3 affine matrix"),
                })
            }
        };
        Ok(Tensor::cat(rows, 1).reshape([n, 2, 3]))
    }

    /// The homogeneous matrices of a matrix family: (N, 3, 3) in 2-D, (N, 4, 4) for
    /// [`Transform::Affine3d`]. Composing transforms is multiplying these.
    pub fn matrix(&self, params: Tensor<2>) -> Result<Tensor<3>> {
        self.check_params(&params, &[])?;
        let n = params.dims()[0];
        let e = |p: &Tensor<2>, v: f64| p.clone().narrow(1, 0, 1).ones_like().mul_scalar(v);
        match self {
            Transform::Projective => {
                let one = e(&params, 1.0);
                Ok(Tensor::cat(vec![params, one], 1).reshape([n, 3, 3]))
            }
            Transform::Affine3d => {
                let last = vec![e(&params, 0.0), e(&params, 0.0), e(&params, 0.0), e(&params, 1.0)];
                let mut parts = vec![params.clone()];
                parts.extend(last);
                Ok(Tensor::cat(parts, 1).reshape([n, 4, 4]))
            }
            Transform::Tps { .. } | Transform::Dense => Err(StnError::Config {
                field: "transform",
                message: format!("{self:?} is not a matrix family and does not compose"),
            }),
            _ => {
                let theta = self.affine_theta(params.clone())?.reshape([n, 6]);
                let last = vec![e(&params, 0.0), e(&params, 0.0), e(&params, 1.0)];
                let mut parts = vec![theta];
                parts.extend(last);
                Ok(Tensor::cat(parts, 1).reshape([n, 3, 3]))
            }
        }
    }

    /// Warps `input` through `params` (N, P) to spatial size `out_size`: fused (no stored grid)
    /// for every parametric family; [`Transform::Dense`] samples its grid.
    pub fn warp<const D: usize>(
        &self,
        input: Tensor<D>,
        params: Tensor<2>,
        out_size: &[usize],
        options: SampleOptions,
    ) -> Result<Tensor<D>> {
        self.validate(out_size)?;
        self.check_params(&params, out_size)?;
        if D != self.spatial_dims() + 2 {
            return Err(KernelError::Rank {
                arg: "input",
                expected: format!("rank {} for {self:?}", self.spatial_dims() + 2),
                got: D,
                shape: input.dims().to_vec(),
            }
            .into());
        }
        let n = params.dims()[0];
        match *self {
            Transform::Projective => {
                let x = to4(input);
                let y = ops::projective_sample(x, params, [out_size[0], out_size[1]], options)?;
                Ok(from4(y))
            }
            Transform::Tps { .. } => {
                let tps = self.tps()?.expect("tps family");
                let x = to4(input);
                let theta = params.reshape([n, tps.num_points(), 2]);
                let y = ops::tps_sample(x, theta, tps, [out_size[0], out_size[1]], options)?;
                Ok(from4(y))
            }
            Transform::Affine3d => ops::affine_sample(input, params.reshape([n, 3, 4]), out_size, options),
            Transform::Dense => {
                let mut g = vec![n];
                g.extend_from_slice(out_size);
                g.push(2);
                let grid: Tensor<D> = params.reshape(dims_d::<D>(&g));
                ops::grid_sample(input, grid, options)
            }
            _ => ops::affine_sample(input, self.affine_theta(params)?, out_size, options),
        }
    }

    /// The sampling grid of `params` (N, P) for spatial output size `out_size`: (N, H, W, 2),
    /// or (N, D, H, W, 3) for [`Transform::Affine3d`] (`G` is the grid's rank).
    pub fn grid<const G: usize>(
        &self,
        params: Tensor<2>,
        out_size: &[usize],
        align_corners: bool,
    ) -> Result<Tensor<G>> {
        self.validate(out_size)?;
        self.check_params(&params, out_size)?;
        let n = params.dims()[0];
        let mut size = vec![n, 1];
        size.extend_from_slice(out_size);
        let mut gshape = vec![n];
        gshape.extend_from_slice(out_size);
        gshape.push(out_size.len());
        if gshape.len() != G {
            return Err(StnError::Config {
                field: "grid rank",
                message: format!("{self:?} makes a rank-{} grid, asked for rank {G}", gshape.len()),
            });
        }
        let size4 = || [n, 1, out_size[0], out_size[1]];
        match *self {
            Transform::Projective => {
                Ok(ops::projective_grid(params, size4(), align_corners)?.reshape(dims_d::<G>(&gshape)))
            }
            Transform::Tps { .. } => {
                let tps = self.tps()?.expect("tps family");
                let theta = params.reshape([n, tps.num_points(), 2]);
                Ok(ops::tps_grid(theta, tps, size4(), align_corners)?.reshape(dims_d::<G>(&gshape)))
            }
            Transform::Affine3d => ops::affine_grid(params.reshape([n, 3, 4]), &size, align_corners),
            Transform::Dense => Ok(params.reshape(dims_d::<G>(&gshape))),
            _ => ops::affine_grid(self.affine_theta(params)?, &size, align_corners),
        }
    }
}

/// A rank-D tensor known to be rank 4 (checked by the caller), typed as such.
fn to4<const D: usize>(t: Tensor<D>) -> Tensor<4> {
    let d: [usize; 4] = t.dims().to_vec().try_into().expect("rank 4, checked by the caller");
    t.reshape(d)
}

/// The inverse of [`to4`].
fn from4<const D: usize>(t: Tensor<4>) -> Tensor<D> {
    let d = dims_d::<D>(&t.dims());
    t.reshape(d)
}

fn dims_d<const D: usize>(dims: &[usize]) -> [usize; D] {
    dims.to_vec().try_into().expect("rank checked by the caller")
}

/// Samples `input` through homogeneous matrices `m` — (N, 3, 3) for (N, C, H, W), (N, 4, 4) for
/// (N, C, D, H, W) — to spatial size `out_size`: affine when the last row is (0, .., 0, 1) for
/// every sample (`projective = false`), else as a homography normalized by `m33`.
pub fn warp_matrix<const D: usize>(
    input: Tensor<D>,
    m: Tensor<3>,
    projective: bool,
    out_size: &[usize],
    options: SampleOptions,
) -> Result<Tensor<D>> {
    let [n, r, c] = m.dims();
    if r != c || r != D - 1 {
        return Err(KernelError::Shape {
            arg: "matrix",
            expected: format!("({n}, {0}, {0}) for a rank-{D} input", D - 1),
            got: vec![n, r, c],
        }
        .into());
    }
    if !projective {
        return ops::affine_sample(input, m.narrow(1, 0, D - 2), out_size, options);
    }
    if D != 4 {
        return Err(StnError::Config { field: "transform", message: "projective warps are 2-D only".into() });
    }
    let flat = m.reshape([n, 9]);
    let h33 = flat.clone().narrow(1, 8, 1);
    let params = (flat / h33).narrow(1, 0, 8);
    let x = to4(input);
    let y = ops::projective_sample(x, params, [out_size[0], out_size[1]], options)?;
    Ok(from4(y))
}
