//! The project's own CPU convolution for inference: NCHW in, NCHW out, `im2col` built one block
//! of output rows at a time (so the column buffer stays in cache), one GEMM per block through the
//! `gemm` crate (its AVX-512 kernels where the CPU has them), and the epilogue — bias, residual
//! add, ReLU — applied to the block while it is still in cache.
//!
//! Burn's flex conv converts every input to NHWC, builds the whole `im2col` matrix, runs the GEMM
//! and then adds the bias, the residual and the ReLU in three more passes over the output; on
//! ResNet-50's 3x3 shapes this path is about twice as fast (`resnet bench`, docs/performance.md).

use std::ops::Range;

use rayon::prelude::*;

use crate::flex_kernels::{Matrix, SendPtr, matmul};

/// Shape and hyper-parameters of one 2-D convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Input `[batch, channels, height, width]`.
    pub input: [usize; 4],
    /// Output channels.
    pub out_channels: usize,
    /// Kernel `[height, width]`.
    pub kernel: [usize; 2],
    /// Stride `[height, width]`.
    pub stride: [usize; 2],
    /// Symmetric zero padding `[height, width]`.
    pub padding: [usize; 2],
    /// Dilation `[height, width]`.
    pub dilation: [usize; 2],
    /// Channel groups (ResNeXt's cardinality); divides both channel counts.
    pub groups: usize,
}

impl ConvGeometry {
    /// Output `[batch, out_channels, height, width]`; `None` when the kernel does not fit.
    pub fn output(&self) -> Option<[usize; 4]> {
        let side = |axis: usize| {
            let input = self.input[2 + axis] + 2 * self.padding[axis];
            let reach = self.dilation[axis] * (self.kernel[axis] - 1) + 1;
            input
                .checked_sub(reach)
                .map(|span| span / self.stride[axis] + 1)
        };
        Some([self.input[0], self.out_channels, side(0)?, side(1)?])
    }

    /// Length of one column of a group's `im2col` matrix (and of one weight row): the group's
    /// `channels × kernel height × kernel width`.
    pub(super) fn patch_len(&self) -> usize {
        self.input[1] / self.groups * self.kernel[0] * self.kernel[1]
    }

    /// The conv one group computes: its input channels to its output channels.
    pub(super) fn group(&self) -> ConvGeometry {
        let [batch, channels, h, w] = self.input;
        ConvGeometry {
            input: [batch, channels / self.groups, h, w],
            out_channels: self.out_channels / self.groups,
            groups: 1,
            ..*self
        }
    }

    /// A 1x1, stride-1, unpadded conv reads its input as the GEMM's right-hand side directly.
    pub(super) fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.stride == [1, 1] && self.padding == [0, 0]
    }

    /// Output columns `[first, end)` whose input column `ow·stride − pad + offset` lies inside
    /// the image, for a kernel column at `offset` (already dilated).
    pub(super) fn valid_columns(&self, offset: usize, out_w: usize) -> (usize, usize) {
        let (in_w, stride, pad) = (self.input[3], self.stride[1], self.padding[1]);
        let first = pad.saturating_sub(offset).div_ceil(stride);
        let end = (in_w + pad)
            .saturating_sub(offset)
            .div_ceil(stride)
            .min(out_w);
        (first, end.max(first))
    }
}

/// What happens to the conv's output in the same pass:
/// `relu?(conv · scale + bias + residual)`, each part optional.
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a> {
    /// Per-output-channel scale (an eval-mode BatchNorm's `γ/√(σ² + ε)`).
    pub scale: Option<&'a [f32]>,
    /// Per-output-channel bias (a BatchNorm's shift, folded or not).
    pub bias: Option<&'a [f32]>,
    /// A tensor of the output's shape added before the ReLU (a residual block's identity).
    pub residual: Option<&'a [f32]>,
    /// Clamp at zero.
    pub relu: bool,
}

/// Aim for column blocks of about this many floats (1 MiB), which keeps the block and the
/// output rows it produces in the L2 cache.
const COLUMN_BLOCK_FLOATS: usize = 1 << 18;

