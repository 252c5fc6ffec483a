//! BatchNorm's training step (batch statistics), optionally followed by a ReLU, as one
//! differentiable op on flex's autodiff device: one pass for the statistics, one for the
//! output, and two for the gradients, per channel and in cache, statistics accumulated in f64.
//! Also BatchNorm on its running statistics (`norm_eval`, frozen stages) with trainable affine
//! parameters, + ReLU, as one op: one pass forward, one backward.
//!
//! Burn 0.22's default `batch_norm_train` (which flex inherits) builds the statistics from
//! transposed copies and a dozen separate tensor ops, forward and backward; on ResNet-50's
//! shapes that cost about as much as the convolutions' backward pass.

use burn::tensor::Tensor;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;

use super::{FlexAutodiff, SendPtr, batch_norm_affine, float_slice, into_primitive};

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
pub(super) struct ChannelStats {
    pub(super) mean: Vec<f32>,
    pub(super) variance: Vec<f32>,
    /// `γ / √(var + ε)` and `β − mean · scale`: the output is `x · scale + shift`.
    scale: Vec<f32>,
    shift: Vec<f32>,
}

/// The element ranges of channel `channel`: one contiguous plane per image.
fn planes(shape: [usize; 4], channel: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let [batch, channels, h, w] = shape;
    let plane = h * w;
    (0..batch).map(move |n| (n * channels + channel) * plane..(n * channels + channel + 1) * plane)
}

/// Call `f(channel, range, output[range])` for every plane of every channel, channels in
/// parallel.
fn for_each_plane(
    output: &mut [f32],
    shape: [usize; 4],
    f: impl Fn(usize, std::ops::Range<usize>, &mut [f32]) + Sync,
) {
    let ptr = SendPtr(output.as_mut_ptr());
    let len = output.len();
    assert_eq!(len, shape.iter().product::<usize>());
    (0..shape[1]).into_par_iter().for_each(|channel| {
        // SAFETY: `output` has the shape's size, and this task alone handles `channel`.
        for (range, out) in unsafe { channel_planes(ptr, shape, channel) } {
            f(channel, range, out);
        }
    });
}

/// The output of BatchNorm (+ ReLU) with batch statistics, and those statistics; `known`
/// `(mean, variance)` (from an earlier pass over the same `x`, or running statistics) are used
/// instead of computing them.
pub(super) fn batch_norm_forward(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    shape: [usize; 4],
    epsilon: f64,
    relu: bool,
    known: Option<(&[f32], &[f32])>,
) -> (Vec<f32>, ChannelStats) {
    let count = (shape[0] * shape[2] * shape[3]) as f64;
    let (mean, variance): (Vec<f32>, Vec<f32>) = match known {
        Some((mean, variance)) => (mean.to_vec(), variance.to_vec()),
        None => batch_statistics(x, shape, count),
    };
    let (scale, shift) = batch_norm_affine(gamma, beta, &mean, &variance, epsilon);
    let stats = ChannelStats {
        mean,
        variance,
        scale,
        shift,
    };
    let mut output = vec![0.0f32; x.len()];
    for_each_plane(&mut output, shape, |channel, range, out| {
        let (scale, shift) = (stats.scale[channel], stats.shift[channel]);
        for (o, &v) in out.iter_mut().zip(&x[range]) {
            let y = v * scale + shift;
            *o = if relu { super::relu(y) } else { y };
        }
    });
    (output, stats)
}

/// Per-channel mean and biased variance, accumulated in f64.
fn batch_statistics(x: &[f32], shape: [usize; 4], count: f64) -> (Vec<f32>, Vec<f32>) {
    (0..shape[1])
        .into_par_iter()
        .map(|channel| {
            let sum: f64 = planes(shape, channel)
                .map(|r| x[r].iter().map(|&v| v as f64).sum::<f64>())
                .sum();
            let mean = sum / count;
            let squares: f64 = planes(shape, channel)
                .map(|r| x[r].iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>())
                .sum();
            (mean as f32, (squares / count) as f32)
        })
        .unzip()
}

/// Lanes of the backward passes' sums: eight f32 partial sums per plane (vectorised, each over
/// at most a plane's eighth), added in f64 across lanes and planes, always in the same order.
const LANES: usize = 8;

/// One channel's affine map and statistics, as the backward passes read them.
#[derive(Clone, Copy)]
struct ChannelMap {
    scale: f32,
    shift: f32,
    mean: f32,
    inv_std: f32,
    relu: bool,
}

impl ChannelMap {
    fn of(stats: &ChannelStats, c: usize, epsilon: f64, relu: bool) -> Self {
        let inv_std = (1.0 / (stats.variance[c] as f64 + epsilon).sqrt()) as f32;
        Self {
            scale: stats.scale[c],
            shift: stats.shift[c],
            mean: stats.mean[c],
            inv_std,
            relu,
        }
    }

