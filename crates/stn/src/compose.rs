//! Several transformers: in parallel (outputs concatenated on channels, as the paper's
//! bird-classification and MNIST-addition models) and in series with composition (matrix
//! families multiply, and the original input is sampled once per stage: the
//! inverse-compositional scheme of IC-STN, Lin & Lucey 2017).

use std::path::Path;

use burn::config::Config;
use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor};

use crate::error::{Result, StnError};
use crate::persist;
use crate::transform::{warp_matrix, Transform};
use crate::transformer::{SpatialTransformer, SpatialTransformerConfig};

/// Configuration of [`ParallelTransformers`]: every branch sees the same input; all must have
/// the same output size.
#[derive(Config, Debug)]
pub struct ParallelTransformersConfig {
    /// One transformer per branch.
    pub branches: Vec<SpatialTransformerConfig>,
}

/// Transformers side by side; their outputs are concatenated on the channel axis.
#[derive(Module, Debug)]
pub struct ParallelTransformers {
    /// The branches.
    pub branches: Vec<SpatialTransformer>,
    #[module(skip)]
    config: ParallelTransformersConfig,
}

/// What several transformers return.
#[derive(Debug, Clone)]
pub struct MultiOutput<const D: usize> {
    /// Parallel: the branch outputs concatenated on channels (N, B * C, out...). Series: the
    /// last stage's output.
    pub output: Tensor<D>,
    /// Theta of each branch or stage.
    pub thetas: Vec<Tensor<2>>,
    /// The sum of the transformers' identity penalties.
    pub penalty: Tensor<1>,
}

impl ParallelTransformersConfig {
    /// Builds the branches.
    pub fn init(&self, device: &Device) -> Result<ParallelTransformers> {
        let first = self.branches.first().ok_or_else(|| StnError::Config {
            field: "branches",
            message: "needs at least one transformer".into(),
        })?;
        if let Some((i, b)) = self.branches.iter().enumerate().find(|(_, b)| b.out_size != first.out_size) {
            return Err(StnError::Config {
                field: "branches",
                message: format!(
                    "branch {i} has out_size {:?}, branch 0 {:?}; outputs must match to be concatenated",
                    b.out_size, first.out_size
                ),
            });
        }
        let branches = self.branches.iter().map(|b| b.init(device)).collect::<Result<Vec<_>>>()?;
        Ok(ParallelTransformers { branches, config: self.clone() })
    }
}

impl ParallelTransformers {
    /// Runs every branch on `input`.
    pub fn try_forward<const D: usize>(&self, input: Tensor<D>) -> Result<MultiOutput<D>> {
        let mut outputs = Vec::with_capacity(self.branches.len());
        let mut thetas = Vec::with_capacity(self.branches.len());
        let mut penalty: Option<Tensor<1>> = None;
        for b in &self.branches {
            let o = b.try_forward(input.clone())?;
            outputs.push(o.output);
            thetas.push(o.theta);
            penalty = Some(match penalty {
                Some(p) => p + o.penalty,
                None => o.penalty,
            });
        }
        Ok(MultiOutput {
            output: Tensor::cat(outputs, 1),
            thetas,
            penalty: penalty.expect("at least one branch"),
        })
    }

    /// [`try_forward`](Self::try_forward) for valid inputs.
    ///
    /// # Panics
    /// On an invalid input, with the error's message.
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> MultiOutput<D> {
        self.try_forward(input).unwrap_or_else(|e| panic!("ParallelTransformers: {e}"))
    }

    /// Applies each branch's `loc_grad_scale` to its localization net's gradients.
    pub fn scale_grads(&self, grads: GradientsParams) -> GradientsParams {
        self.branches.iter().fold(grads, |g, b| b.scale_grads(g))
    }

    /// Saves the branches with their configuration to one file (atomically).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        persist::save(self.clone(), &self.config, path.as_ref())
    }

    /// Loads what [`ParallelTransformers::save`] wrote.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let (config, record) = persist::load::<ParallelTransformersConfig>(path.as_ref())?;
        persist::apply(config.init(device)?, record, path.as_ref())
    }
}

/// Configuration of [`SeriesTransformers`]: stages of matrix families (translation,
/// attention, similarity, affine, projective; or all `Affine3d`). Stage `i`'s localization net
/// sees stage `i - 1`'s output.
#[derive(Config, Debug)]
pub struct SeriesTransformersConfig {
    /// The stages, first to last.
    pub stages: Vec<SpatialTransformerConfig>,
}

