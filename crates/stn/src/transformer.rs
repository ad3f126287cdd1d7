//! The spatial transformer module: localization net + transform family + sampler.

use std::path::Path;

use burn::config::Config;
use burn::module::{Module, ModuleVisitor, Param, ParamGroup};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use stn_kernels::{Interpolation, KernelError, Padding, SampleOptions};

use crate::error::{Result, StnError};
use crate::localization::{LocalizationNet, LocalizationNetConfig};
use crate::ops;
use crate::persist;
use crate::transform::Transform;

/// Interpolation of the sampler (serializable mirror of [`Interpolation`]).
#[derive(Config, Debug, PartialEq, Copy)]
pub enum InterpolationMode {
    /// Nearest pixel (no gradient to the parameters).
    Nearest,
    /// Bilinear (trilinear for volumes).
    Bilinear,
    /// Bicubic (2-D only).
    Bicubic,
}

/// Padding of the sampler (serializable mirror of [`Padding`]).
#[derive(Config, Debug, PartialEq, Copy)]
pub enum PaddingMode {
    /// Zeros outside the input.
    Zeros,
    /// The nearest border pixel.
    Border,
    /// The input mirrored at its borders.
    Reflection,
}

impl From<InterpolationMode> for Interpolation {
    fn from(m: InterpolationMode) -> Self {
        match m {
            InterpolationMode::Nearest => Interpolation::Nearest,
            InterpolationMode::Bilinear => Interpolation::Bilinear,
            InterpolationMode::Bicubic => Interpolation::Bicubic,
        }
    }
}

impl From<PaddingMode> for Padding {
    fn from(p: PaddingMode) -> Self {
        match p {
            PaddingMode::Zeros => Padding::Zeros,
            PaddingMode::Border => Padding::Border,
            PaddingMode::Reflection => Padding::Reflection,
        }
    }
}

/// Configuration of a [`SpatialTransformer`].
///
/// # Keeping training stable
///
/// A transformer whose theta runs away (the output zooms off the image and goes blank, and
/// the loss stops falling) usually learns too fast in its localization net. Two knobs:
///
/// - `loc_grad_scale` (default 1): multiplies the localization net's gradients, applied by
///   [`SpatialTransformer::scale_grads`] between `backward` and the optimizer step. With SGD this
///   is the paper's smaller learning rate for the localization net. Adam normalizes gradient
///   scale away, so with Adam give the localization net its own learning rate instead:
///   [`SpatialTransformer::localization_params`] is the parameter group for Burn's
///   `ModuleLrScheduler::with_group` (or `ModuleOptimizer::with_group`).
/// - `identity_penalty` (default 0): adds `identity_penalty * mean((theta - identity)^2)` to the
///   loss through [`StnOutput::penalty`], pulling theta toward the identity transform.
///
/// The regression layer starts at the identity (zero weights, identity bias) either way.
#[derive(Config, Debug)]
pub struct SpatialTransformerConfig {
    /// The localization network.
    pub localization: LocalizationNetConfig,
    /// The transform family.
    pub transform: Transform,
    /// Spatial size of the output, `[H_out, W_out]` (`[D_out, H_out, W_out]` for `Affine3d`).
    pub out_size: Vec<usize>,
    /// Sampler interpolation.
    #[config(default = "InterpolationMode::Bilinear")]
    pub mode: InterpolationMode,
    /// Sampler padding.
    #[config(default = "PaddingMode::Zeros")]
    pub padding: PaddingMode,
    /// Corner alignment of normalized coordinates (PyTorch's `align_corners`).
    #[config(default = false)]
    pub align_corners: bool,
    /// Multiplier of the localization net's gradients (see the type's docs).
    #[config(default = 1.0)]
    pub loc_grad_scale: f64,
    /// Weight of the pull of theta toward the identity (see the type's docs).
    #[config(default = 0.0)]
    pub identity_penalty: f64,
}

/// A spatial transformer: the localization net regresses theta from the input, the transform
/// family turns theta into sampling coordinates, and the sampler reads the input there.
/// Built by [`SpatialTransformerConfig::init`].
#[derive(Module, Debug)]
pub struct SpatialTransformer {
    /// The localization network.
    pub localization: LocalizationNet,
    #[module(skip)]
    config: SpatialTransformerConfig,
    #[module(skip)]
    identity: Vec<f64>,
}

