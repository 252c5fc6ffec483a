//! GCNet's global context block (Cao et al. 2019), as mmcv's `ContextBlock`: a context vector
//! per sample (attention pooling — a 1x1 conv to one channel, softmax over positions, weighted
//! sum — or average pooling), transformed by 1x1 conv → LayerNorm over the channels → ReLU →
//! 1x1 conv, then added to every position (`channel_add`) and/or used as a sigmoid gate
//! (`channel_mul`).

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, PaddingConfig2d};
use burn::tensor::activation::{relu, sigmoid, softmax};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

/// mmcv `pooling_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// Attention pooling (`"att"`, mmcv's default).
    #[default]
    #[serde(rename = "att")]
    Attention,
    /// Global average pooling (`"avg"`).
    #[serde(rename = "avg")]
    Average,
}

/// One of mmcv's `fusion_types`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fusion {
    /// Add the transformed context to every position.
    ChannelAdd,
    /// Scale every position by the sigmoid of the transformed context.
    ChannelMul,
}

/// Shape of a [`ContextBlock`] (mmcv's arguments).
#[derive(Debug, Clone, PartialEq)]
pub struct ContextBlockConfig {
    /// Input (and output) channels.
    pub channels: usize,
    /// mmcv `ratio`: the transform's width is `floor(channels · ratio)`.
    pub ratio: f64,
    /// mmcv `pooling_type`. Default attention.
    pub pooling: Pooling,
    /// mmcv `fusion_types`. Default `[channel_add]`.
    pub fusions: Vec<Fusion>,
}

/// The transform of the context: 1x1 conv → LayerNorm([planes, 1, 1]) → ReLU → 1x1 conv
/// (mmcv's `channel_add_conv` / `channel_mul_conv` `Sequential`: indices 0, 1, 3).
#[derive(Module, Debug)]
pub struct ContextTransform {
    /// `channels → planes` (mmcv index 0).
    pub reduce: Conv2d,
    /// `nn.LayerNorm([planes, 1, 1])` (mmcv index 1).
    pub norm: ChannelLayerNorm,
    /// `planes → channels` (mmcv index 3), initialised to zero as in mmcv.
    pub expand: Conv2d,
}

/// `nn.LayerNorm([planes, 1, 1])` on a `[batch, planes, 1, 1]` context: each sample normalised
/// over its `planes` values (eps 1e-5), then scaled and shifted per channel. Parameters keep
/// PyTorch's `[planes, 1, 1]` shape and names, so checkpoints load as they are.
#[derive(Module, Debug)]
pub struct ChannelLayerNorm {
    /// Scale, `[planes, 1, 1]`, initialised to 1.
    pub weight: Param<Tensor<3>>,
    /// Shift, `[planes, 1, 1]`, initialised to 0.
    pub bias: Param<Tensor<3>>,
}

/// mmcv's `ContextBlock`.
#[derive(Module, Debug)]
pub struct ContextBlock {
    /// Attention pooling's 1x1 conv to one channel; `None` with average pooling.
    pub conv_mask: Option<Conv2d>,
    /// The `channel_add` transform.
    pub channel_add: Option<ContextTransform>,
    /// The `channel_mul` transform.
    pub channel_mul: Option<ContextTransform>,
}

const LAYER_NORM_EPS: f64 = 1e-5;

impl ContextBlockConfig {
    /// mmcv's defaults for `channels` and `ratio`: attention pooling, `channel_add`.
    pub fn new(channels: usize, ratio: f64) -> Self {
        Self {
            channels,
            ratio,
            pooling: Pooling::Attention,
            fusions: vec![Fusion::ChannelAdd],
        }
    }

    /// The transform's width, `floor(channels · ratio)` (mmcv's `int(in_channels * ratio)`).
    pub fn planes(&self) -> usize {
        (self.channels as f64 * self.ratio) as usize
    }

    /// Build with mmcv's init: `conv_mask` Kaiming (fan-in, ReLU gain) with a zero bias, each
    /// transform's last conv zero, the rest PyTorch's defaults, LayerNorm weight 1 and bias 0.
    pub fn init(&self, device: &Device) -> ContextBlock {
        let planes = self.planes();
        let conv = |from: usize, to: usize| {
            Conv2dConfig::new([from, to], [1, 1]).with_padding(PaddingConfig2d::Valid)
        };
        let transform = || ContextTransform {
            reduce: conv(self.channels, planes).init(device),
            norm: ChannelLayerNorm {
                weight: Initializer::Ones.init([planes, 1, 1], device),
                bias: Initializer::Zeros.init([planes, 1, 1], device),
            },
            expand: conv(planes, self.channels)
                .with_initializer(Initializer::Zeros)
                .init(device),
        };
        let kaiming = Initializer::KaimingNormal {
            gain: 2f64.sqrt(),
            fan_out_only: false,
        };
        // mmcv's `kaiming_init` sets the bias to 0 (Burn's initializer would draw it).
        let conv_mask = || {
            let mut conv_mask = conv(self.channels, 1)
                .with_initializer(kaiming)
                .init(device);
            conv_mask.bias = conv_mask.bias.take().map(crate::param_init::zeroed);
            conv_mask
        };
        ContextBlock {
            conv_mask: (self.pooling == Pooling::Attention).then(conv_mask),
            channel_add: self.fusions.contains(&Fusion::ChannelAdd).then(transform),
            channel_mul: self.fusions.contains(&Fusion::ChannelMul).then(transform),
        }
    }
}

impl ContextTransform {
    /// `[batch, channels, 1, 1]` context → `[batch, channels, 1, 1]`.
    fn forward(&self, context: Tensor<4>) -> Tensor<4> {
        let reduced = self.reduce.forward(context);
        let [batch, planes, _, _] = reduced.dims();
        let flat = reduced.reshape([batch, planes]);
        let mean = flat.clone().mean_dim(1);
        let centered = flat - mean;
        let variance = centered.clone().square().mean_dim(1);
        let normalized = centered / variance.add_scalar(LAYER_NORM_EPS).sqrt();
        let affine = normalized * self.norm.weight.val().reshape([1, planes])
            + self.norm.bias.val().reshape([1, planes]);
        self.expand
            .forward(relu(affine).reshape([batch, planes, 1, 1]))
    }
}

impl ContextBlock {
    /// The context vector of each sample, `[batch, channels, 1, 1]`.
    fn context(&self, x: Tensor<4>) -> Tensor<4> {
        let [batch, channels, height, width] = x.dims();
        match &self.conv_mask {
            Some(conv_mask) => {
                let weights = softmax(
                    conv_mask
                        .forward(x.clone())
                        .reshape([batch, height * width, 1]),
                    1,
                );
                x.reshape([batch, channels, height * width])
                    .matmul(weights)
                    .reshape([batch, channels, 1, 1])
            }
            None => x.mean_dim(3).mean_dim(2),
        }
    }

    /// Fuse the context into `x` (multiplicative gate first, then the addition, as mmcv).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let context = self.context(x.clone());
        let mut out = x;
        if let Some(mul) = &self.channel_mul {
            out = out * sigmoid(mul.forward(context.clone()));
        }
        if let Some(add) = &self.channel_add {
            out = out + add.forward(context);
        }
        out
    }
}
