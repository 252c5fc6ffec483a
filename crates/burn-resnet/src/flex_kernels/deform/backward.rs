//! Gradients of the deformable conv ([`super::forward::deform_conv2d`], without bias) for the
//! input, the offsets, the masks and the weight: `dW = dY · colᵀ` and `dcol = Wᵀ · dY` per
//! channel, `dcol` scattered back through the bilinear sampling, with sums in a fixed order.

use rayon::prelude::*;

use super::DeformGeometry;
use super::forward::{CHANNEL_CHUNKS, Image, base_position, corners, image, task_rows};
use crate::flex_kernels::{Matrix, matmul};

/// Gradients of [`deform_conv2d`] (without bias) with respect to the input, the offsets, the
/// masks (when given) and the weight.
pub(crate) struct DeformGradients {
    /// `[batch, channels, h, w]`.
    pub input: Vec<f32>,
    /// Shaped like the offsets.
    pub offset: Vec<f32>,
    /// Shaped like the masks.
    pub mask: Option<Vec<f32>>,
    /// `[out, channels / groups, kh, kw]`.
    pub weight: Vec<f32>,
}

/// The backward pass of [`deform_conv2d`] for the output gradient `grad_out`.
pub(crate) fn deform_conv2d_backward(
    input: &[f32],
    offset: &[f32],
    mask: Option<&[f32]>,
    weight: &[f32],
    grad_out: &[f32],
    geometry: &DeformGeometry,
) -> DeformGradients {
    let conv = &geometry.conv;
    let [batch, channels, h, w] = conv.input;
    let [_, out_channels, _, _] = conv.output().expect("checked by the caller");
    let ([_, out_w], k, p) = geometry.sizes();
    let (group_in, group_out) = (channels / conv.groups, out_channels / conv.groups);
    let patch = group_in * k;
    let rows = task_rows(group_out);
    let per_deform_group = channels / geometry.deform_groups;
    let chunk = per_deform_group.div_ceil(CHANNEL_CHUNKS);
    let mut grads = DeformGradients {
        input: vec![0.0; input.len()],
        offset: vec![0.0; offset.len()],
        mask: mask.map(|m| vec![0.0; m.len()]),
        weight: vec![0.0; weight.len()],
    };
    for b in 0..batch {
        let image = image(input, offset, mask, geometry, b);
        let dy = &grad_out[b * out_channels * p..(b + 1) * out_channels * p];
        // dW[o, c·k + i] += Σ_p dY[o, p] · col[c·k + i, p], images in order.
        let columns = image.all_columns(geometry);
        grads
            .weight
            .par_chunks_mut(rows * patch)
            .enumerate()
            .for_each(|(task, dw)| {
                let first = task * rows;
                let group = first / group_out;
                // SAFETY: dw is `rows × patch`; dY rows `first..first + rows` have `p` entries; the
                // group's columns are `patch × p`, read transposed.
                unsafe {
                    matmul(
                        rows,
                        patch,
                        p,
                        Matrix::rows(dw.as_mut_ptr(), patch),
                        b > 0,
                        Matrix::rows(dy[first * p..].as_ptr(), p),
                        Matrix::transposed(columns[group * patch * p..].as_ptr(), p),
                    );
                }
            });
        drop(columns);

        // Per chunk of channels of one deform group: the input gradient of its channels and
        // its share of the offset and mask gradients, summed over chunks afterwards in order.
        let mut chunks: Vec<(usize, &mut [f32])> = Vec::new();
        let mut rest = &mut grads.input[b * channels * h * w..(b + 1) * channels * h * w];
        let mut first = 0;
        while first < channels {
            // Chunks never cross a deform group's boundary.
            let end = (first + chunk).min((first / per_deform_group + 1) * per_deform_group);
            let (head, tail) = rest.split_at_mut((end - first) * h * w);
            chunks.push((first, head));
            (rest, first) = (tail, end);
        }
        let partials: Vec<(usize, Vec<f32>, Vec<f32>)> = chunks
            .into_par_iter()
            .map(|(first, dx)| {
                let group = first / per_deform_group;
                let mut d_offset = vec![0.0f32; 2 * k * p];
                let mut d_mask = vec![0.0f32; k * p];
                let mut dcol = vec![0.0f32; k * p];
                for (local, dx) in dx.chunks_mut(h * w).enumerate() {
                    let c = first + local;
                    let (weight_group, within) = (c / group_in, c % group_in);
                    // dcol[i, p] = Σ_o W[o, within·k + i] · dY[o, p] over the weight group.
                    // SAFETY: dcol is `k × p`; the weight view reads column `within·k + i` of
                    // the group's `group_out` rows; dY's group rows are `group_out × p`.
                    unsafe {
                        matmul(
                            k,
                            p,
                            group_out,
                            Matrix::rows(dcol.as_mut_ptr(), p),
                            false,
                            Matrix::transposed(
                                weight[weight_group * group_out * patch + within * k..].as_ptr(),
                                patch,
                            ),
                            Matrix::rows(dy[weight_group * group_out * p..].as_ptr(), p),
                        );
                    }
                    scatter(
                        &image,
                        geometry,
                        c,
                        group,
                        out_w,
                        &dcol,
                        dx,
                        &mut d_offset,
                        &mut d_mask,
                    );
                }
                (group, d_offset, d_mask)
            })
            .collect();
        let (offset_len, mask_len) = (2 * k * p, k * p);
        for (group, d_offset, d_mask) in partials {
            let offset_at = (b * geometry.deform_groups + group) * offset_len;
            for (total, part) in grads.offset[offset_at..offset_at + offset_len]
                .iter_mut()
                .zip(&d_offset)
            {
                *total += part;
            }
            if let Some(total) = grads.mask.as_mut() {
                let mask_at = (b * geometry.deform_groups + group) * mask_len;
                for (total, part) in total[mask_at..mask_at + mask_len].iter_mut().zip(&d_mask) {
                    *total += part;
                }
            }
        }
    }
    grads
}

