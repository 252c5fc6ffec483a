//! Residual blocks: [`BasicBlock`] (ResNet-18/34), [`Bottleneck`] (ResNet-50+ and ResNeXt),
//! [`Bottle2neck`] (Res2Net) and [`ResNeStBottleneck`] (ResNeSt), with the optional
//! [`Downsample`] shortcut.

mod basic;
mod bottle2neck;
mod bottleneck;
mod downsample;
mod recompute;
mod resnest;
mod split_attention;

pub use basic::BasicBlock;
pub use bottle2neck::Bottle2neck;
pub use bottleneck::Bottleneck;
pub use downsample::{Downsample, DownsampleSpec};
pub(crate) use recompute::recomputed_blocks_on_this_thread;
pub use resnest::{ResNeStBottleneck, ResNeStConvs};
pub use split_attention::SplitAttentionConv;

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::arch::{SplitAttentionSpec, StagePool};
use crate::config::{BlockKind, Style};
use crate::conv::ConvSpec;
use crate::dcn::DcnConfig;
use crate::fold::FoldNorm;
use crate::norm::{Norm, NormConfig, StageMode};
use crate::plugin::{PluginPosition, PluginStack};

/// The shape of one residual block, resolved from the config (mmdet's block arguments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockSpec {
    /// Basic or Bottleneck.
    pub kind: BlockKind,
    /// mmdet `inplanes`.
    pub in_channels: usize,
    /// mmdet `planes`.
    pub planes: usize,
    /// Channels of the inner 3x3 conv (`planes`, or the ResNeXt width).
    pub width: usize,
    /// mmdet `stride`.
    pub stride: usize,
    /// mmdet `dilation`.
    pub dilation: usize,
    /// mmdet ResNeXt `groups` of the 3x3 conv.
    pub groups: usize,
    /// mmdet `style`: which conv of a Bottleneck carries the stride.
    pub style: Style,
    /// The shortcut's projection, when stride or channels change.
    pub downsample: Option<DownsampleSpec>,
    /// The deformable conv replacing a Bottleneck's 3x3 conv (mmdet `dcn` of this stage).
    pub dcn: Option<DcnConfig>,
    /// Res2Net `scales`: the inner width's splits (1 for the other kinds).
    pub scales: usize,
    /// Res2Net's `stage_type = 'stage'`: the first block of a stage, whose splits do not add
    /// the previous split's output and whose last split is average-pooled as `stage_pool`
    /// says.
    pub first_in_stage: bool,
    /// Res2Net `stage_pool`: mmdet's first blocks (pooling their last split where they stride)
    /// or timm's (blocks that stride or project their shortcut, pooling always).
    pub stage_pool: StagePool,
    /// ResNeSt's split attention in place of the 3x3 conv.
    pub attention: Option<SplitAttentionSpec>,
}

/// One conv of a block's residual branch, as the summary walks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BranchConv {
    /// The conv (its norm follows unless `norm` is false).
    pub conv: ConvSpec,
    /// Whether it reads the branch's first conv's output (Res2Net's splits) rather than the
    /// conv before it.
    pub reads_first: bool,
    /// Whether it works on the 1x1 map of a squeeze (ResNeSt's attention `fc1`, `fc2`): a
    /// side path that leaves the branch's map as it was.
    pub squeeze: bool,
    /// Whether it has a bias.
    pub bias: bool,
    /// Whether a norm follows it.
    pub norm: bool,
    /// Whether it is deformable (`dcn`), with an offset conv on its input.
    pub deformable: bool,
    /// The channels its output is reduced to before the next conv (ResNeSt's attention sums
    /// its `radix` parts), if it is.
    pub reduced_to: Option<usize>,
    /// The stride of a 3x3 average pool (padding 1) after it (ResNeSt's `avd_layer`), if any.
    pub pool_after: Option<usize>,
    /// The plugins after it (and its norm, reduction and pool), with their input channels.
    pub plugins_after: Option<(PluginPosition, usize)>,
}

impl BlockSpec {
    /// Output channels: `planes * expansion`.
    pub fn out_channels(&self) -> usize {
        self.planes * self.kind.expansion()
    }

    /// The convs of the residual branch, in order (`conv1`, `conv2`[, `conv3`]; Res2Net:
    /// `conv1`, `convs.0…`, `conv3`; ResNeSt: `conv1`, `conv2.conv`, `conv2.fc1`, `conv2.fc2`,
    /// `conv3`).
    pub fn convs(&self) -> Vec<ConvSpec> {
        self.branch().iter().map(|unit| unit.conv).collect()
    }

