//! `ResNetConfig`: the serde-readable mirror of mmdet's `ResNet(...)` arguments, and validation
//! into a [`ResNetSpec`] from which modules are built (the architecture table is in `arch.rs`).

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use crate::arch::{ARCH_SETTINGS, BlockKind, Style};
use crate::dcn::{DcnConfig, validate_dcn};
use crate::error::{ResNetError, Result};
use crate::norm::{NormConfig, StageMode};
use crate::plugin::{PluginEntry, validate_plugins};

/// Configuration of a ResNet backbone, field for field mmdet's `ResNet`/`ResNeXt` arguments.
///
/// Read it from TOML with [`ResNetConfig::from_toml_file`]; unknown keys are rejected.
/// [`ResNetConfig::validate`] checks every field before any tensor is made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResNetConfig {
    /// mmdet `depth`: 18, 34, 50, 101 or 152. Required.
    pub depth: u32,
    /// mmdet `in_channels`: channels of the input image. Default 3.
    #[serde(default = "default_in_channels")]
    pub in_channels: usize,
    /// mmdet `stem_channels`: output channels of the stem. Default: `base_channels`.
    #[serde(default)]
    pub stem_channels: Option<usize>,
    /// mmdet `base_channels`: `planes` of the first stage (doubling each stage). Default 64.
    #[serde(default = "default_base_channels")]
    pub base_channels: usize,
    /// mmdet `num_stages`: how many of the four stages to build, 1..=4. Default 4.
    #[serde(default = "default_num_stages")]
    pub num_stages: usize,
    /// mmdet `strides`: stride of each stage's first block. Default `[1, 2, 2, 2]`, cut to
    /// `num_stages`; when given it must have `num_stages` entries.
    #[serde(default)]
    pub strides: Option<Vec<usize>>,
    /// mmdet `dilations`: dilation of every 3x3 conv in each stage. Default all 1.
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
    /// mmdet ResNeXt `groups`: groups of the 3x3 conv. Default 1 (plain ResNet).
    #[serde(default = "default_groups")]
    pub groups: usize,
    /// mmdet ResNeXt `base_width`: width per group at the first stage; used when `groups > 1`.
    /// Default 4.
    #[serde(default = "default_base_width")]
    pub base_width: usize,
    /// mmdet `zero_init_residual`: initialise the last norm of each block to zero so every
    /// block starts as the identity. Default true (as in mmdet).
    #[serde(default = "default_true")]
    pub zero_init_residual: bool,
    /// mmdet `frozen_stages`: -1 freezes nothing, 0 the stem, `n` the stem and `layer1..n`.
    /// Frozen parts get no gradients (so no optimizer updates) and their norms use and keep
    /// their running statistics, whatever `train()`/`valid()` says. Default -1.
    #[serde(default = "default_frozen_stages")]
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

fn default_frozen_stages() -> i64 {
    -1
}
fn default_in_channels() -> usize {
    3
}
fn default_base_channels() -> usize {
    64
}
fn default_num_stages() -> usize {
    4
}
fn default_groups() -> usize {
    1
}
fn default_base_width() -> usize {
    4
}
fn default_true() -> bool {
    true
}

impl ResNetConfig {
    /// A config with mmdet's defaults for `depth`.
    pub fn new(depth: u32) -> Self {
        Self {
            depth,
            in_channels: default_in_channels(),
            stem_channels: None,
            base_channels: default_base_channels(),
            num_stages: default_num_stages(),
            strides: None,
            dilations: None,
            out_indices: None,
            stem_output: false,
            style: Style::Pytorch,
            deep_stem: false,
            avg_down: false,
            groups: default_groups(),
            base_width: default_base_width(),
            zero_init_residual: true,
            frozen_stages: default_frozen_stages(),
            norm_eval: false,
            norm_cfg: NormConfig::default(),
            with_cp: false,
            plugins: Vec::new(),
            dcn: None,
            stage_with_dcn: None,
        }
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
        crate::overflow::check_figures(&spec)?;
        Ok(spec)
    }

