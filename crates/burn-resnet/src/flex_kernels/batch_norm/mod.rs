//! BatchNorm's training step (batch statistics), optionally followed by a ReLU, as one
//! differentiable op on flex's autodiff device: one pass for the statistics, one for the
//! output, and two for the gradients, per channel and in cache, statistics accumulated in f64.
//! Also BatchNorm on its running statistics (`norm_eval`, frozen stages) with trainable affine
//! parameters, + ReLU, as one op: one pass forward, one backward.
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

/// BatchNorm with batch statistics (training), then a ReLU if `relu`, when `x`, `gamma` and
/// `beta` live on flex's autodiff device as contiguous f32; `None` otherwise.
pub fn try_batch_norm_train(
    x: &Tensor<4>,
    gamma: &Tensor<1>,
    beta: &Tensor<1>,
    epsilon: f64,
    relu: bool,
) -> Option<BatchNormTrainOutput> {
    autodiff::batch_norm_op(x, gamma, beta, epsilon, relu, None)
}

/// BatchNorm on the given running statistics (`mean`, `variance`), then a ReLU if `relu`,
/// differentiable in `x`, `gamma` and `beta`, on flex's autodiff device; `None` where it does
/// not apply.
pub fn try_batch_norm_eval(
    x: &Tensor<4>,
    gamma: &Tensor<1>,
    beta: &Tensor<1>,
    mean: &[f32],
    variance: &[f32],
    epsilon: f64,
    relu: bool,
) -> Option<Tensor<4>> {
    if mean.len() != x.dims()[1] || variance.len() != x.dims()[1] {
        return None;
    }
    autodiff::batch_norm_op(x, gamma, beta, epsilon, relu, Some((mean, variance)))
        .map(|result| result.output)
}
