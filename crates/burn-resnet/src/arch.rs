//! mmdet's architecture table and the two choices it and `style` make: the block kind of each
//! depth, and where a Bottleneck carries its stride; and the resolved shape of one stage
//! ([`StageSpec`]), which the config, the DCN and plugin checks and the modules all read.

use serde::{Deserialize, Serialize};

/// Which residual block a depth uses (mmdet's `arch_settings[depth][0]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlockKind {
    /// Two 3x3 convs, expansion 1 (ResNet-18/34).
    Basic,
    /// 1x1 → 3x3 → 1x1 convs, expansion 4 (ResNet-50/101/152).
    Bottleneck,
    /// Res2Net's: 1x1 → `scales − 1` 3x3 convs over channel splits, each fed the previous
    /// one's output → 1x1, expansion 4 (mmdet `Bottle2neck`).
    Bottle2neck,
    /// ResNeSt's: 1x1 → split-attention 3x3 conv (`radix` grouped convs weighted by a softmax
    /// over them) → [3x3 average pool carrying the stride] → 1x1, expansion 4 (mmdet
    /// `resnest.Bottleneck`).
    ResNeStBottleneck,
}

impl std::fmt::Display for Style {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Style::Pytorch => "pytorch",
            Style::Caffe => "caffe",
        })
    }
}

impl BlockKind {
    /// Output channels of a block relative to its `planes` (mmdet's `expansion`).
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck | BlockKind::Bottle2neck | BlockKind::ResNeStBottleneck => 4,
        }
    }

    /// Convs on the residual branch: the plugin positions it has (`after_conv1`…), the last
    /// one carrying the block's output channels.
    pub fn convs(self) -> usize {
        match self {
            BlockKind::Basic => 2,
            BlockKind::Bottleneck | BlockKind::Bottle2neck | BlockKind::ResNeStBottleneck => 3,
        }
    }

    /// Whether the branch has an inner 3x3 conv between 1x1 convs, with a width of its own:
    /// what ResNeXt's `groups`/`base_width` widen and `dcn` makes deformable.
    pub fn has_inner_conv(self) -> bool {
        match self {
            BlockKind::Basic => false,
            BlockKind::Bottleneck | BlockKind::Bottle2neck | BlockKind::ResNeStBottleneck => true,
        }
    }
}

/// mmdet's architecture table: block kind and blocks per stage for each depth.
pub const ARCH_SETTINGS: [(u32, BlockKind, [usize; 4]); 5] = [
    (18, BlockKind::Basic, [2, 2, 2, 2]),
    (34, BlockKind::Basic, [3, 4, 6, 3]),
    (50, BlockKind::Bottleneck, [3, 4, 6, 3]),
    (101, BlockKind::Bottleneck, [3, 4, 23, 3]),
    (152, BlockKind::Bottleneck, [3, 8, 36, 3]),
];

/// Res2Net's architecture table (mmdet `Res2Net.arch_settings`): Bottle2neck blocks, the
/// Bottleneck depths.
pub const RES2NET_ARCH_SETTINGS: [(u32, BlockKind, [usize; 4]); 3] = [
    (50, BlockKind::Bottle2neck, [3, 4, 6, 3]),
    (101, BlockKind::Bottle2neck, [3, 4, 23, 3]),
    (152, BlockKind::Bottle2neck, [3, 8, 36, 3]),
];

/// ResNeSt's architecture table (mmdet `ResNeSt.arch_settings`): split-attention Bottlenecks,
/// the Bottleneck depths and 200.
pub const RESNEST_ARCH_SETTINGS: [(u32, BlockKind, [usize; 4]); 4] = [
    (50, BlockKind::ResNeStBottleneck, [3, 4, 6, 3]),
    (101, BlockKind::ResNeStBottleneck, [3, 4, 23, 3]),
    (152, BlockKind::ResNeStBottleneck, [3, 8, 36, 3]),
    (200, BlockKind::ResNeStBottleneck, [3, 24, 36, 3]),
];

