//! One conv at a time on NCHW tensors through the blocked kernels, for the training graph, whose
//! tensors stay NCHW: a stride-1 3x3 conv runs as Winograd F(2x2, 3x3) ([`super::winograd`]),
//! its input converted to the blocked layout and its output back, its weights transformed on
//! every call (they change every step; nothing is cached). The input gradient of such a conv is
//! itself a stride-1 3x3 conv (of the output gradient, with the weights flipped and their
//! channel axes swapped), so it runs the same way.
//!
//! On ResNet-50's stride-1 3x3 shapes at batch 8 this takes the conv from `im2col` + GEMM's 36
//! products per output and channel pair to 16, for two layout conversions of the conv's narrow
//! (mid-channel) activations; docs/performance.md gives the measured times.

use std::sync::Arc;

use super::activation::Activation;
use super::buffers::without_keeping;
use super::conv::BlockedConv;
use super::isa;
use super::lanes::BLOCK;
use super::tile::Isa;
use super::transpose::transposed;
use super::winograd::{applies, pack_winograd, pack_winograd_flipped};
use crate::flex_kernels::SendPtr;
use crate::flex_kernels::conv::tiled::chosen_kernel;
use crate::flex_kernels::conv::{ConvGeometry, Epilogue};
use crate::flex_kernels::spin_pool::{for_each_task, on_rayon};

/// The blocked kernel for a conv of `geometry` that [`winograd_conv`] runs, if it runs it: a
/// stride-1 3x3 conv with a padding of 1 and no groups, while a blocked kernel is chosen.
fn winograd_isa(geometry: &ConvGeometry) -> Option<Isa> {
    let fits = geometry.groups == 1
        && applies(
            geometry.kernel,
            geometry.stride,
            geometry.padding,
            geometry.dilation,
        );
    fits.then(|| isa(chosen_kernel())).flatten()
}

/// `conv(input)` (NCHW in and out, `weight` `[out, in, 3, 3]`) as Winograd F(2x2, 3x3) in the
/// blocked layout, or `None` when the conv is not one [`winograd_isa`] accepts. The caller
/// checked the slice lengths against `geometry`.
pub(crate) fn winograd_conv(
    input: &[f32],
    weight: &[f32],
    geometry: &ConvGeometry,
) -> Option<Vec<f32>> {
    winograd_conv_with(input, weight, geometry, WinogradEpilogue::default())
}

/// What [`winograd_conv_with`] applies to the conv's output in its epilogue:
/// `relu?(conv · scale? + bias?)`, with `scale` and `bias` per output channel (an eval-mode
/// BatchNorm's map, computed as its own op computes it: a product, then a sum).
#[derive(Clone, Copy, Default)]
pub(crate) struct WinogradEpilogue<'a> {
    pub(crate) scale: Option<&'a [f32]>,
    pub(crate) bias: Option<&'a [f32]>,
    pub(crate) relu: bool,
}

/// [`winograd_conv`] with `epilogue` applied to its output.
pub(crate) fn winograd_conv_with(
    input: &[f32],
    weight: &[f32],
    geometry: &ConvGeometry,
    epilogue: WinogradEpilogue,
) -> Option<Vec<f32>> {
    let isa = winograd_isa(geometry)?;
    let [_, in_channels, ..] = geometry.input;
    let pack = || pack_winograd(weight, geometry.out_channels, in_channels);
    Some(winograd_on(isa, input, pack, geometry, epilogue, |y| {
        y.to_nchw(isa)
    }))
}

/// [`winograd_conv`], and `epilogue` of its output computed on the way back to NCHW, in the
/// same pass: `(conv, epilogue(conv))`, or `None` where [`winograd_conv`] would not run.
pub(crate) fn winograd_conv_keeping_product(
    input: &[f32],
    weight: &[f32],
    geometry: &ConvGeometry,
    epilogue: &Epilogue,
) -> Option<(Vec<f32>, Vec<f32>)> {
    let isa = winograd_isa(geometry)?;
    let [_, in_channels, ..] = geometry.input;
    let pack = || pack_winograd(weight, geometry.out_channels, in_channels);
    let conv_only = WinogradEpilogue::default();
    Some(winograd_on(isa, input, pack, geometry, conv_only, |y| {
        y.to_nchw_with(isa, epilogue)
    }))
}

