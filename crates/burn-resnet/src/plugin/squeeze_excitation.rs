//! Squeeze-and-excitation channel attention (timm's `SEModule`).

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::{Device, Tensor};

/// Squeeze-and-excitation (Hu et al. 2018), as timm's `SEModule` without its optional norm:
/// global average pool → 1x1 conv (reduce, bias) → ReLU → 1x1 conv (expand, bias) → sigmoid,
/// which scales each channel of the input.
#[derive(Module, Debug)]
pub struct SqueezeExcitation {
    /// Reduce conv: `channels → reduced`.
    pub fc1: Conv2d,
    /// Expand conv: `reduced → channels`.
    pub fc2: Conv2d,
}

/// Shape of a [`SqueezeExcitation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqueezeExcitationConfig {
    /// Input (and output) channels.
    pub channels: usize,
    /// Channels of the squeezed representation (timm: `make_divisible(channels / 16, 8)`).
    pub reduced: usize,
}

impl SqueezeExcitationConfig {
    /// timm's default: `reduced = make_divisible(channels / 16, 8)`.
    pub fn new(channels: usize) -> Self {
        Self {
            channels,
            reduced: make_divisible(channels as f64 / 16.0, 8),
        }
    }

    /// Build the module (PyTorch's default conv init).
    pub fn init(&self, device: &Device) -> SqueezeExcitation {
        SqueezeExcitation {
            fc1: Conv2dConfig::new([self.channels, self.reduced], [1, 1]).init(device),
            fc2: Conv2dConfig::new([self.reduced, self.channels], [1, 1]).init(device),
        }
    }
}

impl SqueezeExcitation {
    /// Scale each channel of `x` by its excitation.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [batch, channels, _, _] = x.dims();
        let squeezed = x.clone().mean_dim(3).mean_dim(2);
        let excitation = sigmoid(self.fc2.forward(relu(self.fc1.forward(squeezed))));
        x * excitation.reshape([batch, channels, 1, 1])
    }
}

/// timm's `make_divisible`: round to the nearest multiple of `divisor`, at least `divisor`,
/// and never more than 10% below `value`.
pub fn make_divisible(value: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    let rounded = (((value + d / 2.0) / d).floor() * d).max(d);
    let rounded = if rounded < 0.9 * value {
        rounded + d
    } else {
        rounded
    };
    rounded as usize
}