    /// Every check of [`ResNetConfig::validate`] but the 64-bit fit of the figures.
    pub(crate) fn resolve(&self) -> Result<ResNetSpec> {
        let (_, block, all_blocks) = ARCH_SETTINGS
            .iter()
            .find(|(depth, _, _)| *depth == self.depth)
            .copied()
            .ok_or(ResNetError::UnsupportedDepth { depth: self.depth })?;

        let num_stages = self.num_stages;
        if !(1..=4).contains(&num_stages) {
            return Err(ResNetError::OutOfRange {
                field: "num_stages".into(),
                value: num_stages as i64,
                min: 1,
                max: 4,
            });
        }
        at_least("in_channels", self.in_channels, 1)?;
        at_least("base_channels", self.base_channels, 1)?;
        let stem_channels = self.stem_channels.unwrap_or(self.base_channels);
        // The deep stem's first two convs have stem_channels / 2 outputs.
        at_least(
            "stem_channels",
            stem_channels,
            if self.deep_stem { 2 } else { 1 },
        )?;
        at_least("groups", self.groups, 1)?;
        at_least("base_width", self.base_width, 1)?;
        if self.groups > 1 && block == BlockKind::Basic {
            return Err(ResNetError::Incompatible {
                field: "groups".into(),
                reason: format!(
                    "groups = {} (ResNeXt) needs Bottleneck blocks (depth 50, 101 or 152), \
                     but depth {} uses BasicBlock",
                    self.groups, self.depth
                ),
            });
        }

        let strides = per_stage("strides", &self.strides, &[1, 2, 2, 2], num_stages)?;
        let dilations = per_stage("dilations", &self.dilations, &[1, 1, 1, 1], num_stages)?;
        // A 3x3 conv pads by its dilation: past 2^32 the padded side of any image overflows
        // the summary's arithmetic long before it means anything.
        if let Some((i, &dilation)) = dilations
            .iter()
            .enumerate()
            .find(|(_, d)| **d > MAX_DILATION)
        {
            return Err(ResNetError::OutOfRange {
                field: format!("dilations[{i}]"),
                value: dilation.min(i64::MAX as usize) as i64,
                min: 1,
                max: MAX_DILATION as i64,
            });
        }

        let out_indices = match &self.out_indices {
            None => (0..num_stages).collect(),
            Some(indices) => {
                let mut seen = [false; 4];
                for &index in indices {
                    if index >= num_stages {
                        return Err(ResNetError::OutIndexOutOfRange { index, num_stages });
                    }
                    if std::mem::replace(&mut seen[index], true) {
                        return Err(ResNetError::DuplicateOutIndex { index });
                    }
                }
                (0..num_stages).filter(|i| seen[*i]).collect::<Vec<_>>()
            }
        };
        if out_indices.is_empty() && !self.stem_output {
            return Err(ResNetError::NoOutputs);
        }
        if !(-1..=num_stages as i64).contains(&self.frozen_stages) {
            return Err(ResNetError::OutOfRange {
                field: "frozen_stages".into(),
                value: self.frozen_stages,
                min: -1,
                max: num_stages as i64,
            });
        }

        let stages = self.stage_specs(block, &all_blocks, &strides, &dilations)?;
        // Every norm's channel count: the stem's convs (the deep stem's first two have half),
        // and each stage's block widths and outputs.
        let stem_norms = [
            stem_channels,
            if self.deep_stem {
                stem_channels / 2
            } else {
                stem_channels
            },
        ];
        let stage_norms = stages
            .iter()
            .flat_map(|s: &StageSpec| [s.width, s.out_channels]);
        self.norm_cfg
            .validate(stem_norms.into_iter().chain(stage_norms))?;
        validate_plugins(&self.plugins, block, &stages)?;
        validate_dcn(
            self.dcn.as_ref(),
            self.stage_with_dcn.as_deref(),
            block,
            &stages,
        )?;

        Ok(ResNetSpec {
            config: self.clone(),
            block,
            stem_channels,
            stages,
            out_indices,
        })
    }

