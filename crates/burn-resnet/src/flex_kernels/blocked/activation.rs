//! Activations between the blocked convs: NCHWc (`[batch][channel block][h][w][16]`, channels
//! past the last real one zero) with a zero border (`halo`) around every plane wide enough for
//! the padding of the convs that read it, so that no kernel checks bounds; and the conversions
//! from the NCHW input image and back to NCHW at each returned output.

use rayon::prelude::*;

use super::buffers;
use super::lanes::BLOCK;
use super::tile::Isa;
use super::transpose::transposed;
use crate::flex_kernels::SendPtr;
use crate::flex_kernels::conv::Epilogue;
use crate::flex_kernels::spin_pool::for_each_task;

/// Positions per task when an output goes back to NCHW: each channel's run of them is one
/// contiguous write of 4 KiB.
const TRANSPOSE_RUN: usize = 1024;

/// How an activation's values are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Layout {
    /// `[batch][block][h + 2·halo][w + 2·halo][16]`.
    Blocked,
    /// `[batch][channel][h + 2·halo][w + 2·halo]` (the image, read by the first conv).
    Planar,
}

/// A batch of feature maps in one of the [`Layout`]s.
pub(super) struct Activation {
    pub values: Vec<f32>,
    pub layout: Layout,
    pub batch: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// Zero rows and columns on each side of every plane.
    pub halo: usize,
}

impl Activation {
    /// A blocked activation whose border is zero and whose interior the caller overwrites
    /// entirely (every lane of every position): a kept buffer ([`buffers`]) when one is large
    /// enough, else a fresh one (either way the interior holds whatever was there).
    pub fn for_writing(batch: usize, channels: usize, size: [usize; 2], halo: usize) -> Self {
        let mut a = Self::without_values(Layout::Blocked, batch, channels, size, halo);
        let len = a.len();
        a.values = buffers::take(len).unwrap_or_else(|| {
            // SAFETY: the border is zeroed below and the caller writes the interior before
            // anyone reads it (this function's contract).
            unsafe { crate::flex_kernels::unwritten(len) }
        });
        a.zero_border();
        a
    }

    /// Zero the border of every plane.
    fn zero_border(&mut self) {
        if self.halo == 0 {
            return;
        }
        let (row, halo) = (self.row_stride(), self.halo * self.position_stride());
        let plane = (self.height + 2 * self.halo) * row;
        for plane in self.values.chunks_exact_mut(plane) {
            let (top, rest) = plane.split_at_mut(self.halo * row);
            top.fill(0.0);
            let (middle, bottom) = rest.split_at_mut(self.height * row);
            bottom.fill(0.0);
            for r in middle.chunks_exact_mut(row) {
                r[..halo].fill(0.0);
                r[row - halo..].fill(0.0);
            }
        }
    }

    /// The shape of an activation, its values not allocated yet.
    fn without_values(
        layout: Layout,
        batch: usize,
        channels: usize,
        [height, width]: [usize; 2],
        halo: usize,
    ) -> Self {
        Self {
            values: Vec::new(),
            layout,
            batch,
            channels,
            height,
            width,
            halo,
        }
    }

    /// Values of the whole buffer, borders included.
    fn len(&self) -> usize {
        self.batch * self.blocks() * self.block_stride()
    }

    /// A zeroed activation in `layout`.
    fn allocate(
        layout: Layout,
        batch: usize,
        channels: usize,
        size: [usize; 2],
        halo: usize,
    ) -> Self {
        let mut a = Self::without_values(layout, batch, channels, size, halo);
        a.values = vec![0.0; a.len()];
        a
    }

    /// Channel blocks (16 channels each; one for a planar image of up to 16 channels).
    pub fn blocks(&self) -> usize {
        match self.layout {
            Layout::Blocked => self.channels.div_ceil(BLOCK),
            Layout::Planar => 1,
        }
    }

    /// Values in one row of a plane, border included, times the values per position.
    pub fn row_stride(&self) -> usize {
        (self.width + 2 * self.halo) * self.position_stride()
    }

    /// Between consecutive positions of a row.
    pub fn position_stride(&self) -> usize {
        match self.layout {
            Layout::Blocked => BLOCK,
            Layout::Planar => 1,
        }
    }

