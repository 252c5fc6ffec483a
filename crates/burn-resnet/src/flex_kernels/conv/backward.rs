//! Gradients of [`super::forward::conv2d`] (no epilogue), one GEMM per image and group each:
//!
//! - input: `dcol = Wᵀ · dY`, scattered back onto the input positions (`col2im`); a pointwise
//!   conv writes `Wᵀ · dY` straight into the input gradient;
//! - weight: `dW = Σ_images dY · colᵀ`, with `col` rebuilt from the saved input (a pointwise
//!   conv reads the input in place), one accumulator per thread, summed in a fixed order.
//!
//! Burn 0.22's flex computes these through generic transposed convolutions that are 5–15x
//! slower than the forward conv on ResNet-50's shapes (the `op_profile` test).

use rayon::prelude::*;

use super::forward::ConvGeometry;
use super::im2col::im2col_rows;
use crate::flex_kernels::{Matrix, matmul};

/// Gradient of the loss with respect to the conv's input, `[batch, in, h, w]`.
pub fn input_grad(weight: &[f32], grad_out: &[f32], geometry: &ConvGeometry) -> Vec<f32> {
    let [batch, channels, in_h, in_w] = geometry.input;
    let [_, out_channels, out_h, out_w] = geometry.output().expect("checked by the caller");
    let (in_image, plane) = (channels * in_h * in_w, out_h * out_w);
    let group = geometry.group();
    let group_in = group.input[1] * in_h * in_w;
    let group_out = group.out_channels * plane;
    let group_weight = group.out_channels * group.patch_len();
    // A pointwise conv's GEMM overwrites every input position; col2im adds onto zeros.
    let mut grad_in = match geometry.is_pointwise() {
        // SAFETY: `group_input_grad` writes each image's groups whole (the GEMM's `dst` is the
        // group's `channels × plane` input gradient, overwritten).
        true => unsafe { crate::flex_kernels::unwritten(batch * in_image) },
        false => vec![0.0f32; batch * in_image],
    };
    grad_in
        .par_chunks_mut(in_image)
        .zip(grad_out.par_chunks(out_channels * plane))
        .for_each(|(dx, dy)| {
            for ((dx, dy), weight) in dx
                .chunks_mut(group_in)
                .zip(dy.chunks(group_out))
                .zip(weight.chunks(group_weight))
            {
                group_input_grad(weight, dy, &group, dx);
            }
        });
    grad_in
}

/// [`input_grad`] of one image and one group.
fn group_input_grad(weight: &[f32], dy: &[f32], geometry: &ConvGeometry, dx: &mut [f32]) {
    let [_, out_channels, out_h, out_w] = geometry.output().expect("checked by the caller");
    let (plane, patch) = (out_h * out_w, geometry.patch_len());
    // dcol[k, j] = Σ_o W[o, k] · dY[o, j]: the transposed weight as the left-hand side.
    let mut dcol_buffer = Vec::new();
    let dcol: &mut [f32] = if geometry.is_pointwise() {
        dx
    } else {
        // SAFETY: the GEMM below overwrites all `patch × plane` entries.
        dcol_buffer = unsafe { crate::flex_kernels::unwritten(patch * plane) };
        &mut dcol_buffer
    };
    // SAFETY: dst is `patch × plane` (row stride `plane`), lhs reads `W[o·patch + k]` for
    // o < out_channels and k < patch, rhs is the `out_channels × plane` image gradient.
    unsafe {
        matmul(
            patch,
            plane,
            out_channels,
            Matrix::rows(dcol.as_mut_ptr(), plane),
            false,
            Matrix::transposed(weight.as_ptr(), patch),
            Matrix::rows(dy.as_ptr(), plane),
        );
    }
    if !geometry.is_pointwise() {
        col2im(&dcol_buffer, geometry, out_w, out_h, dx);
    }
}

