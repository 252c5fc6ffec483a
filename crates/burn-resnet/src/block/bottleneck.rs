//! mmdet's `Bottleneck` (and ResNeXt's): 1x1 → 3x3 → 1x1, expansion 4.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Tensor};

use super::downsample::shortcut;
use super::{BlockSpec, Downsample, ResidualBlock, stack_at};
use crate::dcn::SpatialConv;
use crate::fold::FoldNorm;
use crate::norm::{Norm, NormConfig, StageMode};
use crate::plugin::{PluginPosition, PluginStack};
use crate::unit::{conv_norm_act, last_unit, spatial_conv_norm_relu};

/// `conv1` → norm → ReLU → `conv2` (3x3, grouped for ResNeXt) → norm → ReLU → `conv3` → norm,
/// plus the shortcut, then ReLU. `style` decides whether `conv1` or `conv2` carries the stride.
#[derive(Module, Debug)]
pub struct Bottleneck {
    /// 1x1 reduce conv (stride under `style = "caffe"`).
    pub conv1: Conv2d,
    /// Norm after `conv1`.
    pub norm1: Norm,
    /// 3x3 conv (stride under `style = "pytorch"`), padding = dilation; deformable in the
    /// stages of `stage_with_dcn`.
    pub conv2: SpatialConv,
    /// Norm after `conv2`.
    pub norm2: Norm,
    /// 1x1 expand conv.
    pub conv3: Conv2d,
    /// Norm after `conv3` (zero-initialised under `zero_init_residual`).
    pub norm3: Norm,
    /// Shortcut projection.
    pub downsample: Option<Downsample>,
    /// Plugins after `conv1` → norm → ReLU (`width` channels).
    pub after_conv1: PluginStack,
    /// Plugins after `conv2` → norm → ReLU (`width` channels).
    pub after_conv2: PluginStack,
    /// Plugins after `conv3` → norm, before the residual add (output channels).
    pub after_conv3: PluginStack,
}

impl Bottleneck {
    /// Build from a block spec of kind `Bottleneck`.
    pub fn init(
        spec: &BlockSpec,
        zero_init_residual: bool,
        norm: &NormConfig,
        device: &Device,
    ) -> Self {
        let [conv1, conv2, conv3] = spec.bottleneck_convs();
        let last_gamma = if zero_init_residual { 0.0 } else { 1.0 };
        Self {
            conv1: conv1.init(device),
            norm1: norm.init(conv1.out_channels, 1.0, device),
            conv2: SpatialConv::init(conv2, spec.dcn.as_ref(), device),
            norm2: norm.init(conv2.out_channels, 1.0, device),
            conv3: conv3.init(device),
            norm3: norm.init(conv3.out_channels, last_gamma, device),
            downsample: spec
                .downsample
                .as_ref()
                .map(|d| Downsample::init(d, norm, device)),
            after_conv1: PluginStack::default(),
            after_conv2: PluginStack::default(),
            after_conv3: PluginStack::default(),
        }
    }

    /// Run the block.
    pub fn forward(&self, x: Tensor<4>, mode: StageMode) -> Tensor<4> {
        if let (true, SpatialConv::Regular(conv2)) = (self.plugins_empty(), &self.conv2) {
            let main = [
                (&self.conv1, &self.norm1),
                (conv2, &self.norm2),
                (&self.conv3, &self.norm3),
            ];
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
        let out = spatial_conv_norm_relu(&self.conv2, &self.norm2, out, mode);
        let out = self.after_conv2.forward(out);
        last_unit(
            &self.conv3,
            &self.norm3,
            &self.after_conv3,
            out,
            identity,
            mode,
        )
    }

    /// Whether no position has plugins.
    fn plugins_empty(&self) -> bool {
        self.after_conv1.is_empty() && self.after_conv2.is_empty() && self.after_conv3.is_empty()
    }
}

impl ResidualBlock for Bottleneck {
    fn forward(&self, x: Tensor<4>, mode: StageMode) -> Tensor<4> {
        Bottleneck::forward(self, x, mode)
    }

    fn plugin_stack_mut(&mut self, position: PluginPosition) -> Option<(&mut PluginStack, usize)> {
        let width = self.conv1.weight.dims()[0];
        let inner = self.conv2.out_channels();
        let out = self.conv3.weight.dims()[0];
        stack_at(
            position,
            [
                (&mut self.after_conv1, width),
                (&mut self.after_conv2, inner),
                (&mut self.after_conv3, out),
            ],
        )
    }

    fn units_mut(&mut self) -> Vec<(&mut dyn FoldNorm, &mut Norm)> {
        let mut units: Vec<(&mut dyn FoldNorm, &mut Norm)> = vec![
            (&mut self.conv1, &mut self.norm1),
            (&mut self.conv2, &mut self.norm2),
            (&mut self.conv3, &mut self.norm3),
        ];
        units.extend(self.downsample.as_mut().map(Downsample::unit_mut));
        units
    }
}
