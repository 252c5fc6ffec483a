//! Winograd F(2x2, 3x3) for the blocked layout's stride-1 3x3 convs: each 2x2 block of outputs
//! from its 4x4 block of inputs with 16 products per input and output channel pair instead of
//! 36 (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016).
//!
//! `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`: the weights are transformed once, when packed
//! ([`pack_winograd`], `[point][out block][in block][16 in][16 out]`), and a conv takes its
//! tiles through three steps:
//! 1. the input transform `V = Bᵀ d B` of every tile and input block (additions only);
//! 2. for each of the 16 points, `M = V · U` over the input channels, on the blocked conv's
//!    register tile ([`super::tile`]) as a pointwise conv whose positions are the tiles;
//! 3. the output transform `Y = Aᵀ M A`, then the epilogue (scale, bias, residual, ReLU) and the
//!    store of the tile's outputs that lie inside the map.
//!
//! either as tasks of a few tiles that each run all three (weights that fit an L2), or in slabs
//! small enough for the caches, each step spread over the spinning pool (see [`Split`]).
//!
//! The transforms only add and subtract (and the weights' halve, in `f64`), so the results differ
//! from the direct conv's by rounding only (docs/exactness.md gives the measured difference).

use std::cell::RefCell;

use super::activation::{Activation, Layout};
use super::conv::{BlockedConv, Residual};
use super::lanes::BLOCK;
use super::tile::{Isa, Tile};
use super::winograd_transform::{
    POINTS, Tiles, Transform, isa_transform_input, isa_transform_output,
};
use crate::flex_kernels::SendPtr;
use crate::flex_kernels::spin_pool::for_each_task;

/// The most values the transformed inputs and products of one slab take together (4 MiB of
/// `f32`: the two cores' L2 plus a share of L3); a slab holds at least one tile.
const SLAB_FLOATS: usize = 1 << 20;

/// Transformed weights up to this many values (1 MiB, an L2: ResNet-50's 64- and 128-channel
/// 3x3 convs) run as tasks of [`FUSED_TILES`] tiles each. Measured with `blocked_profile`: the
/// 128-channel conv at batch 8 2.40–2.49 ms as tasks, 2.58–2.68 in slabs. Larger weights would
/// be read again by every task.
const FUSED_WEIGHT_FLOATS: usize = 256 << 10;

/// The most tiles per task when each task runs all three steps.
const FUSED_TILES: usize = 48;

/// `each(n, step)`: `step(i)` for every `i < n`, on the pool or in turn.
type Steps = dyn Fn(usize, &(dyn Fn(usize) + Sync));

/// How a conv's tiles are split (see [`BlockedConv::run_winograd`]).
#[derive(Clone, Copy, Debug)]
pub(super) enum Split {
    /// Tasks of at most this many tiles, each through all three steps on its own.
    Tasks(usize),
    /// Slabs of at most this many transformed values, each step spread over the pool.
    Slabs(usize),
}

/// Tiles per task of the transforms.
const TRANSFORM_TILES: usize = 16;

/// Whether a conv of this geometry runs as Winograd F(2x2, 3x3).
pub(crate) fn applies(
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
) -> bool {
    kernel == [3, 3] && stride == [1, 1] && padding == [1, 1] && dilation == [1, 1]
}

/// `weight` (`[out, in, 3, 3]`) transformed to `U = G g Gᵀ` per channel pair, as
/// `[point][out block][in block][16 in][16 out]`, zero past the real channels. A task per output
/// block, which computes its 16 channels side by side (`f64` lanes) and writes each point's 16
/// values as one run; the training graph packs its convs on every call.
pub(crate) fn pack_winograd(weight: &[f32], out: usize, input: usize) -> Vec<f32> {
    pack_winograd_from(weight, [out, input], false)
}

/// [`pack_winograd`] for the conv that gives a conv's input gradient from its output gradient
/// (`out` output channels: the conv's inputs; `input` input channels: its outputs), read from
/// that conv's `weight` (`[input, out, 3, 3]`): each filter `W'[o, i] = W[i, o]` with its taps
/// reversed (turned 180°), as if that weight had been flipped first, without the copy.
pub(crate) fn pack_winograd_flipped(weight: &[f32], out: usize, input: usize) -> Vec<f32> {
    pack_winograd_from(weight, [out, input], true)
}

