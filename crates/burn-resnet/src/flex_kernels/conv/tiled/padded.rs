//! Convs without `im2col`: the input is copied once into zero-padded planes per channel (one
//! per stride phase), so that for every kernel tap the columns of consecutive output positions
//! are consecutive values of one plane, and the micro-kernels read them in place (one offset per
//! depth row). The output is computed on the grid (`out_h` rows of the plane width: the columns
//! past `out_w` are junk) into a task buffer, then compacted into the NCHW output with the
//! epilogue.

use std::ops::Range;

use super::Epilogue;
use super::microkernel::{MAX_TILE_WIDTH, MR, MicroKernel, Tile, epilogue_value};
use super::pack::Walk;
use crate::flex_kernels::conv::ConvGeometry;

/// The padded planes of one conv's input, split by stride phase: with stride `s`, plane
/// `(py, px)` of a channel holds the padded input's rows `s·i + py` and columns `s·j + px`, so
/// that kernel tap `(kh, kw)` of output position `(oh, ow)` reads row `oh + kh·d / s`, column
/// `ow + kw·d / s` of plane `(kh·d % s, kw·d % s)`: consecutive output columns, consecutive
/// values.
#[derive(Clone, Copy)]
pub(super) struct PaddedGrid {
    /// Phase planes per axis (the stride).
    stride: [usize; 2],
    /// Columns of a phase plane: the grid's row length.
    pub width: usize,
    /// Values per phase plane.
    phase_len: usize,
    /// Zeros after the last plane, for the reads of junk columns and of a tile's padding lanes.
    slack: usize,
}

impl PaddedGrid {
    /// The grid of a conv that does not read its input as it is (anything but a stride-1,
    /// unpadded 1x1).
    pub(super) fn for_conv(geometry: &ConvGeometry) -> Option<Self> {
        if geometry.is_pointwise() {
            return None;
        }
        let [_, _, h, w] = geometry.input;
        let [stride_h, stride_w] = geometry.stride;
        let height = (h + 2 * geometry.padding[0]).div_ceil(stride_h);
        // At stride 1 the rows share their padding: a row's right padding is the next row's
        // left, read where a tap's column wraps past the row's end (the widest reach, column
        // `w + 2·pad − 1`, lands in the next row's first `pad` zeros). Fewer junk columns.
        let width = if stride_w == 1 {
            w + geometry.padding[1]
        } else {
            (w + 2 * geometry.padding[1]).div_ceil(stride_w)
        };
        let reach_w = geometry.dilation[1] * (geometry.kernel[1] - 1) / stride_w;
        Some(Self {
            stride: geometry.stride,
            width,
            phase_len: height * width,
            slack: MAX_TILE_WIDTH + reach_w + width,
        })
    }

    /// Values per input channel (all its phase planes).
    fn channel_len(&self) -> usize {
        self.stride[0] * self.stride[1] * self.phase_len
    }

    /// One image's group of channels (`input`, NCHW planes), padded and split by phase (only
    /// the phases some kernel tap reads: a 1x1 stride-2 conv reads one of four).
    pub(super) fn pad(&self, input: &[f32], geometry: &ConvGeometry) -> Vec<f32> {
        let [_, channels, h, w] = geometry.input;
        let [pad_h, pad_w] = geometry.padding;
        let [stride_h, stride_w] = self.stride;
        let used = |axis: usize, phase: usize| {
            (0..geometry.kernel[axis])
                .any(|k| k * geometry.dilation[axis] % self.stride[axis] == phase)
        };
        let used_w: Vec<usize> = (0..stride_w).filter(|&px| used(1, px)).collect();
        let mut padded = vec![0.0f32; channels * self.channel_len() + self.slack];
        for (planes, src) in padded
            .chunks_exact_mut(self.channel_len())
            .zip(input.chunks_exact(h * w))
        {
            for (row, src_row) in src.chunks_exact(w).enumerate() {
                let padded_row = row + pad_h;
                let (i, py) = (padded_row / stride_h, padded_row % stride_h);
                if !used(0, py) {
                    continue;
                }
                for &px in &used_w {
                    let plane =
                        &mut planes[(py * stride_w + px) * self.phase_len..][..self.phase_len];
                    let row_values = &mut plane[i * self.width..(i + 1) * self.width];
                    if stride_w == 1 {
                        row_values[pad_w..].copy_from_slice(src_row);
                        continue;
                    }
                    // Input columns `c` with `(c + pad_w) % stride_w == px`, in order.
                    let first = (px + stride_w - pad_w % stride_w) % stride_w;
                    let start = (first + pad_w) / stride_w;
                    for (dst, &v) in row_values[start..]
                        .iter_mut()
                        .zip(src_row.iter().skip(first).step_by(stride_w))
                    {
                        *dst = v;
                    }
                }
            }
        }
        padded
    }

