//! Feature metadata: what each backbone output is, like timm's `feature_info`.

use crate::config::ResNetSpec;
use crate::stem::{STEM_POOL, stem_convs};

/// mmdet's attribute names of the four stages.
pub const STAGE_NAMES: [&str; 4] = ["layer1", "layer2", "layer3", "layer4"];

/// Describes one output of the backbone, so a neck can be built without hand-written numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureInfo {
    /// Module name: `"stem"` or `"layer1"` … `"layer4"` (mmdet's attribute names).
    pub module: &'static str,
    /// Pyramid level: 1 for the stem (C1), `stage + 2` for a stage (C2 … C5).
    pub level: usize,
    /// The mmdet `out_indices` entry of a stage; `None` for the stem.
    pub stage: Option<usize>,
    /// Channels of the output.
    pub channels: usize,
    /// Total stride relative to the input (timm's `reduction`).
    pub reduction: usize,
}

impl FeatureInfo {
    /// `"C1"` … `"C5"`.
    pub fn level_name(&self) -> String {
        format!("C{}", self.level)
    }

    /// Output height and width for an input of `height` x `width` (each >= 1).
    ///
    /// Every stride-`s` layer of a ResNet maps a side `n` to `ceil(n / s)`, so the output is
    /// `ceil(side / reduction)`.
    pub fn spatial_size(&self, height: usize, width: usize) -> [usize; 2] {
        [
            height.div_ceil(self.reduction),
            width.div_ceil(self.reduction),
        ]
    }
}

/// Total stride of the stem's output and of each stage's output relative to the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reductions {
    /// The stem's activation (C1), before the max-pool.
    pub stem: usize,
    /// Each built stage's output.
    pub stages: Vec<usize>,
}

impl Reductions {
    /// The reductions of a validated config: the stem's conv strides, then the max-pool's and
    /// each stage's stride.
    pub fn of(spec: &ResNetSpec) -> Self {
        let stem: usize = stem_convs(spec).iter().map(|conv| conv.stride).product();
        let (_, pool_stride, _) = STEM_POOL;
        let stages = spec
            .stages
            .iter()
            .scan(stem * pool_stride, |reduction, stage| {
                *reduction *= stage.stride;
                Some(*reduction)
            })
            .collect();
        Self { stem, stages }
    }
}

/// Metadata of every output a validated config produces, in output order: the stem first when
/// `stem_output`, then the selected stages in stage order.
pub fn feature_info(spec: &ResNetSpec) -> Vec<FeatureInfo> {
    let reductions = Reductions::of(spec);
    let stem = spec.config.stem_output.then_some(FeatureInfo {
        module: "stem",
        level: 1,
        stage: None,
        channels: spec.stem_channels,
        reduction: reductions.stem,
    });
    let stages = spec.out_indices.iter().map(|&index| FeatureInfo {
        module: STAGE_NAMES[index],
        level: index + 2,
        stage: Some(index),
        channels: spec.stages[index].out_channels,
        reduction: reductions.stages[index],
    });
    stem.into_iter().chain(stages).collect()
}
