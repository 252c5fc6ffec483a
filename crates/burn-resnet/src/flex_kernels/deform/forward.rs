//! The deformable conv's forward pass: per image, a deformable `im2col` (each column entry a
//! bilinear sample of the input at the kernel position shifted by its learned offset, times its
//! mask) over all cores, then the GEMMs. Burn 0.22's flex runs it one image per thread with a
//! single-threaded GEMM.

use rayon::prelude::*;

use super::DeformGeometry;
use crate::flex_kernels::conv::ConvGeometry;
use crate::flex_kernels::{Matrix, matmul};

/// Output-channel rows per GEMM task, and channel chunks per deform group in the backward pass
/// (fixed, so that sums run in the same order on every machine).
const ROWS_PER_TASK: usize = 16;
pub(super) const CHANNEL_CHUNKS: usize = 8;

/// One corner of a bilinear sample: its index in the plane (when inside), its weight, and the
/// weight's derivatives along `y` and `x`.
type Corner = (Option<usize>, f32, f32, f32);

/// The four corners of a bilinear sample at `(y, x)` in an `h × w` plane; `None` outside
/// `(-1, h) × (-1, w)`.
#[inline]
pub(super) fn corners(y: f32, x: f32, h: usize, w: usize) -> Option<[Corner; 4]> {
    if y <= -1.0 || y >= h as f32 || x <= -1.0 || x >= w as f32 {
        return None;
    }
    let (y0, x0) = (y.floor(), x.floor());
    let (ly, lx) = (y - y0, x - x0);
    let (hy, hx) = (1.0 - ly, 1.0 - lx);
    let (y0, x0) = (y0 as isize, x0 as isize);
    let at = |yy: isize, xx: isize| {
        (yy >= 0 && xx >= 0 && (yy as usize) < h && (xx as usize) < w)
            .then(|| yy as usize * w + xx as usize)
    };
    Some([
        (at(y0, x0), hy * hx, -hx, -hy),
        (at(y0, x0 + 1), hy * lx, -lx, hy),
        (at(y0 + 1, x0), ly * hx, hx, -ly),
        (at(y0 + 1, x0 + 1), ly * lx, lx, ly),
    ])
}

/// Where kernel position `i` of output position `p` samples, before its offset.
#[inline]
pub(super) fn base_position(
    geometry: &ConvGeometry,
    out_w: usize,
    kernel_index: usize,
    p: usize,
) -> (f32, f32) {
    let (ki, kj) = (
        kernel_index / geometry.kernel[1],
        kernel_index % geometry.kernel[1],
    );
    let (oh, ow) = (p / out_w, p % out_w);
    let y =
        (oh * geometry.stride[0] + ki * geometry.dilation[0]) as f32 - geometry.padding[0] as f32;
    let x =
        (ow * geometry.stride[1] + kj * geometry.dilation[1]) as f32 - geometry.padding[1] as f32;
    (y, x)
}

/// One image's slices: input, offsets, masks.
pub(super) struct Image<'a> {
    pub(super) input: &'a [f32],
    pub(super) offset: &'a [f32],
    pub(super) mask: Option<&'a [f32]>,
}

impl Image<'_> {
    /// The `[k, p]` columns of input channel `c`: masked bilinear samples.
    fn columns(&self, geometry: &DeformGeometry, c: usize, out: &mut [f32]) {
        let conv = &geometry.conv;
        let [_, channels, h, w] = conv.input;
        let ([_, out_w], k, p) = geometry.sizes();
        let group = c / (channels / geometry.deform_groups);
        let plane = &self.input[c * h * w..(c + 1) * h * w];
        let offset = &self.offset[group * 2 * k * p..(group + 1) * 2 * k * p];
        for i in 0..k {
            for q in 0..p {
                let (y, x) = base_position(conv, out_w, i, q);
                let (y, x) = (y + offset[2 * i * p + q], x + offset[(2 * i + 1) * p + q]);
                let mut value = 0.0;
                if let Some(corners) = corners(y, x, h, w) {
                    for (index, weight, _, _) in corners {
                        if let Some(index) = index {
                            value += weight * plane[index];
                        }
                    }
                }
                if let Some(mask) = self.mask {
                    value *= mask[(group * k + i) * p + q];
                }
                out[i * p + q] = value;
            }
        }
    }

    /// The columns of every input channel, `[channels · k, p]`, over all cores.
    pub(super) fn all_columns(&self, geometry: &DeformGeometry) -> Vec<f32> {
        let (_, k, p) = geometry.sizes();
        let mut columns = vec![0.0f32; geometry.conv.input[1] * k * p];
        columns
            .par_chunks_mut(k * p)
            .enumerate()
            .for_each(|(c, out)| self.columns(geometry, c, out));
        columns
    }
}

/// Slices of image `b` of the inputs.
pub(super) fn image<'a>(
    input: &'a [f32],
    offset: &'a [f32],
    mask: Option<&'a [f32]>,
    geometry: &DeformGeometry,
    b: usize,
) -> Image<'a> {
    let [_, channels, h, w] = geometry.conv.input;
    let (_, k, p) = geometry.sizes();
    let (offset_len, mask_len) = (
        geometry.deform_groups * 2 * k * p,
        geometry.deform_groups * k * p,
    );
    Image {
        input: &input[b * channels * h * w..(b + 1) * channels * h * w],
        offset: &offset[b * offset_len..(b + 1) * offset_len],
        mask: mask.map(|m| &m[b * mask_len..(b + 1) * mask_len]),
    }
}

/// The deformable conv, `[batch, out, out_h, out_w]`, plus a per-output-channel `bias` (a folded
/// norm's shift).
pub fn deform_conv2d(
    input: &[f32],
    offset: &[f32],
    mask: Option<&[f32]>,
    weight: &[f32],
    geometry: &DeformGeometry,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let conv = &geometry.conv;
    let [batch, out_channels, _, _] = conv.output().expect("checked by the caller");
    let (_, k, p) = geometry.sizes();
    let group_out = out_channels / conv.groups;
    let patch = conv.input[1] / conv.groups * k;
    let rows = task_rows(group_out);
    let mut output = vec![0.0f32; batch * out_channels * p];
    for (b, out_image) in output.chunks_mut(out_channels * p).enumerate() {
        let columns = image(input, offset, mask, geometry, b).all_columns(geometry);
        out_image
            .par_chunks_mut(rows * p)
            .enumerate()
            .for_each(|(task, out)| {
                let first = task * rows;
                let group = first / group_out;
                // SAFETY: out is `rows × p`; the weight rows `first..first + rows` have `patch`
                // entries each; the group's columns are `patch × p`.
                unsafe {
                    matmul(
                        rows,
                        p,
                        patch,
                        Matrix::rows(out.as_mut_ptr(), p),
                        false,
                        Matrix::rows(weight[first * patch..].as_ptr(), patch),
                        Matrix::rows(columns[group * patch * p..].as_ptr(), p),
                    );
                }
                if let Some(bias) = bias {
                    for (row, values) in out.chunks_mut(p).enumerate() {
                        values.iter_mut().for_each(|v| *v += bias[first + row]);
                    }
                }
            });
    }
    output
}

/// Output-channel rows per task: a divisor of the group's output channels, at most 16.
pub(super) fn task_rows(group_out: usize) -> usize {
    (1..=ROWS_PER_TASK.min(group_out))
        .rev()
        .find(|d| group_out.is_multiple_of(*d))
        .unwrap_or(1)
}
