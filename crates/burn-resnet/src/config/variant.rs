//! What each backbone type adds to a ResNet's settings: its own keys and their defaults, what
//! mmdet's Res2Net and ResNeSt force, and ResNeSt's split-attention widths.

use super::resolve::at_least;
use super::{BackboneType, ResNetConfig, StagePool, Style, defaults};
use crate::arch::SplitAttentionSpec;
use crate::error::{ResNetError, Result};

impl ResNetConfig {
    /// The settings of this backbone type, defaults resolved: what mmdet's Res2Net and ResNeSt
    /// force (`deep_stem`, `avg_down`, Res2Net's pytorch style and no groups) must be stated as
    /// they force it, and each type's own keys (`scales`; `radix`, `reduction_factor`,
    /// `avg_down_stride`) belong to it only.
    pub(super) fn variant_settings(&self) -> Result<Variant> {
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
}

/// What a backbone type adds to the ResNet settings, defaults resolved.
pub(super) struct Variant {
    /// ResNeXt's or Res2Net's `base_width`.
    pub(super) base_width: usize,
    /// Res2Net's `scales` (1 elsewhere).
    pub(super) scales: usize,
    /// ResNeSt's split attention.
    pub(super) attention: Option<AttentionSettings>,
}

/// ResNeSt's keys, defaults resolved.
#[derive(Clone, Copy)]
pub(super) struct AttentionSettings {
    radix: usize,
    reduction_factor: usize,
    avg_down_stride: bool,
}

impl AttentionSettings {
    /// The split attention of a stage whose 3x3 conv is `width` channels in `groups` groups:
    /// mmdet's `inter_channels = max(width · radix // reduction_factor, 32)`, and the grouped
    /// convs' divisibility checked (PyTorch refuses them otherwise).
    pub(super) fn resolve(
        self,
        stage: usize,
        width: usize,
        groups: usize,
    ) -> Result<SplitAttentionSpec> {
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
