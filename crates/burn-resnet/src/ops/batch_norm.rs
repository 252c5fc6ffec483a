//! BatchNorm with batch statistics (training) and with given statistics (eval mode,
//! `norm_eval`, frozen stages), each with an optional residual add and ReLU after it.

use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::module;

/// A training BatchNorm's output and the batch statistics it normalised with.
pub(crate) struct BatchNormStep {
    /// `relu?(γ · (x − mean) / √(var + ε) + β)`.
    pub output: Tensor<4>,
    /// Per-channel batch mean.
    pub mean: Tensor<1>,
    /// Per-channel biased batch variance.
    pub variance: Tensor<1>,
}

/// `relu?(out + residual?)` for a norm's output `out`, `apply_relu` saying whether the ReLU
/// follows: what the fused ops do after the norm, in Burn's ops.
pub(crate) fn residual_relu(
    out: Tensor<4>,
    residual: Option<Tensor<4>>,
    apply_relu: bool,
) -> Tensor<4> {
    let out = match residual {
        Some(residual) => out + residual,
        None => out,
    };
    if apply_relu { relu(out) } else { out }
}

/// BatchNorm of `[batch, channels, height, width]` with the batch's statistics, then
/// `+ residual` if given, then a ReLU if `apply_relu`; one differentiable op on flex's
/// autodiff device.
pub(crate) fn batch_norm_train(
    x: Tensor<4>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
    (residual, apply_relu): (Option<Tensor<4>>, bool),
) -> BatchNormStep {
    #[cfg(feature = "flex")]
    if let Some(result) = crate::flex_kernels::batch_norm::try_batch_norm_train(
        &x,
        (&gamma, &beta),
        epsilon,
        (residual.as_ref(), apply_relu),
    ) {
        let device = x.device();
        let channels = [result.mean.len()];
        let tensor =
            |values| Tensor::from_data(burn::tensor::TensorData::new(values, channels), &device);
        return BatchNormStep {
            output: result.output,
            mean: tensor(result.mean),
            variance: tensor(result.variance),
        };
    }
    let result = module::batch_norm_train(x, gamma, beta, epsilon);
    BatchNormStep {
        output: residual_relu(result.output, residual, apply_relu),
        mean: result.mean,
        variance: result.variance,
    }
}

/// BatchNorm on the given statistics (`mean`, biased `variance`), then `+ residual` if given,
/// then a ReLU if `apply_relu`; one differentiable op on flex's autodiff device.
pub(crate) fn batch_norm_eval(
    x: Tensor<4>,
    (gamma, beta): (Tensor<1>, Tensor<1>),
    (mean, variance): (Tensor<1>, Tensor<1>),
    epsilon: f64,
    (residual, apply_relu): (Option<Tensor<4>>, bool),
) -> Tensor<4> {
    #[cfg(feature = "flex")]
    if x.device().is_autodiff() {
        let read = |t: &Tensor<1>| t.clone().into_data().try_to_vec::<f32>().ok();
        if let (Some(mean), Some(variance)) = (read(&mean), read(&variance))
            && let Some(out) = crate::flex_kernels::batch_norm::try_batch_norm_eval(
                &x,
                (&gamma, &beta),
                (&mean, &variance),
                epsilon,
                (residual.as_ref(), apply_relu),
            )
        {
            return out;
        }
    }
    let device = x.device();
    let out = module::batch_norm(
        x,
        gamma,
        beta,
        mean.to_device(&device),
        variance.to_device(&device),
        epsilon,
    );
    residual_relu(out, residual, apply_relu)
}
