//! The AVX2 + FMA micro-kernel, for CPUs without AVX-512: with 16 vector registers it covers
//! the tile in blocks of 4 channels by up to 16 positions (8 accumulators, 2 columns and a
//! broadcast weight; 12 accumulators of 4 by 24 spill here and run at half the speed).

use std::arch::x86_64::*;

use super::microkernel::{MR, Tile};

/// Channels per block.
const ROWS: usize = 4;

/// [`super::microkernel::MicroKernel`] with AVX2 and FMA. Only called where the CPU has both.
///
/// # Safety
/// The [`Tile`] contract, and a CPU with `avx2` and `fma`.
pub(crate) unsafe fn tile(t: &Tile) {
    for first_row in (0..MR).step_by(ROWS) {
        if first_row >= t.rows {
            break;
        }
        let mut column = 0;
        while column < t.width {
            let vectors = ((t.width - column) / 8).min(2);
            // SAFETY: a block of the tile: the same contract, shifted by whole rows and columns.
            unsafe {
                match vectors {
                    1 => block::<1>(t, first_row, column),
                    _ => block::<2>(t, first_row, column),
                }
            }
            column += vectors * 8;
        }
    }
}

/// The lane mask (all bits of a lane set where valid) of the 8 columns from `column`.
#[inline(always)]
fn lanes(cols: usize, column: usize) -> __m256i {
    let valid = cols.saturating_sub(column).min(8) as i32;
    // SAFETY: AVX is implied by the callers' AVX2.
    unsafe {
        _mm256_cmpgt_epi32(
            _mm256_set1_epi32(valid),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        )
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn block<const NV: usize>(t: &Tile, first_row: usize, first_column: usize) {
    let rows = (t.rows - first_row).min(ROWS);
    let mut acc = [[_mm256_setzero_ps(); NV]; ROWS];
    let masks: [__m256i; NV] = std::array::from_fn(|v| lanes(t.cols, first_column + v * 8));
    // SAFETY (whole body): inside the tile, panels and epilogue vectors as the `Tile` contract
    // states; loads and stores past `cols` are masked.
    unsafe {
        let c = t.c.add(first_row * t.ldc + first_column);
        if t.accumulate {
            for (r, row) in acc.iter_mut().enumerate() {
                if r >= rows {
                    break;
                }
                for (v, value) in row.iter_mut().enumerate() {
                    *value = _mm256_maskload_ps(c.add(r * t.ldc + v * 8), masks[v]);
                }
            }
        }
        let (a, b) = (t.a.add(first_row), t.b.add(first_column));
        acc = if t.b_offsets.is_null() {
            multiply::<NV, false>(t.depth, a, b, t.ldb, t.b_offsets, acc)
        } else {
            multiply::<NV, true>(t.depth, a, b, t.ldb, t.b_offsets, acc)
        };
        if let Some(finish) = &t.finish {
            let zero = _mm256_setzero_ps();
            for (r, row) in acc.iter_mut().enumerate() {
                if r >= rows {
                    break;
                }
                let channel = first_row + r;
                let scale =
                    (!finish.scale.is_null()).then(|| _mm256_set1_ps(*finish.scale.add(channel)));
                let bias =
                    (!finish.bias.is_null()).then(|| _mm256_set1_ps(*finish.bias.add(channel)));
                for (v, value) in row.iter_mut().enumerate() {
                    if let Some(scale) = scale {
                        *value = _mm256_mul_ps(*value, scale);
                    }
                    if let Some(bias) = bias {
                        *value = _mm256_add_ps(*value, bias);
                    }
                    if !finish.residual.is_null() {
                        let at = finish.residual.add(channel * t.ldc + first_column + v * 8);
                        *value = _mm256_add_ps(*value, _mm256_maskload_ps(at, masks[v]));
                    }
                    if finish.relu {
                        // max(0, v) returns its second operand for a NaN: NaN stays NaN.
                        *value = _mm256_max_ps(zero, *value);
                    }
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            if r >= rows {
                break;
            }
            for (v, value) in row.iter().enumerate() {
                _mm256_maskstore_ps(c.add(r * t.ldc + v * 8), masks[v], *value);
            }
        }
    }
}

/// `acc += A · B` over `depth` rows of the packed panels (`ROWS` weights of each packed row of
/// `a`, `NV` vectors of each row of the columns `b`), the accumulators in registers (a function of its own, taking and
/// returning them by value, so that the compiler keeps them out of memory).
// Index loops over constant bounds: the compiler unrolls them into register operations.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn multiply<const NV: usize, const INDIRECT: bool>(
    depth: usize,
    mut a: *const f32,
    b: *const f32,
    ldb: usize,
    offsets: *const usize,
    mut acc: [[__m256; NV]; ROWS],
) -> [[__m256; NV]; ROWS] {
    // SAFETY: `depth` rows of the panels (the `Tile` contract).
    unsafe {
        for k in 0..depth {
            let row = if INDIRECT {
                b.add(*offsets.add(k))
            } else {
                b.add(k * ldb)
            };
            let mut columns = [_mm256_setzero_ps(); NV];
            for v in 0..NV {
                columns[v] = _mm256_loadu_ps(row.add(v * 8));
            }
            for r in 0..ROWS {
                let weight = _mm256_broadcast_ss(&*a.add(r));
                for v in 0..NV {
                    acc[r][v] = _mm256_fmadd_ps(weight, columns[v], acc[r][v]);
                }
            }
            a = a.add(MR);
        }
    }
    acc
}
