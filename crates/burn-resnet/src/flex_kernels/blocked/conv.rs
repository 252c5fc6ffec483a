//! The blocked convolution: packed weights (`[out block][in block][kh][kw][16 in][16 out]`), a
//! task per (image, group of output blocks, band of output rows), and within a task the input
//! blocks in chunks whose weights stay in L2, each row cut into register tiles ([`super::tile`]).

use std::sync::Arc;

use crate::flex_kernels::spin_pool::for_each_task;

use super::activation::{Activation, Layout};
use super::lanes::BLOCK;
use super::tile::{Finish, Isa, Tile};
use crate::flex_kernels::SendPtr;

/// Packed weights read per chunk of input blocks: about a quarter of a 1 MiB L2.
const WEIGHT_CHUNK_FLOATS: usize = 64 << 10;

/// Positions per virtual row of a pointwise conv over a whole plane.
const FLAT_ROW: usize = 48;

/// The residual a conv adds in its epilogue.
#[derive(Clone, Copy)]
pub(super) enum Residual<'a> {
    /// No residual.
    None,
    /// Another activation.
    Other(&'a Activation),
    /// The output buffer's own values (see [`BlockedConv::run_adding_in_place`]).
    Output,
}

impl<'a> Residual<'a> {
    /// The activation read, given the output.
    pub fn of(self, output: &'a Activation) -> Option<&'a Activation> {
        match self {
            Residual::None => None,
            Residual::Other(r) => Some(r),
            Residual::Output => Some(output),
        }
    }
}

/// A conv ready for blocked activations: its packed weights and its epilogue's per-channel
/// scale (an unfolded BatchNorm's) and bias, both padded to whole output blocks.
pub(crate) struct BlockedConv {
    pub weights: Arc<Vec<f32>>,
    pub scale: Option<Vec<f32>>,
    pub bias: Vec<f32>,
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    /// `weights` are [`super::winograd::pack_winograd`]'s and the conv runs as Winograd
    /// F(2x2, 3x3) (a stride-1 3x3 conv reading a blocked activation); else they are
    /// [`pack_blocked`]'s.
    pub winograd: bool,
}

/// `weight` (`[out, in, kh, kw]`) as `[out block][in block][kh][kw][16 in][16 out]`, zero past
/// the real channels.
pub(crate) fn pack_blocked(
    weight: &[f32],
    out: usize,
    input: usize,
    kernel: [usize; 2],
) -> Vec<f32> {
    let [kh, kw] = kernel;
    let (out_blocks, in_blocks) = (out.div_ceil(BLOCK), input.div_ceil(BLOCK));
    let taps = kh * kw;
    let mut packed = vec![0.0f32; out_blocks * in_blocks * taps * BLOCK * BLOCK];
    for o in 0..out {
        for i in 0..input {
            for tap in 0..taps {
                let dst = (((o / BLOCK * in_blocks + i / BLOCK) * taps + tap) * BLOCK + i % BLOCK)
                    * BLOCK
                    + o % BLOCK;
                packed[dst] = weight[(o * input + i) * taps + tap];
            }
        }
    }
    packed
}

/// A per-channel vector padded with zeros to whole blocks.
pub(crate) fn padded(values: &[f32]) -> Vec<f32> {
    let mut v = values.to_vec();
    v.resize(values.len().next_multiple_of(BLOCK), 0.0);
    v
}

impl BlockedConv {
    /// Output `[height, width]` for an input of `[height, width]`; `None` when the kernel does
    /// not fit.
    pub fn output_size(&self, [h, w]: [usize; 2]) -> Option<[usize; 2]> {
        let side = |axis: usize, input: usize| {
            let reach = self.dilation[axis] * (self.kernel[axis] - 1) + 1;
            (input + 2 * self.padding[axis])
                .checked_sub(reach)
                .map(|span| span / self.stride[axis] + 1)
        };
        Some([side(0, h)?, side(1, w)?])
    }

    /// The border the conv's input needs.
    pub fn halo(&self) -> usize {
        self.padding[0].max(self.padding[1])
    }

    /// `relu?(conv(input) · scale + bias + residual?)` as a blocked activation with a border of
    /// `out_halo`. The caller checked the channels and sizes.
    pub fn run(
        &self,
        input: &Activation,
        residual: Option<&Activation>,
        relu: bool,
        out_halo: usize,
        isa: Isa,
    ) -> Activation {
        let [out_h, out_w] = self
            .output_size([input.height, input.width])
            .expect("checked by the planner");
        let output =
            Activation::for_writing(input.batch, self.out_channels, [out_h, out_w], out_halo);
        let residual = residual.map_or(Residual::None, Residual::Other);
        self.run_into(input, residual, relu, output, isa)
    }

    /// [`BlockedConv::run`] adding `residual` in place: its buffer becomes the output (each
    /// value read, then overwritten by the sum), so a memory-bound conv neither reads a fresh
    /// output's lines before writing them nor keeps a third activation in the caches. The
    /// output has the residual's border. A conv whose products are summed over several chunks
    /// of input blocks (it would overwrite the residual before its last chunk adds it) reads it
    /// into a separate output instead.
    pub fn run_adding_in_place(
        &self,
        input: &Activation,
        residual: Activation,
        relu: bool,
        isa: Isa,
    ) -> Activation {
        let one_chunk = input.blocks() <= self.chunk(isa);
        if residual.layout == Layout::Blocked && (self.winograd || one_chunk) {
            self.run_into(input, Residual::Output, relu, residual, isa)
        } else {
            self.run(input, Some(&residual), relu, residual.halo, isa)
        }
    }

