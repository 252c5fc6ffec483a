//! Plugin hook points of the residual blocks (mmdet `plugins`, positions `after_conv1`,
//! `after_conv2`, `after_conv3`) and the built-in plugins.
//!
//! Every block carries one [`PluginStack`] per position; an empty stack costs nothing. Plugins
//! run after the conv's norm and ReLU, or, after a block's last conv, after its norm and before
//! the residual add. Several plugins at one position run in the order given.
//! Add plugins to a built backbone with [`crate::ResNet::add_plugins`].

mod context_block;
mod figures;
mod generalized_attention;
mod non_local;
mod squeeze_excitation;

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::arch::{BlockKind, StageSpec};
use crate::error::{ResNetError, Result};

pub use context_block::{
    ChannelLayerNorm, ContextBlock, ContextBlockConfig, ContextTransform, Fusion, Pooling,
};
pub use figures::PluginFigures;
pub use generalized_attention::{
    AttentionType, GeneralizedAttention, GeneralizedAttentionArgs, GeneralizedAttentionConfig,
};
pub use non_local::{NonLocal2d, NonLocal2dConfig, NonLocalMode};
pub use squeeze_excitation::{SqueezeExcitation, SqueezeExcitationConfig, make_divisible};

/// Where in a block a plugin runs (mmdet `position`: `"after_conv1"`, `"after_conv2"`,
/// `"after_conv3"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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

    /// The conv it follows: 1, 2 or 3.
    pub fn conv(self) -> usize {
        match self {
            PluginPosition::AfterConv1 => 1,
            PluginPosition::AfterConv2 => 2,
            PluginPosition::AfterConv3 => 3,
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
    /// GCNet's global context block (mmcv `ContextBlock`).
    ContextBlock(ContextBlock),
    /// The non-local block (mmcv `NonLocal2d`).
    NonLocal2d(NonLocal2d),
    /// Spatial attention with relative positions (mmcv `GeneralizedAttention`).
    GeneralizedAttention(GeneralizedAttention),
}

impl Plugin {
    /// Run the plugin.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Plugin::SqueezeExcitation(se) => se.forward(x),
            Plugin::ContextBlock(block) => block.forward(x),
            Plugin::NonLocal2d(block) => block.forward(x),
            Plugin::GeneralizedAttention(block) => block.forward(x),
        }
    }
}

/// One entry of mmdet's `plugins` list: a plugin config, its position and the stages it is
/// added to. TOML: `[[plugins]]` tables with `position`, optional `stages` and a `cfg` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginEntry {
    /// mmdet `cfg`: which plugin, with its arguments.
    pub cfg: PluginConfig,
    /// mmdet `position`.
    pub position: PluginPosition,
    /// mmdet `stages`: one flag per stage; default every stage.
    #[serde(default)]
    pub stages: Option<Vec<bool>>,
}

impl PluginEntry {
    /// The module name mmdet gives this plugin in a block (`context_block`, timm's `se`), with
    /// the postfix: the checkpoint key segment.
    pub fn name(&self) -> String {
        let (abbreviation, postfix) = match &self.cfg {
            PluginConfig::ContextBlock { postfix, .. } => ("context_block", postfix),
            PluginConfig::NonLocal2d { postfix, .. } => ("nonlocal_block", postfix),
            PluginConfig::GeneralizedAttention(args) => ("gen_attention_block", &args.postfix),
            PluginConfig::SqueezeExcitation { postfix, .. } => ("se", postfix),
        };
        format!("{abbreviation}{postfix}")
    }

    /// Whether the entry adds a plugin to stage `stage`.
    pub fn applies_to(&self, stage: usize) -> bool {
        self.stages.as_ref().is_none_or(|mask| mask[stage])
    }
}

