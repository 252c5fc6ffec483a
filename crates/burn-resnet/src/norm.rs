//! The normalisation layer that follows every convolution (mmdet `norm_cfg`).

use burn::module::{Module, Param, RunningState};
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, BatchNormConfig, Identity};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor, module};

/// A normalisation layer. mmdet's default `norm_cfg = dict(type='BN')` is BatchNorm with
/// eps 1e-5 and momentum 0.1; it is initialised with weight 1, bias 0 (mmdet's init) or, for a
/// block's last norm under `zero_init_residual`, weight 0.
#[derive(Module, Debug)]
pub enum Norm {
    /// `nn.BatchNorm2d`.
    Batch(BatchNorm),
    /// A BatchNorm folded into the conv before it by [`Norm::fold_into`]: the identity.
    Folded(Identity),
}

impl Norm {
    /// A BatchNorm over `channels`, its weight set to `gamma` (1, or 0 for zero-init residual).
    pub fn batch(channels: usize, gamma: f32, device: &Device) -> Self {
        let mut norm = BatchNormConfig::new(channels).init(device);
        if gamma != 1.0 {
            norm.gamma = norm.gamma.map(|g| g.mul_scalar(gamma));
        }
        Norm::Batch(norm)
    }

    /// Normalise `[batch, channels, height, width]`.
    ///
    /// BatchNorm trains (batch statistics, running statistics updated) when the device is
    /// autodiff and the layer's training flag is on, as Burn's; otherwise it uses its running
    /// statistics.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_relu(x, false)
    }

    /// [`Norm::forward`], then a ReLU if `apply_relu`; in training on flex the two run as one
    /// op ([`crate::cpu::try_batch_norm_train`]).
    pub fn forward_relu(&self, x: Tensor<4>, apply_relu: bool) -> Tensor<4> {
        let out = match self {
            Norm::Batch(norm) if x.device().is_autodiff() && norm.training.is_enabled() => {
                return batch_norm_train(norm, x, apply_relu);
            }
            Norm::Batch(norm) => norm.forward(x),
            Norm::Folded(_) => x,
        };
        if apply_relu { relu(out) } else { out }
    }

    /// Fold this norm, with its running statistics (eval mode), into `conv`, the conv that
    /// feeds it: `w' = w · γ/√(σ² + ε)` per output channel and `b' = β − μ · γ/√(σ² + ε)`
    /// (plus the conv's own bias, scaled). Returns the new conv and [`Norm::Folded`]; together
    /// they compute what `conv → norm` computed in eval mode, in one op.
    pub fn fold_into(self, mut conv: Conv2d) -> (Conv2d, Norm) {
        let norm = match self {
            Norm::Batch(norm) => norm,
            folded @ Norm::Folded(_) => return (conv, folded),
        };
        let channels = norm.gamma.dims()[0];
        let scale = norm.gamma.val() / norm.running_var.value_sync().add_scalar(norm.epsilon).sqrt();
        let shift = norm.beta.val() - norm.running_mean.value_sync() * scale.clone();
        let bias = match conv.bias.take() {
            Some(bias) => bias.val() * scale.clone() + shift,
            None => shift,
        };
        conv.weight = conv.weight.map(|w| w * scale.reshape([channels, 1, 1, 1]));
        conv.bias = Some(Param::from_tensor(bias));
        (conv, Norm::Folded(Identity))
    }
}

/// BatchNorm's training path with PyTorch's running-variance update.
///
/// Burn's `BatchNorm` feeds its running variance the biased (population) batch variance;
/// PyTorch (and so every mmdet/torchvision checkpoint's statistics) uses the unbiased one,
/// `var · n / (n − 1)` with `n = batch · height · width`. Normalisation itself uses the biased
/// variance in both.
fn batch_norm_train(norm: &BatchNorm, x: Tensor<4>, apply_relu: bool) -> Tensor<4> {
    let [batch, _, height, width] = x.dims();
    let samples = (batch * height * width) as f64;
    // One sample per channel has no unbiased variance (PyTorch refuses to train on it); keep
    // the biased one (0) rather than dividing by zero.
    let bessel = if samples > 1.0 { samples / (samples - 1.0) } else { 1.0 };
    let device = x.device();
    let momentum = norm.momentum;
    let update = |running: &RunningState<Tensor<1>>, batch_stat: Tensor<1>| {
        let old = running.value_sync().to_device(&device);
        running.update(old.mul_scalar(1.0 - momentum).add(batch_stat.detach().mul_scalar(momentum)).detach());
    };
    #[cfg(feature = "flex")]
    if let Some(result) = crate::cpu::try_batch_norm_train(&x, &norm.gamma.val(), &norm.beta.val(), norm.epsilon, apply_relu) {
        let channels = [result.mean.len()];
        update(&norm.running_mean, Tensor::from_data(burn::tensor::TensorData::new(result.mean, channels), &device));
        let variance = Tensor::<1>::from_data(burn::tensor::TensorData::new(result.variance, channels), &device);
        update(&norm.running_var, variance.mul_scalar(bessel));
        return result.output;
    }
    let result = module::batch_norm_train(x, norm.gamma.val(), norm.beta.val(), norm.epsilon);
    update(&norm.running_mean, result.mean);
    update(&norm.running_var, result.variance.mul_scalar(bessel));
    if apply_relu { relu(result.output) } else { result.output }
}