    /// Between consecutive channels of one block.
    pub fn lane_stride(&self) -> usize {
        match self.layout {
            Layout::Blocked => 1,
            Layout::Planar => self.plane_len(),
        }
    }

    /// One plane's values, border included (per lane for planar).
    fn plane_len(&self) -> usize {
        (self.height + 2 * self.halo) * (self.width + 2 * self.halo)
    }

    /// Between consecutive channel blocks (for planar: one image).
    pub fn block_stride(&self) -> usize {
        match self.layout {
            Layout::Blocked => self.plane_len() * BLOCK,
            Layout::Planar => self.plane_len() * self.channels,
        }
    }

    /// Offset of (image, block, row `y`, column `x`) where `y`/`x` count from the border's
    /// outer edge (so `halo` is the first real row).
    pub fn offset(&self, image: usize, block: usize, y: usize, x: usize) -> usize {
        ((image * self.blocks() + block) * self.block_stride())
            + y * self.row_stride()
            + x * self.position_stride()
    }

    /// The NCHW `image` (`[batch, channels, h, w]`) as a planar activation with a border of
    /// `halo` (for a first conv with up to 16 input channels), or blocked otherwise.
    pub fn from_image(image: &[f32], dims: [usize; 4], halo: usize) -> Self {
        let [batch, channels, height, width] = dims;
        let layout = if channels <= BLOCK {
            Layout::Planar
        } else {
            Layout::Blocked
        };
        let mut a = Self::allocate(layout, batch, channels, [height, width], halo);
        let (plane, block_stride) = (height * width, a.block_stride());
        let (row_stride, position_stride) = (a.row_stride(), a.position_stride());
        let lane_stride = a.lane_stride();
        let blocks = a.blocks();
        a.values
            .par_chunks_mut(block_stride)
            .enumerate()
            .for_each(|(index, dst)| {
                let (n, b) = (index / blocks, index % blocks);
                let lanes = match layout {
                    Layout::Blocked => (channels - b * BLOCK).min(BLOCK),
                    Layout::Planar => channels,
                };
                let first = match layout {
                    Layout::Blocked => b * BLOCK,
                    Layout::Planar => 0,
                };
                for lane in 0..lanes {
                    let src = &image[(n * channels + first + lane) * plane..][..plane];
                    for (y, row) in src.chunks_exact(width).enumerate() {
                        let start = (y + halo) * row_stride + halo * position_stride;
                        for (x, &v) in row.iter().enumerate() {
                            dst[start + x * position_stride + lane * lane_stride] = v;
                        }
                    }
                }
            });
        a
    }

    /// The same values with a border of `halo` (a copy; the planner avoids it).
    pub fn with_halo(&self, halo: usize) -> Self {
        let size = [self.height, self.width];
        let mut a = Self::allocate(self.layout, self.batch, self.channels, size, halo);
        let row_len = self.width * self.position_stride();
        let rows = match self.layout {
            Layout::Blocked => self.batch * self.blocks(),
            Layout::Planar => self.batch * self.channels,
        };
        let (src_plane, dst_plane) = (
            self.plane_len() * self.position_stride(),
            a.plane_len() * a.position_stride(),
        );
        for p in 0..rows {
            for y in 0..self.height {
                let src = p * src_plane
                    + (y + self.halo) * self.row_stride()
                    + self.halo * self.position_stride();
                let dst = p * dst_plane + (y + halo) * a.row_stride() + halo * a.position_stride();
                a.values[dst..dst + row_len].copy_from_slice(&self.values[src..src + row_len]);
            }
        }
        a
    }

    /// The real channels as NCHW `[batch, channels, h, w]` (transposed with `isa`'s
    /// instructions).
    pub fn to_nchw(&self, isa: Isa) -> Vec<f32> {
        let out = self.nchw_buffer();
        self.write_nchw(isa, &out, None);
        out.finish()
    }

    /// [`Activation::to_nchw`], and beside it `epilogue` applied to those values (per channel
    /// `relu?(v · scale? + bias? + residual?)`, in that order: a norm's op computes the same),
    /// in the same pass: `(values, mapped)`.
    pub fn to_nchw_with(&self, isa: Isa, epilogue: &Epilogue) -> (Vec<f32>, Vec<f32>) {
        let (out, mapped) = (self.nchw_buffer(), self.nchw_buffer());
        self.write_nchw(isa, &out, Some((&mapped, epilogue)));
        (out.finish(), mapped.finish())
    }

