//! BatchNorm's gradients `(dx, dγ, dβ)`: with batch statistics (training) in two passes per
//! channel, with fixed running statistics in one; the ReLU's gradient folded in.

use rayon::prelude::*;

use super::{ChannelStats, channel_planes};
use crate::flex_kernels::SendPtr;

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
            crate::flex_kernels::relu_backward(v * self.scale + self.shift, g)
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

/// Gradients `(dx, dγ, dβ)` given the output gradient, with batch statistics, per channel in
/// two passes: the first stores the ReLU-passed gradient `g` in `dx` and sums, the second turns
/// it into `dx = γ/σ · (g − mean(g) − x̂ · mean(g · x̂))`.
pub(crate) fn batch_norm_backward(
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
pub(super) fn batch_norm_eval_backward(
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
