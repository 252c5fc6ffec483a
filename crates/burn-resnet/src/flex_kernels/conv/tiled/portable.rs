//! The portable micro-kernel: plain Rust that the compiler vectorises for whatever the target
//! has (SSE2 on any x86-64). Chosen where the CPU has neither AVX-512 nor AVX2 + FMA, or when
//! forced.

use super::microkernel::{MAX_TILE_WIDTH, MR, Tile, column_row, epilogue_value};

/// [`super::microkernel::MicroKernel`] in plain Rust.
///
/// # Safety
/// The [`Tile`] contract.
pub(crate) unsafe fn tile(t: &Tile) {
    let mut acc = [[0.0f32; MAX_TILE_WIDTH]; MR];
    let width = t.width;
    if t.accumulate {
        for (r, row) in acc.iter_mut().enumerate().take(t.rows) {
            for (j, v) in row.iter_mut().enumerate().take(t.cols) {
                // SAFETY: inside the output tile (the contract).
                *v = unsafe { *t.c.add(r * t.ldc + j) };
            }
        }
    }
    for kk in 0..t.depth {
        // SAFETY: row `kk` of the packed weights and of the columns (the contract).
        let (a, b) = unsafe {
            (
                std::slice::from_raw_parts(t.a.add(kk * MR), MR),
                std::slice::from_raw_parts(column_row(t, kk), width),
            )
        };
        for (row, &a) in acc.iter_mut().zip(a) {
            for (v, &b) in row[..width].iter_mut().zip(b) {
                *v += a * b;
            }
        }
    }
    for (r, row) in acc.iter().enumerate().take(t.rows) {
        // SAFETY (reads below): row `r` of scale, bias and the residual tile (the contract).
        let read = |p: *const f32, at: usize| (!p.is_null()).then(|| unsafe { *p.add(at) });
        let (scale, bias) = match &t.finish {
            Some(finish) => (read(finish.scale, r), read(finish.bias, r)),
            None => (None, None),
        };
        for (j, &v) in row.iter().enumerate().take(t.cols) {
            let v = match &t.finish {
                Some(finish) => {
                    let residual = read(finish.residual, r * t.ldc + j);
                    epilogue_value(v, scale, bias, residual, finish.relu)
                }
                None => v,
            };
            // SAFETY: inside the output tile (the contract).
            unsafe { *t.c.add(r * t.ldc + j) = v };
        }
    }
}
