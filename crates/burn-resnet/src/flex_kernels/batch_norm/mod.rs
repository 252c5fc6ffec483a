//! BatchNorm's training step (batch statistics), optionally followed by a residual add and a
//! ReLU (a block's last unit), as one differentiable op on flex's autodiff device: one pass for
//! the statistics, one for the output, and two for the gradients, per channel and in cache,
//! statistics accumulated in f64. Also BatchNorm on its running statistics (`norm_eval`,
//! frozen stages) with trainable affine parameters, + residual, + ReLU, as one op: one pass
//! forward, one backward (two with a residual).
//!
//! The forward pass is [`forward`], the gradients [`backward`], their registration with flex's
//! autodiff [`autodiff`].
//!
//! Burn 0.22's default `batch_norm_train` (which flex inherits) builds the statistics from
//! transposed copies and a dozen separate tensor ops, forward and backward; on ResNet-50's
//! shapes that cost about as much as the convolutions' backward pass.

mod autodiff;
pub(crate) mod backward;
pub(crate) mod forward;

use burn::tensor::Tensor;

use super::SendPtr;

pub(crate) use backward::batch_norm_backward;
pub(crate) use forward::batch_norm_forward;

/// The output of [`try_batch_norm_train`]: the (differentiable) output and the batch
/// statistics the running statistics are updated from.
pub struct BatchNormTrainOutput {
    /// `relu?(γ · (x − mean) / √(var + ε) + β)`.
    pub output: Tensor<4>,
    /// Per-channel batch mean.
    pub mean: Vec<f32>,
    /// Per-channel biased batch variance (what normalises the batch).
    pub variance: Vec<f32>,
}

/// Per-channel statistics and the affine map they give.
#[derive(Clone, Debug)]
pub(crate) struct ChannelStats {
    pub(crate) mean: Vec<f32>,
    pub(crate) variance: Vec<f32>,
    /// `γ / √(var + ε)` and `β − mean · scale`: the output is `x · scale + shift`.
    pub(crate) scale: Vec<f32>,
    pub(crate) shift: Vec<f32>,
}

/// The element ranges of channel `channel`: one contiguous plane per image.
pub(super) fn planes(
    shape: [usize; 4],
    channel: usize,
) -> impl Iterator<Item = std::ops::Range<usize>> {
    let [batch, channels, h, w] = shape;
    let plane = h * w;
    (0..batch).map(move |n| (n * channels + channel) * plane..(n * channels + channel + 1) * plane)
}

/// Channel `channel`'s planes of a `shape`d output behind `ptr`, with their ranges.
///
/// # Safety
/// `ptr` must point to `shape`'s product of floats, and no two live iterators may be for the
/// same channel (the planes of different channels are disjoint).
pub(super) unsafe fn channel_planes<'a>(
    ptr: SendPtr,
    shape: [usize; 4],
    channel: usize,
) -> impl Iterator<Item = (std::ops::Range<usize>, &'a mut [f32])> {
    // SAFETY: each range lies inside the buffer (caller), and is handed out once.
    planes(shape, channel).map(move |r| {
        (r.clone(), unsafe {
            std::slice::from_raw_parts_mut(ptr.get().add(r.start), r.len())
        })
    })
}

/// BatchNorm with batch statistics (training), then `+ residual` if one is given, then a ReLU
/// if `relu`, when the tensors live on flex's autodiff device as f32 (`x` contiguous);
/// `None` otherwise.
pub fn try_batch_norm_train(
    x: &Tensor<4>,
    (gamma, beta): (&Tensor<1>, &Tensor<1>),
    epsilon: f64,
    (residual, relu): (Option<&Tensor<4>>, bool),
) -> Option<BatchNormTrainOutput> {
    autodiff::batch_norm_op(x, (gamma, beta), epsilon, (residual, relu), None)
}

/// BatchNorm on the given running statistics (`mean`, `variance`), then `+ residual` if one is
/// given, then a ReLU if `relu`, differentiable in `x`, `gamma`, `beta` and the residual, on
/// flex's autodiff device; `None` where it does not apply.
pub fn try_batch_norm_eval(
    x: &Tensor<4>,
    (gamma, beta): (&Tensor<1>, &Tensor<1>),
    (mean, variance): (&[f32], &[f32]),
    epsilon: f64,
    (residual, relu): (Option<&Tensor<4>>, bool),
) -> Option<Tensor<4>> {
    if mean.len() != x.dims()[1] || variance.len() != x.dims()[1] {
        return None;
    }
    let known = Some((mean, variance));
    autodiff::batch_norm_op(x, (gamma, beta), epsilon, (residual, relu), known)
        .map(|result| result.output)
}
