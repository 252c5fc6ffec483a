//! Parameter, multiply-add and activation counts per stage, computed from the config alone (no
//! tensors), for `resnet info`, for checking a config against published figures and for the
//! memory estimate ([`crate::memory`]). Every count is checked: a config or input size whose
//! figures do not fit in 64 bits is an [`ResNetError::Overflow`], never a wrapped number.

use crate::block::BranchConv;
use crate::checked::mul;
use crate::config::ResNetSpec;
use crate::conv::{ConvSpec, checked_output_size};
use crate::dcn::DeformConv;
use crate::error::{ResNetError, Result};
use crate::features::{Reductions, STAGE_NAMES};
use crate::layer::stage_block_specs;
use crate::plugin::{PluginConfig, PluginFigures};
use crate::stem::{stem_convs, stem_pool_output_size};

impl ResNetSpec {
    /// The smallest input side the backbone takes, and what needs it, when it is more than 1:
    /// a NonLocal2d with `sub_sample` max-pools its keys 2x2, so its stage's maps must be at
    /// least 2x2 (the stage's output is its smallest map). Both sides shrink alike.
    pub fn min_input_size(&self) -> Option<(usize, String)> {
        let sub_sampled = |s: usize| {
            self.config.plugins.iter().any(|entry| {
                matches!(
                    entry.cfg,
                    PluginConfig::NonLocal2d {
                        sub_sample: true,
                        ..
                    }
                ) && entry.applies_to(s)
            })
        };
        let stages: Vec<usize> = (0..self.stages.len()).filter(|&s| sub_sampled(s)).collect();
        let last = *stages.last()?;
        let fits = |side: usize| {
            let Ok(summary) = ModelSummary::new(self, side, side) else {
                return false;
            };
            stages
                .iter()
                .all(|&s| summary.stages[s + 1].output_size.iter().all(|&n| n >= 2))
        };
        // Output sizes grow with the input, and a 2x2 map at stride r needs at most 2r + 1.
        let bound = Reductions::of(self).stages[last]
            .checked_mul(2)?
            .checked_add(1)?;
        let min = (1..=bound).find(|&side| fits(side))?;
        (min > 1).then(|| {
            (
                min,
                format!(
                    "a sub-sampling NonLocal2d in layer{} needs 2x2 maps there",
                    last + 1
                ),
            )
        })
    }
}

/// Figures of the stem or one stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageSummary {
    /// `"stem"` or `"layer1"` … `"layer4"`.
    pub name: &'static str,
    /// The mmdet `out_indices` entry of a stage; `None` for the stem.
    pub stage: Option<usize>,
    /// Residual blocks (0 for the stem).
    pub blocks: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Total stride of the output relative to the input.
    pub reduction: usize,
    /// Output height and width.
    pub output_size: [usize; 2],
    /// Trainable parameters: conv weights (DCN offset convs included), norm weight and bias
    /// (running statistics are buffers, not parameters, as in PyTorch) and every plugin's
    /// parameters: what PyTorch's `parameters()` counts (Burn's `num_params` also counts the
    /// BatchNorms' running statistics).
    pub params: usize,
    /// Multiply-accumulates of the convolutions (a deformable conv counted as a regular one
    /// plus its offset conv; the bilinear sampling is not counted) and of the plugins' convs,
    /// linears and attention products ([`crate::plugin::PluginFigures`]).
    pub macs: u64,
    /// The part of `params` in plugins.
    pub plugin_params: usize,
    /// Values per image of every conv output in the stage (each also normalised and, mostly,
    /// activated) and of the plugins' inner tensors: what training keeps for the backward pass.
    pub activations: u64,
    /// Values per image of the largest single tensor the stage makes.
    pub largest_activation: u64,
    /// Values of the packed weight copy flex's inference kernels keep for the stage's convs
    /// (an upper bound: [`ConvSpec::checked_packed_values`]).
    pub packed_weights: u64,
}

/// Figures of a whole backbone for one input size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSummary {
    /// Stem first, then every built stage (selected as an output or not).
    pub stages: Vec<StageSummary>,
    /// Values per image of the input (`in_channels × height × width`).
    pub input_values: u64,
}

impl ModelSummary {
    /// Count a validated config for an input of `height` x `width` (each >= 1).
    ///
    /// Errors: [`ResNetError::TooSmall`] for a side of 0; [`ResNetError::Overflow`] when a
    /// figure does not fit in 64 bits (every figure of a validated config fits at 1x1, so then
    /// the input size is too large).
    pub fn new(spec: &ResNetSpec, height: usize, width: usize) -> Result<Self> {
        for (field, value) in [("input height", height), ("input width", width)] {
            if value == 0 {
                return Err(ResNetError::TooSmall {
                    field: field.into(),
                    value,
                    min: 1,
                });
            }
        }
        let input = format!("input {height}x{width}");
        Self::count(spec, height, width).map_err(|part| ResNetError::Overflow {
            field: input,
            what: match part {
                "input" => "the input's value count".into(),
                part => format!("{part}'s output size, multiply-adds or activations"),
            },
        })
    }