/// Send channel `c`'s column gradient `dcol` (`[k, p]`) back through the sampling: to the input
/// plane `dx`, and to the offsets and masks of its deform group (`d_offset`, `d_mask`).
#[allow(clippy::too_many_arguments)]
fn scatter(
    image: &Image,
    geometry: &DeformGeometry,
    c: usize,
    group: usize,
    out_w: usize,
    dcol: &[f32],
    dx: &mut [f32],
    d_offset: &mut [f32],
    d_mask: &mut [f32],
) {
    let conv = &geometry.conv;
    let [_, _, h, w] = conv.input;
    let (_, k, p) = geometry.sizes();
    let plane = &image.input[c * h * w..(c + 1) * h * w];
    let offset = &image.offset[group * 2 * k * p..(group + 1) * 2 * k * p];
    for i in 0..k {
        for q in 0..p {
            let grad = dcol[i * p + q];
            let (y, x) = base_position(conv, out_w, i, q);
            let (y, x) = (y + offset[2 * i * p + q], x + offset[(2 * i + 1) * p + q]);
            let Some(corners) = corners(y, x, h, w) else {
                continue;
            };
            let mask = image.mask.map_or(1.0, |m| m[(group * k + i) * p + q]);
            let (mut value, mut d_y, mut d_x) = (0.0f32, 0.0f32, 0.0f32);
            for (index, weight, weight_dy, weight_dx) in corners {
                if let Some(index) = index {
                    let v = plane[index];
                    value += weight * v;
                    d_y += weight_dy * v;
                    d_x += weight_dx * v;
                    dx[index] += grad * mask * weight;
                }
            }
            d_offset[2 * i * p + q] += grad * mask * d_y;
            d_offset[(2 * i + 1) * p + q] += grad * mask * d_x;
            d_mask[i * p + q] += grad * value;
        }
    }
}