    /// Input blocks per chunk: their packed weights for one group of output blocks stay in L2.
    fn chunk(&self, isa: Isa) -> usize {
        let [kh, kw] = self.kernel;
        (WEIGHT_CHUNK_FLOATS / (isa.tile_shape().blocks * kh * kw * BLOCK * BLOCK)).max(1)
    }

    /// The conv into `output` (allocated for it, or the residual itself).
    fn run_into(
        &self,
        input: &Activation,
        residual: Residual,
        relu: bool,
        mut output: Activation,
        isa: Isa,
    ) -> Activation {
        if input.halo < self.halo() {
            return self.run_into(&input.with_halo(self.halo()), residual, relu, output, isa);
        }
        if self.winograd {
            return self.run_winograd(input, residual, relu, output, isa);
        }
        let [out_h, out_w] = [output.height, output.width];
        let out_halo = output.halo;
        let shape = isa.tile_shape();
        let out_blocks = self.out_channels.div_ceil(BLOCK);
        let groups = out_blocks.div_ceil(shape.blocks);
        let in_blocks = input.blocks();
        let taps = self.kernel[0] * self.kernel[1];
        let chunk = self.chunk(isa);
        let out_ptr = SendPtr(output.values.as_mut_ptr());
        let residual = residual.of(&output);

        // A pointwise conv over unbordered planes reads them as one row of positions.
        let flat = self.kernel == [1, 1]
            && self.stride == [1, 1]
            && input.layout == Layout::Blocked
            && input.halo == 0
            && out_halo == 0
            && residual.is_none_or(|r| r.halo == 0);
        let (rows, row_len) = if flat {
            let plane = out_h * out_w;
            let pieces = plane.div_ceil(FLAT_ROW);
            (pieces, plane.div_ceil(pieces))
        } else {
            (out_h, out_w)
        };
        let plane_positions = out_h * out_w;

        let threads = rayon::current_num_threads();
        let bands = (4 * threads).div_ceil(input.batch * groups).clamp(1, rows);
        let band = rows.div_ceil(bands);
        let bands = rows.div_ceil(band);

        let weight_block_stride = in_blocks * taps * BLOCK * BLOCK;
        for_each_task(input.batch * groups * bands, &|task| {
            let n = task / (groups * bands);
            let g = task / bands % groups;
            let first_row = task % bands * band;
            let block0 = g * shape.blocks;
            let blocks = shape.blocks.min(out_blocks - block0);
            for chunk_start in (0..in_blocks).step_by(chunk) {
                let chunk_blocks = chunk.min(in_blocks - chunk_start);
                let last_chunk = chunk_start + chunk_blocks == in_blocks;
                for row in first_row..(first_row + band).min(rows) {
                    let (width, first_position) = if flat {
                        let first = row * row_len;
                        (row_len.min(plane_positions.saturating_sub(first)), first)
                    } else {
                        (out_w, 0)
                    };
                    if width == 0 {
                        continue;
                    }
                    let tiles = width.div_ceil(shape.positions);
                    let (base, extra) = (width / tiles, width % tiles);
                    let mut column = 0;
                    for t in 0..tiles {
                        let positions = base + usize::from(t < extra);
                        let at = |a: &Activation, y: usize, x: usize, block: usize| {
                            if flat {
                                a.offset(n, block, 0, 0) + (first_position + column) * BLOCK
                            } else {
                                a.offset(n, block, y, x)
                            }
                        };
                        let (in_y, in_x) = (
                            row * self.stride[0] + input.halo - self.padding[0],
                            column * self.stride[1] + input.halo - self.padding[1],
                        );
                        let finish = last_chunk.then(|| Finish {
                            scale: self
                                .scale
                                .as_ref()
                                .map_or(std::ptr::null(), |s| s[block0 * BLOCK..].as_ptr()),
                            bias: self.bias[block0 * BLOCK..].as_ptr(),
                            // Raw addresses, not slices: the residual may be the output,
                            // which other tasks write meanwhile.
                            residual: residual.map_or(std::ptr::null(), |r| {
                                r.values.as_ptr().wrapping_add(at(
                                    r,
                                    row + r.halo,
                                    column + r.halo,
                                    block0,
                                ))
                            }),
                            residual_block_stride: residual.map_or(0, Activation::block_stride),
                            relu,
                        });
                        let tile = Tile {
                            input: input.values[at(input, in_y, in_x, chunk_start)..].as_ptr(),
                            in_blocks: chunk_blocks,
                            in_block_stride: input.block_stride(),
                            lanes: match input.layout {
                                Layout::Blocked => BLOCK,
                                Layout::Planar => input.channels,
                            },
                            lane_stride: input.lane_stride(),
                            position_step: self.stride[1] * input.position_stride(),
                            kernel: self.kernel,
                            tap_step: [
                                self.dilation[0] * input.row_stride(),
                                self.dilation[1] * input.position_stride(),
                            ],
                            weight: self.weights[block0 * weight_block_stride
                                + chunk_start * taps * BLOCK * BLOCK..]
                                .as_ptr(),
                            weight_block_stride,
                            // SAFETY: task (n, g, band) writes only its output blocks' rows
                            // of image n, inside the buffer.
                            output: unsafe {
                                out_ptr.get().add(at(
                                    &output,
                                    row + out_halo,
                                    column + out_halo,
                                    block0,
                                ))
                            },
                            out_block_stride: output.block_stride(),
                            accumulate: chunk_start > 0,
                            finish,
                        };
                        // SAFETY: every address above lies inside its buffer: the input's
                        // border covers the padding, the blocks and positions exist.
                        unsafe { isa.tile(blocks, positions)(&tile) };
                        column += positions;
                    }
                }
            }
        });
        output
    }
}
