//! Classifiers for distorted digits, with or without a spatial transformer in front.
//!
//! | model | transformer | classifier |
//! |---|---|---|
//! | `fcn` | none | FC 128, ReLU, FC 128, ReLU, FC classes |
//! | `cnn` | none | conv 16 (5x5), max-pool 2, ReLU, conv 32 (5x5), max-pool 2, ReLU, FC 64, ReLU, FC classes |
//! | `st-fcn` | FC-only localization (FC 32, ReLU, FC 32, ReLU) | as `fcn`, on the transformer's output |
//! | `st-cnn` | the tutorial's conv localization (conv 8 (7x7), pool 2, ReLU, conv 10 (5x5), pool 2, ReLU, FC 32) | as `cnn`, on the transformer's output |
//! | `tutorial` | the tutorial's localization, affine, output the input size | conv 10 (5x5), pool, ReLU, conv 20 (5x5), channel dropout, pool, ReLU, FC 50, ReLU, dropout, FC 10 |
//! | `tutorial-cnn` | none | the tutorial's classifier |
//!
//! Every model ends in `log_softmax` (train with the negative log-likelihood). The transformer's
//! output is 28 x 28 for every input size (the canvas of RTS is 42 x 42 and of TC 60 x 60: the
//! transformer also crops and zooms), so the classifier is the same for every distortion; the
//! baselines see the whole input.

use burn::config::Config;
use burn::module::{Flag, Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig, Relu};
use burn::tensor::{Device, Distribution, Int, Tensor};
use stn::{ConvBlockConfig, LocalizationNetConfig, SpatialTransformer, SpatialTransformerConfig, Transform};

/// Which model.
#[derive(Config, Debug, PartialEq, Copy)]
pub enum ModelKind {
    /// Fully connected baseline.
    Fcn,
    /// Convolutional baseline.
    Cnn,
    /// A spatial transformer (FC localization) in front of the FCN.
    StFcn,
    /// A spatial transformer (conv localization) in front of the CNN.
    StCnn,
    /// The PyTorch tutorial's ST-CNN, layer for layer.
    Tutorial,
    /// The tutorial's classifier without its transformer (to measure the transformer's cost).
    TutorialCnn,
}

impl ModelKind {
    /// Whether the model has a spatial transformer.
    pub fn has_transformer(&self) -> bool {
        !matches!(self, ModelKind::Fcn | ModelKind::Cnn | ModelKind::TutorialCnn)
    }
}

/// Largest side of a model's input or transformer output ([`ModelConfig::check`]).
pub const MAX_SIDE: usize = 8192;
/// Largest area of a model's input or transformer output, in pixels.
pub const MAX_MODEL_PIXELS: usize = 1 << 22;
/// Most classes a model may have.
pub const MAX_CLASSES: usize = 100_000;

/// Configuration of a [`Classifier`].
#[derive(Config, Debug)]
pub struct ModelConfig {
    /// The model.
    pub kind: ModelKind,
    /// Input size `[H, W]` (one channel).
    pub input_size: [usize; 2],
    /// The transformer's family (ignored by the baselines; the tutorial is affine).
    #[config(default = "Transform::Affine")]
    pub transform: Transform,
    /// The transformer's output size.
    #[config(default = "[28, 28]")]
    pub st_out: [usize; 2],
    /// Number of classes.
    #[config(default = 10)]
    pub classes: usize,
    /// `[mean, std]`: the model sees `(pixel - mean) / std` (the PyTorch tutorial's `[0.1307,
    /// 0.3081]` for its imported weights); None: the pixels as they are, in [0, 1].
    #[config(default = "None")]
    pub normalize: Option<[f64; 2]>,
}

/// Dropout of whole channels (PyTorch's `Dropout2d`): in training, each (sample, channel) plane
/// is zeroed with probability `prob` and the rest scaled by `1 / (1 - prob)`.
#[derive(Module, Debug)]
pub struct ChannelDropout {
    /// Drop probability.
    pub prob: f64,
    /// Whether the layer is in training mode (Burn's `train` / `valid` switch it).
    pub training: Param<Flag>,
}

impl ChannelDropout {
    /// A channel dropout with probability `prob` in [0, 1).
    pub fn new(prob: f64) -> Self {
        ChannelDropout { prob, training: Param::from_bool(true) }
    }

    /// Applies it to (N, C, H, W); the identity outside training (or without autodiff).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        if !self.training.is_enabled() || !x.device().is_autodiff() || self.prob == 0.0 {
            return x;
        }
        let [n, c, h, w] = x.dims();
        let keep = 1.0 - self.prob;
        let mask = Tensor::<4>::random([n, c, 1, 1], Distribution::Bernoulli(keep), (&x.device(), x.dtype()));
        x * mask.expand([n, c, h, w]).mul_scalar(1.0 / keep)
    }
}

/// One conv block of a classifier: conv, optional channel dropout, 2x2 max-pool, ReLU.
#[derive(Module, Debug)]
pub struct ConvBlock {
    conv: Conv2d,
    dropout: Option<ChannelDropout>,
    pool: MaxPool2d,
}

