//! mmdet's `BasicBlock`: two 3x3 convs, expansion 1.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Tensor};

use super::downsample::shortcut;
use super::{BlockSpec, Downsample, ResidualBlock};
use crate::fold::FoldNorm;
use crate::norm::{Norm, NormConfig, StageMode};
use crate::plugin::{PluginPosition, PluginStack};
use crate::unit::{conv_norm_act, last_unit};

/// `conv1` (3x3, stride, dilation) → norm → ReLU → `conv2` (3x3) → norm, plus the shortcut,
/// then ReLU.
#[derive(Module, Debug)]
pub struct BasicBlock {
    /// 3x3 conv carrying the block's stride and dilation.
    pub conv1: Conv2d,
    /// Norm after `conv1`.
    pub norm1: Norm,
    /// 3x3 conv, stride 1, padding 1.
    pub conv2: Conv2d,
    /// Norm after `conv2` (zero-initialised under `zero_init_residual`).
    pub norm2: Norm,
    /// Shortcut projection.
    pub downsample: Option<Downsample>,
    /// Plugins after `conv1` → norm → ReLU (`planes` channels).
    pub after_conv1: PluginStack,
    /// Plugins after `conv2` → norm, before the residual add (`planes` channels).
    pub after_conv2: PluginStack,
}

impl BasicBlock {
    /// Build from a block spec of kind `Basic`.
    pub fn init(
        spec: &BlockSpec,
        zero_init_residual: bool,
        norm: &NormConfig,
        device: &Device,
    ) -> Self {
        let [conv1, conv2] = spec.basic_convs();
        let last_gamma = if zero_init_residual { 0.0 } else { 1.0 };
        Self {
            conv1: conv1.init(device),
            norm1: norm.init(conv1.out_channels, 1.0, device),
            conv2: conv2.init(device),
            norm2: norm.init(conv2.out_channels, last_gamma, device),
            downsample: spec
                .downsample
                .as_ref()
                .map(|d| Downsample::init(d, norm, device)),
            after_conv1: PluginStack::default(),
            after_conv2: PluginStack::default(),
        }
    }

    /// Run the block.
    pub fn forward(&self, x: Tensor<4>, mode: StageMode) -> Tensor<4> {
        if self.after_conv1.is_empty() && self.after_conv2.is_empty() {
            let main = [(&self.conv1, &self.norm1), (&self.conv2, &self.norm2)];
            if let Some(out) =
                super::recompute::recomputed_block(&x, &main, self.downsample.as_ref(), mode)
            {
                return out;
            }
        }
        let identity = shortcut(self.downsample.as_ref(), &x, mode);
        let out =
            self.after_conv1
                .forward(conv_norm_act(&self.conv1, &self.norm1, x, None, true, mode));
        last_unit(
            &self.conv2,
            &self.norm2,
            &self.after_conv2,
            out,
            identity,
            mode,
        )
    }
}

impl ResidualBlock for BasicBlock {
    fn forward(&self, x: Tensor<4>, mode: StageMode) -> Tensor<4> {
        BasicBlock::forward(self, x, mode)
    }

    fn plugin_stack_mut(&mut self, position: PluginPosition) -> Option<(&mut PluginStack, usize)> {
        let planes = self.conv1.weight.dims()[0];
        match position {
            PluginPosition::AfterConv1 => Some((&mut self.after_conv1, planes)),
            PluginPosition::AfterConv2 => Some((&mut self.after_conv2, planes)),
            PluginPosition::AfterConv3 => None,
        }
    }

    fn units_mut(&mut self) -> Vec<(&mut dyn FoldNorm, &mut Norm)> {
        let mut units: Vec<(&mut dyn FoldNorm, &mut Norm)> = vec![
            (&mut self.conv1, &mut self.norm1),
            (&mut self.conv2, &mut self.norm2),
        ];
        units.extend(self.downsample.as_mut().map(Downsample::unit_mut));
        units
    }
}