/// What a transformer returns.
#[derive(Debug, Clone)]
pub struct StnOutput<const D: usize> {
    /// The warped input, (N, C, out_size...).
    pub output: Tensor<D>,
    /// The transformation parameters per sample, (N, P).
    pub theta: Tensor<2>,
    /// `identity_penalty * mean((theta - identity)^2)`, shape `[1]`; zero when the weight is 0.
    /// Add it to the loss.
    pub penalty: Tensor<1>,
}

impl SpatialTransformerConfig {
    /// Checks the configuration without building anything.
    pub fn validate(&self) -> Result<()> {
        self.transform.validate(&self.out_size)?;
        self.localization.flat_features()?;
        let d = self.transform.spatial_dims();
        if d == 3 && !self.localization.conv.is_empty() {
            return Err(StnError::Config {
                field: "localization.conv",
                message: "a 3-D transformer needs an FC-only localization net (empty conv)".into(),
            });
        }
        if self.localization.input_size.len() != d {
            return Err(StnError::Config {
                field: "localization.input_size",
                message: format!(
                    "{:?} needs {d} sizes, got {:?}",
                    self.transform, self.localization.input_size
                ),
            });
        }
        if d == 3 && self.mode == InterpolationMode::Bicubic {
            return Err(StnError::Config { field: "mode", message: "bicubic is 2-D only".into() });
        }
        if !self.loc_grad_scale.is_finite() || self.loc_grad_scale < 0.0 {
            return Err(StnError::Config {
                field: "loc_grad_scale",
                message: format!("must be finite and >= 0, got {}", self.loc_grad_scale),
            });
        }
        if !self.identity_penalty.is_finite() || self.identity_penalty < 0.0 {
            return Err(StnError::Config {
                field: "identity_penalty",
                message: format!("must be finite and >= 0, got {}", self.identity_penalty),
            });
        }
        Ok(())
    }

    /// The sampler options.
    pub fn sample_options(&self) -> SampleOptions {
        SampleOptions::new(self.mode.into(), self.padding.into(), self.align_corners)
    }

    /// Builds the transformer on `device`, its localization net starting at the identity.
    pub fn init(&self, device: &Device) -> Result<SpatialTransformer> {
        self.validate()?;
        let identity = self.transform.identity(&self.out_size, self.align_corners)?;
        let localization = self.localization.init(&identity, device)?;
        Ok(SpatialTransformer { localization, config: self.clone(), identity })
    }
}

impl SpatialTransformer {
    /// The configuration it was built from.
    pub fn config(&self) -> &SpatialTransformerConfig {
        &self.config
    }

    /// The transform family.
    pub fn transform(&self) -> Transform {
        self.config.transform
    }

    /// Spatial output size.
    pub fn out_size(&self) -> &[usize] {
        &self.config.out_size
    }

    /// The identity parameters of its family.
    pub fn identity(&self) -> &[f64] {
        &self.identity
    }

    /// The sampler options.
    pub fn sample_options(&self) -> SampleOptions {
        self.config.sample_options()
    }

    /// Checks an input: rank (4, or 5 for `Affine3d`) and channels.
    fn check_input<const D: usize>(&self, input: &Tensor<D>) -> Result<()> {
        let d = self.config.transform.spatial_dims();
        let dims = input.dims();
        if D != d + 2 {
            return Err(KernelError::Rank {
                arg: "input",
                expected: format!("rank {} for {:?}", d + 2, self.config.transform),
                got: D,
                shape: dims.to_vec(),
            }
            .into());
        }
        let c = self.config.localization.in_channels;
        if dims[1] != c {
            return Err(KernelError::Shape {
                arg: "input",
                expected: format!("{c} channels (the localization net's in_channels)"),
                got: dims.to_vec(),
            }
            .into());
        }
        ops::check_sizes("input", &dims, input.dtype().size())?;
        Ok(())
    }

