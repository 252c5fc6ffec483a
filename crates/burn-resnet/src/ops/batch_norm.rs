//! BatchNorm with batch statistics (training) and with given statistics (eval mode,
//! `norm_eval`, frozen stages), each with an optional ReLU.

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

/// BatchNorm of `[batch, channels, height, width]` with the batch's statistics, then a ReLU if
/// `apply_relu`; one differentiable op on flex's autodiff device.
pub(crate) fn batch_norm_train(
    x: Tensor<4>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
    apply_relu: bool,
) -> BatchNormStep {
    #[cfg(feature = "flex")]
    if let Some(result) = crate::flex_kernels::batch_norm::try_batch_norm_train(
        &x, &gamma, &beta, epsilon, apply_relu,
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
        output: if apply_relu {
            relu(result.output)
        } else {
            result.output
        },
        mean: result.mean,
        variance: result.variance,
    }
}

/// BatchNorm on the given statistics (`mean`, biased `variance`), then a ReLU if
/// `apply_relu`; one differentiable op on flex's autodiff device.
pub(crate) fn batch_norm_eval(
    x: Tensor<4>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    mean: Tensor<1>,
    variance: Tensor<1>,
    epsilon: f64,
    apply_relu: bool,
) -> Tensor<4> {
    #[cfg(feature = "flex")]
    if x.device().is_autodiff() {
        let read = |t: &Tensor<1>| t.clone().into_data().try_to_vec::<f32>().ok();
        if let (Some(mean), Some(variance)) = (read(&mean), read(&variance))
            && let Some(out) = crate::flex_kernels::batch_norm::try_batch_norm_eval(
                &x, &gamma, &beta, &mean, &variance, epsilon, apply_relu,
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
    if apply_relu { relu(out) } else { out }
}
