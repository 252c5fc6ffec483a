//! The project's kernels against Burn's stock ops on flex (outputs and gradients), and the
//! cases where they must stand aside.

mod batch_norm;
mod conv;
mod conv_kernels;
mod conv_norm_eval;
pub(crate) mod conv_profile;
mod conv_train_profile;
mod deform;
mod max_pool;
mod profile;

use burn::tensor::Tensor;

/// Values of a tensor as f32.
fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 data")
}

/// Largest absolute difference over the largest magnitude of `expected`.
fn relative_difference(actual: Tensor<4>, expected: Tensor<4>) -> f32 {
    assert_eq!(actual.dims(), expected.dims(), "shape");
    max_relative(&values(actual), &values(expected))
}

/// [`relative_difference`] of two slices.
fn max_relative(actual: &[f32], expected: &[f32]) -> f32 {
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = actual
        .iter()
        .zip(expected)
        .fold(0f32, |m, (a, e)| m.max((a - e).abs()));
    diff / scale
}

/// The L2 norm of the difference over the L2 norm of `expected`.
fn l2_relative(actual: &[f32], expected: &[f32]) -> f64 {
    assert_eq!(actual.len(), expected.len(), "lengths");
    let diff: f64 = actual
        .iter()
        .zip(expected)
        .map(|(a, e)| ((a - e) as f64).powi(2))
        .sum();
    let norm: f64 = expected.iter().map(|e| (*e as f64).powi(2)).sum();
    diff.sqrt() / norm.sqrt().max(1e-30)
}
