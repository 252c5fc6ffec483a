//! Plugin hook points of the residual blocks (mmdet `plugins`, positions `after_conv1`,
//! `after_conv2`, `after_conv3`) and the built-in plugins.
//!
//! Every block carries one [`PluginStack`] per position; an empty stack costs nothing. Plugins
//! run after the conv's norm and ReLU, or, after a block's last conv, after its norm and before
//! the residual add. Several plugins at one position run in the order given.
//! Add plugins to a built backbone with [`crate::ResNet::add_plugins`].

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::{Device, Tensor};

/// Where in a block a plugin runs (mmdet `position`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PluginPosition {
    /// After `conv1` → norm → ReLU; input channels: the block's width (`planes` for BasicBlock).
    AfterConv1,
    /// Bottleneck: after `conv2` → norm → ReLU; input channels: the block's width (for ResNeXt,
    /// the grouped width, not `planes`: mmdet #4228). BasicBlock (where mmdet has no plugins,
    /// #6708): after its last conv `conv2` → norm, before the residual add.
    AfterConv2,
    /// After `conv3` → norm, before the residual add; input channels: the block's output
    /// channels. Bottleneck only (a BasicBlock's last conv is `conv2`: use `AfterConv2`).
    AfterConv3,
}

impl PluginPosition {
    /// mmdet's name of the position.
    pub fn name(self) -> &'static str {
        match self {
            PluginPosition::AfterConv1 => "after_conv1",
            PluginPosition::AfterConv2 => "after_conv2",
            PluginPosition::AfterConv3 => "after_conv3",
        }
    }
}

/// The plugins at one position of one block, run in order.
#[derive(Module, Debug, Default)]
pub struct PluginStack {
    /// The plugins, in the order they run.
    pub plugins: Vec<Plugin>,
}

impl PluginStack {
    /// Run every plugin in turn; the identity when empty.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.plugins.iter().fold(x, |x, plugin| plugin.forward(x))
    }

    /// True when no plugin sits here.
    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }
}

/// A plugin: a module that maps a `[batch, channels, h, w]` tensor to one of the same shape.
#[derive(Module, Debug)]
pub enum Plugin {
    /// Squeeze-and-excitation channel attention.
    SqueezeExcitation(SqueezeExcitation),
}

impl Plugin {
    /// Run the plugin.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Plugin::SqueezeExcitation(se) => se.forward(x),
        }
    }
}

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
        Self { channels, reduced: make_divisible(channels as f64 / 16.0, 8) }
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
    let rounded = if rounded < 0.9 * value { rounded + d } else { rounded };
    rounded as usize
}