    /// An NCHW buffer for this activation's real channels: a kept one when one is large enough
    /// (its pages are already faulted in: a fresh 25.7 MB output took ~7 ms at batch 8, mostly
    /// page faults), not zeroed first.
    fn nchw_buffer(&self) -> NchwBuffer {
        assert_eq!(
            self.layout,
            Layout::Blocked,
            "only blocked activations are returned"
        );
        let len = self.batch * self.channels * self.height * self.width;
        let mut values: Vec<f32> = match buffers::take(len) {
            Some(mut kept) => {
                kept.clear();
                kept
            }
            None => Vec::with_capacity(len),
        };
        let ptr = SendPtr(values.as_mut_ptr());
        NchwBuffer { values, ptr, len }
    }

    /// Every real value into `out` (NCHW), and with `mapped`, `epilogue` of it into that
    /// buffer too.
    fn write_nchw(&self, isa: Isa, out: &NchwBuffer, mapped: Option<(&NchwBuffer, &Epilogue)>) {
        let plane = self.height * self.width;
        let blocks = self.blocks();
        // Runs of positions: a whole plane in chunks when it has no border (its positions are
        // consecutive), else row by row.
        let (run, runs_per_plane) = if self.halo == 0 {
            (TRANSPOSE_RUN.min(plane), plane.div_ceil(TRANSPOSE_RUN))
        } else {
            (self.width, self.height)
        };
        for_each_task(self.batch * blocks * runs_per_plane, &|index| {
            let (n, b, r) = (
                index / (blocks * runs_per_plane),
                index / runs_per_plane % blocks,
                index % runs_per_plane,
            );
            let lanes = (self.channels - b * BLOCK).min(BLOCK);
            let (start, first, count) = if self.halo == 0 {
                let first = r * run;
                (
                    self.offset(n, b, 0, 0) + first * BLOCK,
                    first,
                    run.min(plane - first),
                )
            } else {
                (
                    self.offset(n, b, r + self.halo, self.halo),
                    r * self.width,
                    self.width,
                )
            };
            let src = &self.values[start..][..count * BLOCK];
            // The NCHW offset of this run's first position in each lane's channel.
            let row_offset = |lane: usize| (n * self.channels + b * BLOCK + lane) * plane + first;
            // 16 positions at a time: read them in order, transpose in a local tile, write
            // each lane's 16 values as one run.
            for (chunk, positions) in src.chunks(BLOCK * BLOCK).enumerate() {
                let tile = transposed(positions, isa);
                let count = positions.len() / BLOCK;
                for (lane, values) in tile.iter().enumerate().take(lanes) {
                    let offset = row_offset(lane) + chunk * BLOCK;
                    let values = &values[..count];
                    // SAFETY: task (n, b, r) alone writes these positions of its block's
                    // channels of image n; the run ends inside the plane (raw writes: the
                    // memory is not initialised yet). The same for `mapped`'s buffer.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            values.as_ptr(),
                            out.ptr.get().add(offset),
                            count,
                        )
                    };
                    if let Some((mapped, epilogue)) = mapped {
                        let channel = b * BLOCK + lane;
                        let residual = epilogue.residual.map(|r| &r[offset..offset + count]);
                        for (i, &v) in values.iter().enumerate() {
                            let y = epilogue.apply(channel, v, residual.map(|r| r[i]));
                            // SAFETY: as above.
                            unsafe { mapped.ptr.get().add(offset + i).write(y) };
                        }
                    }
                }
            }
        });
    }
}

/// An NCHW output being written by [`Activation::write_nchw`]'s tasks through `ptr`.
struct NchwBuffer {
    values: Vec<f32>,
    ptr: SendPtr,
    len: usize,
}

impl NchwBuffer {
    /// The written values.
    fn finish(mut self) -> Vec<f32> {
        // SAFETY: `write_nchw`'s tasks wrote every one of the `len` values (each (image,
        // channel, row) once), and the capacity is at least `len`.
        unsafe { self.values.set_len(self.len) };
        self.values
    }
}

impl Drop for Activation {
    fn drop(&mut self) {
        buffers::give(std::mem::take(&mut self.values));
    }
}
