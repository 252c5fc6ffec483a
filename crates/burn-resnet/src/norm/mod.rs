//! The normalisation layer that follows every convolution: mmdet's `norm_cfg` (BatchNorm,
//! GroupNorm, frozen BatchNorm, with `requires_grad`), and how it runs in a given stage
//! ([`StageMode`]: `norm_eval`, `frozen_stages`, `with_cp`).

mod config;

pub use config::{EPSILON, MOMENTUM, NormConfig, REQUIRES_GRAD};

use burn::module::{Module, Param, RunningState};
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, GroupNorm, Identity};
use burn::tensor::Tensor;

use crate::ops;

/// How one part of the backbone (the stem or a stage) runs: derived from the config
/// (`norm_eval`, `frozen_stages`, `norm_cfg.requires_grad`, `with_cp`) on every forward pass, so
/// no `train()`/`valid()` switch can undo it (mmdet PR #577 was that bug).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageMode {
    /// BatchNorm may normalise with batch statistics and update its running statistics (it
    /// does when the device is autodiff and the layer's training flag is on). `false`: running
    /// statistics, never updated (`norm_eval`, frozen stages).
    pub batch_statistics: bool,
    /// The affine weight and bias receive gradients.
    pub train_affine: bool,
    /// mmdet `with_cp`: residual blocks keep only their input for the backward pass and
    /// recompute the rest there.
    pub recompute: bool,
}

impl StageMode {
    /// Plain training: batch statistics where training, trainable affine.
    pub const TRAIN: StageMode = StageMode {
        batch_statistics: true,
        train_affine: true,
        recompute: false,
    };
    /// Frozen: running statistics, no gradients.
    pub const FROZEN: StageMode = StageMode {
        batch_statistics: false,
        train_affine: false,
        recompute: false,
    };
}

/// A normalisation layer (mmdet `norm_cfg`), initialised as mmdet does: weight 1, bias 0 or,
/// for a block's last norm under `zero_init_residual`, weight 0.
#[derive(Module, Debug)]
pub enum Norm {
    /// `nn.BatchNorm2d`.
    Batch(BatchNorm),
    /// `nn.GroupNorm`.
    Group(GroupNorm),
    /// Frozen BatchNorm: always running statistics, affine and statistics never trained.
    Frozen(BatchNorm),
    /// A BatchNorm folded into the conv before it by [`Norm::fold_into`]: the identity.
    Folded(Identity),
}

impl Norm {
    /// Give a BatchNorm running statistics of its own. A cloned module shares them with the
    /// original (Burn's `RunningState` is a shared cell), so writing a clone's statistics (a
    /// weight load) would change the original's too.
    pub(crate) fn own_running_statistics(&mut self) {
        if let Norm::Batch(bn) | Norm::Frozen(bn) = self {
            bn.running_mean = RunningState::new(bn.running_mean.value());
            bn.running_var = RunningState::new(bn.running_var.value());
        }
    }

    /// Normalise `[batch, channels, height, width]` in `mode`.
    pub fn forward(&self, x: Tensor<4>, mode: StageMode) -> Tensor<4> {
        self.forward_relu(x, false, mode)
    }

    /// [`Norm::forward`], then a ReLU if `apply_relu`; BatchNorm training on flex runs the two
    /// as one op (`crate::ops::batch_norm_train`).
    pub fn forward_relu(&self, x: Tensor<4>, apply_relu: bool, mode: StageMode) -> Tensor<4> {
        self.forward_add_relu(x, None, apply_relu, mode)
    }

    /// `relu?(norm(x) + residual?)`: a block's last unit after its conv. A BatchNorm on flex's
    /// autodiff device runs it as one op (`crate::ops::batch_norm_train`, `batch_norm_eval`).
    pub(crate) fn forward_add_relu(
        &self,
        x: Tensor<4>,
        residual: Option<Tensor<4>>,
        apply_relu: bool,
        mode: StageMode,
    ) -> Tensor<4> {
        let tail = (residual, apply_relu);
        if let Some(norm) = self.training_batch_norm(mode, x.device().is_autodiff()) {
            return batch_norm_train(norm, x, tail, mode.train_affine);
        }
        let affine = |param: &Param<Tensor<1>>, train: bool| {
            if train {
                param.val()
            } else {
                param.val().detach()
            }
        };
        let out = match self {
            Norm::Batch(norm) => return batch_norm_eval(norm, x, mode.train_affine, tail),
            Norm::Frozen(norm) => return batch_norm_eval(norm, x, false, tail),
            Norm::Group(norm) => {
                let (gamma, beta) = match (&norm.gamma, &norm.beta) {
                    (Some(gamma), Some(beta)) => (
                        affine(gamma, mode.train_affine),
                        affine(beta, mode.train_affine),
                    ),
                    _ => unreachable!("NormConfig::init makes affine GroupNorms"),
                };
                group_norm(x, gamma, beta, norm.num_groups, norm.epsilon)
            }
            Norm::Folded(_) => x,
        };
        let (residual, apply_relu) = tail;
        ops::residual_relu(out, residual, apply_relu)
    }

    /// The BatchNorm that normalises with batch statistics (and updates its running ones) in
    /// `mode`, on an autodiff device or not: one whose training flag is on, on an autodiff
    /// device, where the mode allows batch statistics.
    pub(crate) fn training_batch_norm(
        &self,
        mode: StageMode,
        autodiff: bool,
    ) -> Option<&BatchNorm> {
        match self {
            Norm::Batch(norm)
                if mode.batch_statistics && autodiff && norm.training.is_enabled() =>
            {
                Some(norm)
            }
            _ => None,
        }
    }

