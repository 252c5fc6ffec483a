//! `ResNetConfig`: the serde-readable mirror of mmdet's `ResNet(...)` arguments, and validation
//! into a [`ResNetSpec`] from which modules are built (the architecture table is in `arch.rs`).

use std::path::Path;

use serde::{Deserialize, Serialize};

pub mod defaults;
mod overflow;
mod resolve;
mod spec;
mod variant;

pub use crate::arch::{ARCH_SETTINGS, BackboneType, BlockKind, StagePool, StageSpec, Style};
use crate::dcn::DcnConfig;
use crate::error::{ResNetError, Result};
use crate::norm::NormConfig;
use crate::plugin::PluginEntry;
pub use resolve::MAX_DILATION;
pub use spec::ResNetSpec;

/// Configuration of a ResNet backbone, field for field mmdet's `ResNet`/`ResNeXt` arguments.
///
/// Read it from TOML with [`ResNetConfig::from_toml_file`]; unknown keys are rejected.
/// [`ResNetConfig::validate`] checks every field before any tensor is made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResNetConfig {
    /// mmdet's `type`: which backbone class, `"ResNet"` (also ResNetV1c/V1d and ResNeXt, through
    /// `deep_stem`, `avg_down` and `groups`), `"Res2Net"` or `"ResNeSt"`. Default `"ResNet"`.
    #[serde(rename = "type", default)]
    pub backbone: BackboneType,
    /// mmdet `depth`: 18, 34, 50, 101 or 152 (Res2Net: 50, 101, 152; ResNeSt: 50, 101, 152,
    /// 200). Required.
    pub depth: u32,
    /// mmdet `in_channels`: channels of the input image. Default [`defaults::IN_CHANNELS`].
    #[serde(default = "defaults::in_channels")]
    pub in_channels: usize,
    /// mmdet `stem_channels`: output channels of the stem. Default: `base_channels`.
    #[serde(default)]
    pub stem_channels: Option<usize>,
    /// mmdet `base_channels`: `planes` of the first stage (doubling each stage). Default
    /// [`defaults::BASE_CHANNELS`].
    #[serde(default = "defaults::base_channels")]
    pub base_channels: usize,
    /// mmdet `num_stages`: how many of the four stages to build, 1..=4. Default
    /// [`defaults::NUM_STAGES`].
    #[serde(default = "defaults::num_stages")]
    pub num_stages: usize,
    /// mmdet `strides`: stride of each stage's first block. Default [`defaults::STRIDES`], cut to
    /// `num_stages`; when given it must have `num_stages` entries.
    #[serde(default)]
    pub strides: Option<Vec<usize>>,
    /// mmdet `dilations`: dilation of every 3x3 conv in each stage. Default
    /// [`defaults::DILATIONS`], cut to `num_stages`.
    #[serde(default)]
    pub dilations: Option<Vec<usize>>,
    /// mmdet `out_indices`: stages whose outputs are returned (0 = layer1 = C2). Default: every
    /// built stage (mmdet's default `(0, 1, 2, 3)` when `num_stages = 4`).
    #[serde(default)]
    pub out_indices: Option<Vec<usize>>,
    /// Also return the stem's activation (C1, stride 2, before the max-pool; timm's `act1`)
    /// ahead of the stage outputs. Not in mmdet. Default false.
    #[serde(default)]
    pub stem_output: bool,
    /// mmdet `style`: `"pytorch"` (stride on the 3x3) or `"caffe"` (stride on the first 1x1).
    /// Default `"pytorch"`.
    #[serde(default)]
    pub style: Style,
    /// mmdet `deep_stem`: three 3x3 convs instead of the 7x7 (ResNetV1c/V1d). Default false.
    #[serde(default)]
    pub deep_stem: bool,
    /// mmdet `avg_down`: downsample shortcuts with an average pool before a stride-1 1x1 conv
    /// (ResNetV1d). Default false.
    #[serde(default)]
    pub avg_down: bool,
    /// mmdet ResNeXt `groups`: groups of the 3x3 conv. Default [`defaults::GROUPS`].
    #[serde(default = "defaults::groups")]
    pub groups: usize,
    /// mmdet `base_width`: ResNeXt's (and a grouped ResNeSt's) width per group at the first
    /// stage (read when `groups > 1`; default [`defaults::RESNEXT_BASE_WIDTH`]), or Res2Net's
    /// width per split at the first stage (default [`defaults::RES2NET_BASE_WIDTH`]).
    #[serde(default)]
    pub base_width: Option<usize>,
    /// mmdet Res2Net `scales`: the splits of each Bottle2neck's inner width, at least 2. Default
    /// [`defaults::RES2NET_SCALES`]; only for `type = "Res2Net"`.
    #[serde(default)]
    pub scales: Option<usize>,
    /// Res2Net: which stages' first blocks average-pool their last split: `"strided"` (mmdet's:
    /// only where the block strides) or `"always"` (timm's Res2Nets: at stride 1 too; such a
    /// config may also have timm's 7x7 stem and strided-conv shortcuts). Default `"strided"`;
    /// only for `type = "Res2Net"`.
    #[serde(default)]
    pub stage_pool: Option<StagePool>,
    /// mmdet ResNeSt `radix`: the parts of each split-attention conv, at least 1 (1: a sigmoid
    /// gate instead of the softmax over parts). Default [`defaults::RESNEST_RADIX`]; only for
    /// `type = "ResNeSt"`.
    #[serde(default)]
    pub radix: Option<usize>,
    /// mmdet ResNeSt `reduction_factor`: the split attention's `fc1` has
    /// `max(width · radix / reduction_factor, 32)` channels. Default
    /// [`defaults::RESNEST_REDUCTION_FACTOR`]; only for `type = "ResNeSt"`.
    #[serde(default)]
    pub reduction_factor: Option<usize>,
    /// mmdet ResNeSt `avg_down_stride`: strided blocks put their stride on a 3x3 average pool
    /// after the split attention instead of on its conv. Default
    /// [`defaults::RESNEST_AVG_DOWN_STRIDE`]; only for `type = "ResNeSt"`.
    #[serde(default)]
    pub avg_down_stride: Option<bool>,
    /// mmdet `zero_init_residual`: initialise the last norm of each block to zero so every
    /// block starts as the identity. Default [`defaults::ZERO_INIT_RESIDUAL`].
    #[serde(default = "defaults::zero_init_residual")]
    pub zero_init_residual: bool,
    /// mmdet `frozen_stages`: -1 freezes nothing, 0 the stem, `n` the stem and `layer1..n`.
    /// Frozen parts get no gradients (so no optimizer updates) and their norms use and keep
    /// their running statistics, whatever `train()`/`valid()` says. Default
    /// [`defaults::FROZEN_STAGES`].
    #[serde(default = "defaults::frozen_stages")]
    pub frozen_stages: i64,
    /// mmdet `norm_eval`: BatchNorms use and keep their running statistics while the rest
    /// trains; their affine parameters still train when `norm_cfg.requires_grad` is true.
    /// Default false (mmdet's class default is true; its detector configs set it explicitly).
    #[serde(default)]
    pub norm_eval: bool,
    /// mmdet `norm_cfg`: the norm after each conv. Default BatchNorm (`type = "BN"`).
    #[serde(default)]
    pub norm_cfg: NormConfig,
    /// mmdet `with_cp`: in training, each residual block keeps only its input for the
    /// backward pass and recomputes its activations there (less memory, more compute).
    /// Default false.
    #[serde(default)]
    pub with_cp: bool,
    /// mmdet `plugins`: `[[plugins]]` entries, each a `cfg` (ContextBlock or SE), a `position`
    /// and optional `stages` flags; several at one position run in the order given. Default
    /// none.
    #[serde(default)]
    pub plugins: Vec<PluginEntry>,
    /// mmdet `dcn`: makes the Bottleneck's 3x3 conv deformable in the stages of
    /// `stage_with_dcn` (`{ type = "DCNv2" | "DCN", deform_groups, fallback_on_stride }`).
    /// Default none.
    #[serde(default)]
    pub dcn: Option<DcnConfig>,
    /// mmdet `stage_with_dcn`: one flag per stage, which stages get `dcn`. Default all false.
    #[serde(default)]
    pub stage_with_dcn: Option<Vec<bool>>,
}

impl ResNetConfig {
    /// A config with mmdet's defaults for `depth`: every other key as a TOML file that gives
    /// only `depth` reads (the defaults are [`defaults`]' and the types' own).
    pub fn new(depth: u32) -> Self {
        let mut table = toml::Table::new();
        table.insert("depth".into(), toml::Value::Integer(depth.into()));
        table
            .try_into()
            .expect("every key but depth has a serde default")
    }

    /// Parse a TOML document. `source_name` names it in errors.
    pub fn from_toml_str(text: &str, source_name: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| ResNetError::Parse {
            source_name: source_name.to_string(),
            message: e.to_string().trim_end().to_string(),
        })
    }

    /// Read and parse a TOML file.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ResNetError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    /// Check every field and resolve the defaults that depend on others.
    pub fn validate(&self) -> Result<ResNetSpec> {
        let spec = self.resolve()?;
        overflow::check_figures(&spec)?;
        Ok(spec)
    }
}