    /// Theta (N, P) for `input`. An input whose size differs from the localization net's is
    /// resampled to it first (bilinear, as `F.interpolate(..., align_corners=False)`); the
    /// warp itself always reads the full-size input.
    pub fn localize<const D: usize>(&self, input: Tensor<D>) -> Result<Tensor<2>> {
        self.check_input(&input)?;
        let dims = input.dims();
        let want = &self.config.localization.input_size;
        let x = if &dims[2..] == want.as_slice() {
            input
        } else {
            let n = dims[0];
            let d = D - 2;
            let mut id = Vec::with_capacity(n * d * (d + 1));
            for _ in 0..n {
                for r in 0..d {
                    for c in 0..=d {
                        id.push(if r == c { 1.0 } else { 0.0 });
                    }
                }
            }
            let theta =
                Tensor::<3>::from_data(TensorData::new(id, [n, d, d + 1]), (&input.device(), input.dtype()));
            let o = SampleOptions::new(Interpolation::Bilinear, Padding::Border, false);
            ops::affine_sample(input, theta, want, o)?
        };
        Ok(self.localization.forward(x))
    }

    /// Warps `input` with given parameters `theta` (N, P) (no localization).
    pub fn warp<const D: usize>(&self, input: Tensor<D>, theta: Tensor<2>) -> Result<Tensor<D>> {
        self.check_input(&input)?;
        self.config.transform.warp(input, theta, &self.config.out_size, self.sample_options())
    }

    /// The identity penalty of `theta` (see [`StnOutput::penalty`]).
    pub fn penalty(&self, theta: &Tensor<2>) -> Tensor<1> {
        let [n, p] = theta.dims();
        let w = self.config.identity_penalty;
        let opts = (&theta.device(), theta.dtype());
        if w == 0.0 {
            return Tensor::zeros([1], opts);
        }
        let id = Tensor::<1>::from_data(TensorData::new(self.identity.clone(), [p]), opts);
        let diff = theta.clone() - id.unsqueeze::<2>().expand([n, p]);
        crate::repro::mean(diff.powi_scalar(2)).mul_scalar(w)
    }

    /// Localizes, then warps: the output, theta and the identity penalty.
    pub fn try_forward<const D: usize>(&self, input: Tensor<D>) -> Result<StnOutput<D>> {
        let theta = self.localize(input.clone())?;
        let output =
            self.config.transform.warp(input, theta.clone(), &self.config.out_size, self.sample_options())?;
        let penalty = self.penalty(&theta);
        Ok(StnOutput { output, theta, penalty })
    }

    /// [`try_forward`](Self::try_forward) for inputs known to be valid.
    ///
    /// # Panics
    /// On an input of the wrong rank or channel count, with the error's message.
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> StnOutput<D> {
        self.try_forward(input).unwrap_or_else(|e| panic!("SpatialTransformer: {e}"))
    }

    /// The localization net's parameters, as a group for per-group learning rates or
    /// optimizers (`ModuleLrScheduler::with_group`, `ModuleOptimizer::with_group`).
    pub fn localization_params(&self) -> ParamGroup {
        ParamGroup::ids_from_module(self.localization.clone())
    }

    /// Multiplies the localization net's gradients in `grads` by `loc_grad_scale` (call between
    /// `GradientsParams::from_grads` and the optimizer step). A no-op for a scale of 1.
    pub fn scale_grads(&self, grads: GradientsParams) -> GradientsParams {
        scale_grads(&self.localization, grads, self.config.loc_grad_scale)
    }

    /// Saves the transformer with its configuration to one file, atomically (a temporary file
    /// renamed into place): another program reloads it with [`SpatialTransformer::load`].
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        persist::save(self.clone(), &self.config, path.as_ref())
    }

    /// Loads a transformer saved by [`SpatialTransformer::save`] onto `device`.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let (config, record) = persist::load::<SpatialTransformerConfig>(path.as_ref())?;
        let module = config.init(device)?;
        persist::apply(module, record, path.as_ref())
    }
}

/// Multiplies the gradients of `module`'s parameters in `grads` by `factor`.
pub(crate) fn scale_grads<M: Module>(module: &M, mut grads: GradientsParams, factor: f64) -> GradientsParams {
    if factor == 1.0 {
        return grads;
    }
    struct Scale<'a> {
        grads: &'a mut GradientsParams,
        factor: f64,
    }
    impl ModuleVisitor for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.remove::<D>(p.id) {
                self.grads.register::<D>(p.id, g.mul_scalar(self.factor));
            }
        }
    }
    module.visit(&mut Scale { grads: &mut grads, factor });
    grads
}