/// Gradient of the loss with respect to the conv's weight, `[out, in, kh, kw]`.
pub fn weight_grad(input: &[f32], grad_out: &[f32], geometry: &ConvGeometry) -> Vec<f32> {
    let [_, channels, in_h, in_w] = geometry.input;
    let [_, out_channels, out_h, out_w] = geometry.output().expect("checked by the caller");
    let (in_image, plane, patch) = (channels * in_h * in_w, out_h * out_w, geometry.patch_len());
    let group = geometry.group();
    let group_in = group.input[1] * in_h * in_w;
    let group_out = group.out_channels * plane;
    let group_weight = group.out_channels * patch;
    // A fixed split of the images over the threads, summed in order: the same gradients on
    // every run (a work-stealing reduction would add in a different order each time).
    let batch = input.len() / in_image.max(1);
    let per_task = batch.div_ceil(rayon::current_num_threads()).max(1);
    let partial: Vec<Vec<f32>> = input
        .par_chunks(in_image * per_task)
        .zip(grad_out.par_chunks(out_channels * plane * per_task))
        .map(|(xs, dys)| {
            let mut dw = vec![0.0f32; out_channels * patch];
            for (x, dy) in xs.chunks(in_image).zip(dys.chunks(out_channels * plane)) {
                for ((x, dy), dw) in x
                    .chunks(group_in)
                    .zip(dy.chunks(group_out))
                    .zip(dw.chunks_mut(group_weight))
                {
                    group_weight_grad(x, dy, &group, dw);
                }
            }
            dw
        })
        .collect();
    let mut partial = partial.into_iter();
    let first = partial
        .next()
        .unwrap_or_else(|| vec![0.0f32; out_channels * patch]);
    partial.fold(first, |mut sum, part| {
        sum.iter_mut().zip(&part).for_each(|(a, b)| *a += b);
        sum
    })
}

/// Add one image's and one group's share to its group's rows of `dw`.
fn group_weight_grad(x: &[f32], dy: &[f32], geometry: &ConvGeometry, dw: &mut [f32]) {
    let [_, out_channels, out_h, out_w] = geometry.output().expect("checked by the caller");
    let (plane, patch) = (out_h * out_w, geometry.patch_len());
    let col_buffer;
    let col: &[f32] = if geometry.is_pointwise() {
        x
    } else {
        col_buffer = im2col_rows(x, geometry, out_w, 0, out_h);
        &col_buffer
    };
    // dW[o, k] += Σ_j dY[o, j] · col[k, j]: the column matrix read transposed.
    // SAFETY: dst is `out_channels × patch`; lhs the `out_channels × plane` image
    // gradient; rhs reads `col[k·plane + j]` for k < patch and j < plane.
    unsafe {
        matmul(
            out_channels,
            patch,
            plane,
            Matrix::rows(dw.as_mut_ptr(), patch),
            true,
            Matrix::rows(dy.as_ptr(), plane),
            Matrix::transposed(col.as_ptr(), plane),
        );
    }
}

/// Add each column-matrix entry back onto the input position it was copied from.
fn col2im(dcol: &[f32], geometry: &ConvGeometry, out_w: usize, out_h: usize, dx: &mut [f32]) {
    let [_, channels, in_h, in_w] = geometry.input;
    let [kernel_h, kernel_w] = geometry.kernel;
    let [stride_h, stride_w] = geometry.stride;
    let [pad_h, pad_w] = geometry.padding;
    let [dilation_h, dilation_w] = geometry.dilation;
    let plane = out_h * out_w;
    let mut row_index = 0;
    for channel in 0..channels {
        let dx_channel = &mut dx[channel * in_h * in_w..(channel + 1) * in_h * in_w];
        for kh in 0..kernel_h {
            for kw in 0..kernel_w {
                let dcol_row = &dcol[row_index * plane..(row_index + 1) * plane];
                row_index += 1;
                let offset_w = kw * dilation_w;
                let (ow_first, ow_end) = geometry.valid_columns(offset_w, out_w);
                if ow_first >= ow_end {
                    continue;
                }
                for oh in 0..out_h {
                    let ih = (oh * stride_h + kh * dilation_h) as isize - pad_h as isize;
                    if ih < 0 || ih >= in_h as isize {
                        continue;
                    }
                    let dst_row = &mut dx_channel[ih as usize * in_w..(ih as usize + 1) * in_w];
                    let src = &dcol_row[oh * out_w + ow_first..oh * out_w + ow_end];
                    let iw_first = ow_first * stride_w + offset_w - pad_w;
                    if stride_w == 1 {
                        let dst = &mut dst_row[iw_first..iw_first + src.len()];
                        dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
                    } else {
                        for (i, s) in src.iter().enumerate() {
                            dst_row[iw_first + i * stride_w] += s;
                        }
                    }
                }
            }
        }
    }
}