    /// The output gradient `g` where the ReLU passed it (its output `x · scale + shift` not
    /// `<= 0`, as PyTorch decides it), 0 elsewhere; branch-free, so that the loops vectorise.
    #[inline(always)]
    fn passed(self, v: f32, g: f32) -> f32 {
        if self.relu {
            super::relu_backward(v * self.scale + self.shift, g)
        } else {
            g
        }
    }

    /// Over one plane: writes `out = passed(g) · out_scale` and returns `(Σ passed(g),
    /// Σ passed(g) · x̂)`.
    fn plane(self, xs: &[f32], gs: &[f32], out: &mut [f32], out_scale: f32) -> (f64, f64) {
        let (mut sums, mut sums_normalized) = ([0f32; LANES], [0f32; LANES]);
        let step = |o: &mut f32, v: f32, g: f32, sum: &mut f32, sum_normalized: &mut f32| {
            let g = self.passed(v, g);
            *o = g * out_scale;
            *sum += g;
            *sum_normalized += g * (v - self.mean) * self.inv_std;
        };
        let mut out_lanes = out.chunks_exact_mut(LANES);
        let (mut x_lanes, mut g_lanes) = (xs.chunks_exact(LANES), gs.chunks_exact(LANES));
        for ((o, v), g) in (&mut out_lanes).zip(&mut x_lanes).zip(&mut g_lanes) {
            for i in 0..LANES {
                step(&mut o[i], v[i], g[i], &mut sums[i], &mut sums_normalized[i]);
            }
        }
        let tail = out_lanes
            .into_remainder()
            .iter_mut()
            .zip(x_lanes.remainder())
            .zip(g_lanes.remainder());
        for (i, ((o, &v), &g)) in tail.enumerate() {
            step(o, v, g, &mut sums[i], &mut sums_normalized[i]);
        }
        let total = |lanes: [f32; LANES]| lanes.iter().map(|&v| v as f64).sum::<f64>();
        (total(sums), total(sums_normalized))
    }

    /// [`ChannelMap::plane`] over every plane of channel `c`, writing into the output behind
    /// `ptr`; the channel's sums.
    ///
    /// # Safety
    /// As [`channel_planes`]: `ptr` points to `shape`'s product of floats, and no other task
    /// touches channel `c`.
    unsafe fn channel(
        self,
        x: &[f32],
        grad_out: &[f32],
        ptr: SendPtr,
        shape: [usize; 4],
        c: usize,
        out_scale: f32,
    ) -> (f64, f64) {
        let (mut sum, mut sum_normalized) = (0f64, 0f64);
        // SAFETY: forwarded from the caller.
        for (range, out) in unsafe { channel_planes(ptr, shape, c) } {
            let (s, sn) = self.plane(&x[range.clone()], &grad_out[range], out, out_scale);
            sum += s;
            sum_normalized += sn;
        }
        (sum, sum_normalized)
    }
}

/// Channel `channel`'s planes of a `shape`d output behind `ptr`, with their ranges.
///
/// # Safety
/// `ptr` must point to `shape`'s product of floats, and no two live iterators may be for the
/// same channel (the planes of different channels are disjoint).
unsafe fn channel_planes<'a>(
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

/// Gradients `(dx, dγ, dβ)` given the output gradient, with batch statistics, per channel in
/// two passes: the first stores the ReLU-passed gradient `g` in `dx` and sums, the second turns
/// it into `dx = γ/σ · (g − mean(g) − x̂ · mean(g · x̂))`.
pub(super) fn batch_norm_backward(
    x: &[f32],
    gamma: &[f32],
    stats: &ChannelStats,
    grad_out: &[f32],
    shape: [usize; 4],
    epsilon: f64,
    relu: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    backward(x, Some(gamma), stats, grad_out, shape, epsilon, relu)
}

/// Gradients `(dx, dγ, dβ)` of the BatchNorm on fixed (running) statistics, in one pass per
/// channel: the affine map is all there is, `dx = g · scale`, `dγ = Σ g · x̂`, `dβ = Σ g` (`g`
/// passed by the ReLU).
fn batch_norm_eval_backward(
    x: &[f32],
    stats: &ChannelStats,
    grad_out: &[f32],
    shape: [usize; 4],
    epsilon: f64,
    relu: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    backward(x, None, stats, grad_out, shape, epsilon, relu)
}

