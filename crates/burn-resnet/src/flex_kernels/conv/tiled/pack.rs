//! Packing: the weights into panels (`[depth][MR]`), the positions into tiles, and a pointwise
//! conv's tail tiles (`[depth][width]`), so that each micro-kernel reads both contiguously. A pointwise
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

/// How a task walks its tiles and panels within a depth block: panels outer (a weight panel
/// stays in L1 while the columns stream from L2) when the task has more output channels than
/// positions, tiles outer otherwise.
#[derive(Clone, Copy)]
pub(crate) struct Walk {
    panels_outer: bool,
}

impl Walk {
    pub(crate) fn new(positions: &Range<usize>, panels: &Range<usize>) -> Self {
        Self {
            panels_outer: panels.len() * MR > positions.len(),
        }
    }

    /// Depth rows per block: what keeps the L1-resident block (a panel, `depth · MR` values;
    /// or a tile, `depth · 48`) within about 24 KiB.
    pub(crate) fn depth_block(self) -> usize {
        if self.panels_outer { 512 } else { 128 }
    }

    /// Call `f(tile index, tile, panel)` for every tile of `positions` and every panel of
    /// `panels`, in this walk's order.
    pub(crate) fn for_each(
        self,
        positions: Range<usize>,
        panels: Range<usize>,
        f: impl FnMut(usize, (usize, usize, usize), usize),
    ) {
        for_each_tile_and_panel(self.panels_outer, positions, panels, f);
    }
}

fn for_each_tile_and_panel(
    panels_outer: bool,
    positions: Range<usize>,
    panels: Range<usize>,
    mut f: impl FnMut(usize, (usize, usize, usize), usize),
) {
    if panels_outer {
        for panel in panels {
            for (index, tile) in tiles(positions.clone()).enumerate() {
                f(index, tile, panel);
            }
        }
    } else {
        for (index, tile) in tiles(positions).enumerate() {
            for panel in panels.clone() {
                f(index, tile, panel);
            }
        }
    }
}

/// The tail tiles of a pointwise conv (the columns past the input's end cannot be read in
/// place), packed: tile `i` from `offsets[i]` of `values` (`[depth][width]`).
#[derive(Default)]
pub(crate) struct ColumnBlock {
    pub values: Vec<f32>,
    pub offsets: Vec<usize>,
}

impl ColumnBlock {
    /// Whether the tile reads the input in place (a whole tile).
    pub(crate) fn in_place(cols: usize, width: usize) -> bool {
        cols == width
    }

    /// Pack depth rows `depths` of the tail tiles of output positions `positions` of one image
    /// (`input`: that image's channels, `plane` positions each), zeros past the valid columns.
    pub(crate) fn pack(
        &mut self,
        input: &[f32],
        plane: usize,
        positions: Range<usize>,
        depths: Range<usize>,
    ) {
        let depth = depths.len();
        self.offsets.clear();
        let mut total = 0;
        for (_, cols, width) in tiles(positions.clone()) {
            self.offsets.push(total);
            if !Self::in_place(cols, width) {
                total += width * depth;
            }
        }
        if self.values.len() < total {
            self.values.resize(total, 0.0);
        }
        for ((first, cols, width), &offset) in tiles(positions).zip(&self.offsets) {
            if Self::in_place(cols, width) {
                continue;
            }
            let tile = &mut self.values[offset..offset + width * depth];
            for (row, k) in tile.chunks_exact_mut(width).zip(depths.clone()) {
                row[..cols].copy_from_slice(&input[k * plane + first..k * plane + first + cols]);
                row[cols..].fill(0.0);
            }
        }
    }
}
