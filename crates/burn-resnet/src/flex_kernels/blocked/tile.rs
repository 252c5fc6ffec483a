//! The blocked conv's micro-kernel: `OB` output-channel blocks (16 channels each, one vector) by
//! `P` output positions of one row held in registers; every input channel of every kernel tap
//! loads the `OB` weight vectors once and broadcasts each position's input value (no `im2col`,
//! no padded copy: the input carries a zero border wide enough for the conv's padding), and the
//! epilogue (scale, bias, residual, ReLU) runs on the registers before the one store.

use super::lanes::{BLOCK, Lanes, Portable};

/// What one tile call computes. Addresses are in `f32`s; every tap of every position reads
/// inside the input's buffer (its zero border covers the padding).
pub(super) struct Tile {
    /// Input value of block 0, lane 0, kernel tap (0, 0), output position 0 of the tile.
    pub input: *const f32,
    /// Input blocks summed over (this call's chunk of them).
    pub in_blocks: usize,
    /// Between consecutive input blocks.
    pub in_block_stride: usize,
    /// Input channels per block (16, or fewer for a planar input with few channels).
    pub lanes: usize,
    /// Between consecutive input channels of one block.
    pub lane_stride: usize,
    /// Between the inputs of consecutive output positions (stride × position stride).
    pub position_step: usize,
    /// Kernel `[height, width]`.
    pub kernel: [usize; 2],
    /// Between consecutive kernel rows and columns (dilation × row or position stride).
    pub tap_step: [usize; 2],
    /// Packed weights of output block 0 at this call's first input block.
    pub weight: *const f32,
    /// Between consecutive output blocks' packed weights.
    pub weight_block_stride: usize,
    /// Output position 0 of output block 0.
    pub output: *mut f32,
    /// Between consecutive output blocks.
    pub out_block_stride: usize,
    /// Add the output's current values (a later chunk of input blocks).
    pub accumulate: bool,
    /// The epilogue, on the last chunk.
    pub finish: Option<Finish>,
}

/// The epilogue: `relu?((acc · scale?) + bias + residual?)`.
pub(super) struct Finish {
    /// Per output channel (`OB · 16` from output block 0), or null.
    pub scale: *const f32,
    /// Per output channel, as `scale`.
    pub bias: *const f32,
    /// Residual value of output position 0, output block 0, or null.
    pub residual: *const f32,
    /// Between consecutive output blocks of the residual.
    pub residual_block_stride: usize,
    /// Apply the ReLU.
    pub relu: bool,
}

/// A tile function for one `(OB, P)`.
pub(super) type TileFn = unsafe fn(&Tile);

/// The register tile of an instruction set: the most output blocks and positions per call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct TileShape {
    pub blocks: usize,
    pub positions: usize,
}

/// The kernel of one instruction set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

impl Isa {
    /// Its register tile: AVX-512 has 32 registers (4 × 6 accumulators + 4 weights + a
    /// broadcast), AVX2 16 of half the width (1 block = 2 registers: 6 × 2 + 2 + 1), the
    /// portable lanes 16 SSE registers of a quarter.
    pub(super) fn tile_shape(self) -> TileShape {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => TileShape {
                blocks: 4,
                positions: 6,
            },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => TileShape {
                blocks: 1,
                positions: 6,
            },
            Isa::Portable => TileShape {
                blocks: 1,
                positions: 4,
            },
        }
    }

    /// The tile function for `blocks` output blocks by `positions` positions (both within
    /// [`Isa::tile_shape`]).
    pub(super) fn tile(self, blocks: usize, positions: usize) -> TileFn {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => x86::avx512(blocks, positions),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => x86::avx2(positions),
            Isa::Portable => portable(positions),
        }
    }
}

/// `OB × P` accumulators over every input block, kernel tap and input lane, then the epilogue.
///
/// # Safety
/// Every address the [`Tile`] describes is valid; `V`'s instructions exist on this CPU.
#[inline(always)]
unsafe fn tile<V: Lanes, const OB: usize, const P: usize>(t: &Tile) {
    let mut acc = [[V::zero(); P]; OB];
    // SAFETY (whole body): the addresses are the `Tile` contract's.
    unsafe {
        // The epilogue's residual and the output lines arrive while the products run.
        for o in 0..OB {
            for q in 0..P {
                if let Some(finish) = &t.finish
                    && !finish.residual.is_null()
                {
                    prefetch(
                        finish
                            .residual
                            .add(o * finish.residual_block_stride + q * BLOCK),
                    );
                }
                prefetch(t.output.add(o * t.out_block_stride + q * BLOCK));
            }
        }
        if t.accumulate {
            for (o, row) in acc.iter_mut().enumerate() {
                for (q, value) in row.iter_mut().enumerate() {
                    *value = V::load(t.output.add(o * t.out_block_stride + q * BLOCK));
                }
            }
        }
        acc = multiply::<V, OB, P>(t, acc);
        if let Some(finish) = &t.finish {
            for (o, row) in acc.iter_mut().enumerate() {
                let scale = (!finish.scale.is_null()).then(|| V::load(finish.scale.add(o * BLOCK)));
                let bias = V::load(finish.bias.add(o * BLOCK));
                for (q, value) in row.iter_mut().enumerate() {
                    if let Some(scale) = scale {
                        *value = value.mul(scale);
                    }
                    *value = value.add(bias);
                    if !finish.residual.is_null() {
                        let r = finish
                            .residual
                            .add(o * finish.residual_block_stride + q * BLOCK);
                        *value = value.add(V::load(r));
                    }
                    if finish.relu {
                        *value = value.relu();
                    }
                }
            }
        }
        for (o, row) in acc.iter().enumerate() {
            for (q, value) in row.iter().enumerate() {
                value.store(t.output.add(o * t.out_block_stride + q * BLOCK));
            }
        }
    }
}

