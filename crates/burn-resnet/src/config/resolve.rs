//! Validation: every field checked, and the defaults that depend on other fields resolved, into
//! a [`ResNetSpec`].

use super::{
    BackboneType, BlockKind, ResNetConfig, ResNetSpec, StagePool, StageSpec, Style, defaults,
};
use crate::arch::SplitAttentionSpec;
use crate::dcn::validate_dcn;
use crate::error::{ResNetError, Result};
use crate::plugin::validate_plugins;

impl ResNetConfig {
    /// Every check of [`ResNetConfig::validate`] but the 64-bit fit of the figures.
    pub(crate) fn resolve(&self) -> Result<ResNetSpec> {
        let table = self.backbone.arch_settings();
        let (_, block, all_blocks) = match table.iter().find(|(depth, _, _)| *depth == self.depth) {
            Some(row) => *row,
            None if self.backbone == BackboneType::ResNet => {
                return Err(ResNetError::UnsupportedDepth { depth: self.depth });
            }
            None => {
                let depths: Vec<String> = table.iter().map(|(d, _, _)| d.to_string()).collect();
                return Err(ResNetError::Incompatible {
                    field: "depth".into(),
                    reason: format!(
                        "{} has depths {}, not {}",
                        self.backbone.name(),
                        depths.join(", "),
                        self.depth
                    ),
                });
            }
        };
        let variant = self.variant_settings()?;
        let base_width = variant.base_width;

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
        at_least("base_width", base_width, 1)?;
        if self.groups > 1 && !block.has_inner_conv() {
            return Err(ResNetError::Incompatible {
                field: "groups".into(),
                reason: format!(
                    "groups = {} (ResNeXt) needs Bottleneck blocks (depth 50, 101 or 152), \
                     but depth {} uses BasicBlock",
                    self.groups, self.depth
                ),
            });
        }

        let strides = per_stage("strides", &self.strides, &defaults::STRIDES, num_stages)?;
        let dilations = per_stage(
            "dilations",
            &self.dilations,
            &defaults::DILATIONS,
            num_stages,
        )?;
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

        let stages = self.stage_specs(block, &all_blocks, &strides, &dilations, &variant)?;
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
        let stage_norms = stages.iter().flat_map(|s: &StageSpec| {
            [s.width, s.inner_channels(), s.out_channels]
                .into_iter()
                .chain(s.attention_norm_channels())
        });
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

    /// The settings of this backbone type, defaults resolved: what mmdet's Res2Net and ResNeSt
    /// force (`deep_stem`, `avg_down`, Res2Net's pytorch style and no groups) must be stated as
    /// they force it, and each type's own keys (`scales`; `radix`, `reduction_factor`,
    /// `avg_down_stride`) belong to it only.
    fn variant_settings(&self) -> Result<Variant> {
        let incompatible = |field: &str, reason: String| ResNetError::Incompatible {
            field: field.into(),
            reason,
        };
        let own_keys: [(&str, bool, BackboneType); 5] = [
            ("scales", self.scales.is_some(), BackboneType::Res2Net),
            (
                "stage_pool",
                self.stage_pool.is_some(),
                BackboneType::Res2Net,
            ),
            ("radix", self.radix.is_some(), BackboneType::ResNeSt),
            (
                "reduction_factor",
                self.reduction_factor.is_some(),
                BackboneType::ResNeSt,
            ),
            (
                "avg_down_stride",
                self.avg_down_stride.is_some(),
                BackboneType::ResNeSt,
            ),
        ];
        if let Some((field, _, owner)) = own_keys
            .iter()
            .find(|(_, given, owner)| *given && *owner != self.backbone)
        {
            return Err(incompatible(
                field,
                format!(
                    "{field} is {}'s; set type = \"{}\"",
                    owner.name(),
                    owner.name()
                ),
            ));
        }
        // timm's Res2Nets (`stage_pool = "always"`) come with either stem and shortcut.
        let timm_res2net = self.stage_pool == Some(StagePool::Always);
        let forced: &[(&str, bool, &str)] = match self.backbone {
            BackboneType::ResNet => &[],
            BackboneType::Res2Net => &[
                (
                    "deep_stem",
                    self.deep_stem || timm_res2net,
                    "deep_stem = true",
                ),
                ("avg_down", self.avg_down || timm_res2net, "avg_down = true"),
                ("style", self.style == Style::Pytorch, "style = \"pytorch\""),
                ("groups", self.groups == 1, "groups = 1"),
            ],
            BackboneType::ResNeSt => &[
                ("deep_stem", self.deep_stem, "deep_stem = true"),
                ("avg_down", self.avg_down, "avg_down = true"),
            ],
        };
        if let Some((field, _, value)) = forced.iter().find(|(_, ok, _)| !ok) {
            let how = match self.backbone {
                BackboneType::ResNeSt => "it is a ResNetV1d",
                _ if ["deep_stem", "avg_down"].contains(field) => {
                    "it overrides the argument; timm's Res2Nets, with either stem and shortcut, \
                     are stage_pool = \"always\""
                }
                _ => "it overrides the argument",
            };
            return Err(incompatible(
                field,
                format!(
                    "mmdet's {} always builds with {value} ({how}); state {value}",
                    self.backbone.name()
                ),
            ));
        }
        let resnext_width = self.base_width.unwrap_or(defaults::RESNEXT_BASE_WIDTH);
        match self.backbone {
            BackboneType::ResNet => Ok(Variant {
                base_width: resnext_width,
                scales: 1,
                attention: None,
            }),
            BackboneType::Res2Net => {
                let scales = self.scales.unwrap_or(defaults::RES2NET_SCALES);
                if scales < 2 {
                    return Err(incompatible(
                        "scales",
                        format!(
                            "scales = {scales}: Res2Net needs at least 2 splits (with 1 it is a \
                             ResNet: type = \"ResNet\")"
                        ),
                    ));
                }
                Ok(Variant {
                    base_width: self.base_width.unwrap_or(defaults::RES2NET_BASE_WIDTH),
                    scales,
                    attention: None,
                })
            }
            BackboneType::ResNeSt => {
                let radix = self.radix.unwrap_or(defaults::RESNEST_RADIX);
                let reduction_factor = self
                    .reduction_factor
                    .unwrap_or(defaults::RESNEST_REDUCTION_FACTOR);
                at_least("radix", radix, 1)?;
                at_least("reduction_factor", reduction_factor, 1)?;
                Ok(Variant {
                    base_width: resnext_width,
                    scales: 1,
                    attention: Some(AttentionSettings {
                        radix,
                        reduction_factor,
                        avg_down_stride: self
                            .avg_down_stride
                            .unwrap_or(defaults::RESNEST_AVG_DOWN_STRIDE),
                    }),
                })
            }
        }
    }

    /// The stages' specs, with checked channel arithmetic.
    fn stage_specs(
        &self,
        block: BlockKind,
        all_blocks: &[usize; 4],
        strides: &[usize],
        dilations: &[usize],
        variant: &Variant,
    ) -> Result<Vec<StageSpec>> {
        let overflow = |field: &str, what: String| ResNetError::Overflow {
            field: field.into(),
            what,
        };
        let incompatible = |field: &str, reason: String| ResNetError::Incompatible {
            field: field.into(),
            reason,
        };
        let base_width = variant.base_width;
        (0..self.num_stages)
            .map(|i| {
                let stage = i + 1;
                let planes = self.base_channels.checked_mul(1 << i).ok_or_else(|| {
                    overflow(
                        "base_channels",
                        format!("layer{stage}'s planes (base_channels × {})", 1 << i),
                    )
                })?;
                let out_channels = planes.checked_mul(block.expansion()).ok_or_else(|| {
                    overflow(
                        "base_channels",
                        format!(
                            "layer{stage}'s output channels (planes × {})",
                            block.expansion()
                        ),
                    )
                })?;
                let scaled_width = || {
                    floor_width(planes, base_width, self.base_channels).ok_or_else(|| {
                        overflow(
                            "base_width",
                            format!("layer{stage}'s width (base_width × {})", 1 << i),
                        )
                    })
                };
                let width = match (block, self.groups) {
                    // Res2Net's split width: ⌊planes · (base_width / base_channels)⌋.
                    (BlockKind::Bottle2neck, _) => scaled_width()?,
                    // ResNeXt (and a grouped ResNeSt) widens the 3x3 conv:
                    // ⌊planes · base_width / base_channels⌋ × groups.
                    (_, groups) if groups > 1 && block.has_inner_conv() => {
                        scaled_width()?.checked_mul(groups).ok_or_else(|| {
                            overflow(
                                "groups",
                                format!(
                                    "layer{stage}'s width (planes × base_width / base_channels \
                                     × groups)"
                                ),
                            )
                        })?
                    }
                    _ => planes,
                };
                if width == 0 {
                    return Err(incompatible(
                        "base_width",
                        format!("layer{stage}'s width ⌊planes · base_width / base_channels⌋ is 0"),
                    ));
                }
                width.checked_mul(variant.scales).ok_or_else(|| {
                    overflow(
                        "scales",
                        format!("layer{stage}'s inner width (split width × scales)"),
                    )
                })?;
                let attention = variant
                    .attention
                    .map(|settings| settings.resolve(stage, width, self.groups))
                    .transpose()?;
                Ok(StageSpec {
                    num_blocks: all_blocks[i],
                    planes,
                    width,
                    out_channels,
                    stride: strides[i],
                    dilation: dilations[i],
                    scales: variant.scales,
                    attention,
                })
            })
            .collect()
    }
}

/// What a backbone type adds to the ResNet settings, defaults resolved.
struct Variant {
    /// ResNeXt's or Res2Net's `base_width`.
    base_width: usize,
    /// Res2Net's `scales` (1 elsewhere).
    scales: usize,
    /// ResNeSt's split attention.
    attention: Option<AttentionSettings>,
}

/// ResNeSt's keys, defaults resolved.
#[derive(Clone, Copy)]
struct AttentionSettings {
    radix: usize,
    reduction_factor: usize,
    avg_down_stride: bool,
}

impl AttentionSettings {
    /// The split attention of a stage whose 3x3 conv is `width` channels in `groups` groups:
    /// mmdet's `inter_channels = max(width · radix // reduction_factor, 32)`, and the grouped
    /// convs' divisibility checked (PyTorch refuses them otherwise).
    fn resolve(self, stage: usize, width: usize, groups: usize) -> Result<SplitAttentionSpec> {
        let radix = self.radix;
        let parts = width
            .checked_mul(radix)
            .ok_or_else(|| ResNetError::Overflow {
                field: "radix".into(),
                what: format!("layer{stage}'s split-attention channels (width × radix)"),
            })?;
        let conv_groups = groups.saturating_mul(radix);
        if !width.is_multiple_of(conv_groups) {
            return Err(ResNetError::Incompatible {
                field: "radix".into(),
                reason: format!(
                    "layer{stage}'s split-attention conv has groups · radix = {conv_groups} \
                     groups, which must divide its {width} input channels"
                ),
            });
        }
        let inter_channels = (parts / self.reduction_factor).max(MIN_INTER_CHANNELS);
        if !inter_channels.is_multiple_of(groups) {
            return Err(ResNetError::Incompatible {
                field: "reduction_factor".into(),
                reason: format!(
                    "layer{stage}'s split attention squeezes to max(width · radix / \
                     reduction_factor, {MIN_INTER_CHANNELS}) = {inter_channels} channels in \
                     {groups} groups, which must divide them"
                ),
            });
        }
        Ok(SplitAttentionSpec {
            radix,
            inter_channels,
            avg_down_stride: self.avg_down_stride,
        })
    }
}

/// The fewest channels mmdet's split attention squeezes to.
const MIN_INTER_CHANNELS: usize = 32;

/// mmdet's `math.floor(planes * (base_width / base_channels))`: `base_width · planes /
/// base_channels`, except where the floating-point product lands just below it (e.g.
/// base_channels 11, base_width 15). `None` on overflow.
fn floor_width(planes: usize, base_width: usize, base_channels: usize) -> Option<usize> {
    let exact = (planes / base_channels).checked_mul(base_width)?;
    let float = (planes as f64 * (base_width as f64 / base_channels as f64)).floor();
    Some(if float < exact as f64 {
        exact - 1
    } else {
        exact
    })
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
