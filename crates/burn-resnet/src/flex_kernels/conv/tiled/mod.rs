//! The inference convolution on the project's own micro-kernels: tiles of 8 output channels
//! (packed weights) by up to 48 positions, the columns read in place from the input (a
//! pointwise conv, [`pointwise`]) or from a padded, phase-split copy of it (every other conv,
//! [`padded`]), one depth block at a time, and the epilogue (scale, bias, residual, ReLU) in the
//! same pass. The micro-kernel is AVX-512, AVX2 + FMA or portable Rust, as [`ConvKernel`] says.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod choice;
mod microkernel;
mod pack;
mod padded;
mod pointwise;
mod portable;
mod weight_cache;

use rayon::prelude::*;

pub(crate) use choice::chosen_kernel;
pub use choice::{ConvKernel, UnknownConvKernel};
use microkernel::MR;
pub(crate) use microkernel::MicroKernel;
#[cfg(test)]
use microkernel::Tile;
#[cfg(test)]
pub(crate) use pack::pack_weights;
use padded::{GridTask, PaddedGrid};
pub use weight_cache::clear_packed_weights;
pub(crate) use weight_cache::{Packing, cached_packing, packed_weights};
#[cfg(test)]
pub(crate) use weight_cache::{is_cached, is_cached_as};

use super::{ConvGeometry, Epilogue};
use crate::flex_kernels::SendPtr;

/// The most output positions one task computes: a depth block of their columns fits L2.
const MAX_TASK_POSITIONS: usize = 384;

/// Convolve `input` (NCHW, contiguous) with weights packed by `pack_weights` (the
/// [`packed_weights`] cache) through `micro`. The caller checks the slice lengths against
/// `geometry`.
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
    let in_image = geometry.input[1] * geometry.input[2] * geometry.input[3];
    let group_input = group.input[1] * group.input[2] * group.input[3];

    // Anything but a pointwise conv reads a padded, phase-split copy of each image's groups
    // (`padded`); its tasks then split the positions of the padded grid.
    let grid = PaddedGrid::for_conv(&group);
    let padded_inputs: Vec<Vec<f32>> = match grid {
        Some(grid) => (0..batch * geometry.groups)
            .into_par_iter()
            .map(|index| {
                let (image, g) = (index / geometry.groups, index % geometry.groups);
                grid.pad(
                    &input[image * in_image + g * group_input..][..group_input],
                    &group,
                )
            })
            .collect(),
        None => Vec::new(),
    };
    let offsets = grid
        .map(|grid| grid.depth_offsets(&group))
        .unwrap_or_default();
    let positions_per_image = grid.map_or(plane, |grid| out_h * grid.width);

    // Tasks: (image, group, position chunk, panel chunk), at least a few per thread so that
    // both cores stay busy at batch 1, and position chunks of whole tiles that fit L2.
    let threads = rayon::current_num_threads();
    let mut position_chunks = positions_per_image.div_ceil(MAX_TASK_POSITIONS);
    // Too few tasks for the threads (batch 1): split the channel panels first (equal tasks),
    // then make the task count a multiple of the threads with the positions.
    let panel_splits = (4 * threads)
        .div_ceil(batch * geometry.groups * position_chunks)
        .clamp(1, panels);
    let panel_chunk = panels.div_ceil(panel_splits);
    let panel_splits = panels.div_ceil(panel_chunk);
    let tasks = batch * geometry.groups * position_chunks * panel_splits;
    if tasks < 8 * threads && !tasks.is_multiple_of(threads) {
        position_chunks = position_chunks.next_multiple_of(threads);
    }
    let chunk = positions_per_image
        .div_ceil(position_chunks)
        .next_multiple_of(16)
        .min(positions_per_image);
    let position_chunks = positions_per_image.div_ceil(chunk);
    let per_image = geometry.groups * position_chunks * panel_splits;
    let image_len = out_channels * plane;

    let out_ptr = SendPtr(output.as_mut_ptr());
    (0..batch * per_image).into_par_iter().for_each(|task| {
        let image = task / per_image;
        let g = task % per_image / (position_chunks * panel_splits);
        let position_chunk = task % (position_chunks * panel_splits) / panel_splits;
        let panel_split = task % panel_splits;
        let positions =
            position_chunk * chunk..((position_chunk + 1) * chunk).min(positions_per_image);
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
        let weight = &packed[g * panels * depth * MR..][..panels * depth * MR];
        let epilogue = Epilogue {
            residual,
            ..epilogue
        };
        if let Some(grid) = grid {
            let task = GridTask {
                padded: &padded_inputs[image * geometry.groups + g],
                offsets: &offsets,
                weight,
                grid,
                channels: group.out_channels,
                out_w,
                plane,
                first_channel: g * group.out_channels,
                positions,
                panels: task_panels,
                epilogue,
            };
            padded::run_task(task, out_image, micro);
            return;
        }
        pointwise::run_task(
            pointwise::TaskArgs {
                input,
                weight,
                geometry: &group,
                plane,
                first_channel: g * group.out_channels,
                positions,
                panels: task_panels,
                epilogue,
            },
            out_image,
            micro,
        );
    });
    output
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
        b_offsets: std::ptr::null(),
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