/// A plugin's config (mmdet `cfg`, tagged by `type`). Each takes mmdet's `postfix` (default
/// ""), appended to its name in checkpoints to tell apart two plugins of one type in a block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum PluginConfig {
    /// mmcv `ContextBlock` (GCNet): `ratio` (e.g. 1/16), `pooling_type` (`"att"`, default, or
    /// `"avg"`), `fusion_types` (default `["channel_add"]`).
    ContextBlock {
        /// mmcv `ratio`.
        ratio: f64,
        /// mmcv `pooling_type`.
        #[serde(default)]
        pooling_type: Pooling,
        /// mmcv `fusion_types`.
        #[serde(default = "default_fusions")]
        fusion_types: Vec<Fusion>,
        /// mmdet `postfix` (see [`PluginEntry::name`]).
        #[serde(default)]
        postfix: String,
    },
    /// mmcv `NonLocal2d`: `reduction` (2), `use_scale` (true), `mode` (`"embedded_gaussian"`,
    /// `"dot_product"`, `"gaussian"`), `sub_sample` (false).
    NonLocal2d {
        /// mmcv `reduction`.
        #[serde(default = "default_reduction")]
        reduction: usize,
        /// mmcv `use_scale`.
        #[serde(default = "default_true")]
        use_scale: bool,
        /// mmcv `mode`.
        #[serde(default)]
        mode: NonLocalMode,
        /// mmcv `sub_sample`.
        #[serde(default)]
        sub_sample: bool,
        /// mmdet `postfix`.
        #[serde(default)]
        postfix: String,
    },
    /// mmcv `GeneralizedAttention`: `num_heads` (9), `attention_type` (`"1111"`: content·content,
    /// content·position, bias·content, bias·position), `kv_stride` (2), `q_stride` (1),
    /// `spatial_range` (-1: unlimited), `position_embedding_dim` (-1: the input channels),
    /// `position_magnitude` (1).
    GeneralizedAttention(GeneralizedAttentionArgs),
    /// Squeeze-and-excitation (timm's `se`): `rd_ratio` (default 1/16; the squeezed width is
    /// rounded to a multiple of 8 as timm does).
    #[serde(rename = "SE")]
    SqueezeExcitation {
        /// timm `rd_ratio`.
        #[serde(default = "default_rd_ratio")]
        rd_ratio: f64,
        /// mmdet `postfix`.
        #[serde(default)]
        postfix: String,
    },
}

fn default_fusions() -> Vec<Fusion> {
    vec![Fusion::ChannelAdd]
}
fn default_reduction() -> usize {
    2
}
fn default_true() -> bool {
    true
}
fn default_rd_ratio() -> f64 {
    1.0 / 16.0
}

impl PluginConfig {
    /// mmdet's `type` name.
    pub fn type_name(&self) -> &'static str {
        match self {
            PluginConfig::ContextBlock { .. } => "ContextBlock",
            PluginConfig::NonLocal2d { .. } => "NonLocal2d",
            PluginConfig::GeneralizedAttention(_) => "GeneralizedAttention",
            PluginConfig::SqueezeExcitation { .. } => "SE",
        }
    }

    /// Why this plugin cannot sit on `channels` input channels, if it cannot.
    pub fn check(&self, channels: usize) -> Option<String> {
        match self {
            PluginConfig::ContextBlock {
                ratio,
                fusion_types,
                ..
            } => {
                let planes = ContextBlockConfig::new(channels, *ratio).planes();
                if fusion_types.is_empty() {
                    Some("fusion_types is empty; give channel_add and/or channel_mul".into())
                } else if !(ratio.is_finite() && *ratio > 0.0) || planes == 0 {
                    Some(format!(
                        "ratio {ratio} leaves floor({channels} × ratio) = {planes} channels; it must be at least 1"
                    ))
                } else {
                    None
                }
            }
            PluginConfig::NonLocal2d { reduction, .. } => {
                (*reduction == 0).then(|| "reduction must be at least 1".into())
            }
            PluginConfig::SqueezeExcitation { rd_ratio, .. } => (!(rd_ratio.is_finite()
                && *rd_ratio > 0.0))
                .then(|| format!("rd_ratio {rd_ratio} must be positive")),
            PluginConfig::GeneralizedAttention(args) => args.config(channels).check(),
        }
    }

    /// The module config of this plugin on `channels` input channels: what [`PluginConfig::init`]
    /// builds and [`PluginConfig::figures`] counts.
    pub fn settings(&self, channels: usize) -> PluginSettings {
        match self {
            PluginConfig::ContextBlock {
                ratio,
                pooling_type,
                fusion_types,
                ..
            } => PluginSettings::ContextBlock(ContextBlockConfig {
                channels,
                ratio: *ratio,
                pooling: *pooling_type,
                fusions: fusion_types.clone(),
            }),
            PluginConfig::NonLocal2d {
                reduction,
                use_scale,
                mode,
                sub_sample,
                ..
            } => PluginSettings::NonLocal2d(NonLocal2dConfig {
                channels,
                reduction: *reduction,
                use_scale: *use_scale,
                mode: *mode,
                sub_sample: *sub_sample,
            }),
            PluginConfig::SqueezeExcitation { rd_ratio, .. } => {
                let reduced = make_divisible(channels as f64 * rd_ratio, 8);
                PluginSettings::SqueezeExcitation(SqueezeExcitationConfig { channels, reduced })
            }
            PluginConfig::GeneralizedAttention(args) => {
                PluginSettings::GeneralizedAttention(args.config(channels))
            }
        }
    }

    /// Build the plugin for `channels` input channels.
    pub fn init(&self, channels: usize, device: &Device) -> Plugin {
        match self.settings(channels) {
            PluginSettings::ContextBlock(config) => Plugin::ContextBlock(config.init(device)),
            PluginSettings::NonLocal2d(config) => Plugin::NonLocal2d(config.init(device)),
            PluginSettings::SqueezeExcitation(config) => {
                Plugin::SqueezeExcitation(config.init(device))
            }
            PluginSettings::GeneralizedAttention(config) => {
                Plugin::GeneralizedAttention(config.init(device))
            }
        }
    }
}