/// [`pack_winograd`], or with `flipped` [`pack_winograd_flipped`].
fn pack_winograd_from(weight: &[f32], [out, input]: [usize; 2], flipped: bool) -> Vec<f32> {
    let (out_blocks, in_blocks) = (out.div_ceil(BLOCK), input.div_ceil(BLOCK));
    let mut packed = vec![0.0f32; POINTS * out_blocks * in_blocks * BLOCK * BLOCK];
    let packed_ptr = SendPtr(packed.as_mut_ptr());
    #[cfg(target_arch = "x86_64")]
    let avx512 = std::arch::is_x86_feature_detected!("avx512f");
    for_each_task(out_blocks, &|ob| {
        // SAFETY: task `ob` alone writes out block `ob`'s runs, inside `packed`; the AVX-512
        // entry only where the CPU has it.
        unsafe {
            #[cfg(target_arch = "x86_64")]
            if avx512 {
                return pack_out_block_avx512(weight, [out, input], flipped, ob, packed_ptr);
            }
            pack_out_block(weight, [out, input], flipped, ob, packed_ptr);
        }
    });
    packed
}

/// [`pack_out_block`] compiled for AVX-512 (eight `f64` lanes a vector; the transform is
/// most of the packing's time, which the training graph pays on every call).
///
/// # Safety
/// As [`pack_out_block`], on a CPU with avx512f.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pack_out_block_avx512(
    weight: &[f32],
    shape: [usize; 2],
    flipped: bool,
    ob: usize,
    packed: SendPtr,
) {
    // SAFETY: forwarded.
    unsafe { pack_out_block(weight, shape, flipped, ob, packed) }
}

/// [`pack_winograd_from`]'s output block `ob` for every input channel.
///
/// # Safety
/// `packed` is [`pack_winograd_from`]'s buffer, whose block `ob` nobody else writes meanwhile.
#[inline(always)]
unsafe fn pack_out_block(
    weight: &[f32],
    [out, input]: [usize; 2],
    flipped: bool,
    ob: usize,
    packed: SendPtr,
) {
    let (out_blocks, in_blocks) = (out.div_ceil(BLOCK), input.div_ceil(BLOCK));
    let lanes = (out - ob * BLOCK).min(BLOCK);
    for i in 0..input {
        // `taps[k][lane]`: tap k of output channel `ob·16 + lane`, input channel i.
        let mut taps = [[0.0f64; BLOCK]; 9];
        for (lane, o) in (ob * BLOCK..ob * BLOCK + lanes).enumerate() {
            if flipped {
                let filter = &weight[(i * out + o) * 9..][..9];
                for (k, &tap) in filter.iter().rev().enumerate() {
                    taps[k][lane] = f64::from(tap);
                }
            } else {
                let filter = &weight[(o * input + i) * 9..][..9];
                for (k, &tap) in filter.iter().enumerate() {
                    taps[k][lane] = f64::from(tap);
                }
            }
        }
        let u = winograd_weight(&taps);
        for (point, values) in u.iter().enumerate() {
            let at =
                (((point * out_blocks + ob) * in_blocks + i / BLOCK) * BLOCK + i % BLOCK) * BLOCK;
            // SAFETY: the run of 16 at `at` is block `ob`'s (the caller's contract).
            let dst = unsafe { packed.get().add(at) };
            for (lane, &value) in values.iter().enumerate() {
                // SAFETY: as above.
                unsafe { *dst.add(lane) = value as f32 };
            }
        }
    }
}

/// `G v` for a column or row `v` of three taps, 16 filters side by side.
#[inline(always)]
fn g_times(v: [&[f64; BLOCK]; 3]) -> [[f64; BLOCK]; 4] {
    let mut sum = [0.0f64; BLOCK];
    let mut difference = [0.0f64; BLOCK];
    for l in 0..BLOCK {
        sum[l] = (v[0][l] + v[1][l] + v[2][l]) / 2.0;
        difference[l] = (v[0][l] - v[1][l] + v[2][l]) / 2.0;
    }
    [*v[0], sum, difference, *v[2]]
}