/// Which of mmdet's backbone classes a config builds (mmdet's `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum BackboneType {
    /// mmdet `ResNet` (and `ResNetV1d`, `ResNeXt` through `deep_stem`, `avg_down`, `groups`).
    #[default]
    ResNet,
    /// mmdet `Res2Net` (Gao et al. 2019): Bottle2neck blocks with `scales` splits.
    Res2Net,
    /// mmdet `ResNeSt` (Zhang et al. 2020): a ResNetV1d whose Bottlenecks' 3x3 conv is a
    /// split-attention conv.
    #[serde(rename = "ResNeSt")]
    ResNeSt,
}

impl BackboneType {
    /// The depths this backbone builds: block kind and blocks per stage.
    pub fn arch_settings(self) -> &'static [(u32, BlockKind, [usize; 4])] {
        match self {
            BackboneType::ResNet => &ARCH_SETTINGS,
            BackboneType::Res2Net => &RES2NET_ARCH_SETTINGS,
            BackboneType::ResNeSt => &RESNEST_ARCH_SETTINGS,
        }
    }

    /// mmdet's class name.
    pub fn name(self) -> &'static str {
        match self {
            BackboneType::ResNet => "ResNet",
            BackboneType::Res2Net => "Res2Net",
            BackboneType::ResNeSt => "ResNeSt",
        }
    }
}

/// Which first blocks of a Res2Net stage average-pool their last split (the one part without a
/// conv), so that it matches the split convs' output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StagePool {
    /// Only where the block strides (mmdet's `Bottle2neck`: `stage_type = 'stage'` and a stride
    /// other than 1); elsewhere the last split passes through.
    #[default]
    Strided,
    /// Every stage's first block, at stride 1 too (`AvgPool2d(3, 1, padding 1)`): timm's
    /// `Bottle2neck`, whose `is_first` blocks always pool.
    Always,
}

/// Where a Bottleneck puts its stride (mmdet `style`, default `pytorch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Style {
    /// Stride on the 3x3 conv (ResNet v1.5, torchvision).
    #[default]
    Pytorch,
    /// Stride on the first 1x1 conv (original Caffe ResNet, MSRA weights).
    Caffe,
}

/// One stage of a validated config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageSpec {
    /// Residual blocks in the stage.
    pub num_blocks: usize,
    /// mmdet `planes`: `base_channels * 2^stage`.
    pub planes: usize,
    /// Channels of the blocks' inner 3x3 conv.
    pub width: usize,
    /// Channels the stage outputs: `planes * expansion`.
    pub out_channels: usize,
    /// Stride of the first block.
    pub stride: usize,
    /// Dilation of every 3x3 conv.
    pub dilation: usize,
    /// Res2Net's `scales`: the inner width is split into this many parts (1 elsewhere).
    pub scales: usize,
    /// ResNeSt's split attention in place of the 3x3 conv (`None` elsewhere).
    pub attention: Option<SplitAttentionSpec>,
}

/// The shape of ResNeSt's split-attention conv (mmdet `SplitAttentionConv2d`) in one stage:
/// a 3x3 conv from `width` to `width · radix` channels in `groups · radix` groups, whose
/// `radix` parts are summed, globally averaged and squeezed through `fc1` (to
/// `inter_channels`) and `fc2` (back to `width · radix`) into one weight per part and channel
/// (a softmax over the parts, or a sigmoid when `radix = 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitAttentionSpec {
    /// mmdet `radix`: the parts the attention chooses between.
    pub radix: usize,
    /// `fc1`'s output channels: `max(width · radix / reduction_factor, 32)` (mmdet's).
    pub inter_channels: usize,
    /// mmdet `avg_down_stride`: a strided block moves its stride from the 3x3 conv to a
    /// `AvgPool2d(3, stride, padding 1)` after the attention.
    pub avg_down_stride: bool,
}

impl StageSpec {
    /// Channels between the branch's first and last convs: what `after_conv1` and
    /// `after_conv2` plugins see (`width`, or Res2Net's `width · scales`).
    pub fn inner_channels(&self) -> usize {
        self.width * self.scales
    }

    /// Channel counts of the norms the stage has besides `width`, `inner_channels` and
    /// `out_channels`: the split attention's `norm0` (`width · radix`) and `norm1`
    /// (`inter_channels`).
    pub fn attention_norm_channels(&self) -> Vec<usize> {
        self.attention
            .map(|a| vec![self.width * a.radix, a.inter_channels])
            .unwrap_or_default()
    }
}
