//! The `im2col` column matrix: every conv window's input values laid out as one column, so that
//! the conv (and its weight gradient) is a GEMM.

use super::forward::ConvGeometry;

/// The `im2col` matrix of output rows `first_row..first_row + rows`: one row per
/// `(channel, kernel row, kernel column)`, one column per output position, zeros in the padding.
pub(super) fn im2col_rows(
    input: &[f32],
    geometry: &ConvGeometry,
    out_w: usize,
    first_row: usize,
    rows: usize,
) -> Vec<f32> {
    let [_, channels, in_h, in_w] = geometry.input;
    let [kernel_h, kernel_w] = geometry.kernel;
    let [stride_h, stride_w] = geometry.stride;
    let [pad_h, pad_w] = geometry.padding;
    let [dilation_h, dilation_w] = geometry.dilation;
    let columns = rows * out_w;
    // SAFETY: every row below writes each of its `columns` entries: the input's values where
    // the window lies inside the image, zeros in the padding.
    let mut col = unsafe { crate::flex_kernels::unwritten(geometry.patch_len() * columns) };

    let mut row_index = 0;
    for channel in 0..channels {
        let channel_input = &input[channel * in_h * in_w..(channel + 1) * in_h * in_w];
        for kh in 0..kernel_h {
            for kw in 0..kernel_w {
                let col_row = &mut col[row_index * columns..(row_index + 1) * columns];
                row_index += 1;
                let offset_w = kw * dilation_w;
                let (ow_first, ow_end) = geometry.valid_columns(offset_w, out_w);
                for r in 0..rows {
                    let ih =
                        ((first_row + r) * stride_h + kh * dilation_h) as isize - pad_h as isize;
                    let row = &mut col_row[r * out_w..(r + 1) * out_w];
                    if ih < 0 || ih >= in_h as isize || ow_first >= ow_end {
                        row.fill(0.0); // the window lies in the padding
                        continue;
                    }
                    row[..ow_first].fill(0.0);
                    row[ow_end..].fill(0.0);
                    let src_row = &channel_input[ih as usize * in_w..(ih as usize + 1) * in_w];
                    let dst = &mut row[ow_first..ow_end];
                    let iw_first = ow_first * stride_w + offset_w - pad_w;
                    if stride_w == 1 {
                        dst.copy_from_slice(&src_row[iw_first..iw_first + dst.len()]);
                    } else {
                        for (i, d) in dst.iter_mut().enumerate() {
                            *d = src_row[iw_first + i * stride_w];
                        }
                    }
                }
            }
        }
    }
    col
}