    /// The residual branch conv by conv: what each reads, and the plugins after it.
    pub fn branch(&self) -> Vec<BranchConv> {
        let unit = |conv: ConvSpec, position: Option<PluginPosition>| BranchConv {
            conv,
            reads_first: false,
            squeeze: false,
            bias: false,
            norm: true,
            deformable: false,
            reduced_to: None,
            pool_after: None,
            plugins_after: position.map(|p| (p, conv.out_channels)),
        };
        match self.kind {
            BlockKind::Basic => {
                let [conv1, conv2] = self.basic_convs();
                vec![
                    unit(conv1, Some(PluginPosition::AfterConv1)),
                    unit(conv2, Some(PluginPosition::AfterConv2)),
                ]
            }
            BlockKind::Bottleneck => {
                let [conv1, conv2, conv3] = self.bottleneck_convs();
                vec![
                    unit(conv1, Some(PluginPosition::AfterConv1)),
                    BranchConv {
                        deformable: self.dcn.is_some(),
                        ..unit(conv2, Some(PluginPosition::AfterConv2))
                    },
                    unit(conv3, Some(PluginPosition::AfterConv3)),
                ]
            }
            BlockKind::Bottle2neck => {
                let (conv1, split, conv3) = self.bottle2neck_convs();
                let splits = self.scales - 1;
                let mut branch = vec![unit(conv1, Some(PluginPosition::AfterConv1))];
                branch.extend((0..splits).map(|i| {
                    BranchConv {
                        reads_first: true,
                        // The `after_conv2` plugins see every split, concatenated.
                        plugins_after: (i + 1 == splits)
                            .then_some((PluginPosition::AfterConv2, conv1.out_channels)),
                        deformable: self.dcn.is_some(),
                        ..unit(split, None)
                    }
                }));
                branch.push(unit(conv3, Some(PluginPosition::AfterConv3)));
                branch
            }
            BlockKind::ResNeStBottleneck => {
                let convs = self.resnest_convs();
                let squeeze = |conv, norm| BranchConv {
                    squeeze: true,
                    bias: true,
                    norm,
                    ..unit(conv, None)
                };
                vec![
                    unit(convs.conv1, Some(PluginPosition::AfterConv1)),
                    BranchConv {
                        deformable: self.dcn.is_some(),
                        reduced_to: Some(self.width),
                        pool_after: convs.pool_stride,
                        plugins_after: Some((PluginPosition::AfterConv2, self.width)),
                        ..unit(convs.split, None)
                    },
                    squeeze(convs.fc1, true),
                    squeeze(convs.fc2, false),
                    unit(convs.conv3, Some(PluginPosition::AfterConv3)),
                ]
            }
        }
    }

    /// The stride of the branch's 3x3 conv (the split convs', the split-attention conv's):
    /// where `fallback_on_stride` looks.
    pub fn spatial_conv_stride(&self) -> usize {
        match self.kind {
            BlockKind::ResNeStBottleneck => self.resnest_convs().split.stride,
            _ => self.bottleneck_convs()[1].stride,
        }
    }

    /// BasicBlock: 3x3 (stride, padding = dilation = `dilation`) then 3x3 (padding 1).
    pub fn basic_convs(&self) -> [ConvSpec; 2] {
        let d = self.dilation;
        [
            ConvSpec::new(self.in_channels, self.planes, 3)
                .stride(self.stride)
                .padding(d)
                .dilation(d),
            ConvSpec::new(self.planes, self.planes, 3).padding(1),
        ]
    }

    /// Bottleneck: 1x1 → 3x3 (padding = dilation, groups) → 1x1; `style` picks which of the
    /// first two carries the stride.
    pub fn bottleneck_convs(&self) -> [ConvSpec; 3] {
        let d = self.dilation;
        let (stride1, stride2) = match self.style {
            Style::Pytorch => (1, self.stride),
            Style::Caffe => (self.stride, 1),
        };
        [
            ConvSpec::new(self.in_channels, self.width, 1).stride(stride1),
            ConvSpec::new(self.width, self.width, 3)
                .stride(stride2)
                .padding(d)
                .dilation(d)
                .groups(self.groups),
            ConvSpec::new(self.width, self.out_channels(), 1),
        ]
    }

    /// Bottle2neck: the 1x1 `conv1` to `width · scales`, one 3x3 split conv (stride, padding =
    /// dilation; there are `scales − 1` of them), the 1x1 `conv3`. Pytorch style only.
    pub fn bottle2neck_convs(&self) -> (ConvSpec, ConvSpec, ConvSpec) {
        let d = self.dilation;
        let inner = self.width * self.scales;
        (
            ConvSpec::new(self.in_channels, inner, 1),
            ConvSpec::new(self.width, self.width, 3)
                .stride(self.stride)
                .padding(d)
                .dilation(d),
            ConvSpec::new(inner, self.out_channels(), 1),
        )
    }