/// Convolve `input` (NCHW, contiguous) with `weight` (`[out, in, kh, kw]`, contiguous).
///
/// The caller checks the slice lengths against `geometry` (see [`super::try_conv2d`]).
pub fn conv2d(
    input: &[f32],
    weight: &[f32],
    geometry: &ConvGeometry,
    epilogue: Epilogue,
) -> Vec<f32> {
    let [batch, out_channels, out_h, out_w] = geometry.output().expect("checked by the caller");
    let plane = out_h * out_w;
    let in_image = geometry.input[1] * geometry.input[2] * geometry.input[3];
    // SAFETY: the tasks below cover every (image, channel, row) once, and `conv_block` writes
    // each of its positions (the GEMM overwrites unless the bias/residual were stored first).
    let mut output = unsafe { crate::flex_kernels::unwritten(batch * out_channels * plane) };

    // Rows of output per block: enough columns to amortise the GEMM's packing, few enough that
    // the column block stays in cache.
    let rows_per_block =
        (COLUMN_BLOCK_FLOATS / (geometry.patch_len() * out_w).max(1)).clamp(1, out_h);
    let blocks_per_image = out_h.div_ceil(rows_per_block);
    // Tasks split the output channels by group and, when there are too few blocks to keep
    // every thread busy (deep stages at batch 1), into chunks of at least `MIN_CHANNEL_CHUNK`.
    let group = geometry.group();
    let threads = rayon::current_num_threads();
    let splits = (2 * threads)
        .div_ceil(batch * blocks_per_image * geometry.groups)
        .min(group.out_channels.div_ceil(MIN_CHANNEL_CHUNK))
        .max(1);
    let chunk = group.out_channels.div_ceil(splits);
    let channel_chunks: Vec<(usize, Range<usize>)> = (0..geometry.groups)
        .flat_map(|g| {
            let group_channels = g * group.out_channels..(g + 1) * group.out_channels;
            group_channels
                .clone()
                .step_by(chunk)
                .map(move |start| (g, start..(start + chunk).min(group_channels.end)))
        })
        .collect();
    let splits = channel_chunks.len();
    let tasks = batch * blocks_per_image * splits;
    let group_input = group.input[1] * group.input[2] * group.input[3];

    // Each task writes its rows of its channels' planes of one image; tasks interleave within
    // an image, so each gets the whole image through a raw pointer.
    let out_ptr = SendPtr(output.as_mut_ptr());
    (0..tasks).into_par_iter().for_each(|task| {
        let (image, rest) = (
            task / (blocks_per_image * splits),
            task % (blocks_per_image * splits),
        );
        let (block, split) = (rest / splits, rest % splits);
        let first_row = block * rows_per_block;
        let rows = rows_per_block.min(out_h - first_row);
        let (g, channels) = channel_chunks[split].clone();
        let len = out_channels * plane;
        // SAFETY: tasks of one image write disjoint (row range, channel range) rectangles of its
        // planes (`conv_block` writes nothing else), tasks of different images write disjoint
        // images, and `output` outlives the parallel loop.
        let out_image =
            unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(image * len), len) };
        let input =
            &input[image * in_image + g * group_input..image * in_image + (g + 1) * group_input];
        let residual = epilogue
            .residual
            .map(|r| &r[image * len..(image + 1) * len]);
        let block_epilogue = Epilogue {
            residual,
            ..epilogue
        };
        let rows = first_row..first_row + rows;
        conv_block(
            input,
            weight,
            &group,
            [out_h, out_w],
            rows,
            channels,
            out_image,
            block_epilogue,
        );
    });
    output
}

/// The smallest share of output channels one task computes.
const MIN_CHANNEL_CHUNK: usize = 32;

