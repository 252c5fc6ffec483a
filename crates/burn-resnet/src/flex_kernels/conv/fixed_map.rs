//! The elementwise passes of [`super::norm_eval`]'s op with a fixed norm map: the gradient the
//! ReLU lets through, scaled for the conv (and kept unscaled for a residual), and the residual
//! add with its ReLU after the Winograd conv.

use rayon::prelude::*;

use crate::flex_kernels::batch_norm::channel_planes;
use crate::flex_kernels::{SendPtr, relu_backward};

/// The output gradient `g` the ReLU lets through, as the backward step uses it.
pub(super) struct Passed {
    /// `scale · g`: the conv's output gradient.
    pub(super) scaled: Vec<f32>,
    /// `g` itself, when asked for (the residual's gradient).
    pub(super) unscaled: Option<Vec<f32>>,
}

/// [`Passed`] from the output gradient `dy`, the ReLU's mask read from the op's output `relu`
/// (`None`: no ReLU), and the norm's `scale`.
pub(super) fn passed_gradient(
    dy: &[f32],
    relu: Option<&[f32]>,
    shape: [usize; 4],
    scale: &[f32],
    keep_unscaled: bool,
) -> Passed {
    // SAFETY: every element is written below: each channel's task writes all its planes.
    let mut scaled = unsafe { crate::flex_kernels::unwritten(dy.len()) };
    // SAFETY: as `scaled`.
    let mut unscaled = keep_unscaled.then(|| unsafe { crate::flex_kernels::unwritten(dy.len()) });
    let (scaled_ptr, unscaled_ptr) = (
        SendPtr(scaled.as_mut_ptr()),
        unscaled.as_mut().map(|g| SendPtr(g.as_mut_ptr())),
    );
    (0..shape[1]).into_par_iter().for_each(|c| {
        // SAFETY: both buffers hold `shape`'s product of floats; one task per channel.
        for (range, h) in unsafe { channel_planes(scaled_ptr, shape, c) } {
            let (dy, y) = (&dy[range.clone()], relu.map(|y| &y[range.clone()]));
            pass_plane(dy, y, scale[c], h);
            if let Some(ptr) = unscaled_ptr {
                // SAFETY: this channel's plane of the second buffer, written by this task only.
                let g = unsafe {
                    std::slice::from_raw_parts_mut(ptr.get().add(range.start), range.len())
                };
                match y {
                    Some(y) => g
                        .iter_mut()
                        .zip(dy.iter().zip(y))
                        .for_each(|(g, (&d, &y))| *g = relu_backward(y, d)),
                    None => g.copy_from_slice(dy),
                }
            }
        }
    });
    Passed { scaled, unscaled }
}

/// One plane of [`passed_gradient`]: `h = scale · relu_backward(y, dy)` (`scale · dy` without
/// a ReLU).
fn pass_plane(dy: &[f32], y: Option<&[f32]>, scale: f32, h: &mut [f32]) {
    match y {
        Some(y) => h
            .iter_mut()
            .zip(dy.iter().zip(y))
            .for_each(|(h, (&d, &y))| *h = relu_backward(y, d) * scale),
        None => h.iter_mut().zip(dy).for_each(|(h, &d)| *h = d * scale),
    }
}

/// `values + residual`, then a ReLU if `relu`, in place.
pub(super) fn add_relu(values: &mut [f32], residual: &[f32], relu: bool) {
    const CHUNK: usize = 1 << 14;
    values
        .par_chunks_mut(CHUNK)
        .zip(residual.par_chunks(CHUNK))
        .for_each(|(values, residual)| {
            for (v, &r) in values.iter_mut().zip(residual) {
                let sum = *v + r;
                *v = if relu {
                    crate::flex_kernels::relu(sum)
                } else {
                    sum
                };
            }
        });
}
