//! BatchNorm's forward pass: per-channel statistics (accumulated in f64) and the affine map,
//! with an optional ReLU, one pass each, channels in parallel.

use rayon::prelude::*;

use super::{ChannelStats, channel_planes, planes};
use crate::flex_kernels::{SendPtr, batch_norm_affine};

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

/// The output of BatchNorm (+ residual) (+ ReLU) with batch statistics, and those statistics;
/// `known` `(mean, variance)` (from an earlier pass over the same `x`, or running statistics)
/// are used instead of computing them. The residual is added to the norm's output, before the
/// ReLU, as mmdet's blocks do.
pub(crate) fn batch_norm_forward(
    x: &[f32],
    (gamma, beta): (&[f32], &[f32]),
    shape: [usize; 4],
    epsilon: f64,
    (residual, relu): (Option<&[f32]>, bool),
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
    let activation = |y: f32| {
        if relu {
            crate::flex_kernels::relu(y)
        } else {
            y
        }
    };
    let mut output = vec![0.0f32; x.len()];
    for_each_plane(&mut output, shape, |channel, range, out| {
        let (scale, shift) = (stats.scale[channel], stats.shift[channel]);
        match residual {
            None => {
                for (o, &v) in out.iter_mut().zip(&x[range]) {
                    *o = activation(v * scale + shift);
                }
            }
            Some(residual) => {
                let inputs = x[range.clone()].iter().zip(&residual[range]);
                for (o, (&v, &r)) in out.iter_mut().zip(inputs) {
                    *o = activation((v * scale + shift) + r);
                }
            }
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
                .map(|r| lane_sum(&x[r], |v| v as f64))
                .sum();
            let mean = sum / count;
            let squares: f64 = planes(shape, channel)
                .map(|r| lane_sum(&x[r], |v| (v as f64 - mean).powi(2)))
                .sum();
            (mean as f32, (squares / count) as f32)
        })
        .unzip()
}

/// `Σ f(v)` over `values` in f64, in [`SUM_LANES`] independent partial sums added in a fixed
/// order at the end: the loop vectorises (one f64 sum in element order cannot, and runs at one
/// add per add latency).
fn lane_sum(values: &[f32], f: impl Fn(f32) -> f64) -> f64 {
    let mut lanes = [0f64; SUM_LANES];
    let chunks = values.chunks_exact(SUM_LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f(v);
        }
    }
    for (lane, &v) in lanes.iter_mut().zip(tail) {
        *lane += f(v);
    }
    lanes.iter().sum()
}

/// Partial sums of [`lane_sum`]: two AVX-512 registers of f64.
const SUM_LANES: usize = 16;
