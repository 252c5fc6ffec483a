//! The non-local block (Wang et al. 2018), as mmcv's `NonLocal2d`: every position attends to
//! every (optionally 2x2-max-pooled) position through 1x1 `theta`/`phi` embeddings, gathers `g`
//! embeddings with those weights, and adds a 1x1 projection (`conv_out`) of the result to the
//! input. Modes `embedded_gaussian` (default; scaled by `1/√inter` with `use_scale`),
//! `dot_product` (divided by the number of positions) and `gaussian` (on the input itself).

use burn::module::Module;
use burn::nn::Initializer;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::activation::softmax;
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

/// mmcv `mode` (`concatenation` is not built).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NonLocalMode {
    /// Softmax of `theta · phi` (scaled by `1/√inter` with `use_scale`). mmcv's default.
    #[default]
    EmbeddedGaussian,
    /// `theta · phi` divided by the number of attended positions.
    DotProduct,
    /// Softmax of `x · x` (no embeddings for theta and phi).
    Gaussian,
}

/// Shape of a [`NonLocal2d`] (mmcv's arguments, without a norm after `conv_out`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NonLocal2dConfig {
    /// Input (and output) channels.
    pub channels: usize,
    /// mmcv `reduction`: the embeddings have `max(channels / reduction, 1)` channels. Default 2.
    pub reduction: usize,
    /// mmcv `use_scale`. Default true.
    pub use_scale: bool,
    /// mmcv `mode`.
    pub mode: NonLocalMode,
    /// mmcv `sub_sample`: attend to 2x2-max-pooled positions. Default false.
    pub sub_sample: bool,
}

/// mmcv's `NonLocal2d`.
#[derive(Module, Debug)]
pub struct NonLocal2d {
    /// `g`: the gathered embedding.
    pub g: Conv2d,
    /// `theta`: the query embedding (`None` in gaussian mode).
    pub theta: Option<Conv2d>,
    /// `phi`: the key embedding (`None` in gaussian mode).
    pub phi: Option<Conv2d>,
    /// `conv_out`: back to the input's channels, initialised to zero as in mmcv.
    pub conv_out: Conv2d,
    /// The block's settings.
    #[module(skip)]
    pub config: NonLocal2dConfig,
}

impl NonLocal2dConfig {
    /// mmcv's defaults for `channels`.
    pub fn new(channels: usize) -> Self {
        Self {
            channels,
            reduction: 2,
            use_scale: true,
            mode: NonLocalMode::EmbeddedGaussian,
            sub_sample: false,
        }
    }

    /// Channels of the embeddings, `max(channels / reduction, 1)`.
    pub fn inter_channels(&self) -> usize {
        (self.channels / self.reduction.max(1)).max(1)
    }

    /// Build with mmcv's init: embeddings normal(0, 0.01) with zero bias, `conv_out` zero.
    pub fn init(&self, device: &Device) -> NonLocal2d {
        let inter = self.inter_channels();
        let embedding = || {
            Conv2dConfig::new([self.channels, inter], [1, 1])
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: 0.01,
                })
                .init(device)
        };
        let (theta, phi) = match self.mode {
            NonLocalMode::Gaussian => (None, None),
            _ => (Some(embedding()), Some(embedding())),
        };
        let mut block = NonLocal2d {
            g: embedding(),
            theta,
            phi,
            conv_out: Conv2dConfig::new([inter, self.channels], [1, 1])
                .with_initializer(Initializer::Zeros)
                .init(device),
            config: *self,
        };
        let zero_bias =
            |conv: &mut Conv2d| conv.bias = conv.bias.take().map(crate::param_init::zeroed);
        zero_bias(&mut block.g);
        block
            .theta
            .iter_mut()
            .chain(block.phi.iter_mut())
            .for_each(zero_bias);
        block
    }
}

impl NonLocal2d {
    /// `x + conv_out(attention(x))`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [batch, _, height, width] = x.dims();
        let config = &self.config;
        let inter = config.inter_channels();
        let pool = |t: Tensor<4>| {
            if config.sub_sample {
                max_pool2d(t, MaxPoolOptions::new([2, 2]))
            } else {
                t
            }
        };
        // [batch, positions, features] and [batch, features, attended positions].
        let flat = |t: Tensor<4>| {
            let [b, c, h, w] = t.dims();
            t.reshape([b, c, h * w])
        };
        let g = flat(pool(self.g.forward(x.clone()))).swap_dims(1, 2);
        let (theta, phi) = match (&self.theta, &self.phi) {
            (Some(theta), Some(phi)) => (
                flat(theta.forward(x.clone())).swap_dims(1, 2),
                flat(pool(phi.forward(x.clone()))),
            ),
            _ => (flat(x.clone()).swap_dims(1, 2), flat(pool(x.clone()))),
        };
        let features = theta.dims()[2];
        let pairwise = theta.matmul(phi);
        let weights = match config.mode {
            NonLocalMode::EmbeddedGaussian if config.use_scale => {
                softmax(pairwise.div_scalar((features as f64).sqrt()), 2)
            }
            NonLocalMode::EmbeddedGaussian | NonLocalMode::Gaussian => softmax(pairwise, 2),
            NonLocalMode::DotProduct => {
                let attended = pairwise.dims()[2];
                pairwise.div_scalar(attended as f64)
            }
        };
        let y = weights
            .matmul(g)
            .swap_dims(1, 2)
            .reshape([batch, inter, height, width]);
        x + self.conv_out.forward(y)
    }
}
