//! Packing: a panel of weights (`[depth][MR]`), and a block of `im2col` columns straight from
//! the NCHW input into tiles of positions (`[depth][width]`), so that each micro-kernel reads
//! both contiguously. A pointwise
//! conv's whole tiles need no packing: its input already is that matrix.

use std::ops::Range;

use super::microkernel::{MAX_TILE_WIDTH, MR, TILE_QUANTUM};
use crate::flex_kernels::conv::ConvGeometry;

/// The weights `[out, in/groups, kh, kw]` as `[group][panel][depth][MR]`: panels of `MR`
/// output channels, zero rows past each group's channels.
pub(crate) fn pack_weights(weight: &[f32], geometry: &ConvGeometry) -> Vec<f32> {
    let (depth, channels) = (geometry.patch_len(), geometry.group().out_channels);
    let panels = channels.div_ceil(MR);
    let mut packed = vec![0.0f32; geometry.groups * panels * depth * MR];
    for (index, panel) in packed.chunks_exact_mut(depth * MR).enumerate() {
        let (g, p) = (index / panels, index % panels);
        for r in 0..MR.min(channels - p * MR) {
            let channel = g * channels + p * MR + r;
            let src = &weight[channel * depth..(channel + 1) * depth];
            for (dst, &w) in panel[r..].iter_mut().step_by(MR).zip(src) {
                *dst = w;
            }
        }
    }
    packed
}

/// The tiles a range of output positions splits into: `(first position, valid columns, width)`,
/// widths of [`MAX_TILE_WIDTH`] but the last, rounded up to [`TILE_QUANTUM`].
pub(crate) fn tiles(positions: Range<usize>) -> impl Iterator<Item = (usize, usize, usize)> {
    positions.clone().step_by(MAX_TILE_WIDTH).map(move |first| {
        let cols = (positions.end - first).min(MAX_TILE_WIDTH);
        (first, cols, cols.next_multiple_of(TILE_QUANTUM))
    })
}

/// Where one depth row of the `im2col` matrix reads: an input channel, a kernel row and column
/// offset, and the output columns whose input column lies inside the image.
struct DepthRow {
    channel: usize,
    row_offset: isize,
    column_offset: usize,
    valid_columns: (usize, usize),
}

/// A run of output positions within one output row, and where it lands in its tile.
struct Run {
    out_row: usize,
    out_columns: Range<usize>,
    tile_column: usize,
}

/// A block of packed columns: tile `i`'s values from `offsets[i]` of `values` (`[depth][width]`).
#[derive(Default)]
pub(crate) struct ColumnBlock {
    pub values: Vec<f32>,
    pub offsets: Vec<usize>,
}

impl ColumnBlock {
    /// Whether the tile reads the input in place: a pointwise conv's whole tile.
    pub(crate) fn in_place(geometry: &ConvGeometry, cols: usize, width: usize) -> bool {
        geometry.is_pointwise() && cols == width
    }

    /// Pack depth rows `depths` for output positions `positions` of one image (`input`: that
    /// image's group's channels) into consecutive tiles (see [`tiles`]), with zeros in the
    /// padding and past the valid columns; tiles [`Self::in_place`] are skipped.
    pub(crate) fn pack(
        &mut self,
        input: &[f32],
        geometry: &ConvGeometry,
        out_w: usize,
        positions: Range<usize>,
        depths: Range<usize>,
    ) {
        let [_, _, in_h, in_w] = geometry.input;
        let [kernel_h, kernel_w] = geometry.kernel;
        let plane = in_h * in_w;
        let depth = depths.len();
        self.offsets.clear();
        let mut total = 0;
        for (_, cols, width) in tiles(positions.clone()) {
            self.offsets.push(total);
            if !Self::in_place(geometry, cols, width) {
                total += width * depth;
            }
        }
        // Every packed value is written below; growing only keeps the buffer's old values.
        if self.values.len() < total {
            self.values.resize(total, 0.0);
        }
        let rows: Vec<DepthRow> = depths
            .map(|k| {
                let (kh, kw) = (k / kernel_w % kernel_h, k % kernel_w);
                let column_offset = kw * geometry.dilation[1];
                DepthRow {
                    channel: k / (kernel_h * kernel_w),
                    row_offset: (kh * geometry.dilation[0]) as isize - geometry.padding[0] as isize,
                    column_offset,
                    valid_columns: geometry.valid_columns(column_offset, out_w),
                }
            })
            .collect();
        let mut runs: Vec<Run> = Vec::new();
        for ((first, cols, width), &offset) in tiles(positions).zip(&self.offsets) {
            if Self::in_place(geometry, cols, width) {
                continue;
            }
            let tile = &mut self.values[offset..offset + width * depth];
            runs.clear();
            let mut p = first;
            while p < first + cols {
                let (out_row, column) = (p / out_w, p % out_w);
                let end = (column + first + cols - p).min(out_w);
                runs.push(Run {
                    out_row,
                    out_columns: column..end,
                    tile_column: p - first,
                });
                p += end - column;
            }
            for (row, depth_row) in tile.chunks_exact_mut(width).zip(&rows) {
                let channel_input = &input[depth_row.channel * plane..][..plane];
                for run in &runs {
                    pack_run(row, run, depth_row, channel_input, geometry);
                }
                row[cols..].fill(0.0);
            }
        }
    }
}

/// One run of one depth row: the input where the kernel lands inside the image, zeros around.
#[inline]
fn pack_run(
    row: &mut [f32],
    run: &Run,
    depth_row: &DepthRow,
    channel_input: &[f32],
    geometry: &ConvGeometry,
) {
    let [_, _, in_h, in_w] = geometry.input;
    let (stride_h, stride_w) = (geometry.stride[0], geometry.stride[1]);
    let out = &mut row[run.tile_column..run.tile_column + run.out_columns.len()];
    let ih = (run.out_row * stride_h) as isize + depth_row.row_offset;
    if ih < 0 || ih >= in_h as isize {
        out.fill(0.0);
        return;
    }
    let src = &channel_input[ih as usize * in_w..(ih as usize + 1) * in_w];
    let (valid_first, valid_end) = depth_row.valid_columns;
    let first = valid_first.clamp(run.out_columns.start, run.out_columns.end);
    let end = valid_end.clamp(first, run.out_columns.end);
    let (before, rest) = out.split_at_mut(first - run.out_columns.start);
    let (inside, after) = rest.split_at_mut(end - first);
    before.fill(0.0);
    after.fill(0.0);
    if inside.is_empty() {
        return;
    }
    let iw = first * stride_w + depth_row.column_offset - geometry.padding[1];
    if stride_w == 1 {
        inside.copy_from_slice(&src[iw..iw + inside.len()]);
    } else {
        let src = &src[iw..];
        for (i, v) in inside.iter_mut().enumerate() {
            *v = src[i * stride_w];
        }
    }
}