    /// Fold this norm, with its running statistics (eval mode), into `conv`, the conv that
    /// feeds it: `w' = w · γ/√(σ² + ε)` per output channel and `b' = β − μ · γ/√(σ² + ε)`
    /// (plus the conv's own bias, scaled). Returns the new conv and [`Norm::Folded`]; together
    /// they compute what `conv → norm` computed in eval mode, in one op. GroupNorm (statistics
    /// per sample) does not fold and comes back as it is.
    pub fn fold_into(self, mut conv: Conv2d) -> (Conv2d, Norm) {
        let Some((weight, bias)) = self.fold_weights(&conv.weight, conv.bias.as_ref()) else {
            return (conv, self);
        };
        conv.weight = weight;
        conv.bias = Some(bias);
        (conv, Norm::Folded(Identity))
    }

    /// The folded `weight` (`[out, …]`) and bias of [`Norm::fold_into`], for any conv's
    /// parameters; `None` for a norm that does not fold. The norm's place is then taken by
    /// [`Norm::Folded`].
    pub fn fold_weights(
        &self,
        weight: &Param<Tensor<4>>,
        bias: Option<&Param<Tensor<1>>>,
    ) -> Option<(Param<Tensor<4>>, Param<Tensor<1>>)> {
        let norm = match self {
            Norm::Batch(norm) | Norm::Frozen(norm) => norm,
            Norm::Group(_) | Norm::Folded(_) => return None,
        };
        let channels = norm.gamma.dims()[0];
        let scale = norm.gamma.val()
            / norm
                .running_var
                .value_sync()
                .add_scalar(norm.epsilon)
                .sqrt();
        let shift = norm.beta.val() - norm.running_mean.value_sync() * scale.clone();
        let bias = match bias {
            Some(bias) => bias.val() * scale.clone() + shift,
            None => shift,
        };
        let weight = weight
            .clone()
            .map(|w| w * scale.reshape([channels, 1, 1, 1]));
        Some((weight, Param::from_tensor(bias)))
    }
}

/// BatchNorm's training path with PyTorch's running-variance update.
///
/// Burn's `BatchNorm` feeds its running variance the biased (population) batch variance;
/// PyTorch (and so every mmdet/torchvision checkpoint's statistics) uses the unbiased one,
/// `var · n / (n − 1)` with `n = batch · height · width`. Normalisation itself uses the biased
/// variance in both.
fn batch_norm_train(
    norm: &BatchNorm,
    x: Tensor<4>,
    tail: (Option<Tensor<4>>, bool),
    train_affine: bool,
) -> Tensor<4> {
    let dims = x.dims();
    let (gamma, beta) = affine_values(norm, train_affine);
    let step = ops::batch_norm_train(x, gamma, beta, norm.epsilon, tail);
    update_running_statistics(norm, step.mean, step.variance, dims);
    step.output
}

/// Move a BatchNorm's running statistics towards a batch's `mean` and biased `variance`
/// (measured on an input of shape `dims`), as PyTorch does.
pub(crate) fn update_running_statistics(
    norm: &BatchNorm,
    mean: Tensor<1>,
    variance: Tensor<1>,
    dims: [usize; 4],
) {
    let [batch, _, height, width] = dims;
    let samples = (batch * height * width) as f64;
    // One sample per channel has no unbiased variance (PyTorch refuses to train on it); keep
    // the biased one (0) rather than dividing by zero.
    let bessel = if samples > 1.0 {
        samples / (samples - 1.0)
    } else {
        1.0
    };
    let momentum = norm.momentum;
    let update = |running: &RunningState<Tensor<1>>, batch_stat: Tensor<1>| {
        let old = running.value_sync().to_device(&batch_stat.device());
        running.update(
            old.mul_scalar(1.0 - momentum)
                .add(batch_stat.detach().mul_scalar(momentum))
                .detach(),
        );
    };
    update(&norm.running_mean, mean);
    update(&norm.running_var, variance.mul_scalar(bessel));
}

/// A BatchNorm's weight and bias, detached unless they train.
pub(crate) fn affine_values(norm: &BatchNorm, train: bool) -> (Tensor<1>, Tensor<1>) {
    let (gamma, beta) = (norm.gamma.val(), norm.beta.val());
    if train {
        (gamma, beta)
    } else {
        (gamma.detach(), beta.detach())
    }
}

/// BatchNorm with its running statistics (eval mode, `norm_eval`, frozen), then the `tail`
/// (residual, ReLU): the statistics are read, never updated, whatever the layer's training flag
/// says. On flex's autodiff device it runs as one op (`crate::ops::batch_norm_eval`).
fn batch_norm_eval(
    norm: &BatchNorm,
    x: Tensor<4>,
    train_affine: bool,
    tail: (Option<Tensor<4>>, bool),
) -> Tensor<4> {
    let statistics = (
        norm.running_mean.value_sync(),
        norm.running_var.value_sync(),
    );
    let affine = affine_values(norm, train_affine);
    ops::batch_norm_eval(x, affine, statistics, norm.epsilon, tail)
}

/// GroupNorm: each sample's channels in `groups` groups, normalised by their own mean and
/// (biased) variance, then the per-channel affine map.
fn group_norm(
    x: Tensor<4>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    groups: usize,
    epsilon: f64,
) -> Tensor<4> {
    let [batch, channels, height, width] = x.dims();
    let grouped = x.reshape([batch, groups, channels / groups * height * width]);
    let mean = grouped.clone().mean_dim(2);
    let centered = grouped - mean;
    let variance = centered.clone().square().mean_dim(2);
    let normalized =
        (centered / variance.add_scalar(epsilon).sqrt()).reshape([batch, channels, height, width]);
    normalized * gamma.reshape([1, channels, 1, 1]) + beta.reshape([1, channels, 1, 1])
}