/// Output rows `rows` of one image, for the output channels `channels` (all in one group:
/// `input` is that group's input channels, `geometry` that group's conv).
#[allow(clippy::too_many_arguments)]
fn conv_block(
    input: &[f32],
    weight: &[f32],
    geometry: &ConvGeometry,
    [out_h, out_w]: [usize; 2],
    rows: Range<usize>,
    channels: Range<usize>,
    out_image: &mut [f32],
    epilogue: Epilogue,
) {
    let plane = out_h * out_w;
    let columns = rows.len() * out_w;
    let first = rows.start * out_w;
    let patch = geometry.patch_len();

    // Without a scale, start from the bias and the residual so that the GEMM accumulates
    // onto them; with one, they are added after it, in the epilogue pass.
    let mut read_dst = false;
    if epilogue.scale.is_none() && (epilogue.bias.is_some() || epilogue.residual.is_some()) {
        read_dst = true;
        for channel in channels.clone() {
            let dst = &mut out_image[channel * plane + first..channel * plane + first + columns];
            let bias = epilogue.bias.map_or(0.0, |b| b[channel]);
            match epilogue.residual {
                Some(residual) => {
                    let src = &residual[channel * plane + first..channel * plane + first + columns];
                    dst.iter_mut().zip(src).for_each(|(d, r)| *d = r + bias);
                }
                None => dst.fill(bias),
            }
        }
    }

    let column_buffer;
    let (rhs, rhs_row_stride) = if geometry.is_pointwise() {
        (&input[first..], plane)
    } else {
        column_buffer = im2col_rows(input, geometry, out_w, rows.start, rows.len());
        (&column_buffer[..], columns)
    };

    // SAFETY: every index the GEMM touches lies inside the slices: dst is the rows `channels` of
    // stride `plane`, from `first`, `columns` entries each (inside `out_image`); lhs is the same
    // rows of the `[out_channels, patch]` weight; rhs is `patch` rows of stride `rhs_rs` with
    // `columns` entries each (inside the input for a pointwise conv, the column block otherwise).
    unsafe {
        matmul(
            channels.len(),
            columns,
            patch,
            Matrix::rows(
                out_image.as_mut_ptr().add(channels.start * plane + first),
                plane,
            ),
            read_dst,
            Matrix::rows(weight.as_ptr().add(channels.start * patch), patch),
            Matrix::rows(rhs.as_ptr(), rhs_row_stride),
        );
    }

    if let Some(scale) = epilogue.scale {
        for channel in channels {
            let range = channel * plane + first..channel * plane + first + columns;
            let (scale, bias) = (scale[channel], epilogue.bias.map_or(0.0, |b| b[channel]));
            let residual = epilogue.residual.map(|r| &r[range.clone()]);
            let dst = &mut out_image[range];
            match residual {
                Some(residual) => dst
                    .iter_mut()
                    .zip(residual)
                    .for_each(|(v, r)| *v = *v * scale + bias + r),
                None => dst.iter_mut().for_each(|v| *v = *v * scale + bias),
            }
            if epilogue.relu {
                dst.iter_mut()
                    .for_each(|v| *v = crate::flex_kernels::relu(*v));
            }
        }
    } else if epilogue.relu {
        for channel in channels {
            let dst = &mut out_image[channel * plane + first..channel * plane + first + columns];
            dst.iter_mut()
                .for_each(|v| *v = crate::flex_kernels::relu(*v));
        }
    }
}

/// The `im2col` matrix of output rows `first_row..first_row + rows`: one row per
/// `(channel, kernel row, kernel column)`, one column per output position, zeros in the padding.
pub(super) fn im2col_rows(
    input: &[f32],
    geometry: &ConvGeometry,
    out_w: usize,
    first_row: usize,
    rows: usize,
) -> Vec<f32> {
    let [_, channels, in_h, in_w] = geometry.input;
    let [kernel_h, kernel_w] = geometry.kernel;
    let [stride_h, stride_w] = geometry.stride;
    let [pad_h, pad_w] = geometry.padding;
    let [dilation_h, dilation_w] = geometry.dilation;
    let columns = rows * out_w;
    // SAFETY: every row below writes each of its `columns` entries: the input's values where
    // the window lies inside the image, zeros in the padding.
    let mut col = unsafe { crate::flex_kernels::unwritten(geometry.patch_len() * columns) };

    let mut row_index = 0;
    for channel in 0..channels {
        let channel_input = &input[channel * in_h * in_w..(channel + 1) * in_h * in_w];
        for kh in 0..kernel_h {
            for kw in 0..kernel_w {
                let col_row = &mut col[row_index * columns..(row_index + 1) * columns];
                row_index += 1;
                let offset_w = kw * dilation_w;
                let (ow_first, ow_end) = geometry.valid_columns(offset_w, out_w);
                for r in 0..rows {
                    let ih =
                        ((first_row + r) * stride_h + kh * dilation_h) as isize - pad_h as isize;
                    let row = &mut col_row[r * out_w..(r + 1) * out_w];
                    if ih < 0 || ih >= in_h as isize || ow_first >= ow_end {
                        row.fill(0.0); // the window lies in the padding
                        continue;
                    }
                    row[..ow_first].fill(0.0);
                    row[ow_end..].fill(0.0);
                    let src_row = &channel_input[ih as usize * in_w..(ih as usize + 1) * in_w];
                    let dst = &mut row[ow_first..ow_end];
                    let iw_first = ow_first * stride_w + offset_w - pad_w;
                    if stride_w == 1 {
                        dst.copy_from_slice(&src_row[iw_first..iw_first + dst.len()]);
                    } else {
                        for (i, d) in dst.iter_mut().enumerate() {
                            *d = src_row[iw_first + i * stride_w];
                        }
                    }
                }
            }
        }
    }
    col
}
