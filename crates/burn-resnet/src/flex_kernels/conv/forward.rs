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

use super::im2col::im2col_rows;
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

impl Epilogue<'_> {
    /// `relu?(v · scale? + bias? + residual?)` for one value of `channel`, the operations in
    /// that order (a norm's op computes the same).
    #[inline(always)]
    pub(crate) fn apply(&self, channel: usize, v: f32, residual: Option<f32>) -> f32 {
        let mut y = v;
        if let Some(scale) = self.scale {
            y *= scale[channel];
        }
        if let Some(bias) = self.bias {
            y += bias[channel];
        }
        if let Some(r) = residual {
            y += r;
        }
        if self.relu {
            crate::flex_kernels::relu(y)
        } else {
            y
        }
    }
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
    conv2d_into(input, weight, geometry, epilogue, None)
}

/// [`conv2d`] with an epilogue that has a `scale` (a norm's), also returning the conv's own
/// output, before the epilogue: `(conv, epilogue(conv))`, the second computed from the first
/// while it is in cache.
pub(crate) fn conv2d_keeping_product(
    input: &[f32],
    weight: &[f32],
    geometry: &ConvGeometry,
    epilogue: Epilogue,
) -> (Vec<f32>, Vec<f32>) {
    assert!(epilogue.scale.is_some(), "the epilogue reads the product");
    let len = geometry
        .output()
        .expect("checked by the caller")
        .iter()
        .product();
    // SAFETY: as `conv2d_into`'s output: every block's GEMM overwrites its rectangle.
    let mut product = unsafe { crate::flex_kernels::unwritten(len) };
    let ptr = SendPtr(product.as_mut_ptr());
    let output = conv2d_into(input, weight, geometry, epilogue, Some(ptr));
    (product, output)
}

/// [`conv2d`], the GEMM writing into `product` (the output's size) when given, the epilogue
/// then reading it from there.
fn conv2d_into(
    input: &[f32],
    weight: &[f32],
    geometry: &ConvGeometry,
    epilogue: Epilogue,
    product: Option<SendPtr>,
) -> Vec<f32> {
    let [batch, out_channels, out_h, out_w] = geometry.output().expect("checked by the caller");
    let plane = out_h * out_w;
    let in_image = geometry.input[1] * geometry.input[2] * geometry.input[3];
    // SAFETY: the tasks below cover every (image, channel, row) once, and `conv_block` writes
    // each of its positions (the GEMM overwrites unless the bias/residual were stored first;
    // with `product`, the epilogue writes them from there).
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
        // SAFETY: the same rectangles of `product`, which has the output's size.
        let product = product
            .map(|p| unsafe { std::slice::from_raw_parts_mut(p.get().add(image * len), len) });
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
            (out_image, product),
            block_epilogue,
        );
    });
    output
}

/// The smallest share of output channels one task computes.
const MIN_CHANNEL_CHUNK: usize = 32;

/// Output rows `rows` of one image, for the output channels `channels` (all in one group:
/// `input` is that group's input channels, `geometry` that group's conv), into `out_image`;
/// with `product` (the image's conv output before the epilogue), the GEMM writes there and the
/// epilogue (which then has a scale) reads from there.
#[allow(clippy::too_many_arguments)]
fn conv_block(
    input: &[f32],
    weight: &[f32],
    geometry: &ConvGeometry,
    [out_h, out_w]: [usize; 2],
    rows: Range<usize>,
    channels: Range<usize>,
    (out_image, mut product): (&mut [f32], Option<&mut [f32]>),
    epilogue: Epilogue,
) {
    let plane = out_h * out_w;
    let columns = rows.len() * out_w;
    let first = rows.start * out_w;
    let patch = geometry.patch_len();

    // Without a scale, start from the bias and the residual so that the GEMM accumulates
    // onto them; with one, they are added after it, in the epilogue pass.
    let mut read_dst = false;
    if product.is_none()
        && epilogue.scale.is_none()
        && (epilogue.bias.is_some() || epilogue.residual.is_some())
    {
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
    let dst = match product.as_deref_mut() {
        Some(product) => product.as_mut_ptr(),
        None => out_image.as_mut_ptr(),
    };
    unsafe {
        matmul(
            channels.len(),
            columns,
            patch,
            Matrix::rows(dst.add(channels.start * plane + first), plane),
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
            let product = product.as_deref().map(|p| &p[range.clone()]);
            let dst = &mut out_image[range];
            match (product, residual) {
                (None, Some(residual)) => dst
                    .iter_mut()
                    .zip(residual)
                    .for_each(|(v, r)| *v = *v * scale + bias + r),
                (None, None) => dst.iter_mut().for_each(|v| *v = *v * scale + bias),
                (Some(product), Some(residual)) => dst
                    .iter_mut()
                    .zip(product.iter().zip(residual))
                    .for_each(|(v, (c, r))| *v = c * scale + bias + r),
                (Some(product), None) => dst
                    .iter_mut()
                    .zip(product)
                    .for_each(|(v, c)| *v = c * scale + bias),
            }
            if epilogue.relu {
                dst.iter_mut()
                    .for_each(|v| *v = crate::flex_kernels::relu(*v));
            }
        }
    } else if epilogue.relu {
        debug_assert!(
            product.is_none(),
            "a product is only kept for a scaled epilogue"
        );
        for channel in channels {
            let dst = &mut out_image[channel * plane + first..channel * plane + first + columns];
            dst.iter_mut()
                .for_each(|v| *v = crate::flex_kernels::relu(*v));
        }
    }
}
