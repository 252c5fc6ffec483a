//! ResNeSt's Bottleneck (mmdet `models/backbones/resnest.py`): 1x1 → split-attention 3x3
//! ([`SplitAttentionConv`]) → [3x3 average pool carrying the stride, `avg_down_stride`] → 1x1,
//! expansion 4.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Tensor};

use super::avg_pool3x3;
use super::downsample::shortcut;
use super::{BlockSpec, Downsample, ResidualBlock, SplitAttentionConv, stack_at};
use crate::conv::ConvSpec;
use crate::fold::FoldNorm;
use crate::norm::{Norm, NormConfig, StageMode};
use crate::plugin::{PluginPosition, PluginStack};
use crate::unit::{conv_norm_act, last_unit};

/// The convs of ResNeSt's split-attention Bottleneck (mmdet `resnest.Bottleneck`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResNeStConvs {
    /// 1x1 to `width` (stride under `style = "caffe"`).
    pub conv1: ConvSpec,
    /// The split-attention 3x3 conv: `width` to `width · radix` in `groups · radix` groups.
    pub split: ConvSpec,
    /// The attention's 1x1 squeeze, `width` to `inter_channels` in `groups` groups, with a bias.
    pub fc1: ConvSpec,
    /// The attention's 1x1 expand, `inter_channels` to `width · radix` in `groups` groups, with
    /// a bias.
    pub fc2: ConvSpec,
    /// 1x1 to the output channels.
    pub conv3: ConvSpec,
    /// The stride of the 3x3 average pool after the attention (`avd_layer`), when
    /// `avg_down_stride` moves the stride there.
    pub pool_stride: Option<usize>,
    /// mmdet `radix`: the parts the split conv makes.
    pub radix: usize,
}

impl BlockSpec {
    /// ResNeSt's Bottleneck: `style` puts the stride on `conv1` (caffe) or on the 3x3 conv
    /// (pytorch), where `avg_down_stride` moves it to an average pool after the attention.
    ///
    /// # Panics
    /// On a spec without `attention` (not a ResNeSt block).
    pub fn resnest_convs(&self) -> ResNeStConvs {
        let attention = self
            .attention
            .expect("a ResNeSt block spec has its split attention");
        let [conv1, conv2, conv3] = self.bottleneck_convs();
        let pool_stride = (attention.avg_down_stride && conv2.stride > 1).then_some(conv2.stride);
        let parts = self.width * attention.radix;
        ResNeStConvs {
            conv1,
            split: ConvSpec {
                out_channels: parts,
                groups: self.groups * attention.radix,
                stride: if pool_stride.is_some() {
                    1
                } else {
                    conv2.stride
                },
                ..conv2
            },
            fc1: ConvSpec::new(self.width, attention.inter_channels, 1).groups(self.groups),
            fc2: ConvSpec::new(attention.inter_channels, parts, 1).groups(self.groups),
            conv3,
            pool_stride,
            radix: attention.radix,
        }
    }
}

/// `conv1` → norm → ReLU → `conv2` (split attention) → [avg pool] → `conv3` → norm, plus the
/// shortcut, then ReLU. Checkpoint names are mmdet's (and timm's): `conv1`/`bn1`,
/// `conv2.{conv, bn0, fc1, bn1, fc2}`, `conv3`/`bn3`, `downsample.1/2`.
#[derive(Module, Debug)]
pub struct ResNeStBottleneck {
    /// 1x1 reduce conv to `width` (stride under `style = "caffe"`).
    pub conv1: Conv2d,
    /// Norm after `conv1`.
    pub norm1: Norm,
    /// The split-attention conv (stride under `style = "pytorch"` unless `avg_down_stride`
    /// moves it to the pool).
    pub conv2: SplitAttentionConv,
    /// 1x1 expand conv.
    pub conv3: Conv2d,
    /// Norm after `conv3` (zero-initialised under `zero_init_residual`).
    pub norm3: Norm,
    /// Shortcut projection (average-pool form: ResNeSt is a ResNetV1d).
    pub downsample: Option<Downsample>,
    /// Plugins after `conv1` → norm → ReLU (`width` channels).
    pub after_conv1: PluginStack,
    /// Plugins after the split attention and its pool (`width` channels).
    pub after_conv2: PluginStack,
    /// Plugins after `conv3` → norm, before the residual add (output channels).
    pub after_conv3: PluginStack,
    /// mmdet `avd_layer`: `AvgPool2d(3, stride, padding 1)` (padding counted) after the split
    /// attention, where `avg_down_stride` moved the block's stride.
    pub pool_stride: Option<usize>,
}

impl ResNeStBottleneck {
    /// Build from a block spec of kind `ResNeStBottleneck`.
    pub fn init(
        spec: &BlockSpec,
        zero_init_residual: bool,
        norm: &NormConfig,
        device: &Device,
    ) -> Self {
        let convs = spec.resnest_convs();
        let last_gamma = if zero_init_residual { 0.0 } else { 1.0 };
        Self {
            conv1: convs.conv1.init(device),
            norm1: norm.init(convs.conv1.out_channels, 1.0, device),
            conv2: SplitAttentionConv::init(&convs, spec.dcn.as_ref(), norm, device),
            conv3: convs.conv3.init(device),
            norm3: norm.init(convs.conv3.out_channels, last_gamma, device),
            downsample: spec
                .downsample
                .as_ref()
                .map(|d| Downsample::init(d, norm, device)),
            after_conv1: PluginStack::default(),
            after_conv2: PluginStack::default(),
            after_conv3: PluginStack::default(),
            pool_stride: convs.pool_stride,
        }
    }

    /// Run the block.
    pub fn forward(&self, x: Tensor<4>, mode: StageMode) -> Tensor<4> {
        let identity = shortcut(self.downsample.as_ref(), &x, mode);
        let out =
            self.after_conv1
                .forward(conv_norm_act(&self.conv1, &self.norm1, x, None, true, mode));
        let out = self.conv2.forward(out, mode);
        let out = match self.pool_stride {
            Some(stride) => avg_pool3x3(out, stride),
            None => out,
        };
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
}

impl ResidualBlock for ResNeStBottleneck {
    fn forward(&self, x: Tensor<4>, mode: StageMode) -> Tensor<4> {
        ResNeStBottleneck::forward(self, x, mode)
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
        let mut units: Vec<(&mut dyn FoldNorm, &mut Norm)> =
            vec![(&mut self.conv1, &mut self.norm1)];
        units.extend(self.conv2.units_mut());
        units.push((&mut self.conv3, &mut self.norm3));
        units.extend(self.downsample.as_mut().map(Downsample::unit_mut));
        units
    }
}