impl ConvBlock {
    fn new(cin: usize, cout: usize, k: usize, dropout: Option<f64>, device: &Device) -> Self {
        ConvBlock {
            conv: Conv2dConfig::new([cin, cout], [k, k]).init(device),
            dropout: dropout.map(ChannelDropout::new),
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut x = stn::conv::forward(&self.conv, x);
        if let Some(d) = &self.dropout {
            x = d.forward(x);
        }
        burn::tensor::activation::relu(stn::conv::pool_forward(&self.pool, x))
    }
}

/// A digit classifier (see the module docs for the architectures).
#[derive(Module, Debug)]
pub struct Classifier {
    /// The spatial transformer in front, if any.
    pub transformer: Option<SpatialTransformer>,
    convs: Vec<ConvBlock>,
    fcs: Vec<Linear>,
    dropout: Dropout,
    activation: Relu,
    #[module(skip)]
    input_size: [usize; 2],
    #[module(skip)]
    normalize: Option<[f32; 2]>,
}

/// What a classifier returns.
#[derive(Debug, Clone)]
pub struct ClassifierOutput {
    /// Log-probabilities (N, classes).
    pub log_probs: Tensor<2>,
    /// The transformer's output (what the classifier saw), if there is a transformer.
    pub warped: Option<Tensor<4>>,
    /// The transformer's parameters (N, P), if there is a transformer.
    pub theta: Option<Tensor<2>>,
    /// The transformer's identity penalty (zero without one), shape `[1]`.
    pub penalty: Option<Tensor<1>>,
}

/// The size after a `k x k` convolution (no padding) and a 2 x 2 max-pool; None when the input
/// is too small for it.
fn conv_out(size: usize, k: usize) -> Option<usize> {
    (size + 1).checked_sub(k).map(|s| s / 2).filter(|&s| s > 0)
}

/// The feature map's size after the two convolution blocks of the `cnn` models, or the error
/// for a map too small for them.
fn conv_stack_out(kind: ModelKind, h: usize, w: usize) -> stn::Result<(usize, usize)> {
    let two = |s: usize| conv_out(s, 5).and_then(|s| conv_out(s, 5));
    match (two(h), two(w)) {
        (Some(fh), Some(fw)) => Ok((fh, fw)),
        _ => Err(stn::StnError::Config {
            field: "input_size",
            message: format!(
                "the {kind:?} model's two 5x5 convolutions and 2x2 pools need images of at least 16 x 16 \
                 (after the transformer, if any); got {h} x {w}"
            ),
        }),
    }
}

impl ModelConfig {
    /// The transformer's configuration, for models that have one.
    pub fn transformer(&self) -> Option<SpatialTransformerConfig> {
        let loc = match self.kind {
            ModelKind::Fcn | ModelKind::Cnn | ModelKind::TutorialCnn => return None,
            ModelKind::StFcn => {
                LocalizationNetConfig::new(1, self.input_size.to_vec()).with_hidden(vec![32, 32])
            }
            ModelKind::StCnn | ModelKind::Tutorial => LocalizationNetConfig::new(1, self.input_size.to_vec())
                .with_conv(vec![ConvBlockConfig::new(8, 7), ConvBlockConfig::new(10, 5)])
                .with_hidden(vec![32]),
        };
        let (t, out) = match self.kind {
            ModelKind::Tutorial => (Transform::Affine, self.input_size.to_vec()),
            _ => (self.transform, self.st_out.to_vec()),
        };
        Some(SpatialTransformerConfig::new(loc, t, out))
    }

    /// Checks the sizes before anything is allocated: a configuration read from a model file
    /// may come from anyone, and one that asks for terabytes of weights must be an error, not
    /// an abort. Input and output sides from 1 to 8192, at most 4 megapixels each (the FCN's
    /// first layer has 128 weights per pixel), 1 to 100,000 classes.
    pub fn check(&self) -> stn::Result<()> {
        let bad = |field: &'static str, message: String| Err(stn::StnError::Config { field, message });
        for (field, [h, w]) in [("input_size", self.input_size), ("st_out", self.st_out)] {
            if !(1..=MAX_SIDE).contains(&h) || !(1..=MAX_SIDE).contains(&w) || h * w > MAX_MODEL_PIXELS {
                return bad(
                    field,
                    format!("{h} x {w}: each side must be from 1 to {MAX_SIDE} and the area at most {MAX_MODEL_PIXELS} pixels"),
                );
            }
        }
        if !(1..=MAX_CLASSES).contains(&self.classes) {
            return bad("classes", format!("{}: must be from 1 to {MAX_CLASSES}", self.classes));
        }
        if let Some([mean, std]) = self.normalize {
            let (m, s) = (mean as f32, std as f32);
            if !m.is_finite() || !s.is_finite() || s <= 0.0 || (1.0 / s).is_infinite() {
                return bad(
                    "normalize",
                    format!("[{mean}, {std}]: the mean must be finite and the std finite and above 0"),
                );
            }
        }
        Ok(())
    }