    /// The counting; on overflow, the name of the part that overflowed.
    pub(crate) fn count(
        spec: &ResNetSpec,
        height: usize,
        width: usize,
    ) -> std::result::Result<Self, &'static str> {
        let reductions = Reductions::of(spec);
        let input_values =
            mul(&[spec.config.in_channels as u64, height as u64, width as u64]).ok_or("input")?;
        let mut size = [height, width];
        let mut counter = Counter::default();
        for conv in stem_convs(spec) {
            size = counter.conv(&conv, size).ok_or("stem")?;
        }
        let mut stages = vec![
            counter
                .finish("stem", None, 0, spec.stem_channels, size, reductions.stem)
                .ok_or("stem")?,
        ];
        size = [
            stem_pool_output_size(size[0]).ok_or("stem")?,
            stem_pool_output_size(size[1]).ok_or("stem")?,
        ];

        for (index, blocks) in stage_block_specs(spec).iter().enumerate() {
            let name = STAGE_NAMES[index];
            let mut counter = Counter::default();
            for block in blocks {
                let mut branch = size;
                let mut first_output = None;
                for unit in block.branch() {
                    // The attention's squeeze convs work on a 1x1 map beside the branch.
                    if unit.squeeze {
                        counter.unit(&unit, [1, 1]).ok_or(name)?;
                        continue;
                    }
                    let input = match (unit.reads_first, first_output) {
                        (true, Some(first)) => first,
                        _ => branch,
                    };
                    // A deformable conv also runs its offset conv on its input.
                    if let (true, Some(dcn)) = (unit.deformable, &block.dcn) {
                        counter
                            .offset_conv(&DeformConv::offset_spec(unit.conv, dcn), input)
                            .ok_or(name)?;
                    }
                    branch = counter.unit(&unit, input).ok_or(name)?;
                    first_output.get_or_insert(branch);
                    if let Some(channels) = unit.reduced_to {
                        counter.map(channels, branch).ok_or(name)?;
                    }
                    if let Some(stride) = unit.pool_after {
                        // AvgPool2d(3, stride, padding 1).
                        let pooled = |n| checked_output_size(n, 3, stride, 1, 1).ok_or(name);
                        branch = [pooled(branch[0])?, pooled(branch[1])?];
                        let channels = unit.reduced_to.unwrap_or(unit.conv.out_channels);
                        counter.map(channels, branch).ok_or(name)?;
                    }
                    // The plugins after this conv (and its norm), on its output.
                    let Some((after, channels)) = unit.plugins_after else {
                        continue;
                    };
                    for entry in spec
                        .config
                        .plugins
                        .iter()
                        .filter(|e| e.position == after && e.applies_to(index))
                    {
                        counter
                            .plugin(entry.cfg.figures(channels, branch).ok_or(name)?)
                            .ok_or(name)?;
                    }
                }
                if let Some(downsample) = &block.downsample {
                    let input = [
                        downsample.conv_input_size(size[0]),
                        downsample.conv_input_size(size[1]),
                    ];
                    counter.conv(&downsample.conv, input).ok_or(name)?;
                }
                size = branch;
            }
            let stage = &spec.stages[index];
            let reduction = reductions.stages[index];
            stages.push(
                counter
                    .finish(
                        name,
                        Some(index),
                        blocks.len(),
                        stage.out_channels,
                        size,
                        reduction,
                    )
                    .ok_or(name)?,
            );
        }
        // The totals must fit too.
        let summary = Self {
            stages,
            input_values,
        };
        summary
            .stages
            .iter()
            .try_fold(0usize, |sum, s| sum.checked_add(s.params))
            .ok_or("the backbone")?;
        summary
            .stages
            .iter()
            .try_fold(0u64, |sum, s| sum.checked_add(s.macs))
            .ok_or("the backbone")?;
        summary
            .stages
            .iter()
            .try_fold(0u64, |sum, s| sum.checked_add(s.activations))
            .ok_or("the backbone")?;
        Ok(summary)
    }

    /// Parameters of the whole backbone.
    pub fn total_params(&self) -> usize {
        self.stages.iter().map(|s| s.params).sum()
    }

    /// Parameters of the plugins.
    pub fn plugin_params(&self) -> usize {
        self.stages.iter().map(|s| s.plugin_params).sum()
    }

    /// Multiply-accumulates of the whole backbone.
    pub fn total_macs(&self) -> u64 {
        self.stages.iter().map(|s| s.macs).sum()
    }

    /// Values per image of every stage's activations (see [`StageSummary::activations`]).
    pub fn total_activations(&self) -> u64 {
        self.stages.iter().map(|s| s.activations).sum()
    }

    /// Values of the packed weight copy flex's inference kernels keep (an upper bound).
    pub fn packed_weights(&self) -> u64 {
        self.stages.iter().map(|s| s.packed_weights).sum()
    }

    /// Values per image of the largest single tensor any stage makes.
    pub fn largest_activation(&self) -> u64 {
        self.stages
            .iter()
            .map(|s| s.largest_activation)
            .max()
            .unwrap_or(0)
    }
}