/// A plugin's module config for given input channels ([`PluginConfig::settings`]).
#[derive(Debug, Clone, PartialEq)]
pub enum PluginSettings {
    /// A ContextBlock's.
    ContextBlock(ContextBlockConfig),
    /// A NonLocal2d's.
    NonLocal2d(NonLocal2dConfig),
    /// An SE block's.
    SqueezeExcitation(SqueezeExcitationConfig),
    /// A GeneralizedAttention's.
    GeneralizedAttention(GeneralizedAttentionConfig),
}

/// Check mmdet's `plugins` list against the blocks it will be added to.
pub(crate) fn validate_plugins(
    entries: &[PluginEntry],
    block: BlockKind,
    stages: &[StageSpec],
) -> Result<()> {
    for (i, entry) in entries.iter().enumerate() {
        if let Some(mask) = entry
            .stages
            .as_ref()
            .filter(|mask| mask.len() != stages.len())
        {
            return Err(ResNetError::WrongLength {
                field: format!("plugins[{i}].stages"),
                expected: stages.len(),
                got: mask.len(),
            });
        }
        if entry.position.conv() > block.convs() {
            return Err(ResNetError::Incompatible {
                field: format!("plugins[{i}].position"),
                reason: "after_conv3 needs Bottleneck blocks (depth 50, 101, 152); a BasicBlock's last conv is conv2: use after_conv2".into(),
            });
        }
        for (s, stage) in stages.iter().enumerate() {
            if !entry.applies_to(s) {
                continue;
            }
            if let Some(j) = entries[..i]
                .iter()
                .position(|other| other.applies_to(s) && other.name() == entry.name())
            {
                return Err(ResNetError::Incompatible {
                    field: format!("plugins[{i}].cfg.postfix"),
                    reason: format!(
                        "plugins[{j}] and plugins[{i}] would both be `{}` in the blocks of stage {s}; give one a postfix",
                        entry.name()
                    ),
                });
            }
            // After the last conv the block's output channels, before it the inner width
            // (Res2Net's: all splits).
            let channels = if entry.position.conv() == block.convs() {
                stage.out_channels
            } else {
                stage.inner_channels()
            };
            if let Some(reason) = entry.cfg.check(channels) {
                return Err(ResNetError::Incompatible {
                    field: format!("plugins[{i}].cfg ({})", entry.cfg.type_name()),
                    reason,
                });
            }
        }
    }
    Ok(())
}
