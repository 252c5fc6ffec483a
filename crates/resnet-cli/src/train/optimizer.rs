//! How `resnet train` updates the weights, for both tasks: SGD with momentum and weight decay,
//! under cosine learning-rate schedules (one for the head, one for the backbone), as the
//! training config sets them.

use burn::lr_scheduler::cosine::CosineAnnealingLrSchedulerConfig;
use burn::lr_scheduler::module_lr_scheduler::ModuleLrSchedulerConfig;
use burn::optim::SgdConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;

use super::config::TrainConfig;
use crate::error::CliError;

/// Cosine schedules over the whole run (`train_images` per epoch): `learning_rate` for the
/// head, times `backbone_lr_factor` for the backbone's parameter group.
pub fn scheduler(
    config: &TrainConfig,
    train_images: usize,
    backbone: burn::module::ParamGroup,
) -> Result<burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler, CliError> {
    let steps = config
        .epochs
        .checked_mul(train_images.div_ceil(config.batch_size))
        .ok_or_else(|| {
            CliError::Train(format!(
                "epochs × steps per epoch ({} × ⌈{train_images} / {}⌉) overflows",
                config.epochs, config.batch_size
            ))
        })?;
    let schedule = |lr: f64| CosineAnnealingLrSchedulerConfig::new(lr, steps);
    ModuleLrSchedulerConfig::new(schedule(config.learning_rate).into())
        .with_group(
            backbone,
            schedule(config.learning_rate * config.backbone_lr_factor),
        )
        .init()
        .map_err(CliError::Train)
}

/// SGD with momentum (no dampening) and weight decay.
pub fn optimizer(config: &TrainConfig) -> burn::optim::ModuleOptimizer {
    let momentum = MomentumConfig {
        momentum: config.momentum,
        dampening: 0.0,
        nesterov: false,
    };
    SgdConfig::new()
        .with_momentum(Some(momentum))
        .with_weight_decay(Some(WeightDecayConfig::new(config.weight_decay)))
        .init()
}