/// Accumulates the figures of a run of conv → norm pairs.
#[derive(Default)]
struct Counter {
    params: u64,
    macs: u64,
    plugin_params: u64,
    activations: u64,
    largest: u64,
    packed: u64,
}

impl Counter {
    /// Count a conv and its norm; return the output size.
    fn conv(&mut self, conv: &ConvSpec, size: [usize; 2]) -> Option<[usize; 2]> {
        self.conv_with(conv, size, false, true)
    }

    /// Count a branch conv, with its bias and norm if it has them; return the output size.
    fn unit(&mut self, unit: &BranchConv, size: [usize; 2]) -> Option<[usize; 2]> {
        self.conv_with(&unit.conv, size, unit.bias, unit.norm)
    }

    /// Count a conv, its bias (`bias`) and its norm's weight and bias (`norm`); return the
    /// output size.
    fn conv_with(
        &mut self,
        conv: &ConvSpec,
        [height, width]: [usize; 2],
        bias: bool,
        norm: bool,
    ) -> Option<[usize; 2]> {
        let out = [
            conv.checked_output_size(height)?,
            conv.checked_output_size(width)?,
        ];
        let weights = conv.checked_params()?;
        self.packed = self.packed.checked_add(conv.checked_packed_values()?)?;
        let per_channel = u64::from(bias) + 2 * u64::from(norm);
        self.params = self
            .params
            .checked_add(weights)?
            .checked_add(mul(&[per_channel, conv.out_channels as u64])?)?;
        self.add_output(weights, conv.out_channels, out)?;
        Some(out)
    }

    /// Count a map of `channels` x `size` the branch keeps without a conv (ResNeSt's attention
    /// output and its pooled map).
    fn map(&mut self, channels: usize, [height, width]: [usize; 2]) -> Option<()> {
        let values = mul(&[channels as u64, height as u64, width as u64])?;
        self.activations = self.activations.checked_add(values)?;
        self.largest = self.largest.max(values);
        Some(())
    }

    /// Count a DCN's offset conv (with a bias, no norm).
    fn offset_conv(&mut self, conv: &ConvSpec, [height, width]: [usize; 2]) -> Option<()> {
        let out = [
            conv.checked_output_size(height)?,
            conv.checked_output_size(width)?,
        ];
        let weights = conv.checked_params()?;
        self.params = self
            .params
            .checked_add(weights)?
            .checked_add(conv.out_channels as u64)?;
        self.add_output(weights, conv.out_channels, out)
    }

    /// The multiply-adds and activations of a conv output of `channels` x `out`.
    fn add_output(
        &mut self,
        weights: u64,
        channels: usize,
        [height, width]: [usize; 2],
    ) -> Option<()> {
        let positions = mul(&[height as u64, width as u64])?;
        self.macs = self.macs.checked_add(mul(&[weights, positions])?)?;
        let values = mul(&[channels as u64, positions])?;
        self.activations = self.activations.checked_add(values)?;
        self.largest = self.largest.max(values);
        Some(())
    }

    /// Count a plugin.
    fn plugin(&mut self, figures: PluginFigures) -> Option<()> {
        self.params = self.params.checked_add(figures.params as u64)?;
        self.plugin_params = self.plugin_params.checked_add(figures.params as u64)?;
        self.macs = self.macs.checked_add(figures.macs)?;
        self.activations = self.activations.checked_add(figures.activations)?;
        self.largest = self.largest.max(figures.largest_activation);
        Some(())
    }

    fn finish(
        self,
        name: &'static str,
        stage: Option<usize>,
        blocks: usize,
        out_channels: usize,
        output_size: [usize; 2],
        reduction: usize,
    ) -> Option<StageSummary> {
        Some(StageSummary {
            name,
            stage,
            blocks,
            out_channels,
            reduction,
            output_size,
            params: usize::try_from(self.params).ok()?,
            macs: self.macs,
            plugin_params: usize::try_from(self.plugin_params).ok()?,
            activations: self.activations,
            largest_activation: self.largest,
            packed_weights: self.packed,
        })
    }
}