/// `G g Gᵀ` (4 × 4 points) of 3 × 3 taps `g`, for 16 filters side by side (no closures: they
/// would not inherit [`pack_out_block_avx512`]'s features).
#[inline(always)]
fn winograd_weight(g: &[[f64; BLOCK]; 9]) -> [[f64; BLOCK]; POINTS] {
    // `G g`: 4 rows of 3, column by column.
    let mut columns = [[[0.0f64; BLOCK]; 4]; 3];
    for (c, column) in columns.iter_mut().enumerate() {
        *column = g_times([&g[c], &g[3 + c], &g[6 + c]]);
    }
    let mut u = [[0.0f64; BLOCK]; POINTS];
    for r in 0..4 {
        let row = g_times([&columns[0][r], &columns[1][r], &columns[2][r]]);
        for (c, values) in row.into_iter().enumerate() {
            u[r * 4 + c] = values;
        }
    }
    u
}

thread_local! {
    /// This thread's scratch for `V` and `M`, kept between convs (grown to the most a conv
    /// needed: up to [`SLAB_FLOATS`] on a thread that runs slabs, far less on one that runs
    /// tasks; freed when the thread ends). Not the activation buffers' pool: there a scratch
    /// competed with activations for the capacity, and a dropped one came back as fresh pages.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `f` with this thread's scratch, at least `len` long (a fresh buffer if it is in use).
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut kept) => {
            if kept.len() < len {
                *kept = vec![0.0; len];
            }
            f(&mut kept[..len])
        }
        Err(_) => f(&mut vec![0.0; len]),
    })
}

impl BlockedConv {
    /// [`BlockedConv::run`] for a conv whose weights are [`pack_winograd`]'s: the input is
    /// blocked with a border of at least 1. Weights that stay in L2 run as tasks that each take
    /// a few tiles through all three steps in a scratch of their own; larger ones in slabs, each
    /// step spread over the pool, so that every slab reads the weights once.
    pub(super) fn run_winograd(
        &self,
        input: &Activation,
        residual: Residual,
        relu: bool,
        output: Activation,
        isa: Isa,
    ) -> Activation {
        let split = if self.weights.len() <= FUSED_WEIGHT_FLOATS {
            Split::Tasks(FUSED_TILES)
        } else {
            Split::Slabs(SLAB_FLOATS)
        };
        self.run_winograd_split(input, residual, relu, output, isa, split)
    }

    /// [`BlockedConv::run_winograd`] split as `split` says.
    pub(super) fn run_winograd_split(
        &self,
        input: &Activation,
        residual: Residual,
        relu: bool,
        mut output: Activation,
        isa: Isa,
        split: Split,
    ) -> Activation {
        debug_assert!(input.layout == Layout::Blocked && input.halo >= 1);
        let [height, width] = [input.height, input.width];
        let (in_blocks, out_blocks) = (input.blocks(), self.out_channels.div_ceil(BLOCK));
        let across = width.div_ceil(2);
        let per_image = height.div_ceil(2) * across;
        let total = input.batch * per_image;
        let capacity = match split {
            Split::Tasks(tiles) => tiles.min(total.div_ceil(4 * rayon::current_num_threads())),
            Split::Slabs(floats) => floats / (POINTS * BLOCK * (in_blocks + out_blocks)),
        }
        .clamp(1, total);
        // Balanced: the same number of slabs, each as full as the others.
        let capacity = total.div_ceil(total.div_ceil(capacity));
        let v_len = POINTS * in_blocks * capacity * BLOCK;
        let scratch_len = v_len + POINTS * out_blocks * capacity * BLOCK;
        let halves = |scratch: &mut [f32]| {
            let (v, m) = scratch.split_at_mut(v_len);
            [v.as_mut_ptr(), m.as_mut_ptr()].map(SendPtr)
        };
        let output_ptr = SendPtr(output.values.as_mut_ptr());
        let output_shape = &output;
        let residual = residual.of(output_shape);
        let job = |first: usize| Transform {
            conv: self,
            input,
            residual,
            output: output_ptr,
            output_shape,
            relu,
            tiles: Tiles {
                first,
                across,
                per_image,
                capacity,
            },
        };
        match split {
            Split::Tasks(_) => for_each_task(total.div_ceil(capacity), &|task| {
                let first = task * capacity;
                let in_turn =
                    |count: usize, step: &(dyn Fn(usize) + Sync)| (0..count).for_each(step);
                with_scratch(scratch_len, |scratch| {
                    // SAFETY: task `task` writes only its own tiles' outputs; the scratch is
                    // its thread's.
                    unsafe {
                        self.winograd_steps(
                            &job(first),
                            capacity.min(total - first),
                            halves(scratch),
                            isa,
                            &in_turn,
                        )
                    }
                });
            }),
            Split::Slabs(_) => with_scratch(scratch_len, |scratch| {
                let scratch = halves(scratch);
                for first in (0..total).step_by(capacity) {
                    // SAFETY: one slab at a time; the scratch holds a slab.
                    unsafe {
                        self.winograd_steps(
                            &job(first),
                            capacity.min(total - first),
                            scratch,
                            isa,
                            &for_each_task,
                        )
                    };
                }
            }),
        }
        output
    }

