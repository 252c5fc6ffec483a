//! Pointwise (1x1, stride 1, unpadded) convs: the input already is the `im2col` matrix, so
//! whole tiles read it in place (row stride: the plane), only the tail tiles are packed, and
//! the epilogue is applied in the micro-kernels' registers.

use std::ops::Range;

use super::Epilogue;
use super::microkernel::{Finish, MR, MicroKernel, Tile};
use super::pack::{ColumnBlock, Walk};
use crate::flex_kernels::conv::ConvGeometry;

/// One task's share of one image and group.
pub(super) struct TaskArgs<'a> {
    pub input: &'a [f32],
    /// The group's packed weights, `[panel][depth][MR]`.
    pub weight: &'a [f32],
    pub geometry: &'a ConvGeometry,
    /// Positions per output plane.
    pub plane: usize,
    pub first_channel: usize,
    pub positions: Range<usize>,
    pub panels: Range<usize>,
    pub epilogue: Epilogue<'a>,
}

/// Output positions `positions` of channel panels `panels` of one image and group.
pub(super) fn run_task(task: TaskArgs, out_image: &mut [f32], micro: MicroKernel) {
    let geometry = task.geometry;
    let depth = geometry.patch_len();
    let channels = geometry.out_channels;
    let plane = task.plane;
    let e = task.epilogue;
    let has_epilogue = e.scale.is_some() || e.bias.is_some() || e.residual.is_some() || e.relu;
    let mut columns = ColumnBlock::default();
    let in_plane = geometry.input[2] * geometry.input[3];
    let walk = Walk::new(&task.positions, &task.panels);
    let block = walk.depth_block();
    for first_depth in (0..depth).step_by(block) {
        let depths = first_depth..(first_depth + block).min(depth);
        let last = depths.end == depth;
        columns.pack(task.input, in_plane, task.positions.clone(), depths.clone());
        let positions = task.positions.clone();
        walk.for_each(positions, task.panels.clone(), |index, tile, panel| {
            let (first, cols, width) = tile;
            let (b, ldb) = if ColumnBlock::in_place(cols, width) {
                (&task.input[first_depth * in_plane + first..], in_plane)
            } else {
                (&columns.values[columns.offsets[index]..], width)
            };
            let rows = MR.min(channels - panel * MR);
            let channel = task.first_channel + panel * MR;
            let a = &task.weight[(panel * depth + first_depth) * MR..];
            let at = channel * plane + first;
            let finish = (last && has_epilogue).then(|| Finish {
                scale: e.scale.map_or(std::ptr::null(), |s| s[channel..].as_ptr()),
                bias: e.bias.map_or(std::ptr::null(), |b| b[channel..].as_ptr()),
                residual: e.residual.map_or(std::ptr::null(), |r| r[at..].as_ptr()),
                relu: e.relu,
            });
            let tile = Tile {
                depth: depths.len(),
                a: a.as_ptr(),
                b: b.as_ptr(),
                ldb,
                b_offsets: std::ptr::null(),
                width,
                c: out_image[at..].as_mut_ptr(),
                ldc: plane,
                rows,
                cols,
                accumulate: first_depth > 0,
                finish,
            };
            // SAFETY: the packed panel holds `depths.len()` rows of `MR`; the
            // columns `depths.len()` rows of `width` (packed, or a whole tile of the input's
            // planes); rows `channel..channel + rows` and columns
            // `first..first + cols` lie inside this image's planes (and the residual's),
            // and scale and bias have every output channel.
            unsafe { micro(&tile) };
        });
    }
}