/// [`winograd_conv`] with `isa` and the weights `pack` returns ([`pack_winograd`]'s layout),
/// its blocked output handed to `finish` (back to NCHW), between rayon's loops of the training
/// graph's other ops: no pool helper spinning after the last loop, no kept buffers.
fn winograd_on<R>(
    isa: Isa,
    input: &[f32],
    pack: impl FnOnce() -> Vec<f32>,
    geometry: &ConvGeometry,
    epilogue: WinogradEpilogue,
    finish: impl FnOnce(&Activation) -> R,
) -> R {
    without_keeping(|| {
        on_rayon(|| finish(&winograd_packed(isa, input, pack(), geometry, epilogue)))
    })
}

/// [`winograd_on`] inside its scopes.
fn winograd_packed(
    isa: Isa,
    input: &[f32],
    packed: Vec<f32>,
    geometry: &ConvGeometry,
    epilogue: WinogradEpilogue,
) -> Activation {
    let [_, in_channels, ..] = geometry.input;
    let out_channels = geometry.out_channels;
    // Padded to whole output blocks, zero past the real channels (as the packed weights are).
    let lanes = |values: &[f32]| {
        let mut lanes = vec![0.0; out_channels.next_multiple_of(BLOCK)];
        lanes[..out_channels].copy_from_slice(values);
        lanes
    };
    let conv = BlockedConv {
        weights: Arc::new(packed),
        scale: epilogue.scale.map(lanes),
        bias: lanes(epilogue.bias.unwrap_or(&vec![0.0; out_channels])),
        in_channels,
        out_channels,
        kernel: geometry.kernel,
        stride: geometry.stride,
        padding: geometry.padding,
        dilation: geometry.dilation,
        winograd: true,
    };
    let x = blocked_from_nchw(input, geometry.input, conv.halo(), isa);
    let y = conv.run(&x, None, epilogue.relu, 0, isa);
    drop(x);
    y
}

/// The gradient with respect to the input of a conv [`winograd_conv`] runs, from the gradient
/// of its output: `dX = conv(dY, W')` with `W'[i, o, kh, kw] = W[o, i, 2 − kh, 2 − kw]` and the
/// same padding ([`pack_winograd_flipped`] packs `W'` from `W`). `None` where [`winograd_conv`]
/// would not run the conv.
pub(crate) fn winograd_input_grad(
    weight: &[f32],
    grad_out: &[f32],
    geometry: &ConvGeometry,
) -> Option<Vec<f32>> {
    let isa = winograd_isa(geometry)?;
    let [batch, in_channels, height, width] = geometry.input;
    let out_channels = geometry.out_channels;
    let transposed_conv = ConvGeometry {
        input: [batch, out_channels, height, width],
        out_channels: in_channels,
        ..*geometry
    };
    let pack = || pack_winograd_flipped(weight, in_channels, out_channels);
    let epilogue = WinogradEpilogue::default();
    Some(winograd_on(
        isa,
        grad_out,
        pack,
        &transposed_conv,
        epilogue,
        |dx| dx.to_nchw(isa),
    ))
}