    /// Where each depth row `(channel, kh, kw)` starts, relative to an output position.
    pub(super) fn depth_offsets(&self, geometry: &ConvGeometry) -> Vec<usize> {
        let [kernel_h, kernel_w] = geometry.kernel;
        let [dilation_h, dilation_w] = geometry.dilation;
        let [stride_h, stride_w] = self.stride;
        (0..geometry.patch_len())
            .map(|k| {
                let channel = k / (kernel_h * kernel_w);
                let (tap_h, tap_w) = (
                    k / kernel_w % kernel_h * dilation_h,
                    k % kernel_w * dilation_w,
                );
                let phase = (tap_h % stride_h) * stride_w + tap_w % stride_w;
                channel * self.channel_len()
                    + phase * self.phase_len
                    + tap_h / stride_h * self.width
                    + tap_w / stride_w
            })
            .collect()
    }
}

/// One task on the padded grid: grid positions `positions` of channel panels `panels`.
pub(super) struct GridTask<'a> {
    pub padded: &'a [f32],
    pub offsets: &'a [usize],
    /// The group's packed weights, `[panel][depth][MR]`.
    pub weight: &'a [f32],
    pub grid: PaddedGrid,
    /// The group's output channels.
    pub channels: usize,
    pub out_w: usize,
    /// Positions per output plane.
    pub plane: usize,
    pub first_channel: usize,
    pub positions: Range<usize>,
    pub panels: Range<usize>,
    pub epilogue: Epilogue<'a>,
}

/// Compute a grid task and write its valid positions, with the epilogue, into `out_image`.
pub(super) fn run_task(task: GridTask, out_image: &mut [f32], micro: MicroKernel) {
    let depth = task.offsets.len();
    let positions = task.positions.clone();
    let len = positions.len();
    let rows = task.panels.len() * MR;
    let mut sums = vec![0.0f32; rows * len];
    let walk = Walk::new(&task.positions, &task.panels);
    let block = walk.depth_block();
    for first_depth in (0..depth).step_by(block) {
        let depths = first_depth..(first_depth + block).min(depth);
        walk.for_each(positions.clone(), task.panels.clone(), |_, tile, panel| {
            let (first, cols, width) = tile;
            let local = panel - task.panels.start;
            let a = &task.weight[(panel * depth + first_depth) * MR..];
            let tile = Tile {
                depth: depths.len(),
                a: a.as_ptr(),
                b: task.padded[first..].as_ptr(),
                ldb: 0,
                b_offsets: task.offsets[first_depth..].as_ptr(),
                width,
                c: sums[local * MR * len + first - positions.start..].as_mut_ptr(),
                ldc: len,
                rows: MR.min(task.channels - panel * MR),
                cols,
                accumulate: first_depth > 0,
                finish: None,
            };
            // SAFETY: the packed panel holds `depths.len()` rows of `MR`; every column read
            // `first + offsets[k] + j` for `j < width` lies inside the padded planes or their
            // zero slack (`PaddedGrid::slack` covers the widest tile past the last grid
            // position); the rows written are inside `sums`.
            unsafe { micro(&tile) };
        });
    }
    let e = task.epilogue;
    for (local, panel) in task.panels.clone().enumerate() {
        for r in 0..MR.min(task.channels - panel * MR) {
            let channel = task.first_channel + panel * MR + r;
            let row_sums = &sums[(local * MR + r) * len..][..len];
            let scale = e.scale.map(|s| s[channel]);
            let bias = e.bias.map(|b| b[channel]);
            let out_plane = &mut out_image[channel * task.plane..][..task.plane];
            let residual = e
                .residual
                .map(|res| &res[channel * task.plane..][..task.plane]);
            // Each output row's valid columns inside the task's grid positions.
            let mut row = positions.start / task.grid.width;
            while row * task.grid.width < positions.end {
                let grid_row = row * task.grid.width;
                let first = grid_row.max(positions.start);
                let end = (grid_row + task.out_w).min(positions.end);
                if first < end {
                    let out_at = row * task.out_w + (first - grid_row);
                    let dst = &mut out_plane[out_at..out_at + end - first];
                    let src = &row_sums[first - positions.start..end - positions.start];
                    let residual = residual.map(|res| &res[out_at..out_at + end - first]);
                    finish_run(dst, src, scale, bias, residual, e.relu);
                }
                row += 1;
            }
        }
    }
}

/// `dst = relu?(src · scale + bias + residual)`, value by value.
fn finish_run(
    dst: &mut [f32],
    src: &[f32],
    scale: Option<f32>,
    bias: Option<f32>,
    residual: Option<&[f32]>,
    relu: bool,
) {
    for (i, (d, &s)) in dst.iter_mut().zip(src).enumerate() {
        *d = epilogue_value(s, scale, bias, residual.map(|r| r[i]), relu);
    }
}