    /// The stages' specs, with checked channel arithmetic.
    fn stage_specs(
        &self,
        block: BlockKind,
        all_blocks: &[usize; 4],
        strides: &[usize],
        dilations: &[usize],
    ) -> Result<Vec<StageSpec>> {
        let overflow = |field: &str, what: String| ResNetError::Overflow {
            field: field.into(),
            what,
        };
        (0..self.num_stages)
            .map(|i| {
                let stage = i + 1;
                let planes = self.base_channels.checked_mul(1 << i).ok_or_else(|| overflow("base_channels", format!("layer{stage}'s planes (base_channels × {})", 1 << i)))?;
                let out_channels = planes
                    .checked_mul(block.expansion())
                    .ok_or_else(|| overflow("base_channels", format!("layer{stage}'s output channels (planes × {})", block.expansion())))?;
                let width = match (block, self.groups) {
                    // ResNeXt widens the 3x3 conv: planes × base_width / base_channels × groups.
                    (BlockKind::Bottleneck, groups) if groups > 1 => (planes / self.base_channels)
                        .checked_mul(self.base_width)
                        .and_then(|w| w.checked_mul(groups))
                        .ok_or_else(|| overflow("groups", format!("layer{stage}'s width (planes × base_width / base_channels × groups)")))?,
                    _ => planes,
                };
                Ok(StageSpec { num_blocks: all_blocks[i], planes, width, out_channels, stride: strides[i], dilation: dilations[i] })
            })
            .collect()
    }
}

/// The largest dilation a stage may have (`u32::MAX`).
pub const MAX_DILATION: usize = u32::MAX as usize;

fn at_least(field: &str, value: usize, min: usize) -> Result<()> {
    if value < min {
        return Err(ResNetError::TooSmall {
            field: field.into(),
            value,
            min,
        });
    }
    Ok(())
}

/// Resolve a per-stage list: the default cut to `num_stages`, or the given one checked.
fn per_stage(
    field: &str,
    given: &Option<Vec<usize>>,
    default: &[usize; 4],
    num_stages: usize,
) -> Result<Vec<usize>> {
    let values = match given {
        None => return Ok(default[..num_stages].to_vec()),
        Some(values) => values,
    };
    if values.len() != num_stages {
        return Err(ResNetError::WrongLength {
            field: field.into(),
            expected: num_stages,
            got: values.len(),
        });
    }
    for (i, &value) in values.iter().enumerate() {
        at_least(&format!("{field}[{i}]"), value, 1)?;
    }
    Ok(values.clone())
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
}

/// A validated config with every default resolved. Built by [`ResNetConfig::validate`].
#[derive(Debug, Clone, PartialEq)]
pub struct ResNetSpec {
    /// The config it came from.
    pub config: ResNetConfig,
    /// The depth's block kind.
    pub block: BlockKind,
    /// Resolved `stem_channels`.
    pub stem_channels: usize,
    /// One entry per built stage.
    pub stages: Vec<StageSpec>,
    /// Selected stages, sorted, without repeats.
    pub out_indices: Vec<usize>,
}

impl ResNetSpec {
    /// Whether `frozen_stages` freezes the stem (`stage = None`) or stage `Some(i)` (0-based,
    /// `layer{i+1}`).
    pub fn is_frozen(&self, stage: Option<usize>) -> bool {
        let part = stage.map_or(0, |i| i as i64 + 1);
        part <= self.config.frozen_stages
    }

    /// The deformable conv of stage `i`'s Bottlenecks, if `dcn`/`stage_with_dcn` give it one.
    pub fn stage_dcn(&self, stage: usize) -> Option<&DcnConfig> {
        let selected = self
            .config
            .stage_with_dcn
            .as_ref()
            .is_some_and(|mask| mask.get(stage) == Some(&true));
        self.config.dcn.as_ref().filter(|_| selected)
    }

    /// How the stem (`None`) or stage `Some(i)` runs: its norms and `with_cp`.
    pub fn stage_mode(&self, stage: Option<usize>) -> StageMode {
        if self.is_frozen(stage) {
            return StageMode::FROZEN;
        }
        StageMode {
            batch_statistics: !self.config.norm_eval,
            train_affine: self.config.norm_cfg.requires_grad(),
            recompute: self.config.with_cp,
        }
    }
}