/// NCHW `values` (`dims`) as a blocked activation with a border of `halo`: 16 channels by 16
/// positions at a time, transposed with `isa`'s instructions.
fn blocked_from_nchw(values: &[f32], dims: [usize; 4], halo: usize, isa: Isa) -> Activation {
    let [batch, channels, height, width] = dims;
    let mut blocked = Activation::for_writing(batch, channels, [height, width], halo);
    let out = SendPtr(blocked.values.as_mut_ptr());
    let (a, blocks, plane) = (&blocked, blocked.blocks(), height * width);
    for_each_task(batch * blocks * height, &|index| {
        let (n, b, y) = (
            index / (blocks * height),
            index / height % blocks,
            index % height,
        );
        let lanes = (channels - b * BLOCK).min(BLOCK);
        let row = a.offset(n, b, y + halo, halo);
        for x0 in (0..width).step_by(BLOCK) {
            let count = (width - x0).min(BLOCK);
            // `[lane][position]`, zero past the real lanes and positions.
            let mut tile = [0.0f32; BLOCK * BLOCK];
            for lane in 0..lanes {
                let src = &values[(n * channels + b * BLOCK + lane) * plane + y * width + x0..];
                tile[lane * BLOCK..][..count].copy_from_slice(&src[..count]);
            }
            // The transpose of `[lane][position]` is `[position][lane]`: whole positions.
            let positions = transposed(&tile, isa);
            for (x, position) in positions.iter().take(count).enumerate() {
                // SAFETY: task (n, b, y) alone writes row y of block b of image n, inside the
                // buffer (the row holds `width` positions of `BLOCK` lanes).
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        position.as_ptr(),
                        out.get().add(row + (x0 + x) * BLOCK),
                        BLOCK,
                    )
                };
            }
        }
    });
    blocked
}

#[cfg(test)]
mod tests {
    use super::{winograd_conv, winograd_input_grad};
    use crate::flex_kernels::blocked::tests::each_kernel;
    use crate::flex_kernels::conv::backward::input_grad;
    use crate::flex_kernels::conv::tiled::ConvKernel;
    use crate::flex_kernels::conv::{ConvGeometry, Epilogue, conv2d};
    use crate::flex_kernels::tests::conv_profile::fill;

    /// `actual` within 1e-5 of `expected`'s largest magnitude, value by value.
    fn assert_close(actual: &[f32], expected: &[f32], what: &str) {
        assert_eq!(actual.len(), expected.len(), "{what}: length");
        let largest = expected.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
            assert!(
                (a - e).abs() <= 1e-5 * largest,
                "{what}: value {i} is {a}, im2col gives {e}"
            );
        }
    }

    fn geometry(input: [usize; 4], out_channels: usize) -> ConvGeometry {
        ConvGeometry {
            input,
            out_channels,
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1],
            dilation: [1, 1],
            groups: 1,
        }
    }

    #[test]
    fn winograd_forward_and_input_gradient_match_im2col() {
        // Odd sides, partial channel blocks both ways, an image-like 3-channel input, a row
        // longer than one 16-position transpose.
        for (input, cout) in [
            ([2, 20, 7, 9], 12),
            ([1, 3, 5, 2], 40),
            ([2, 32, 4, 19], 16),
        ] {
            let g = geometry(input, cout);
            let x = fill(input.iter().product(), 1);
            let weight = fill(cout * input[1] * 9, 2);
            let dy = fill(g.output().unwrap().iter().product(), 3);
            let expected_y = conv2d(&x, &weight, &g, Epilogue::default());
            let expected_dx = input_grad(&weight, &dy, &g);
            each_kernel(|kernel| {
                let y = winograd_conv(&x, &weight, &g).expect("a blocked kernel runs it");
                assert_close(&y, &expected_y, &format!("{kernel} forward {input:?}"));
                let dx = winograd_input_grad(&weight, &dy, &g).expect("and its input gradient");
                assert_close(&dx, &expected_dx, &format!("{kernel} input grad {input:?}"));
            });
        }
    }

    #[test]
    fn convs_winograd_does_not_compute_are_left_to_im2col() {
        let x = fill(2 * 8 * 6 * 6, 1);
        let weight = fill(8 * 8 * 9, 2);
        let g = geometry([2, 8, 6, 6], 8);
        let forced = ConvKernel::Im2colGemm.force(|| winograd_conv(&x, &weight, &g).is_none());
        assert_eq!(forced, Some(true), "im2col-gemm chosen");
        for other in [
            ConvGeometry {
                stride: [2, 2],
                ..g
            },
            ConvGeometry {
                dilation: [2, 2],
                padding: [2, 2],
                ..g
            },
            ConvGeometry { groups: 2, ..g },
        ] {
            let weight = &weight[..weight.len() / other.groups];
            assert!(winograd_conv(&x, weight, &other).is_none(), "{other:?}");
            assert!(
                winograd_input_grad(weight, &x, &other).is_none(),
                "{other:?}"
            );
        }
    }
}