    /// Builds the model.
    pub fn init(&self, device: &Device) -> stn::Result<Classifier> {
        self.check()?;
        let transformer = self.transformer().map(|c| c.init(device)).transpose()?;
        let [h, w] = match &transformer {
            Some(t) => [t.out_size()[0], t.out_size()[1]],
            None => self.input_size,
        };
        let classes = self.classes;
        let (convs, fcs, dropout) = match self.kind {
            ModelKind::Fcn | ModelKind::StFcn => {
                let fcs = vec![
                    LinearConfig::new(h * w, 128).init(device),
                    LinearConfig::new(128, 128).init(device),
                    LinearConfig::new(128, classes).init(device),
                ];
                (Vec::new(), fcs, 0.0)
            }
            ModelKind::Cnn | ModelKind::StCnn => {
                let (fh, fw) = conv_stack_out(self.kind, h, w)?;
                let convs =
                    vec![ConvBlock::new(1, 16, 5, None, device), ConvBlock::new(16, 32, 5, None, device)];
                let fcs = vec![
                    LinearConfig::new(32 * fh * fw, 64).init(device),
                    LinearConfig::new(64, classes).init(device),
                ];
                (convs, fcs, 0.0)
            }
            ModelKind::Tutorial | ModelKind::TutorialCnn => {
                let (fh, fw) = conv_stack_out(self.kind, h, w)?;
                let convs = vec![
                    ConvBlock::new(1, 10, 5, None, device),
                    ConvBlock::new(10, 20, 5, Some(0.5), device),
                ];
                let fcs = vec![
                    LinearConfig::new(20 * fh * fw, 50).init(device),
                    LinearConfig::new(50, classes).init(device),
                ];
                (convs, fcs, 0.5)
            }
        };
        Ok(Classifier {
            transformer,
            convs,
            fcs,
            dropout: DropoutConfig::new(dropout).init(),
            activation: Relu::new(),
            input_size: self.input_size,
            normalize: self.normalize.map(|[m, s]| [m as f32, s as f32]),
        })
    }
}

impl Classifier {
    /// `[mean, std]` of the input's normalization (see [`ModelConfig::normalize`]).
    pub fn normalization(&self) -> Option<[f32; 2]> {
        self.normalize
    }

    /// Classes the classifier tells apart (its last layer's outputs).
    pub fn classes(&self) -> usize {
        self.fcs.last().map_or(0, |fc| fc.weight.dims()[1])
    }

    /// The same classifier without dropout (both kinds), so a training step is a function of
    /// the data alone: for comparing devices or runs step by step.
    pub fn without_dropout(mut self) -> Self {
        self.dropout = DropoutConfig::new(0.0).init();
        for c in &mut self.convs {
            c.dropout = None;
        }
        self
    }

    /// Classifies a batch (N, 1, H, W).
    pub fn try_forward(&self, input: Tensor<4>) -> stn::Result<ClassifierOutput> {
        let [n, c, h, w] = input.dims();
        // A transformer takes any size (it resamples); a baseline's first FC fixes its size.
        if c != 1 || n == 0 || (self.transformer.is_none() && [h, w] != self.input_size) {
            let [eh, ew] = self.input_size;
            return Err(stn_kernels::KernelError::Shape {
                arg: "input",
                expected: format!("(N >= 1, 1, {eh}, {ew})"),
                got: vec![n, c, h, w],
            }
            .into());
        }
        let input = match self.normalize {
            Some([mean, std]) => input.sub_scalar(mean).div_scalar(std),
            None => input,
        };
        let (x, warped, theta, penalty) = match &self.transformer {
            Some(t) => {
                let o = t.try_forward(input)?;
                (o.output.clone(), Some(o.output), Some(o.theta), Some(o.penalty))
            }
            None => (input, None, None, None),
        };
        let mut x = x;
        for c in &self.convs {
            x = c.forward(x);
        }
        let n = x.dims()[0];
        let mut f: Tensor<2> = x.reshape([n as i32, -1]);
        let last = self.fcs.len() - 1;
        for (i, fc) in self.fcs.iter().enumerate() {
            f = stn::repro::linear(fc, f);
            if i < last {
                f = self.activation.forward(f);
                if i == last - 1 {
                    f = self.dropout.forward(f);
                }
            }
        }
        Ok(ClassifierOutput { log_probs: stn::repro::log_softmax(f), warped, theta, penalty })
    }

    /// [`try_forward`](Self::try_forward) for valid inputs.
    ///
    /// # Panics
    /// On an input of the wrong shape, with the error's message.
    pub fn forward(&self, input: Tensor<4>) -> ClassifierOutput {
        self.try_forward(input).unwrap_or_else(|e| panic!("Classifier: {e}"))
    }
}

/// The mean negative log-likelihood of `targets` (N) under `log_probs` (N, classes).
pub fn nll_loss(log_probs: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    stn::repro::mean(log_probs.gather(1, targets.unsqueeze_dim::<2>(1))).neg()
}
