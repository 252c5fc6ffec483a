//! [`NormConfig`]: mmdet's `norm_cfg`, its defaults, checks and the norm it builds.

use burn::module::Param;
use burn::nn::{BatchNormConfig, GroupNormConfig};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::Norm;
use crate::error::{ResNetError, Result};

/// mmdet `norm_cfg`: which norm follows each conv. TOML: a `[norm_cfg]` table with a `type`.
/// Default: a BatchNorm (`type = "BN"`) with [`REQUIRES_GRAD`], [`EPSILON`] and [`MOMENTUM`]
/// (mmdet's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum NormConfig {
    /// `nn.BatchNorm2d` (`"BN"`; mmdet's `"SyncBN"` reads as the same on one device).
    #[serde(rename = "BN", alias = "SyncBN")]
    Batch {
        /// mmdet `requires_grad`: the affine weight and bias train. Default
        /// [`REQUIRES_GRAD`].
        #[serde(default = "requires_grad")]
        requires_grad: bool,
        /// Added to the variance. Default [`EPSILON`].
        #[serde(default = "epsilon")]
        eps: f64,
        /// Running-statistics update rate (PyTorch's convention). Default [`MOMENTUM`].
        #[serde(default = "momentum")]
        momentum: f64,
    },
    /// `nn.GroupNorm` (`"GN"`): statistics per sample and group, the same in training and
    /// inference.
    #[serde(rename = "GN")]
    Group {
        /// Groups; must divide the channels of every norm. Required (mmdet: 32).
        num_groups: usize,
        /// mmdet `requires_grad`. Default [`REQUIRES_GRAD`].
        #[serde(default = "requires_grad")]
        requires_grad: bool,
        /// Added to the variance. Default [`EPSILON`].
        #[serde(default = "epsilon")]
        eps: f64,
    },
    /// Frozen BatchNorm (`"FrozenBN"`, torchvision's `FrozenBatchNorm2d`): fixed affine and
    /// statistics, never trained or updated, as detection models fine-tune from ImageNet weights.
    #[serde(rename = "FrozenBN")]
    FrozenBatch {
        /// Added to the variance. Default [`EPSILON`].
        #[serde(default = "epsilon")]
        eps: f64,
    },
}

/// `requires_grad` when not given: the affine parameters train (mmdet's).
pub const REQUIRES_GRAD: bool = true;
/// `eps` when not given (PyTorch's and mmdet's).
pub const EPSILON: f64 = 1e-5;
/// `momentum` of a BatchNorm when not given (PyTorch's).
pub const MOMENTUM: f64 = 0.1;

// serde's `default = "..."` takes a function.
fn requires_grad() -> bool {
    REQUIRES_GRAD
}
fn epsilon() -> f64 {
    EPSILON
}
fn momentum() -> f64 {
    MOMENTUM
}

/// mmdet's default `norm_cfg`: a BatchNorm with the defaults above.
impl Default for NormConfig {
    fn default() -> Self {
        NormConfig::Batch {
            requires_grad: REQUIRES_GRAD,
            eps: EPSILON,
            momentum: MOMENTUM,
        }
    }
}

impl NormConfig {
    /// Check the numbers, and that GroupNorm's groups divide every norm's `channels`.
    pub fn validate(&self, channels: impl IntoIterator<Item = usize>) -> Result<()> {
        let eps = match self {
            NormConfig::Batch { eps, .. }
            | NormConfig::Group { eps, .. }
            | NormConfig::FrozenBatch { eps } => *eps,
        };
        if !(eps.is_finite() && eps > 0.0) {
            return Err(ResNetError::Incompatible {
                field: "norm_cfg.eps".into(),
                reason: format!("{eps} must be a positive number"),
            });
        }
        if let NormConfig::Batch { momentum, .. } = self
            && !(0.0..=1.0).contains(momentum)
        {
            return Err(ResNetError::Incompatible {
                field: "norm_cfg.momentum".into(),
                reason: format!(
                    "{momentum} must lie in 0..=1 (PyTorch's convention: the weight of the batch)"
                ),
            });
        }
        if let NormConfig::Group { num_groups, .. } = self {
            if *num_groups == 0 {
                return Err(ResNetError::TooSmall {
                    field: "norm_cfg.num_groups".into(),
                    value: 0,
                    min: 1,
                });
            }
            if let Some(bad) = channels.into_iter().find(|c| c % num_groups != 0) {
                return Err(ResNetError::Incompatible {
                    field: "norm_cfg.num_groups".into(),
                    reason: format!("{num_groups} groups do not divide a norm of {bad} channels"),
                });
            }
        }
        Ok(())
    }

    /// A norm over `channels`, its weight set to `gamma` (1, or 0 for zero-init residual).
    pub fn init(&self, channels: usize, gamma: f32, device: &Device) -> Norm {
        let scale = |param: Param<Tensor<1>>| {
            if gamma != 1.0 {
                crate::param_init::remade(param, |g| g.mul_scalar(gamma))
            } else {
                param
            }
        };
        match *self {
            NormConfig::Batch { eps, momentum, .. } => {
                let mut norm = BatchNormConfig::new(channels)
                    .with_epsilon(eps)
                    .with_momentum(momentum)
                    .init(device);
                norm.gamma = scale(norm.gamma);
                Norm::Batch(norm)
            }
            NormConfig::FrozenBatch { eps } => {
                let mut norm = BatchNormConfig::new(channels)
                    .with_epsilon(eps)
                    .init(device);
                norm.gamma = scale(norm.gamma);
                Norm::Frozen(norm)
            }
            NormConfig::Group {
                num_groups, eps, ..
            } => {
                let mut norm = GroupNormConfig::new(num_groups, channels)
                    .with_epsilon(eps)
                    .init(device);
                norm.gamma = norm.gamma.map(scale);
                Norm::Group(norm)
            }
        }
    }

    /// mmdet `requires_grad`: whether the affine parameters train (never for FrozenBN).
    pub fn requires_grad(&self) -> bool {
        match self {
            NormConfig::Batch { requires_grad, .. } | NormConfig::Group { requires_grad, .. } => {
                *requires_grad
            }
            NormConfig::FrozenBatch { .. } => false,
        }
    }
}