    /// Build the block. With `zero_init_residual` the last norm starts at weight 0.
    pub fn init(&self, zero_init_residual: bool, norm: &NormConfig, device: &Device) -> Block {
        match self.kind {
            BlockKind::Basic => {
                Block::Basic(BasicBlock::init(self, zero_init_residual, norm, device))
            }
            BlockKind::Bottleneck => {
                Block::Bottleneck(Bottleneck::init(self, zero_init_residual, norm, device))
            }
            BlockKind::Bottle2neck => {
                Block::Bottle2neck(Bottle2neck::init(self, zero_init_residual, norm, device))
            }
            BlockKind::ResNeStBottleneck => Block::ResNeSt(ResNeStBottleneck::init(
                self,
                zero_init_residual,
                norm,
                device,
            )),
        }
    }
}

/// `AvgPool2d(3, stride, padding 1)` with the padding counted (PyTorch's default): Res2Net's
/// pooled last split and ResNeSt's `avd_layer`.
pub(super) fn avg_pool3x3(x: Tensor<4>, stride: usize) -> Tensor<4> {
    burn::tensor::module::avg_pool2d(
        x,
        burn::tensor::ops::AvgPoolOptions::new([3, 3])
            .with_stride([stride; 2])
            .with_padding([1, 1])
            .with_count_include_pad(true),
    )
}

/// The stack at `position` among a three-conv block's `after_conv1/2/3` stacks, each with its
/// input channels.
pub(super) fn stack_at(
    position: PluginPosition,
    [after_conv1, after_conv2, after_conv3]: [(&mut PluginStack, usize); 3],
) -> Option<(&mut PluginStack, usize)> {
    Some(match position {
        PluginPosition::AfterConv1 => after_conv1,
        PluginPosition::AfterConv2 => after_conv2,
        PluginPosition::AfterConv3 => after_conv3,
    })
}

/// What each block kind provides, in its own file: adding a kind adds an implementation, a
/// [`Block`] variant (with its arms in `as_residual`/`as_residual_mut`) and its arm in
/// [`BlockSpec::convs`] and [`BlockSpec::init`] (docs/extending.md).
pub(crate) trait ResidualBlock {
    /// Run the block: residual branch + shortcut, then ReLU.
    fn forward(&self, x: Tensor<4>, mode: StageMode) -> Tensor<4>;
    /// The plugin stack at `position` and its input channels, if the block has that position.
    fn plugin_stack_mut(&mut self, position: PluginPosition) -> Option<(&mut PluginStack, usize)>;
    /// Every conv → norm unit, in module order, the shortcut's last: what folding and the
    /// running-statistics copy walk.
    fn units_mut(&mut self) -> Vec<(&mut dyn FoldNorm, &mut Norm)>;
}

/// One residual block of either kind.
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Block {
    /// ResNet-18/34 block.
    Basic(BasicBlock),
    /// ResNet-50+ / ResNeXt block.
    Bottleneck(Bottleneck),
    /// Res2Net block.
    Bottle2neck(Bottle2neck),
    /// ResNeSt block.
    ResNeSt(ResNeStBottleneck),
}

impl Block {
    /// The block as what every kind provides.
    fn as_residual(&self) -> &dyn ResidualBlock {
        match self {
            Block::Basic(block) => block,
            Block::Bottleneck(block) => block,
            Block::Bottle2neck(block) => block,
            Block::ResNeSt(block) => block,
        }
    }

    /// [`Block::as_residual`], mutably.
    fn as_residual_mut(&mut self) -> &mut dyn ResidualBlock {
        match self {
            Block::Basic(block) => block,
            Block::Bottleneck(block) => block,
            Block::Bottle2neck(block) => block,
            Block::ResNeSt(block) => block,
        }
    }

    /// The plugin stack at `position` and its input channels; `None` for a position the block
    /// does not have (`AfterConv3` on a BasicBlock).
    pub fn plugin_stack_mut(
        &mut self,
        position: PluginPosition,
    ) -> Option<(&mut PluginStack, usize)> {
        self.as_residual_mut().plugin_stack_mut(position)
    }

    /// Every conv → norm unit of the block, the shortcut's last.
    pub(crate) fn units_mut(&mut self) -> Vec<(&mut dyn FoldNorm, &mut Norm)> {
        self.as_residual_mut().units_mut()
    }

    /// Run the block: residual branch + shortcut, then ReLU.
    pub fn forward(&self, x: Tensor<4>, mode: StageMode) -> Tensor<4> {
        self.as_residual().forward(x, mode)
    }
}
