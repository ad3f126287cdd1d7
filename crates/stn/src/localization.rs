//! The localization network: regresses the transformation parameters from the input.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Dropout, DropoutConfig, Initializer, Linear, LinearConfig, Relu};
use burn::tensor::{Device, Tensor, TensorData};

use crate::error::{Result, StnError};

/// One convolution block of the localization net: `channels` filters of `kernel x kernel`
/// (no padding), then max pooling over `pool x pool` (1: none), then ReLU — the order of the
/// PyTorch spatial-transformer tutorial.
#[derive(Config, Debug, PartialEq)]
pub struct ConvBlockConfig {
    /// Output channels.
    pub channels: usize,
    /// Square kernel size.
    pub kernel: usize,
    /// Max-pool window and stride (1 for no pooling).
    #[config(default = 2)]
    pub pool: usize,
}

/// Configuration of a [`LocalizationNet`]: a conv stack (possibly empty: the FC-only net of
/// ST-FCN) and fully connected hidden layers, then the regression layer that outputs the
/// transform's parameters.
///
/// The regression layer starts at the identity transform (zero weights, identity bias), so an
/// untrained transformer passes its input through; this is what keeps early training stable.
#[derive(Config, Debug, PartialEq)]
pub struct LocalizationNetConfig {
    /// Channels of the input it sees.
    pub in_channels: usize,
    /// Spatial size of the input it sees, `[H, W]` (`[D, H, W]` for a volume with an FC-only
    /// net). A transformer resamples any other input size to this one for the localization net.
    pub input_size: Vec<usize>,
    /// Convolution blocks; empty for a fully connected localization net.
    #[config(default = "Vec::new()")]
    pub conv: Vec<ConvBlockConfig>,
    /// Widths of the hidden fully connected layers (ReLU after each).
    #[config(default = "vec![32]")]
    pub hidden: Vec<usize>,
    /// Dropout probability after each hidden layer (0: none).
    #[config(default = 0.0)]
    pub dropout: f64,
}

/// A localization network (see [`LocalizationNetConfig`]).
#[derive(Module, Debug)]
pub struct LocalizationNet {
    /// Convolutions, one per block.
    pub convs: Vec<Conv2d>,
    /// Max pooling, one per block.
    pub pools: Vec<MaxPool2d>,
    /// Hidden fully connected layers.
    pub hidden: Vec<Linear>,
    /// The regression layer: parameters out, initialized to the identity.
    pub head: Linear,
    dropout: Dropout,
    activation: Relu,
}

fn config_err(field: &'static str, message: String) -> StnError {
    StnError::Config { field, message }
}

impl LocalizationNetConfig {
    /// The tutorial's localization net for `in_channels x 28 x 28` inputs: conv 8 (7x7), pool 2,
    /// conv 10 (5x5), pool 2, FC 32.
    pub fn tutorial(in_channels: usize) -> Self {
        LocalizationNetConfig::new(in_channels, vec![28, 28])
            .with_conv(vec![ConvBlockConfig::new(8, 7), ConvBlockConfig::new(10, 5)])
            .with_hidden(vec![32])
    }

    /// Features after the conv stack (the first FC layer's width), or an error naming the
    /// block that no longer fits.
    pub fn flat_features(&self) -> Result<usize> {
        if self.in_channels == 0 {
            return Err(config_err("localization.in_channels", "must be at least 1".into()));
        }
        if self.input_size.is_empty() || self.input_size.contains(&0) {
            return Err(config_err(
                "localization.input_size",
                format!("needs positive sizes [H, W], got {:?}", self.input_size),
            ));
        }
        if self.conv.is_empty() {
            return self
                .input_size
                .iter()
                .try_fold(self.in_channels, |a, &s| a.checked_mul(s))
                .ok_or_else(|| config_err("localization.input_size", "too large".into()));
        }
        if self.input_size.len() != 2 {
            return Err(config_err(
                "localization.conv",
                format!("a conv stack needs a 2-D input size [H, W], got {:?}", self.input_size),
            ));
        }
        let (mut h, mut w, mut c) = (self.input_size[0], self.input_size[1], self.in_channels);
        for (i, b) in self.conv.iter().enumerate() {
            if b.channels == 0 || b.kernel == 0 || b.pool == 0 {
                return Err(config_err(
                    "localization.conv",
                    format!("block {i}: sizes must be at least 1, got {b:?}"),
                ));
            }
            if b.kernel > h || b.kernel > w {
                return Err(config_err(
                    "localization.conv",
                    format!("block {i}: kernel {} does not fit a {h} x {w} feature map", b.kernel),
                ));
            }
            h = (h - b.kernel + 1) / b.pool;
            w = (w - b.kernel + 1) / b.pool;
            c = b.channels;
            if h == 0 || w == 0 {
                return Err(config_err(
                    "localization.conv",
                    format!("block {i}: pooling by {} leaves nothing", b.pool),
                ));
            }
        }
        Ok(c * h * w)
    }

    /// Builds the net; its regression layer outputs `identity.len()` parameters and starts at
    /// `identity`.
    pub fn init(&self, identity: &[f64], device: &Device) -> Result<LocalizationNet> {
        let mut width = self.flat_features()?;
        if identity.is_empty() {
            return Err(config_err("transform", "has no parameters".into()));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(config_err(
                "localization.dropout",
                format!("must be in [0, 1), got {}", self.dropout),
            ));
        }
        let mut convs = Vec::new();
        let mut pools = Vec::new();
        let mut c = self.in_channels;
        for b in &self.conv {
            convs.push(Conv2dConfig::new([c, b.channels], [b.kernel, b.kernel]).init(device));
            pools.push(MaxPool2dConfig::new([b.pool, b.pool]).with_strides([b.pool, b.pool]).init());
            c = b.channels;
        }
        let mut hidden = Vec::new();
        for (i, &h) in self.hidden.iter().enumerate() {
            if h == 0 {
                return Err(config_err("localization.hidden", format!("layer {i} has width 0")));
            }
            hidden.push(LinearConfig::new(width, h).init(device));
            width = h;
        }
        let mut head =
            LinearConfig::new(width, identity.len()).with_initializer(Initializer::Zeros).init(device);
        let bias = Tensor::<1>::from_data(TensorData::new(identity.to_vec(), [identity.len()]), device);
        head.bias = Some(Param::from_tensor(bias));
        Ok(LocalizationNet {
            convs,
            pools,
            hidden,
            head,
            dropout: DropoutConfig::new(self.dropout).init(),
            activation: Relu::new(),
        })
    }
}

impl LocalizationNet {
    /// Parameters (N, P) from an input of the configured channels and size (rank 4; rank 5
    /// only for an FC-only net). The caller (a transformer) checks the shape.
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> Tensor<2> {
        let dims = input.dims();
        let n = dims[0];
        let mut x: Tensor<2> = if self.convs.is_empty() {
            let f: usize = dims[1..].iter().product();
            input.reshape([n, f])
        } else {
            let mut h: Tensor<4> = input.reshape([dims[0], dims[1], dims[2], dims[3]]);
            for (conv, pool) in self.convs.iter().zip(&self.pools) {
                h = self.activation.forward(crate::conv::pool_forward(pool, crate::conv::forward(conv, h)));
            }
            h.flatten(1, 3)
        };
        for layer in &self.hidden {
            x = self.dropout.forward(self.activation.forward(crate::repro::linear(layer, x)));
        }
        crate::repro::linear(&self.head, x)
    }
}
