//! The contract every micro-kernel keeps: one tile of `MR` output channels by up to
//! [`MAX_TILE_WIDTH`] output positions, `C (+)= A · B` over one depth block (A: a panel of packed
//! weights; B: packed columns, or a pointwise conv's input), and on the last block the epilogue,
//! written straight into the NCHW output.

/// Output channels per tile.
pub(crate) const MR: usize = 8;

/// The widest tile in output positions (three AVX-512 vectors, six AVX2 vectors).
pub(crate) const MAX_TILE_WIDTH: usize = 48;

/// A tile's width is a multiple of this (one AVX-512 vector), so that every kernel covers it
/// in whole vectors and masks only the columns past `cols`.
pub(crate) const TILE_QUANTUM: usize = 16;

/// The epilogue applied to a tile after its last depth block: `relu?(acc · scale + bias +
/// residual)`, each part optional (null pointers), all pointers at the tile's first row.
#[derive(Clone, Copy)]
pub(crate) struct Finish {
    /// `scale[r]` for row `r`, or null.
    pub scale: *const f32,
    /// `bias[r]` for row `r`, or null.
    pub bias: *const f32,
    /// Row `r`, column `j` at `residual + r·ldc + j`, or null.
    pub residual: *const f32,
    /// Clamp at zero (NaN passes, as PyTorch's ReLU).
    pub relu: bool,
}

/// One call of a micro-kernel.
#[derive(Clone, Copy)]
pub(crate) struct Tile {
    /// Depth of this block.
    pub depth: usize,
    /// The tile's weights packed as `[depth][MR]` (row `r`, depth `k` at `a + k·MR + r`; rows
    /// past `rows` are zeros).
    pub a: *const f32,
    /// The columns: depth row `k`, position `j` at `b + k·ldb + j`, readable over `width`
    /// positions (packed with zeros past `cols`, or the input itself for a pointwise conv).
    pub b: *const f32,
    /// Distance between the column rows (`width` when packed), when `b_offsets` is null.
    pub ldb: usize,
    /// Or, when not null: depth row `k` at `b + b_offsets[k]` (a padded input read in place).
    pub b_offsets: *const usize,
    /// The tile's width in positions: a multiple of [`TILE_QUANTUM`], at most
    /// [`MAX_TILE_WIDTH`].
    pub width: usize,
    /// Row `r`, column `j` of the output at `c + r·ldc + j`.
    pub c: *mut f32,
    /// Distance between output rows (an output channel's plane).
    pub ldc: usize,
    /// Rows to write (`<= MR`).
    pub rows: usize,
    /// Columns to read and write (`<= width`, more than `width − TILE_QUANTUM`).
    pub cols: usize,
    /// Add to what the output holds (a later depth block) instead of starting from zero.
    pub accumulate: bool,
    /// The epilogue, on the last depth block only.
    pub finish: Option<Finish>,
}

/// A micro-kernel: computes `tile`.
///
/// # Safety
/// `a` must be readable over `depth · MR` values, `b` over `depth` rows of its width; the output (and the
/// residual) readable and writable over `rows` rows of `cols` columns; scale and bias over
/// `rows` entries.
pub(crate) type MicroKernel = unsafe fn(&Tile);

/// The epilogue of one output value, `relu?(acc · scale + bias + residual)`, in the order the
/// vector kernels apply it: the portable kernel's and the padded grid's compaction.
#[inline(always)]
pub(crate) fn epilogue_value(
    acc: f32,
    scale: Option<f32>,
    bias: Option<f32>,
    residual: Option<f32>,
    relu: bool,
) -> f32 {
    let mut v = acc;
    if let Some(scale) = scale {
        v *= scale;
    }
    if let Some(bias) = bias {
        v += bias;
    }
    if let Some(residual) = residual {
        v += residual;
    }
    if relu {
        crate::flex_kernels::relu(v)
    } else {
        v
    }
}

/// The columns of depth row `k` of `t`.
///
/// # Safety
/// `k < t.depth` (the `Tile` contract then covers the row).
#[inline(always)]
pub(crate) unsafe fn column_row(t: &Tile, k: usize) -> *const f32 {
    // SAFETY: forwarded from the caller.
    unsafe {
        if t.b_offsets.is_null() {
            t.b.add(k * t.ldb)
        } else {
            t.b.add(*t.b_offsets.add(k))
        }
    }
}
