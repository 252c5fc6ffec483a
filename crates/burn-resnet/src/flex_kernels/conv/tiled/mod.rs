//! The inference convolution on the project's own micro-kernels: tiles of 8 output channels
//! (read from the weights as they are) by up to 48 positions (`im2col` columns packed straight
//! from the NCHW input), one depth block at a time, and the epilogue (scale, bias, residual, ReLU)
//! applied in registers before the tile is stored. The micro-kernel is AVX-512, AVX2 + FMA or
//! portable Rust, as [`ConvKernel`] says.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod choice;
mod microkernel;
mod pack;
mod portable;

use std::ops::Range;

use rayon::prelude::*;

pub(crate) use choice::chosen_kernel;
pub use choice::{ConvKernel, UnknownConvKernel};
pub(crate) use microkernel::MicroKernel;
use microkernel::{Finish, MR, Tile};
pub(crate) use pack::pack_weights;
use pack::{ColumnBlock, tiles};

use super::{ConvGeometry, Epilogue};
use crate::flex_kernels::SendPtr;

/// Depth rows packed and multiplied at a time: a weight panel's block (`DEPTH_BLOCK · MR`
/// floats) stays in L1 while the column tiles stream from L2.
const DEPTH_BLOCK: usize = 128;

/// The most output positions one task packs: `DEPTH_BLOCK` rows of them (384 KiB) fit in L2.
const MAX_TASK_POSITIONS: usize = 384;

/// Convolve `input` (NCHW, contiguous) with weights packed by [`pack_weights`], through
///
/// `micro`. The caller checks the slice lengths against `geometry`.
pub(crate) fn conv2d(
    input: &[f32],
    packed: &[f32],
    geometry: &ConvGeometry,
    epilogue: Epilogue,
    micro: MicroKernel,
) -> Vec<f32> {
    let [batch, out_channels, out_h, out_w] = geometry.output().expect("checked by the caller");
    let plane = out_h * out_w;
    let group = geometry.group();
    let depth = geometry.patch_len();
    let panels = group.out_channels.div_ceil(MR);
    let mut output = vec![0.0f32; batch * out_channels * plane];

    // Tasks: (image, group, position chunk, panel chunk), at least a few per thread so that
    // both cores stay busy at batch 1, and position chunks of whole tiles that fit L2.
    let threads = rayon::current_num_threads();
    let mut position_chunks = plane.div_ceil(MAX_TASK_POSITIONS);
    if batch * geometry.groups * position_chunks < 4 * threads {
        position_chunks = position_chunks.next_multiple_of(threads);
    }
    let chunk = plane
        .div_ceil(position_chunks)
        .next_multiple_of(16)
        .min(plane);
    let position_chunks = plane.div_ceil(chunk);
    let panel_splits = (2 * threads)
        .div_ceil(batch * geometry.groups * position_chunks)
        .clamp(1, panels);
    let panel_chunk = panels.div_ceil(panel_splits);
    let panel_splits = panels.div_ceil(panel_chunk);
    let per_image = geometry.groups * position_chunks * panel_splits;
    let in_image = geometry.input[1] * geometry.input[2] * geometry.input[3];
    let group_input = group.input[1] * group.input[2] * group.input[3];
    let image_len = out_channels * plane;

    let out_ptr = SendPtr(output.as_mut_ptr());
    (0..batch * per_image).into_par_iter().for_each(|task| {
        let image = task / per_image;
        let g = task % per_image / (position_chunks * panel_splits);
        let position_chunk = task % (position_chunks * panel_splits) / panel_splits;
        let panel_split = task % panel_splits;
        let positions = position_chunk * chunk..((position_chunk + 1) * chunk).min(plane);
        let task_panels = panel_split * panel_chunk..((panel_split + 1) * panel_chunk).min(panels);
        let input = &input[image * in_image + g * group_input..][..group_input];
        let residual = epilogue
            .residual
            .map(|r| &r[image * image_len..][..image_len]);
        // SAFETY: tasks write disjoint (channel range, position range) rectangles of the
        // output planes of their image (`run_task` writes nothing else), and `output` outlives
        // the parallel loop.
        let out_image = unsafe {
            std::slice::from_raw_parts_mut(out_ptr.get().add(image * image_len), image_len)
        };
        run_task(
            TaskArgs {
                input,
                weight: &packed[g * panels * depth * MR..][..panels * depth * MR],
                geometry: &group,
                out_w,
                plane,
                first_channel: g * group.out_channels,
                positions,
                panels: task_panels,
                epilogue: Epilogue {
                    residual,
                    ..epilogue
                },
            },
            out_image,
            micro,
        );
    });
    output
}

/// One task's share of one image and group.
struct TaskArgs<'a> {
    input: &'a [f32],
    /// The group's packed weights, `[panel][depth][MR]`.
    weight: &'a [f32],
    geometry: &'a ConvGeometry,
    out_w: usize,
    /// Positions per output plane.
    plane: usize,
    first_channel: usize,
    positions: Range<usize>,
    panels: Range<usize>,
    epilogue: Epilogue<'a>,
}

/// Output positions `positions` of channel panels `panels` of one image and group.
fn run_task(task: TaskArgs, out_image: &mut [f32], micro: MicroKernel) {
    let geometry = task.geometry;
    let depth = geometry.patch_len();
    let channels = geometry.out_channels;
    let plane = task.plane;
    let e = task.epilogue;
    let has_epilogue = e.scale.is_some() || e.bias.is_some() || e.residual.is_some() || e.relu;
    let mut columns = ColumnBlock::default();
    let in_plane = geometry.input[2] * geometry.input[3];
    for first_depth in (0..depth).step_by(DEPTH_BLOCK) {
        let depths = first_depth..(first_depth + DEPTH_BLOCK).min(depth);
        let last = depths.end == depth;
        columns.pack(
            task.input,
            geometry,
            task.out_w,
            task.positions.clone(),
            depths.clone(),
        );
        for ((first, cols, width), &offset) in tiles(task.positions.clone()).zip(&columns.offsets) {
            let (b, ldb) = if ColumnBlock::in_place(geometry, cols, width) {
                (&task.input[first_depth * in_plane + first..], in_plane)
            } else {
                (&columns.values[offset..], width)
            };
            for panel in task.panels.clone() {
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
            }
        }
    }
}

/// GFLOP/s of `kernel` on one hot tile of `width` positions (a profile's figure).
#[cfg(test)]
pub(crate) fn microkernel_rate(micro: MicroKernel, width: usize) -> f64 {
    let depth = 256;
    let a = vec![0.5f32; MR * depth];
    let b = vec![0.25f32; depth * width];
    let mut c = vec![0.0f32; MR * width];
    let tile = Tile {
        depth,
        a: a.as_ptr(),
        b: b.as_ptr(),
        ldb: width,
        width,
        c: c.as_mut_ptr(),
        ldc: width,
        rows: MR,
        cols: width,
        accumulate: true,
        finish: None,
    };
    let runs = 20_000;
    let started = std::time::Instant::now();
    for _ in 0..runs {
        // SAFETY: the buffers above have the tile's shape.
        unsafe { micro(std::hint::black_box(&tile)) };
    }
    (2 * MR * width * depth * runs) as f64 / started.elapsed().as_secs_f64() / 1e9
}
