//! [`ResNetSpec`]: a validated config with every default resolved.

use super::{ResNetConfig, StageSpec};
use crate::arch::BlockKind;
use crate::dcn::DcnConfig;
use crate::norm::StageMode;

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