/// Every input block's every kernel tap's every lane: load the `OB` weight vectors and multiply
/// them with `P` broadcast inputs (a function taking and returning the accumulators by value,
/// so that they stay in registers through all of its loops). A blocked input (16 adjacent
/// lanes) gets its own instance, whose lane loop has constant bounds and offsets.
#[inline(always)]
unsafe fn multiply<V: Lanes, const OB: usize, const P: usize>(
    t: &Tile,
    acc: [[V; P]; OB],
) -> [[V; P]; OB] {
    // SAFETY: forwarded.
    unsafe {
        if t.lanes == BLOCK && t.lane_stride == 1 {
            multiply_lanes::<V, OB, P, true>(t, acc)
        } else {
            multiply_lanes::<V, OB, P, false>(t, acc)
        }
    }
}

/// [`multiply`] with `BLOCKED`: 16 lanes one value apart (else `t.lanes`, `t.lane_stride`).
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn multiply_lanes<V: Lanes, const OB: usize, const P: usize, const BLOCKED: bool>(
    t: &Tile,
    mut acc: [[V; P]; OB],
) -> [[V; P]; OB] {
    let [kh, kw] = t.kernel;
    let (lanes, lane_stride) = if BLOCKED {
        (BLOCK, 1)
    } else {
        (t.lanes, t.lane_stride)
    };
    let mut weight = t.weight;
    // SAFETY: the blocks, taps and lanes inside the `Tile` contract's ranges.
    unsafe {
        for b in 0..t.in_blocks {
            let block = t.input.add(b * t.in_block_stride);
            for ky in 0..kh {
                for kx in 0..kw {
                    let input = block.add(ky * t.tap_step[0] + kx * t.tap_step[1]);
                    // The next tile of the row reads the same tap `P` positions on: ask for
                    // its lines now, so that an input streaming from memory is in cache by
                    // then.
                    for q in P..2 * P {
                        prefetch(input.wrapping_add(q * t.position_step));
                    }
                    for l in 0..lanes {
                        let input = input.add(l * lane_stride);
                        let weight = weight.add(l * BLOCK);
                        let w: [V; OB] =
                            std::array::from_fn(|o| V::load(weight.add(o * t.weight_block_stride)));
                        for q in 0..P {
                            let x = V::splat(input.add(q * t.position_step));
                            for o in 0..OB {
                                acc[o][q] = acc[o][q].mul_add(w[o], x);
                            }
                        }
                    }
                    weight = weight.add(BLOCK * BLOCK);
                }
            }
        }
    }
    acc
}

/// A hint to bring the cache line of `p` into L1 (a no-op where there is no such
/// instruction). Never faults, whatever `p` is.
#[inline(always)]
fn prefetch(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch does not access memory architecturally (SSE, on every x86-64 CPU).
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// The portable tile functions (one output block).
fn portable(positions: usize) -> TileFn {
    match positions {
        1 => tile::<Portable, 1, 1>,
        2 => tile::<Portable, 1, 2>,
        3 => tile::<Portable, 1, 3>,
        _ => tile::<Portable, 1, 4>,
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::lanes::{Avx2, Avx512};
    use super::{Tile, TileFn, tile};

    /// Instantiates the target-feature entry points of one instruction set.
    macro_rules! entry {
        ($name:ident, $lanes:ty, $features:literal) => {
            /// # Safety
            /// The [`Tile`] contract, on a CPU with the features.
            #[target_feature(enable = $features)]
            unsafe fn $name<const OB: usize, const P: usize>(t: &Tile) {
                // SAFETY: forwarded; the features are enabled here.
                unsafe { tile::<$lanes, OB, P>(t) }
            }
        };
    }
    entry!(tile_avx512, Avx512, "avx512f");
    entry!(tile_avx2, Avx2, "avx2,fma");

    /// The AVX-512 tile for `blocks` × `positions` (1–4 × 1–6).
    pub(super) fn avx512(blocks: usize, positions: usize) -> TileFn {
        macro_rules! by_positions {
            ($ob:literal) => {
                match positions {
                    1 => tile_avx512::<$ob, 1>,
                    2 => tile_avx512::<$ob, 2>,
                    3 => tile_avx512::<$ob, 3>,
                    4 => tile_avx512::<$ob, 4>,
                    5 => tile_avx512::<$ob, 5>,
                    _ => tile_avx512::<$ob, 6>,
                }
            };
        }
        match blocks {
            1 => by_positions!(1),
            2 => by_positions!(2),
            3 => by_positions!(3),
            _ => by_positions!(4),
        }
    }

    /// The AVX2 tile for one block × `positions` (1–6).
    pub(super) fn avx2(positions: usize) -> TileFn {
        match positions {
            1 => tile_avx2::<1, 1>,
            2 => tile_avx2::<1, 2>,
            3 => tile_avx2::<1, 3>,
            4 => tile_avx2::<1, 4>,
            5 => tile_avx2::<1, 5>,
            _ => tile_avx2::<1, 6>,
        }
    }
}
