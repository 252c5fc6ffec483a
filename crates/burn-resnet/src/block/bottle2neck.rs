//! Res2Net's `Bottle2neck` (mmdet `models/backbones/res2net.py`): a 1x1 conv to
//! `width · scales` channels, split into `scales` parts; `scales − 1` 3x3 convs run one per
//! part, each on its part plus the previous conv's output (hierarchical residual-like
//! connections), the last part passes through; then the 1x1 `conv3`. Expansion 4.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Tensor};

use super::avg_pool3x3;
use super::downsample::shortcut;
use super::{BlockSpec, Downsample, ResidualBlock, stack_at};
use crate::arch::StagePool;
use crate::dcn::SpatialConv;
use crate::fold::FoldNorm;
use crate::norm::{Norm, NormConfig, StageMode};
use crate::plugin::{PluginPosition, PluginStack};
use crate::unit::{conv_norm_act, last_unit, spatial_conv_norm_relu};

/// `conv1` → norm → ReLU → split → 3x3 convs (each → norm → ReLU) → concatenate → `conv3` →
/// norm, plus the shortcut, then ReLU. Checkpoint names are mmdet's: `conv1`/`bn1`,
/// `convs.i`/`bns.i`, `conv3`/`bn3`, `downsample.1/2`.
#[derive(Module, Debug)]
pub struct Bottle2neck {
    /// 1x1 conv to `width · scales` channels.
    pub conv1: Conv2d,
    /// Norm after `conv1`.
    pub norm1: Norm,
    /// The `scales − 1` 3x3 split convs (stride, padding = dilation); deformable in the
    /// stages of `stage_with_dcn`.
    pub convs: Vec<SpatialConv>,
    /// The norm after each split conv.
    pub bns: Vec<Norm>,
    /// 1x1 conv from `width · scales` to the output channels.
    pub conv3: Conv2d,
    /// Norm after `conv3` (zero-initialised under `zero_init_residual`).
    pub norm3: Norm,
    /// Shortcut projection (average-pool form).
    pub downsample: Option<Downsample>,
    /// Plugins after `conv1` → norm → ReLU (`width · scales` channels).
    pub after_conv1: PluginStack,
    /// Plugins after the splits are joined again (`width · scales` channels).
    pub after_conv2: PluginStack,
    /// Plugins after `conv3` → norm, before the residual add (output channels).
    pub after_conv3: PluginStack,
    /// Channels of each split.
    pub width: usize,
    /// mmdet `stage_type = 'normal'`: each split conv also reads the previous split conv's
    /// output; false in a stage's first block (timm: in a block that strides or projects its
    /// shortcut).
    pub accumulate: bool,
    /// A stage's strided first block (under `stage_pool = "always"`, timm's first blocks at
    /// any stride): the last split, which has no conv, is average-pooled with this stride
    /// (`AvgPool2d(3, stride, padding 1)`, padding counted) to match the split convs'.
    pub pool_stride: Option<usize>,
}

impl Bottle2neck {
    /// Build from a block spec of kind `Bottle2neck`.
    pub fn init(
        spec: &BlockSpec,
        zero_init_residual: bool,
        norm: &NormConfig,
        device: &Device,
    ) -> Self {
        let (conv1, split, conv3) = spec.bottle2neck_convs();
        let splits = spec.scales - 1;
        let last_gamma = if zero_init_residual { 0.0 } else { 1.0 };
        // mmdet's `stage_type = 'stage'` is a stage's first block; timm's `is_first` a block
        // that strides or has a shortcut projection (the same blocks in every config but one
        // whose first stage neither strides nor changes channels).
        let timm = spec.stage_pool == StagePool::Always;
        let stage_block = match timm {
            true => spec.stride != 1 || spec.downsample.is_some(),
            false => spec.first_in_stage,
        };
        Self {
            conv1: conv1.init(device),
            norm1: norm.init(conv1.out_channels, 1.0, device),
            convs: (0..splits)
                .map(|_| SpatialConv::init(split, spec.dcn.as_ref(), device))
                .collect(),
            bns: (0..splits)
                .map(|_| norm.init(split.out_channels, 1.0, device))
                .collect(),
            conv3: conv3.init(device),
            norm3: norm.init(conv3.out_channels, last_gamma, device),
            downsample: spec
                .downsample
                .as_ref()
                .map(|d| Downsample::init(d, norm, device)),
            after_conv1: PluginStack::default(),
            after_conv2: PluginStack::default(),
            after_conv3: PluginStack::default(),
            width: spec.width,
            accumulate: !stage_block,
            pool_stride: (stage_block && (spec.stride != 1 || timm)).then_some(spec.stride),
        }
    }

    /// Run the block.
    pub fn forward(&self, x: Tensor<4>, mode: StageMode) -> Tensor<4> {
        let identity = shortcut(self.downsample.as_ref(), &x, mode);
        let out =
            self.after_conv1
                .forward(conv_norm_act(&self.conv1, &self.norm1, x, None, true, mode));
        let splits = self.convs.len() + 1;
        let part = |i: usize| out.clone().narrow(1, i * self.width, self.width);
        let mut joined = Vec::with_capacity(splits);
        let mut previous: Option<Tensor<4>> = None;
        for (i, (conv, norm)) in self.convs.iter().zip(&self.bns).enumerate() {
            let input = match previous.take() {
                Some(previous) if self.accumulate => previous + part(i),
                _ => part(i),
            };
            let y = spatial_conv_norm_relu(conv, norm, input, mode);
            joined.push(y.clone());
            previous = Some(y);
        }
        let last = part(splits - 1);
        joined.push(match self.pool_stride {
            Some(stride) => avg_pool3x3(last, stride),
            None => last,
        });
        let out = self.after_conv2.forward(Tensor::cat(joined, 1));
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

impl ResidualBlock for Bottle2neck {
    fn forward(&self, x: Tensor<4>, mode: StageMode) -> Tensor<4> {
        Bottle2neck::forward(self, x, mode)
    }

    fn plugin_stack_mut(&mut self, position: PluginPosition) -> Option<(&mut PluginStack, usize)> {
        let inner = self.conv1.weight.dims()[0];
        let out = self.conv3.weight.dims()[0];
        stack_at(
            position,
            [
                (&mut self.after_conv1, inner),
                (&mut self.after_conv2, inner),
                (&mut self.after_conv3, out),
            ],
        )
    }

    fn units_mut(&mut self) -> Vec<(&mut dyn FoldNorm, &mut Norm)> {
        let mut units: Vec<(&mut dyn FoldNorm, &mut Norm)> =
            vec![(&mut self.conv1, &mut self.norm1)];
        for (conv, norm) in self.convs.iter_mut().zip(self.bns.iter_mut()) {
            units.push((conv, norm));
        }
        units.push((&mut self.conv3, &mut self.norm3));
        units.extend(self.downsample.as_mut().map(Downsample::unit_mut));
        units
    }
}
