//! The Winograd conv's transforms ([`super::winograd`]): the input tiles' `Bᵀ d B`, and the
//! output tiles' `Aᵀ M A` with the conv's epilogue, written once over [`Lanes`] with an entry
//! point per instruction set.

use super::activation::Activation;
use super::conv::BlockedConv;
use super::lanes::{BLOCK, Lanes, Portable};
use super::tile::Isa;
use crate::flex_kernels::SendPtr;

/// Points of a transformed tile (4 × 4).
pub(super) const POINTS: usize = 16;

/// Where a slab's tiles are: tile `t` of the slab is tile `first + t` of the batch, counted
/// image by image, row by row.
#[derive(Clone, Copy)]
pub(super) struct Tiles {
    pub first: usize,
    /// Tiles per row and per image.
    pub across: usize,
    pub per_image: usize,
    /// The slab's capacity: between consecutive (point, block) runs of tiles in `V` and `M`.
    pub capacity: usize,
}

impl Tiles {
    /// `(image, first output row, first output column)` of slab tile `t`.
    pub fn origin(&self, t: usize) -> (usize, usize, usize) {
        let tile = self.first + t;
        let (n, within) = (tile / self.per_image, tile % self.per_image);
        (n, within / self.across * 2, within % self.across * 2)
    }
}

/// What the transform loops read and write, for one slab.
pub(super) struct Transform<'a> {
    pub conv: &'a BlockedConv,
    pub input: &'a Activation,
    pub residual: Option<&'a Activation>,
    pub output: SendPtr,
    pub output_shape: &'a Activation,
    pub relu: bool,
    pub tiles: Tiles,
}

/// A transform loop's function: `(what, block, slab tiles, V or M)`.
pub(super) type TransformFn = unsafe fn(&Transform, usize, std::ops::Range<usize>, *mut f32);

/// `Bᵀ v` for a column (or row) `v` of four.
///
/// The transforms are written without closures: a closure does not inherit its function's
/// target features, so the vector methods called inside it would not be inlined.
#[inline(always)]
fn b_transposed<V: Lanes>([a, b, c, d]: [V; 4]) -> [V; 4] {
    [a.sub(c), b.add(c), c.sub(b), b.sub(d)]
}

/// `Bᵀ d B` of one 4x4 input block `d` (rows of 4), in place.
#[allow(clippy::needless_range_loop, reason = "a column of rows")]
#[inline(always)]
fn input_transform<V: Lanes>(d: &mut [[V; 4]; 4]) {
    for row in d.iter_mut() {
        *row = b_transposed(*row);
    }
    for c in 0..4 {
        let column = b_transposed([d[0][c], d[1][c], d[2][c], d[3][c]]);
        for r in 0..4 {
            d[r][c] = column[r];
        }
    }
}

/// Phase 1 for `block` and slab tiles `range`: read each tile's 4x4 inputs (zero past the
/// input's border), transform, write `V`.
///
/// # Safety
/// `v` is the slab's `V` buffer; `V`'s instructions exist on this CPU.
#[inline(always)]
unsafe fn transform_input<V: Lanes>(
    job: &Transform,
    block: usize,
    range: std::ops::Range<usize>,
    v: *mut f32,
) {
    let input = job.input;
    let (rows, columns) = (input.height + 2 * input.halo, input.width + 2 * input.halo);
    let (row_stride, in_blocks) = (input.row_stride(), input.blocks());
    for t in range {
        let (n, y, x) = job.tiles.origin(t);
        // The tile's first input row and column, counted from the border's outer edge.
        let (top, left) = (y + input.halo - 1, x + input.halo - 1);
        let base = input.offset(n, block, top, left);
        let inside = top + 4 <= rows && left + 4 <= columns;
        let mut d = [[V::zero(); 4]; 4];
        for (r, row) in d.iter_mut().enumerate() {
            for (c, value) in row.iter_mut().enumerate() {
                if inside || (top + r < rows && left + c < columns) {
                    // SAFETY: row `top + r`, column `left + c` lie inside the plane.
                    *value = unsafe {
                        V::load(input.values.as_ptr().add(base + r * row_stride + c * BLOCK))
                    };
                }
            }
        }
        input_transform(&mut d);
        for (point, value) in d.iter().flatten().enumerate() {
            let at = ((point * in_blocks + block) * job.tiles.capacity + t) * BLOCK;
            // SAFETY: inside the slab's `V` (the caller's contract).
            unsafe { value.store(v.add(at)) };
        }
    }
}

