//! The project's own max-pool for inference (the stem's 3x3, stride 2, padding 1), separable:
//! a horizontal max over each input row, then a vertical max over the pooled rows. Burn 0.22's
//! flex max-pool spends ~3 ms on one 64x112x112 image; this one well under a millisecond.

use burn::tensor::Tensor;
use burn_flex::Flex;
use rayon::prelude::*;

use super::{flex_f32, float_slice, into_primitive};

/// Shape and hyper-parameters of one square max-pool (padding counts as −∞, no ceil mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGeometry {
    /// Input `[batch, channels, height, width]`.
    pub input: [usize; 4],
    /// Window side.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Padding on each side.
    pub padding: usize,
}

impl PoolGeometry {
    /// Output `[batch, channels, height, width]`; `None` when the window does not fit or the
    /// padding is at least the window (PyTorch rejects that too).
    pub fn output(&self) -> Option<[usize; 4]> {
        if self.kernel == 0 || self.stride == 0 || 2 * self.padding > self.kernel {
            return None;
        }
        let side = |input: usize| {
            (input + 2 * self.padding)
                .checked_sub(self.kernel)
                .map(|s| s / self.stride + 1)
        };
        Some([
            self.input[0],
            self.input[1],
            side(self.input[2])?,
            side(self.input[3])?,
        ])
    }
}

/// Max-pool `input` (NCHW, contiguous).
pub fn max_pool2d(input: &[f32], geometry: &PoolGeometry) -> Vec<f32> {
    let [_, _, out_h, out_w] = geometry.output().expect("checked by the caller");
    let [_, _, in_h, in_w] = geometry.input;
    let mut output = vec![0.0f32; geometry.input[0] * geometry.input[1] * out_h * out_w];
    output
        .par_chunks_mut(out_h * out_w)
        .zip(input.par_chunks(in_h * in_w))
        .for_each(|(out_plane, in_plane)| {
            pool_plane(in_plane, out_plane, geometry, [in_h, in_w], out_w)
        });
    output
}

/// The input range `[first, end)` of output position `o` along one axis.
fn window(o: usize, geometry: &PoolGeometry, input: usize) -> (usize, usize) {
    let start = (o * geometry.stride) as isize - geometry.padding as isize;
    let first = start.max(0) as usize;
    let end = ((start + geometry.kernel as isize) as usize).min(input);
    (first, end)
}

fn pool_plane(
    input: &[f32],
    output: &mut [f32],
    geometry: &PoolGeometry,
    [in_h, in_w]: [usize; 2],
    out_w: usize,
) {
    // Horizontal pass: every input row pooled along the width.
    let mut rows = vec![f32::NEG_INFINITY; in_h * out_w];
    let column_windows: Vec<(usize, usize)> =
        (0..out_w).map(|o| window(o, geometry, in_w)).collect();
    for (src, dst) in input.chunks_exact(in_w).zip(rows.chunks_exact_mut(out_w)) {
        for (d, &(first, end)) in dst.iter_mut().zip(&column_windows) {
            *d = src[first..end]
                .iter()
                .fold(f32::NEG_INFINITY, |m, &v| max_nan(m, v));
        }
    }
    // Vertical pass over the pooled rows.
    for (o, dst) in output.chunks_exact_mut(out_w).enumerate() {
        let (first, end) = window(o, geometry, in_h);
        dst.copy_from_slice(&rows[first * out_w..(first + 1) * out_w]);
        for r in first + 1..end {
            for (d, &v) in dst.iter_mut().zip(&rows[r * out_w..(r + 1) * out_w]) {
                *d = max_nan(*d, v);
            }
        }
    }
}

/// The larger of two values, NaN if either is (PyTorch's max-pool propagates NaN).
#[inline]
fn max_nan(a: f32, b: f32) -> f32 {
    if b > a || b.is_nan() { b } else { a }
}

/// Square max-pool through [`max_pool2d`] on plain flex, or `None` when the fast path
/// does not apply.
pub fn try_max_pool2d(
    x: &Tensor<4>,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Option<Tensor<4>> {
    let geometry = PoolGeometry {
        input: x.dims(),
        kernel,
        stride,
        padding,
    };
    let output = geometry.output()?;
    let input = flex_f32(x)?;
    let values = max_pool2d(float_slice(&input)?, &geometry);
    Some(Tensor::from_primitive::<Flex>(into_primitive(
        values, output,
    )))
}
