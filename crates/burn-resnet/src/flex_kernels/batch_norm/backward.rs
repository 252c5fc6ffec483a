//! BatchNorm's gradients `(dx, dγ, dβ)`: with batch statistics (training) in two passes per
//! channel, with fixed running statistics in one; the ReLU's gradient folded in, and with a
//! residual added before the ReLU, that residual's gradient too.

use rayon::prelude::*;

use super::{ChannelStats, channel_planes};
use crate::flex_kernels::SendPtr;

/// Lanes of the backward passes' sums: eight f32 partial sums per plane (vectorised, each over
/// at most a plane's eighth), added in f64 across lanes and planes, always in the same order.
const LANES: usize = 8;

/// One channel's affine map and statistics, as the backward passes read them.
#[derive(Clone, Copy)]
struct ChannelMap {
    mean: f32,
    inv_std: f32,
    relu: bool,
    /// The ReLU's output is `m · mask_scale + mask_shift` for the mask source `m`: the input
    /// (the norm's own `scale`, `shift`) or the op's saved output (1, 0).
    mask_scale: f32,
    mask_shift: f32,
}

impl ChannelMap {
    /// Channel `c`'s map; `mask_from_output`: the ReLU's output is read from the op's output
    /// (a residual was added before it), else recomputed from the input.
    fn of(
        stats: &ChannelStats,
        c: usize,
        epsilon: f64,
        relu: bool,
        mask_from_output: bool,
    ) -> Self {
        let inv_std = (1.0 / (stats.variance[c] as f64 + epsilon).sqrt()) as f32;
        let (mask_scale, mask_shift) = match mask_from_output {
            true => (1.0, 0.0),
            false => (stats.scale[c], stats.shift[c]),
        };
        Self {
            mean: stats.mean[c],
            inv_std,
            relu,
            mask_scale,
            mask_shift,
        }
    }

    /// The output gradient `g` where the ReLU passed it (its output, from the mask source `m`,
    /// not `<= 0`, as PyTorch decides it), 0 elsewhere; branch-free, so that the loops
    /// vectorise.
    #[inline(always)]
    fn passed(self, m: f32, g: f32) -> f32 {
        if self.relu {
            crate::flex_kernels::relu_backward(m * self.mask_scale + self.mask_shift, g)
        } else {
            g
        }
    }

    /// Over one plane (input `xs`, mask source `ms`, output gradient `gs`): writes
    /// `out = passed(g) · out_scale` and returns `(Σ passed(g), Σ passed(g) · x̂)`.
    fn plane(
        self,
        (xs, ms, gs): (&[f32], &[f32], &[f32]),
        out: &mut [f32],
        out_scale: f32,
    ) -> (f64, f64) {
        let (mut sums, mut sums_normalized) = ([0f32; LANES], [0f32; LANES]);
        let step = |o: &mut f32, (v, m, g): (f32, f32, f32), sum: &mut f32, sn: &mut f32| {
            let g = self.passed(m, g);
            *o = g * out_scale;
            *sum += g;
            *sn += g * (v - self.mean) * self.inv_std;
        };
        let mut out_lanes = out.chunks_exact_mut(LANES);
        let mut x_lanes = xs.chunks_exact(LANES);
        let (mut m_lanes, mut g_lanes) = (ms.chunks_exact(LANES), gs.chunks_exact(LANES));
        let lanes = (&mut x_lanes).zip(&mut m_lanes).zip(&mut g_lanes);
        for (o, ((v, m), g)) in (&mut out_lanes).zip(lanes) {
            for i in 0..LANES {
                let value = (v[i], m[i], g[i]);
                step(&mut o[i], value, &mut sums[i], &mut sums_normalized[i]);
            }
        }
        let tail = out_lanes.into_remainder().iter_mut().zip(
            x_lanes
                .remainder()
                .iter()
                .zip(m_lanes.remainder())
                .zip(g_lanes.remainder()),
        );
        for (i, (o, ((&v, &m), &g))) in tail.enumerate() {
            step(o, (v, m, g), &mut sums[i], &mut sums_normalized[i]);
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
        (x, masks, grad_out): (&[f32], &[f32], &[f32]),
        ptr: SendPtr,
        shape: [usize; 4],
        c: usize,
        out_scale: f32,
    ) -> (f64, f64) {
        let (mut sum, mut sum_normalized) = (0f64, 0f64);
        // SAFETY: forwarded from the caller.
        for (range, out) in unsafe { channel_planes(ptr, shape, c) } {
            let planes = (&x[range.clone()], &masks[range.clone()], &grad_out[range]);
            let (s, sn) = self.plane(planes, out, out_scale);
            sum += s;
            sum_normalized += sn;
        }
        (sum, sum_normalized)
    }
}

/// Gradients of BatchNorm → `+ residual` → ReLU: `(dx, dγ, dβ, d residual)`.
pub(crate) struct NormGradients {
    pub(crate) input: Vec<f32>,
    pub(crate) gamma: Vec<f32>,
    pub(crate) beta: Vec<f32>,
    /// The residual's gradient (the ReLU-passed output gradient), when a residual was added.
    pub(crate) residual: Option<Vec<f32>>,
}

/// What followed the norm in the forward op, as the backward pass needs it.
#[derive(Clone, Copy)]
pub(crate) struct Tail<'a> {
    /// A ReLU was applied.
    pub(crate) relu: bool,
    /// The op's output when a residual was added before the ReLU (the input alone no longer
    /// gives the ReLU's mask); `None`: no residual.
    pub(crate) residual_output: Option<&'a [f32]>,
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
    let tail = Tail {
        relu,
        residual_output: None,
    };
    let grads = backward(x, Some(gamma), stats, grad_out, shape, epsilon, tail);
    (grads.input, grads.gamma, grads.beta)
}

