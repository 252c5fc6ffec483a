//! The pools between blocked convs: the stem's max-pool (padding as −∞, NaN propagating as in
//! PyTorch) and `avg_down`'s average pool (kernel = stride, `ceil_mode`, padding not counted).

use crate::flex_kernels::spin_pool::for_each_task;

use super::activation::Activation;
use super::lanes::BLOCK;
use crate::flex_kernels::SendPtr;

/// The window `[first, end)` of output index `o` along an axis of `input` values.
fn window(o: usize, kernel: usize, stride: usize, padding: usize, input: usize) -> (usize, usize) {
    let start = (o * stride).saturating_sub(padding);
    let end = (o * stride + kernel).saturating_sub(padding).min(input);
    (start, end)
}

/// Apply `f(output row, [output lanes per column])` to every output row of every block, in
/// parallel.
fn for_each_row(
    input: &Activation,
    output: &mut Activation,
    f: impl Fn(usize, usize, usize, &mut [f32]) + Sync,
) {
    let (blocks, out_h, out_w) = (output.blocks(), output.height, output.width);
    let out_ptr = SendPtr(output.values.as_mut_ptr());
    let output = &*output;
    for_each_task(input.batch * blocks * out_h, &|task| {
        let (n, b, y) = (task / (blocks * out_h), task / out_h % blocks, task % out_h);
        let start = output.offset(n, b, y + output.halo, output.halo);
        // SAFETY: task (n, b, y) writes only row y of block b of image n (border excluded).
        let row =
            unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(start), out_w * BLOCK) };
        f(n, b, y, row);
    });
}

/// Max-pool a blocked activation (square `kernel`, `stride`, `padding`), output bordered by
/// `out_halo`. `size` is the output's `[height, width]`, checked by the caller.
pub(super) fn max_pool(
    input: &Activation,
    [kernel, stride, padding]: [usize; 3],
    size: [usize; 2],
    out_halo: usize,
) -> Activation {
    let mut output = Activation::for_writing(input.batch, input.channels, size, out_halo);
    for_each_row(input, &mut output, |n, b, y, row| {
        let (y0, y1) = window(y, kernel, stride, padding, input.height);
        for (x, out) in row.chunks_exact_mut(BLOCK).enumerate() {
            let (x0, x1) = window(x, kernel, stride, padding, input.width);
            let mut m = [f32::NEG_INFINITY; BLOCK];
            for iy in y0..y1 {
                for ix in x0..x1 {
                    let at = input.offset(n, b, iy + input.halo, ix + input.halo);
                    for (m, &v) in m.iter_mut().zip(&input.values[at..at + BLOCK]) {
                        if v > *m || v.is_nan() {
                            *m = v;
                        }
                    }
                }
            }
            out.copy_from_slice(&m);
        }
    });
    output
}

/// `avg_down`'s pool: windows of `stride × stride`, stride `stride`, the last window cut at the
/// edge (`ceil_mode`) and averaged over its real values. Output unbordered.
pub(super) fn avg_pool(input: &Activation, stride: usize) -> Activation {
    let size = [input.height.div_ceil(stride), input.width.div_ceil(stride)];
    let mut output = Activation::for_writing(input.batch, input.channels, size, 0);
    for_each_row(input, &mut output, |n, b, y, row| {
        let (y0, y1) = window(y, stride, stride, 0, input.height);
        for (x, out) in row.chunks_exact_mut(BLOCK).enumerate() {
            let (x0, x1) = window(x, stride, stride, 0, input.width);
            let mut sum = [0.0f32; BLOCK];
            for iy in y0..y1 {
                for ix in x0..x1 {
                    let at = input.offset(n, b, iy + input.halo, ix + input.halo);
                    for (s, &v) in sum.iter_mut().zip(&input.values[at..at + BLOCK]) {
                        *s += v;
                    }
                }
            }
            let count = ((y1 - y0) * (x1 - x0)) as f32;
            for (o, s) in out.iter_mut().zip(sum) {
                *o = s / count;
            }
        }
    });
    output
}
