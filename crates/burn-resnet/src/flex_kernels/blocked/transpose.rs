//! 16 positions of 16 lanes (the blocked layout) turned into 16 lanes of 16 positions (NCHW
//! rows), as the returned outputs go back to NCHW: 64 shuffles with AVX-512, element by element
//! otherwise (the other instruction sets, and a run's last positions when fewer than 16).

use super::lanes::BLOCK;
use super::tile::Isa;

/// `positions` (whole positions of [`BLOCK`] lanes, at most [`BLOCK`] of them) as
/// `[lane][position]`; positions past the given ones are 0.
pub(super) fn transposed(positions: &[f32], isa: Isa) -> [[f32; BLOCK]; BLOCK] {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 && positions.len() == BLOCK * BLOCK {
        // SAFETY: the AVX-512 kernel is chosen only on CPUs with avx512f; 256 values.
        return unsafe { x86::transposed(positions) };
    }
    let _ = isa;
    let mut tile = [[0.0f32; BLOCK]; BLOCK];
    for (x, position) in positions.chunks_exact(BLOCK).enumerate() {
        for (lane, &v) in position.iter().enumerate() {
            tile[lane][x] = v;
        }
    }
    tile
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::BLOCK;

    /// The 16x16 transpose: pairs of rows interleaved, then 64-bit pairs, then 128-bit lanes
    /// twice.
    ///
    /// # Safety
    /// `positions` holds 256 values; the CPU has avx512f.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transposed(positions: &[f32]) -> [[f32; BLOCK]; BLOCK] {
        // SAFETY (loads and stores): 16 rows of 16 values in `positions` and in the tile.
        let rows: [__m512; BLOCK] =
            std::array::from_fn(|x| unsafe { _mm512_loadu_ps(positions.as_ptr().add(x * BLOCK)) });
        // Within each 128-bit lane k: (a[4k], b[4k], a[4k+1], b[4k+1]) and the next two.
        let pairs: [__m512; BLOCK] = std::array::from_fn(|i| {
            let (a, b) = (rows[i / 2 * 2], rows[i / 2 * 2 + 1]);
            if i % 2 == 0 {
                _mm512_unpacklo_ps(a, b)
            } else {
                _mm512_unpackhi_ps(a, b)
            }
        });
        // quads[4g + j], lane k: column 4k + j of rows 4g..4g + 4.
        let quads: [__m512; BLOCK] = std::array::from_fn(|i| {
            let (g, j) = (i / 4, i % 4);
            let (lo, hi) = (pairs[4 * g + j / 2], pairs[4 * g + j / 2 + 2]);
            if j % 2 == 0 {
                _mm512_shuffle_ps::<0x44>(lo, hi)
            } else {
                _mm512_shuffle_ps::<0xEE>(lo, hi)
            }
        });
        // halves[8h + j], 128-bit lanes: column j of rows 8h..8h + 4, column j + 8 of the
        // same rows, then both of rows 8h + 4..8h + 8.
        let halves: [__m512; BLOCK] = std::array::from_fn(|i| {
            let (h, j) = (i / 8, i % 8);
            let (a, b) = (quads[8 * h + j % 4], quads[8 * h + 4 + j % 4]);
            if j < 4 {
                _mm512_shuffle_f32x4::<0x88>(a, b)
            } else {
                _mm512_shuffle_f32x4::<0xDD>(a, b)
            }
        });
        let mut tile = [[0.0f32; BLOCK]; BLOCK];
        for j in 0..8 {
            let (a, b) = (halves[j], halves[8 + j]);
            unsafe {
                _mm512_storeu_ps(tile[j].as_mut_ptr(), _mm512_shuffle_f32x4::<0x88>(a, b));
                _mm512_storeu_ps(tile[j + 8].as_mut_ptr(), _mm512_shuffle_f32x4::<0xDD>(a, b));
            }
        }
        tile
    }
}

#[cfg(test)]
mod tests {
    use super::super::lanes::BLOCK;
    use super::super::tile::Isa;
    use super::transposed;

    #[test]
    fn every_instruction_set_transposes_whole_and_partial_blocks() {
        let values: Vec<f32> = (0..BLOCK * BLOCK).map(|i| i as f32 * 0.5 - 7.0).collect();
        let mut isas = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            isas.push(Isa::Avx2);
            if std::arch::is_x86_feature_detected!("avx512f") {
                isas.push(Isa::Avx512);
            }
        }
        for isa in isas {
            for positions in [BLOCK, 5, 1] {
                let tile = transposed(&values[..positions * BLOCK], isa);
                for (lane, row) in tile.iter().enumerate() {
                    for (x, &v) in row.iter().enumerate() {
                        let expected = if x < positions {
                            values[x * BLOCK + lane]
                        } else {
                            0.0
                        };
                        assert_eq!(v, expected, "{isa:?}, {positions} positions, [{lane}][{x}]");
                    }
                }
            }
        }
    }
}
