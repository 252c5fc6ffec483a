//! BatchNorm's forward pass: per-channel statistics (sums and sums of squares accumulated in
//! f64) and the affine map, with an optional ReLU, one pass each, channels in parallel.

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
    // SAFETY: `for_each_plane` hands every plane to the closure, which writes each value.
    let mut output = unsafe { crate::flex_kernels::unwritten(x.len()) };
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

/// Per-channel mean and biased variance, from the sums of the values and of their squares
/// accumulated in f64, in one read of `x`.
///
/// `Σv²/n − mean²` in f64 loses about `ε₆₄ · mean²/σ²` of the variance (squares of f32 values
/// are exact in f64), far under f32's resolution unless the mean exceeds the standard deviation
/// ~10⁴-fold; a negative difference left by rounding is 0. NaN and ±Inf give a NaN variance,
/// as a two-pass `Σ(v − mean)²` would.
fn batch_statistics(x: &[f32], shape: [usize; 4], count: f64) -> (Vec<f32>, Vec<f32>) {
    (0..shape[1])
        .into_par_iter()
        .map(|channel| {
            let (sum, squares) = planes(shape, channel)
                .map(|r| lane_sums(&x[r]))
                .fold((0f64, 0f64), |(s, q), (a, b)| (s + a, q + b));
            let mean = sum / count;
            let variance = match squares / count - mean * mean {
                v if v < 0.0 => 0.0, // keeps NaN (`f64::max` would not)
                v => v,
            };
            (mean as f32, variance as f32)
        })
        .unzip()
}

/// `(Σ v, Σ v²)` over `values` in f64, in [`SUM_LANES`] independent partial sums added in a
/// fixed order at the end: the loop vectorises (one f64 sum in element order cannot, and runs
/// at one add per add latency).
fn lane_sums(values: &[f32]) -> (f64, f64) {
    let (mut sums, mut squares) = ([0f64; SUM_LANES], [0f64; SUM_LANES]);
    let chunks = values.chunks_exact(SUM_LANES);
    let tail = chunks.remainder();
    let mut add = |lane: usize, v: f32| {
        let v = v as f64;
        sums[lane] += v;
        squares[lane] += v * v;
    };
    for chunk in chunks {
        for (lane, &v) in chunk.iter().enumerate() {
            add(lane, v);
        }
    }
    for (lane, &v) in tail.iter().enumerate() {
        add(lane, v);
    }
    (sums.iter().sum(), squares.iter().sum())
}

/// Partial sums of [`lane_sums`]: two AVX-512 registers of f64.
const SUM_LANES: usize = 16;
