//! Validation: every field checked, and the defaults that depend on other fields resolved, into
//! a [`ResNetSpec`].

use super::variant::Variant;
use super::{BackboneType, BlockKind, ResNetConfig, ResNetSpec, StageSpec, defaults};
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

pub(super) fn at_least(field: &str, value: usize, min: usize) -> Result<()> {
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