/// Phase 3 for output `block` and slab tiles `range`: `Aᵀ M A`, the epilogue, and the store of
/// the outputs inside the map.
///
/// # Safety
/// `m` is the slab's `M` buffer, written for these tiles; `V`'s instructions exist on this CPU;
/// no other task writes this block's outputs of these tiles.
#[inline(always)]
unsafe fn transform_output<V: Lanes>(
    job: &Transform,
    block: usize,
    range: std::ops::Range<usize>,
    m: *mut f32,
) {
    let out = job.output_shape;
    let out_blocks = out.blocks();
    let conv = job.conv;
    // SAFETY (whole body): the epilogue vectors are padded to whole blocks; the addresses of
    // `M`, the residual and the output are inside their buffers (the caller's contract and the
    // bounds checks below).
    unsafe {
        #[allow(
            clippy::manual_map,
            reason = "no closure: it would not inherit the features"
        )]
        let scale = match &conv.scale {
            Some(s) => Some(V::load(s.as_ptr().add(block * BLOCK))),
            None => None,
        };
        let bias = V::load(conv.bias.as_ptr().add(block * BLOCK));
        let point_stride = out_blocks * job.tiles.capacity * BLOCK;
        for t in range {
            let first = m.add((block * job.tiles.capacity + t) * BLOCK);
            let mut p = [V::zero(); POINTS];
            for (point, value) in p.iter_mut().enumerate() {
                *value = V::load(first.add(point * point_stride));
            }
            // `Aᵀ M`: rows `m0 + m1 + m2` and `m1 - m2 - m3`, then the same on columns.
            let mut s = [[V::zero(); 4]; 2];
            for c in 0..4 {
                let (m0, m1, m2, m3) = (p[c], p[4 + c], p[8 + c], p[12 + c]);
                s[0][c] = m0.add(m1).add(m2);
                s[1][c] = m1.sub(m2).sub(m3);
            }
            let (n, y, x) = job.tiles.origin(t);
            for (dy, row) in s.iter().enumerate() {
                let values = [
                    row[0].add(row[1]).add(row[2]),
                    row[1].sub(row[2]).sub(row[3]),
                ];
                for (dx, mut value) in values.into_iter().enumerate() {
                    let (oy, ox) = (y + dy, x + dx);
                    if oy >= out.height || ox >= out.width {
                        continue;
                    }
                    if let Some(scale) = scale {
                        value = value.mul(scale);
                    }
                    value = value.add(bias);
                    if let Some(r) = job.residual {
                        let at = r.offset(n, block, oy + r.halo, ox + r.halo);
                        value = value.add(V::load(r.values.as_ptr().add(at)));
                    }
                    if job.relu {
                        value = value.relu();
                    }
                    let at = out.offset(n, block, oy + out.halo, ox + out.halo);
                    value.store(job.output.get().add(at));
                }
            }
        }
    }
}

/// The input transform for `isa`.
pub(super) fn isa_transform_input(isa: Isa) -> TransformFn {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => x86::input_avx512,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => x86::input_avx2,
        Isa::Portable => transform_input::<Portable>,
    }
}

/// The output transform for `isa`.
pub(super) fn isa_transform_output(isa: Isa) -> TransformFn {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => x86::output_avx512,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => x86::output_avx2,
        Isa::Portable => transform_output::<Portable>,
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::lanes::{Avx2, Avx512};
    use super::{Transform, transform_input, transform_output};

    /// A target-feature entry point of one transform on one instruction set.
    macro_rules! entry {
        ($name:ident, $body:ident, $lanes:ty, $features:literal) => {
            /// # Safety
            /// The transform's contract, on a CPU with the features.
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $name(
                job: &Transform,
                block: usize,
                range: std::ops::Range<usize>,
                buffer: *mut f32,
            ) {
                // SAFETY: forwarded; the features are enabled here.
                unsafe { $body::<$lanes>(job, block, range, buffer) }
            }
        };
    }
    entry!(input_avx512, transform_input, Avx512, "avx512f");
    entry!(input_avx2, transform_input, Avx2, "avx2,fma");
    entry!(output_avx512, transform_output, Avx512, "avx512f");
    entry!(output_avx2, transform_output, Avx2, "avx2,fma");
}