    /// The three steps on the first `count` tiles of `job`, with `V` and `M` at `scratch`;
    /// `each(n, step)` runs `step(i)` for every `i < n`, on the pool or in turn. The steps'
    /// pieces write disjoint parts of `V`, `M` and the output.
    ///
    /// # Safety
    /// `scratch` holds `V` and `M` for `job.tiles.capacity` tiles; nobody else writes them, nor
    /// these tiles' outputs, meanwhile.
    unsafe fn winograd_steps(
        &self,
        job: &Transform,
        count: usize,
        [v, m]: [SendPtr; 2],
        isa: Isa,
        each: &Steps,
    ) {
        let (in_blocks, out_blocks) = (job.input.blocks(), self.out_channels.div_ceil(BLOCK));
        let capacity = job.tiles.capacity;
        let shape = isa.tile_shape();
        let groups = out_blocks.div_ceil(shape.blocks);
        let point_stride = in_blocks * BLOCK * BLOCK;
        let chunks = count.div_ceil(TRANSFORM_TILES);
        let range =
            |chunk: usize| chunk * TRANSFORM_TILES..((chunk + 1) * TRANSFORM_TILES).min(count);
        each(in_blocks * chunks, &|task| {
            // SAFETY: piece (block, chunk) writes only its tiles' values of `V` for its
            // block; the reads lie in the input's buffer.
            unsafe { isa_transform_input(isa)(job, task / chunks, range(task % chunks), v.get()) };
        });
        each(POINTS * groups, &|task| {
            let (point, group) = (task / groups, task % groups);
            let block0 = group * shape.blocks;
            let blocks = shape.blocks.min(out_blocks - block0);
            let mut t = 0;
            while t < count {
                let positions = shape.positions.min(count - t);
                let tile = Tile {
                    // SAFETY (these two): offsets inside `V` and `M`.
                    input: unsafe { v.get().add((point * in_blocks * capacity + t) * BLOCK) },
                    in_blocks,
                    in_block_stride: capacity * BLOCK,
                    lanes: BLOCK,
                    lane_stride: 1,
                    position_step: BLOCK,
                    kernel: [1, 1],
                    tap_step: [0, 0],
                    weight: self.weights[(point * out_blocks + block0) * point_stride..].as_ptr(),
                    weight_block_stride: point_stride,
                    output: unsafe {
                        m.get()
                            .add(((point * out_blocks + block0) * capacity + t) * BLOCK)
                    },
                    out_block_stride: capacity * BLOCK,
                    accumulate: false,
                    finish: None,
                };
                // SAFETY: piece (point, group) writes only its blocks' run of `M`; the reads
                // lie in `V` (written by the step above) and the weights.
                unsafe { isa.tile(blocks, positions)(&tile) };
                t += positions;
            }
        });
        each(out_blocks * chunks, &|task| {
            // SAFETY: piece (block, chunk) writes only its tiles' outputs of its block; `M`
            // was written by the step above.
            unsafe { isa_transform_output(isa)(job, task / chunks, range(task % chunks), m.get()) };
        });
    }
}
