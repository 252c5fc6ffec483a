//! The config's defaults, each stated once: serde fills a missing key from these,
//! [`ResNetConfig::new`](super::ResNetConfig::new) is built from serde's defaults, the field
//! docs link here, and a test checks the config reference in `docs/configs.md` against them.
//! Keys whose default is "not set" (`None`, `false`, an empty list) take their type's default.

/// `in_channels`: an RGB image.
pub const IN_CHANNELS: usize = 3;
/// `base_channels`: `planes` of the first stage, as in every ImageNet ResNet.
pub const BASE_CHANNELS: usize = 64;
/// `num_stages`: all four.
pub const NUM_STAGES: usize = 4;
/// `groups`: a plain ResNet (no ResNeXt grouping).
pub const GROUPS: usize = 1;
/// `base_width` of a ResNeXt: the width per group at the first stage (read when `groups > 1`).
pub const RESNEXT_BASE_WIDTH: usize = 4;
/// `base_width` of a Res2Net: the width per split at the first stage (mmdet's, `26w`).
pub const RES2NET_BASE_WIDTH: usize = 26;
/// `scales` of a Res2Net: splits per Bottle2neck (mmdet's, `4s`).
pub const RES2NET_SCALES: usize = 4;
/// `radix` of a ResNeSt: parts per split-attention conv (mmdet's).
pub const RESNEST_RADIX: usize = 2;
/// `reduction_factor` of a ResNeSt (mmdet's).
pub const RESNEST_REDUCTION_FACTOR: usize = 4;
/// `avg_down_stride` of a ResNeSt (mmdet's).
pub const RESNEST_AVG_DOWN_STRIDE: bool = true;
/// `strides` when not given: the stem's stride 4, then halving at every stage but the first
/// (cut to `num_stages`).
pub const STRIDES: [usize; 4] = [1, 2, 2, 2];
/// `dilations` when not given: no dilation (cut to `num_stages`).
pub const DILATIONS: [usize; 4] = [1; 4];
/// `zero_init_residual`: as in mmdet.
pub const ZERO_INIT_RESIDUAL: bool = true;
/// `frozen_stages`: nothing frozen.
pub const FROZEN_STAGES: i64 = -1;

// serde's `default = "..."` takes a function.
pub(super) fn in_channels() -> usize {
    IN_CHANNELS
}
pub(super) fn base_channels() -> usize {
    BASE_CHANNELS
}
pub(super) fn num_stages() -> usize {
    NUM_STAGES
}
pub(super) fn groups() -> usize {
    GROUPS
}
pub(super) fn zero_init_residual() -> bool {
    ZERO_INIT_RESIDUAL
}
pub(super) fn frozen_stages() -> i64 {
    FROZEN_STAGES
}
