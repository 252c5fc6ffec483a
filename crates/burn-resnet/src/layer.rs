//! `ResLayer`: one stage of residual blocks (mmdet `models/layers/res_layer.py`).

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::block::{Block, BlockSpec, DownsampleSpec};
use crate::config::ResNetSpec;
use crate::norm::{NormConfig, StageMode};

/// The blocks of every stage of a validated config, stage by stage.
///
/// mmdet semantics: the first block of a stage carries the stride and, when the stride is not 1
/// or the channels change, the projection shortcut; every block of the stage uses the stage's
/// dilation. Res2Net's `Res2Layer` is the same with `avg_down` shortcuts (which its config
/// states) and its first block of `stage_type = 'stage'`; ResNeSt's is the same with its split
/// attention.
pub fn stage_block_specs(spec: &ResNetSpec) -> Vec<Vec<BlockSpec>> {
    let config = &spec.config;
    let mut in_channels = spec.stem_channels;
    spec.stages
        .iter()
        .enumerate()
        .map(|(stage_index, stage)| {
            (0..stage.num_blocks)
                .map(|index| {
                    let stride = if index == 0 { stage.stride } else { 1 };
                    let needs_projection = stride != 1 || in_channels != stage.out_channels;
                    let block = BlockSpec {
                        kind: spec.block,
                        in_channels,
                        planes: stage.planes,
                        width: stage.width,
                        stride,
                        dilation: stage.dilation,
                        groups: config.groups,
                        style: config.style,
                        downsample: needs_projection.then(|| {
                            DownsampleSpec::new(
                                in_channels,
                                stage.out_channels,
                                stride,
                                config.avg_down,
                            )
                        }),
                        dcn: None,
                        scales: stage.scales,
                        first_in_stage: index == 0,
                        stage_pool: config.stage_pool.unwrap_or_default(),
                        attention: stage.attention,
                    };
                    // `fallback_on_stride` keeps a regular conv where the 3x3 conv is strided.
                    let conv2_stride = block.spatial_conv_stride();
                    let block = BlockSpec {
                        dcn: spec
                            .stage_dcn(stage_index)
                            .filter(|dcn| !(dcn.fallback_on_stride && conv2_stride > 1))
                            .copied(),
                        ..block
                    };
                    in_channels = stage.out_channels;
                    block
                })
                .collect()
        })
        .collect()
}

/// One stage (mmdet's `layer1` … `layer4`).
#[derive(Module, Debug)]
pub struct ResLayer {
    /// The residual blocks, in order.
    pub blocks: Vec<Block>,
}

impl ResLayer {
    /// Build a stage from its block specs.
    pub fn init(
        blocks: &[BlockSpec],
        zero_init_residual: bool,
        norm: &NormConfig,
        device: &Device,
    ) -> Self {
        Self {
            blocks: blocks
                .iter()
                .map(|block| block.init(zero_init_residual, norm, device))
                .collect(),
        }
    }

    /// Run every block in turn, norms in `mode`.
    pub fn forward(&self, x: Tensor<4>, mode: StageMode) -> Tensor<4> {
        self.blocks
            .iter()
            .fold(x, |x, block| block.forward(x, mode))
    }
}
