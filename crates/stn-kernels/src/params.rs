//! Restricted transform families mapped to the affine matrix (N, 2, 3), each with its backward:
//! translation (2 parameters), attention (3: isotropic scale + translation, as in the paper),
//! similarity (4: scale, rotation, translation).

use crate::error::Result;
use crate::float::Float;
use crate::tensor::{check_shape_eq, check_tensor, zeros, Tensor, TensorRef};

/// A transform family that maps a parameter vector per sample to a 2 x 3 affine matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AffineFamily {
    /// `[tx, ty]` -> `[[1, 0, tx], [0, 1, ty]]`.
    Translation,
    /// `[s, tx, ty]` -> `[[s, 0, tx], [0, s, ty]]`.
    Attention,
    /// `[s, angle, tx, ty]` -> `[[s cos a, -s sin a, tx], [s sin a, s cos a, ty]]` (angle in radians).
    Similarity,
    /// `[a11, a12, a13, a21, a22, a23]`, the matrix itself.
    Affine,
}

impl AffineFamily {
    /// Parameters per sample.
    pub fn num_params(self) -> usize {
        match self {
            AffineFamily::Translation => 2,
            AffineFamily::Attention => 3,
            AffineFamily::Similarity => 4,
            AffineFamily::Affine => 6,
        }
    }

    /// The parameters of the identity transform.
    pub fn identity(self) -> Vec<f64> {
        match self {
            AffineFamily::Translation => vec![0.0, 0.0],
            AffineFamily::Attention => vec![1.0, 0.0, 0.0],
            AffineFamily::Similarity => vec![1.0, 0.0, 0.0, 0.0],
            AffineFamily::Affine => vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        }
    }

    fn check<T>(self, arg: &'static str, params: &TensorRef<'_, T>) -> Result<usize> {
        let k = self.num_params();
        check_tensor(arg, params, &[2], &format!("rank 2 (N, {k})"))?;
        check_shape_eq(arg, params.shape, &[params.shape[0], k])?;
        Ok(params.shape[0])
    }

    /// Maps parameters (N, P) to affine matrices (N, 2, 3).
    pub fn to_affine<T: Float>(self, params: TensorRef<'_, T>) -> Result<Tensor<T>> {
        let n = self.check("params", &params)?;
        let k = self.num_params();
        let mut out = zeros::<T>("theta", &[n, 2, 3])?;
        for (p, m) in params.data.chunks_exact(k).zip(out.data.chunks_exact_mut(6)) {
            let (z, o) = (T::ZERO, T::ONE);
            let v: [T; 6] = match self {
                AffineFamily::Translation => [o, z, p[0], z, o, p[1]],
                AffineFamily::Attention => [p[0], z, p[1], z, p[0], p[2]],
                AffineFamily::Similarity => {
                    let (s, c) = (p[1].sin(), p[1].cos());
                    [p[0] * c, -(p[0] * s), p[2], p[0] * s, p[0] * c, p[3]]
                }
                AffineFamily::Affine => [p[0], p[1], p[2], p[3], p[4], p[5]],
            };
            m.copy_from_slice(&v);
        }
        Ok(out)
    }

    /// Backward of [`AffineFamily::to_affine`]: d(loss)/d(params) (N, P) from
    /// d(loss)/d(theta) (N, 2, 3). `params` are the forward's parameters.
    pub fn to_affine_backward<T: Float>(
        self,
        grad_theta: TensorRef<'_, T>,
        params: TensorRef<'_, T>,
    ) -> Result<Tensor<T>> {
        let n = self.check("params", &params)?;
        check_tensor("grad_theta", &grad_theta, &[3], "rank 3 (N, 2, 3)")?;
        check_shape_eq("grad_theta", grad_theta.shape, &[n, 2, 3])?;
        let k = self.num_params();
        let mut out = zeros::<T>("grad_params", &[n, k])?;
        for ((p, g), d) in
            params.data.chunks_exact(k).zip(grad_theta.data.chunks_exact(6)).zip(out.data.chunks_exact_mut(k))
        {
            match self {
                AffineFamily::Translation => {
                    d[0] = g[2];
                    d[1] = g[5];
                }
                AffineFamily::Attention => {
                    d[0] = g[0] + g[4];
                    d[1] = g[2];
                    d[2] = g[5];
                }
                AffineFamily::Similarity => {
                    let (s, c) = (p[1].sin(), p[1].cos());
                    d[0] = g[0] * c - g[1] * s + g[3] * s + g[4] * c;
                    d[1] = p[0] * (-(g[0] * s) - g[1] * c + g[3] * c - g[4] * s);
                    d[2] = g[2];
                    d[3] = g[5];
                }
                AffineFamily::Affine => d.copy_from_slice(g),
            }
        }
        Ok(out)
    }
}
