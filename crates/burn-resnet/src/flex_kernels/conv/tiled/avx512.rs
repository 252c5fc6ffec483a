//! The AVX-512 micro-kernel: a tile of 8 output channels by 16, 32 or 48 positions held in up to
//! 24 of the 32 vector registers; each depth step loads the tile's columns once and broadcasts
//! each channel's weight from the packed panel.

use std::arch::x86_64::*;

use super::microkernel::{MR, TILE_QUANTUM, Tile};

/// [`super::microkernel::MicroKernel`] with AVX-512F. Only called where the CPU has it.
///
/// # Safety
/// The [`Tile`] contract, and a CPU with `avx512f`.
pub(crate) unsafe fn tile(t: &Tile) {
    // SAFETY: forwarded; the width picks the instance whose vectors cover it.
    unsafe {
        match t.width / TILE_QUANTUM {
            1 => tile_vectors::<1>(t),
            2 => tile_vectors::<2>(t),
            _ => tile_vectors::<3>(t),
        }
    }
}

/// The mask of the valid lanes of vector `v` of a tile with `cols` valid columns.
#[inline(always)]
fn lanes(cols: usize, v: usize) -> __mmask16 {
    let valid = cols.saturating_sub(v * 16).min(16);
    ((1u32 << valid) - 1) as __mmask16
}

#[target_feature(enable = "avx512f")]
unsafe fn tile_vectors<const NV: usize>(t: &Tile) {
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    let masks: [__mmask16; NV] = std::array::from_fn(|v| lanes(t.cols, v));
    // SAFETY (whole body): every access stays inside the tile, the packed panels and the
    // epilogue's vectors as the `Tile` contract states; loads and stores past `cols` are masked.
    unsafe {
        if t.accumulate {
            for (r, row) in acc.iter_mut().enumerate() {
                if r >= t.rows {
                    break;
                }
                for (v, value) in row.iter_mut().enumerate() {
                    *value = _mm512_maskz_loadu_ps(masks[v], t.c.add(r * t.ldc + v * 16));
                }
            }
        }
        acc = if t.b_offsets.is_null() {
            multiply::<NV, false>(t.depth, t.a, t.b, t.ldb, t.b_offsets, acc)
        } else {
            multiply::<NV, true>(t.depth, t.a, t.b, t.ldb, t.b_offsets, acc)
        };
        if let Some(finish) = &t.finish {
            let zero = _mm512_setzero_ps();
            for (r, row) in acc.iter_mut().enumerate() {
                if r >= t.rows {
                    break;
                }
                let scale = (!finish.scale.is_null()).then(|| _mm512_set1_ps(*finish.scale.add(r)));
                let bias = (!finish.bias.is_null()).then(|| _mm512_set1_ps(*finish.bias.add(r)));
                for (v, value) in row.iter_mut().enumerate() {
                    if let Some(scale) = scale {
                        *value = _mm512_mul_ps(*value, scale);
                    }
                    if let Some(bias) = bias {
                        *value = _mm512_add_ps(*value, bias);
                    }
                    if !finish.residual.is_null() {
                        let residual = _mm512_maskz_loadu_ps(
                            masks[v],
                            finish.residual.add(r * t.ldc + v * 16),
                        );
                        *value = _mm512_add_ps(*value, residual);
                    }
                    if finish.relu {
                        // max(0, v) returns its second operand for a NaN: NaN stays NaN.
                        *value = _mm512_max_ps(zero, *value);
                    }
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            if r >= t.rows {
                break;
            }
            for (v, value) in row.iter().enumerate() {
                _mm512_mask_storeu_ps(t.c.add(r * t.ldc + v * 16), masks[v], *value);
            }
        }
    }
}

/// `acc += A · B` over `depth` rows of the packed weights `a` and the columns from `b` (row `k` at
/// `b + k·ldb`, or at `b + offsets[k]` when `INDIRECT`), the accumulators in registers (a
/// function of its own, taking and returning them by value, so that the compiler keeps them
/// out of memory).
// Index loops over constant bounds: the compiler unrolls them into register operations.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn multiply<const NV: usize, const INDIRECT: bool>(
    depth: usize,
    mut a: *const f32,
    b: *const f32,
    ldb: usize,
    offsets: *const usize,
    mut acc: [[__m512; NV]; MR],
) -> [[__m512; NV]; MR] {
    // SAFETY: `depth` rows of `MR` and of `width` values (the `Tile` contract).
    unsafe {
        for k in 0..depth {
            let row = if INDIRECT {
                b.add(*offsets.add(k))
            } else {
                b.add(k * ldb)
            };
            let mut columns = [_mm512_setzero_ps(); NV];
            for v in 0..NV {
                columns[v] = _mm512_loadu_ps(row.add(v * 16));
            }
            for r in 0..MR {
                let weight = _mm512_set1_ps(*a.add(r));
                for v in 0..NV {
                    acc[r][v] = _mm512_fmadd_ps(weight, columns[v], acc[r][v]);
                }
            }
            a = a.add(MR);
        }
    }
    acc
}
