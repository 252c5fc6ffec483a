//! [`ResNetSpec`]: a validated config with every default resolved.

use super::{ResNetConfig, StageSpec};
use crate::arch::BlockKind;
use crate::dcn::DcnConfig;
use crate::norm::{NormConfig, StageMode};

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

    /// The first stage that runs (up to the last of `out_indices`) whose ResNeSt split attention
    /// normalises with batch statistics in training: its `bn1` sees a 1x1 map, so there a
    /// training batch needs at least 2 images.
    pub fn first_batch_statistics_attention(&self) -> Option<usize> {
        if self.block != BlockKind::ResNeStBottleneck
            || !matches!(self.config.norm_cfg, NormConfig::Batch { .. })
        {
            return None;
        }
        let run = self.out_indices.last().map_or(0, |last| last + 1);
        (0..run).find(|&i| self.stage_mode(Some(i)).batch_statistics)
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