/// Both backward passes, channels in parallel: with `batch_gamma` (batch statistics) the
/// first pass keeps `g` and a second one corrects it for the statistics' dependence on `x`;
/// without (fixed statistics) the first pass writes `g · scale` and is all there is.
fn backward(
    x: &[f32],
    batch_gamma: Option<&[f32]>,
    stats: &ChannelStats,
    grad_out: &[f32],
    shape: [usize; 4],
    epsilon: f64,
    relu: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let count = (shape[0] * shape[2] * shape[3]) as f64;
    let mut grad_in = vec![0.0f32; x.len()];
    assert_eq!(grad_in.len(), shape.iter().product::<usize>());
    let ptr = SendPtr(grad_in.as_mut_ptr());
    let (grad_gamma, grad_beta): (Vec<f32>, Vec<f32>) = (0..shape[1])
        .into_par_iter()
        .map(|c| {
            let map = ChannelMap::of(stats, c, epsilon, relu);
            let out_scale = if batch_gamma.is_some() {
                1.0
            } else {
                map.scale
            };
            // SAFETY: `grad_in` has the shape's size, and this task alone handles channel `c`.
            let (sum, sum_normalized) =
                unsafe { map.channel(x, grad_out, ptr, shape, c, out_scale) };
            if let Some(gamma) = batch_gamma {
                let k = gamma[c] * map.inv_std;
                let (mean_grad, mean_normalized_grad) =
                    ((sum / count) as f32, (sum_normalized / count) as f32);
                // SAFETY: as above; the first pass's slices are gone.
                for (range, out) in unsafe { channel_planes(ptr, shape, c) } {
                    for (o, &v) in out.iter_mut().zip(&x[range]) {
                        *o = k
                            * (*o
                                - mean_grad
                                - (v - map.mean) * map.inv_std * mean_normalized_grad);
                    }
                }
            }
            (sum_normalized as f32, sum as f32)
        })
        .unzip();
    (grad_in, grad_gamma, grad_beta)
}

/// What the backward pass needs.
#[derive(Clone)]
struct Saved {
    input: FlexTensor,
    gamma: Vec<f32>,
    stats: ChannelStats,
    shape: [usize; 4],
    epsilon: f64,
    relu: bool,
    /// Normalised with the batch's statistics (training) or fixed ones (running statistics).
    batch_statistics: bool,
}

impl std::fmt::Debug for Saved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Saved")
            .field("shape", &self.shape)
            .field("relu", &self.relu)
            .finish()
    }
}

#[derive(Debug)]
struct BatchNormBackward;

impl Backward<Flex, 3> for BatchNormBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_input, node_gamma, node_beta] = ops.parents;
        let grad_out = grads.consume::<Flex>(&ops.node).to_contiguous();
        let saved = ops.state;
        let (Some(dy), Some(x)) = (float_slice(&grad_out), float_slice(&saved.input)) else {
            unreachable!("the forward pass checked that these are contiguous f32")
        };
        let (dx, dgamma, dbeta) = match saved.batch_statistics {
            true => batch_norm_backward(
                x,
                &saved.gamma,
                &saved.stats,
                dy,
                saved.shape,
                saved.epsilon,
                saved.relu,
            ),
            false => batch_norm_eval_backward(
                x,
                &saved.stats,
                dy,
                saved.shape,
                saved.epsilon,
                saved.relu,
            ),
        };
        let channels = [saved.shape[1]];
        for (node, grad) in [
            (node_input, into_primitive(dx, saved.shape)),
            (node_gamma, into_primitive(dgamma, channels)),
            (node_beta, into_primitive(dbeta, channels)),
        ] {
            if let Some(node) = node {
                grads.register::<Flex>(node.id, grad);
            }
        }
    }
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
    batch_norm_op(x, gamma, beta, epsilon, relu, None)
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
    batch_norm_op(x, gamma, beta, epsilon, relu, Some((mean, variance))).map(|result| result.output)
}

/// The op behind [`try_batch_norm_train`] (`known = None`: batch statistics) and
/// [`try_batch_norm_eval`] (`known`: running statistics).
fn batch_norm_op(
    x: &Tensor<4>,
    gamma: &Tensor<1>,
    beta: &Tensor<1>,
    epsilon: f64,
    relu: bool,
    known: Option<(&[f32], &[f32])>,
) -> Option<BatchNormTrainOutput> {
    let shape = x.dims();
    if gamma.dims() != [shape[1]]
        || beta.dims() != [shape[1]]
        || shape[0] * shape[2] * shape[3] == 0
    {
        return None;
    }
    let x = x.clone().try_into_primitive::<FlexAutodiff>().ok()?;
    let gamma = gamma.clone().try_into_primitive::<FlexAutodiff>().ok()?;
    let beta = beta.clone().try_into_primitive::<FlexAutodiff>().ok()?;
    let gamma_values = float_slice(gamma.primitive())?.to_vec();
    let batch_statistics = known.is_none();
    let (output, stats) = batch_norm_forward(
        float_slice(x.primitive())?,
        &gamma_values,
        float_slice(beta.primitive())?,
        shape,
        epsilon,
        relu,
        known,
    );
    let (mean, variance) = (stats.mean.clone(), stats.variance.clone());
    let output = into_primitive(output, shape);
    let output = match BatchNormBackward
        .prepare::<NoCheckpointing>([x.node(), gamma.node(), beta.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let saved = Saved {
                input: x.into_primitive(),
                gamma: gamma_values,
                stats,
                shape,
                epsilon,
                relu,
                batch_statistics,
            };
            prep.finish(saved, output)
        }
        OpsKind::UnTracked(prep) => prep.finish(output),
    };
    Some(BatchNormTrainOutput {
        output: Tensor::from_primitive::<FlexAutodiff>(output),
        mean,
        variance,
    })
}