/// Both backward passes, channels in parallel: with `batch_gamma` (batch statistics) the
/// first pass keeps `g` and a second one corrects it for the statistics' dependence on `x`;
/// without (fixed statistics) the affine map is all there is, `dx = g · scale`, `dγ = Σ g · x̂`,
/// `dβ = Σ g`. With a residual, the first pass writes `g` (its gradient) into a buffer of its
/// own and the second reads `dx` from there.
pub(crate) fn backward(
    x: &[f32],
    batch_gamma: Option<&[f32]>,
    stats: &ChannelStats,
    grad_out: &[f32],
    shape: [usize; 4],
    epsilon: f64,
    tail: Tail,
) -> NormGradients {
    let count = (shape[0] * shape[2] * shape[3]) as f64;
    assert_eq!(x.len(), shape.iter().product::<usize>());
    // SAFETY (both): every channel's task writes all its planes of the buffer its first pass
    // writes (`first`: `dx`, or the residual's gradient), and then all of `dx` from there
    // unless `first` was `dx` already.
    let mut grad_in = unsafe { crate::flex_kernels::unwritten(x.len()) };
    let mut grad_residual = tail
        .residual_output
        .map(|_| unsafe { crate::flex_kernels::unwritten(x.len()) });
    let masks = tail.residual_output.unwrap_or(x);
    let ptr = SendPtr(grad_in.as_mut_ptr());
    let residual_ptr = grad_residual.as_mut().map(|r| SendPtr(r.as_mut_ptr()));
    let (grad_gamma, grad_beta): (Vec<f32>, Vec<f32>) = (0..shape[1])
        .into_par_iter()
        .map(|c| {
            let map = ChannelMap::of(stats, c, epsilon, tail.relu, residual_ptr.is_some());
            let scale = stats.scale[c];
            let (first, out_scale) = match (residual_ptr, batch_gamma) {
                (Some(residual), _) => (residual, 1.0),
                (None, Some(_)) => (ptr, 1.0),
                (None, None) => (ptr, scale),
            };
            // SAFETY: both buffers have the shape's size, and this task alone handles
            // channel `c` of each.
            let (sum, sum_normalized) =
                unsafe { map.channel((x, masks, grad_out), first, shape, c, out_scale) };
            // dx from the first pass's g (in `dx` itself, or the residual's gradient).
            // SAFETY (both calls): as above; the first pass's slices are gone.
            match batch_gamma {
                Some(gamma) => {
                    let k = gamma[c] * map.inv_std;
                    let (mean_grad, mean_normalized_grad) =
                        ((sum / count) as f32, (sum_normalized / count) as f32);
                    unsafe {
                        rewrite_channel(x, first, ptr, shape, c, |v, g| {
                            k * (g
                                - mean_grad
                                - (v - map.mean) * map.inv_std * mean_normalized_grad)
                        })
                    }
                }
                None if residual_ptr.is_some() => unsafe {
                    rewrite_channel(x, first, ptr, shape, c, |_, g| g * scale)
                },
                None => {}
            }
            (sum_normalized as f32, sum as f32)
        })
        .unzip();
    NormGradients {
        input: grad_in,
        gamma: grad_gamma,
        beta: grad_beta,
        residual: grad_residual,
    }
}

/// Channel `c`'s planes of `dx` rewritten as `f(x, g)` from the first pass's `g` behind
/// `source` (`dx` itself, or another buffer).
///
/// # Safety
/// As [`channel_planes`] for both pointers: no other task touches channel `c` of either
/// (`source` is `dx` itself or another buffer of the same shape).
unsafe fn rewrite_channel(
    x: &[f32],
    source: SendPtr,
    dx: SendPtr,
    shape: [usize; 4],
    c: usize,
    f: impl Fn(f32, f32) -> f32,
) {
    // SAFETY: forwarded from the caller.
    for (range, out) in unsafe { channel_planes(dx, shape, c) } {
        if source.get() == dx.get() {
            for (o, &v) in out.iter_mut().zip(&x[range]) {
                *o = f(v, *o);
            }
        } else {
            // SAFETY: the range lies inside `source` (same shape), channel `c`'s, which no
            // other task touches.
            let source =
                unsafe { std::slice::from_raw_parts(source.get().add(range.start), range.len()) };
            for ((o, &v), &g) in out.iter_mut().zip(&x[range]).zip(source) {
                *o = f(v, g);
            }
        }
    }
}