/// Transformers in series with composition: stage `i` predicts a transform of what stage
/// `i - 1` produced, the matrices multiply (`M = M_1 M_2 ... M_i`), and each stage samples the
/// **original** input through the product, so the image is resampled once, never repeatedly.
#[derive(Module, Debug)]
pub struct SeriesTransformers {
    /// The stages.
    pub stages: Vec<SpatialTransformer>,
    #[module(skip)]
    config: SeriesTransformersConfig,
}

/// What a series of transformers returns: the output and the composed matrix.
#[derive(Debug, Clone)]
pub struct SeriesOutput<const D: usize> {
    /// The last stage's output, the original input sampled once through `matrix`.
    pub output: Tensor<D>,
    /// Theta of each stage.
    pub thetas: Vec<Tensor<2>>,
    /// The composed homogeneous matrix (N, 3, 3) or (N, 4, 4), output to input coordinates.
    pub matrix: Tensor<3>,
    /// The sum of the stages' identity penalties.
    pub penalty: Tensor<1>,
}

impl SeriesTransformersConfig {
    /// Builds the stages.
    pub fn init(&self, device: &Device) -> Result<SeriesTransformers> {
        let first = self.stages.first().ok_or_else(|| StnError::Config {
            field: "stages",
            message: "needs at least one transformer".into(),
        })?;
        let d = first.transform.spatial_dims();
        for (i, s) in self.stages.iter().enumerate() {
            if !s.transform.is_matrix() {
                return Err(StnError::Config {
                    field: "stages",
                    message: format!(
                        "stage {i} is {:?}, which does not compose; use a matrix family",
                        s.transform
                    ),
                });
            }
            if s.transform.spatial_dims() != d {
                return Err(StnError::Config {
                    field: "stages",
                    message: format!("stage {i} mixes 2-D and 3-D transforms"),
                });
            }
        }
        let stages = self.stages.iter().map(|s| s.init(device)).collect::<Result<Vec<_>>>()?;
        Ok(SeriesTransformers { stages, config: self.clone() })
    }
}

impl SeriesTransformers {
    /// Runs the stages, composing their matrices and sampling `input` once per stage.
    pub fn try_forward<const D: usize>(&self, input: Tensor<D>) -> Result<SeriesOutput<D>> {
        let mut current = input.clone();
        let mut matrix: Option<Tensor<3>> = None;
        let mut projective = false;
        let mut thetas = Vec::with_capacity(self.stages.len());
        let mut penalty: Option<Tensor<1>> = None;
        for s in &self.stages {
            let theta = s.localize(current)?;
            let m = s.transform().matrix(theta.clone())?;
            matrix = Some(match matrix {
                Some(prev) => prev.matmul(m),
                None => m,
            });
            projective |= s.transform() == Transform::Projective;
            let m = matrix.clone().expect("set above");
            current = warp_matrix(input.clone(), m, projective, s.out_size(), s.sample_options())?;
            let p = s.penalty(&theta);
            penalty = Some(match penalty {
                Some(acc) => acc + p,
                None => p,
            });
            thetas.push(theta);
        }
        Ok(SeriesOutput {
            output: current,
            thetas,
            matrix: matrix.expect("at least one stage"),
            penalty: penalty.expect("at least one stage"),
        })
    }

    /// [`try_forward`](Self::try_forward) for valid inputs.
    ///
    /// # Panics
    /// On an invalid input, with the error's message.
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> SeriesOutput<D> {
        self.try_forward(input).unwrap_or_else(|e| panic!("SeriesTransformers: {e}"))
    }

    /// Applies each stage's `loc_grad_scale` to its localization net's gradients.
    pub fn scale_grads(&self, grads: GradientsParams) -> GradientsParams {
        self.stages.iter().fold(grads, |g, s| s.scale_grads(g))
    }

    /// Saves the stages with their configuration to one file (atomically).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        persist::save(self.clone(), &self.config, path.as_ref())
    }

    /// Loads what [`SeriesTransformers::save`] wrote.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let (config, record) = persist::load::<SeriesTransformersConfig>(path.as_ref())?;
        persist::apply(config.init(device)?, record, path.as_ref())
    }
}
