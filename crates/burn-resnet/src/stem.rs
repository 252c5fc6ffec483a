//! The stem: a 7x7 conv (mmdet's default) or a deep stem of three 3x3 convs (`deep_stem`,
//! ResNetV1c/V1d), each followed by norm and ReLU, then a 3x3 stride-2 max-pool.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Tensor};

use crate::config::ResNetSpec;
use crate::conv::{ConvSpec, checked_output_size};
use crate::norm::{Norm, StageMode};
use crate::ops::max_pool2d;
use crate::unit::conv_norm_act;

/// The convolutions of the stem for a validated config, in order.
///
/// - basic: `conv1` 7x7 stride 2 padding 3, `in_channels → stem_channels`;
/// - deep: 3x3 convs with padding 1 and strides 2, 1, 1, channels
///   `in → stem/2 → stem/2 → stem`.
pub fn stem_convs(spec: &ResNetSpec) -> Vec<ConvSpec> {
    let (input, stem) = (spec.config.in_channels, spec.stem_channels);
    if spec.config.deep_stem {
        let half = stem / 2;
        vec![
            ConvSpec::new(input, half, 3).stride(2).padding(1),
            ConvSpec::new(half, half, 3).padding(1),
            ConvSpec::new(half, stem, 3).padding(1),
        ]
    } else {
        vec![ConvSpec::new(input, stem, 7).stride(2).padding(3)]
    }
}

/// Kernel, stride and padding of the max-pool after the stem (mmdet `nn.MaxPool2d(3, 2, 1)`).
pub const STEM_POOL: (usize, usize, usize) = (3, 2, 1);

/// Side length after the stem's max-pool (`None` only where `input + 2` overflows).
pub fn stem_pool_output_size(input: usize) -> Option<usize> {
    let (kernel, stride, padding) = STEM_POOL;
    checked_output_size(input, kernel, stride, padding, 1)
}

/// A convolution followed by its norm (and, in the stem, a ReLU).
#[derive(Module, Debug)]
pub struct ConvNorm {
    /// The convolution.
    pub conv: Conv2d,
    /// Its norm.
    pub norm: Norm,
}

/// The stem module: every conv → norm → ReLU of [`stem_convs`].
#[derive(Module, Debug)]
pub struct Stem {
    /// One entry per conv: mmdet's `conv1`/`bn1`, or `stem.0/1`, `stem.3/4`, `stem.6/7`.
    pub layers: Vec<ConvNorm>,
}

impl Stem {
    /// Build the stem of a validated config.
    pub fn init(spec: &ResNetSpec, device: &Device) -> Self {
        let layers = stem_convs(spec)
            .iter()
            .map(|conv| ConvNorm {
                conv: conv.init(device),
                norm: spec.config.norm_cfg.init(conv.out_channels, 1.0, device),
            })
            .collect();
        Self { layers }
    }

    /// The stem's activation (C1, stride 2) before the max-pool.
    pub fn forward(&self, mut x: Tensor<4>, mode: StageMode) -> Tensor<4> {
        for layer in &self.layers {
            x = conv_norm_act(&layer.conv, &layer.norm, x, None, true, mode);
        }
        x
    }

    /// The max-pool that follows the stem.
    pub fn pool(x: Tensor<4>) -> Tensor<4> {
        let (kernel, stride, padding) = STEM_POOL;
        max_pool2d(x, kernel, stride, padding)
    }
}
