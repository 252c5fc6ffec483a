//! Deformable convolution (mmcv's DCN / DCNv2, torchvision's `deform_conv2d` convention) on flex:
//! per image, a deformable `im2col` (each column entry a bilinear sample of the input at the
//! kernel position shifted by its learned offset, times its mask) over all cores, then the
//! GEMMs; and its gradients: `dW = dY · colᵀ`, `dcol = Wᵀ · dY` per channel, scattered back to
//! the input, the offsets and the masks.
//!
//! Burn 0.22's flex runs its deformable conv one image per thread with a single-threaded GEMM,
//! and its backward pass as a scalar loop over every output, input channel and kernel position
//! (ResNet-50 with DCNv2 on c3–c5: 81 s for a training step at batch 2, 224²).
//!
//! Offsets: `[batch, deform_groups · 2 · k, out_h, out_w]`, channel `g·2k + 2·i + {0: dy, 1: dx}`
//! for kernel position `i`; masks `[batch, deform_groups · k, out_h, out_w]`. A sample outside
//! `(-1, size)` is zero; inside, corners outside the image count as zero.

use rayon::prelude::*;

use super::conv::ConvGeometry;
use super::{Matrix, matmul};

/// Output-channel rows per GEMM task, and channel chunks per deform group in the backward pass
/// (fixed, so that sums run in the same order on every machine).
const ROWS_PER_TASK: usize = 16;
const CHANNEL_CHUNKS: usize = 8;

/// A deformable conv's shape: the conv's, plus its offset groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeformGeometry {
    /// The convolution (input, output channels, kernel, stride, padding, dilation, groups).
    pub conv: ConvGeometry,
    /// Channel groups with offsets (and masks) of their own.
    pub deform_groups: usize,
}

impl DeformGeometry {
    /// `[out_h, out_w]`, kernel positions `k`, positions `p = out_h · out_w`.
    fn sizes(&self) -> ([usize; 2], usize, usize) {
        let [_, _, out_h, out_w] = self.conv.output().expect("checked by the caller");
        (
            [out_h, out_w],
            self.conv.kernel[0] * self.conv.kernel[1],
            out_h * out_w,
        )
    }

    /// Offsets shape `[batch, deform_groups · 2k, out_h, out_w]`.
    pub fn offset_shape(&self) -> [usize; 4] {
        let ([out_h, out_w], k, _) = self.sizes();
        [self.conv.input[0], self.deform_groups * 2 * k, out_h, out_w]
    }

    /// Masks shape `[batch, deform_groups · k, out_h, out_w]`.
    pub fn mask_shape(&self) -> [usize; 4] {
        let ([out_h, out_w], k, _) = self.sizes();
        [self.conv.input[0], self.deform_groups * k, out_h, out_w]
    }
}

/// One corner of a bilinear sample: its index in the plane (when inside), its weight, and the
/// weight's derivatives along `y` and `x`.
type Corner = (Option<usize>, f32, f32, f32);

/// The four corners of a bilinear sample at `(y, x)` in an `h × w` plane; `None` outside
/// `(-1, h) × (-1, w)`.
#[inline]
fn corners(y: f32, x: f32, h: usize, w: usize) -> Option<[Corner; 4]> {
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
fn base_position(
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
struct Image<'a> {
    input: &'a [f32],
    offset: &'a [f32],
    mask: Option<&'a [f32]>,
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
    fn all_columns(&self, geometry: &DeformGeometry) -> Vec<f32> {
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
fn image<'a>(
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
fn task_rows(group_out: usize) -> usize {
    (1..=ROWS_PER_TASK.min(group_out))
        .rev()
        .find(|d| group_out.is_multiple_of(*d))
        .unwrap_or(1)
}

/// Gradients of [`deform_conv2d`] (without bias) with respect to the input, the offsets, the
/// masks (when given) and the weight.
pub struct DeformGradients {
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
pub fn deform_conv2d_backward(
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
