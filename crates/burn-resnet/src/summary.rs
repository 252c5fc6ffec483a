//! Parameter and multiply-add counts per stage, computed from the config alone (no tensors),
//! for `resnet info` and for checking a config against published figures.

use crate::config::ResNetSpec;
use crate::conv::ConvSpec;
use crate::dcn::DeformConv;
use crate::features::{Reductions, STAGE_NAMES};
use crate::layer::stage_block_specs;
use crate::plugin::{PluginConfig, PluginFigures, PluginPosition};
use crate::stem::{stem_convs, stem_pool_output_size};

impl ResNetSpec {
    /// The smallest input side the backbone takes, and what needs it, when it is more than 1:
    /// a NonLocal2d with `sub_sample` max-pools its keys 2x2, so its stage's maps must be at
    /// least 2x2 (the stage's output is its smallest map). Both sides shrink alike.
    pub fn min_input_size(&self) -> Option<(usize, String)> {
        let sub_sampled = |s: usize| {
            self.config.plugins.iter().any(|entry| matches!(entry.cfg, PluginConfig::NonLocal2d { sub_sample: true, .. }) && entry.applies_to(s))
        };
        let stages: Vec<usize> = (0..self.stages.len()).filter(|&s| sub_sampled(s)).collect();
        let last = *stages.last()?;
        let fits = |side: usize| {
            let summary = ModelSummary::new(self, side, side);
            stages.iter().all(|&s| summary.stages[s + 1].output_size.iter().all(|&n| n >= 2))
        };
        // Output sizes grow with the input, and a 2x2 map at stride r needs at most 2r + 1.
        let min = (1..=2 * Reductions::of(self).stages[last] + 1).find(|&side| fits(side))?;
        (min > 1).then(|| (min, format!("a sub-sampling NonLocal2d in layer{} needs 2x2 maps there", last + 1)))
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
    /// parameters: what the built module's `num_params` counts.
    pub params: usize,
    /// Multiply-accumulates of the convolutions (a deformable conv counted as a regular one
    /// plus its offset conv; the bilinear sampling is not counted) and of the plugins' convs,
    /// linears and attention products ([`crate::plugin::PluginFigures`]).
    pub macs: u64,
    /// The part of `params` in plugins.
    pub plugin_params: usize,
}

/// Figures of a whole backbone for one input size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSummary {
    /// Stem first, then every built stage (selected as an output or not).
    pub stages: Vec<StageSummary>,
}

impl ModelSummary {
    /// Count a validated config for an input of `height` x `width` (each >= 1).
    pub fn new(spec: &ResNetSpec, height: usize, width: usize) -> Self {
        let reductions = Reductions::of(spec);
        let mut size = [height, width];
        let mut counter = Counter::default();
        for conv in stem_convs(spec) {
            size = counter.conv(&conv, size);
        }
        let mut stages = vec![counter.finish("stem", None, 0, spec.stem_channels, size, reductions.stem)];
        size = size.map(stem_pool_output_size);

        for (index, blocks) in stage_block_specs(spec).iter().enumerate() {
            let mut counter = Counter::default();
            for block in blocks {
                let mut branch = size;
                for (position, conv) in block.convs().iter().enumerate() {
                    // A deformable conv2 also runs its offset conv on conv2's input.
                    if let (1, Some(dcn)) = (position, &block.dcn) {
                        counter.offset_conv(&DeformConv::offset_spec(*conv, dcn), branch);
                    }
                    branch = counter.conv(conv, branch);
                    // The plugins after this conv (and its norm), on its output.
                    let after = [PluginPosition::AfterConv1, PluginPosition::AfterConv2, PluginPosition::AfterConv3][position];
                    for entry in spec.config.plugins.iter().filter(|e| e.position == after && e.applies_to(index)) {
                        counter.plugin(entry.cfg.figures(conv.out_channels, branch));
                    }
                }
                if let Some(downsample) = &block.downsample {
                    counter.conv(&downsample.conv, size.map(|side| downsample.conv_input_size(side)));
                }
                size = branch;
            }
            let stage = &spec.stages[index];
            let reduction = reductions.stages[index];
            stages.push(counter.finish(STAGE_NAMES[index], Some(index), blocks.len(), stage.out_channels, size, reduction));
        }
        Self { stages }
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
}

/// Accumulates the figures of a run of conv → norm pairs.
#[derive(Default)]
struct Counter {
    params: usize,
    macs: u64,
    plugin_params: usize,
}

impl Counter {
    /// Count a conv and its norm; return the output size.
    fn conv(&mut self, conv: &ConvSpec, [height, width]: [usize; 2]) -> [usize; 2] {
        let out = [conv.output_size(height), conv.output_size(width)];
        self.params += conv.params() + 2 * conv.out_channels;
        self.macs += (conv.params() * out[0] * out[1]) as u64;
        out
    }

    /// Count a DCN's offset conv (with a bias, no norm).
    fn offset_conv(&mut self, conv: &ConvSpec, [height, width]: [usize; 2]) {
        let out = [conv.output_size(height), conv.output_size(width)];
        self.params += conv.params() + conv.out_channels;
        self.macs += (conv.params() * out[0] * out[1]) as u64;
    }

    /// Count a plugin.
    fn plugin(&mut self, figures: PluginFigures) {
        self.params += figures.params;
        self.plugin_params += figures.params;
        self.macs += figures.macs;
    }

    fn finish(
        self,
        name: &'static str,
        stage: Option<usize>,
        blocks: usize,
        out_channels: usize,
        output_size: [usize; 2],
        reduction: usize,
    ) -> StageSummary {
        StageSummary { name, stage, blocks, out_channels, reduction, output_size, params: self.params, macs: self.macs, plugin_params: self.plugin_params }
    }
}
