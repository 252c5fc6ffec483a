//! The blocked layout against the NCHW path (`im2col` + `gemm`, conv by conv) on whole
//! backbones: every instruction set this CPU runs, every supported unit (basic and bottleneck
//! blocks, deep stem, `avg_down`, caffe style, dilation, odd and non-square sizes, more than 16
//! input channels, folded and unfolded BatchNorms with random statistics), NaN and Inf, stale
//! reused buffers, and the units that must fall back.

use burn::module::{Param, RunningState};
use burn::tensor::{Device, Distribution, Tensor};

use super::{InferenceLayout, try_forward};
use crate::flex_kernels::conv::tiled::{ConvKernel, Packing, is_cached_as};
use crate::flex_kernels::{flex_f32, float_slice};
use crate::norm::Norm;
use crate::{ResNet, ResNetConfig};

/// A model of `toml` with every BatchNorm's affine and running statistics random.
fn model(toml: &str, device: &Device) -> ResNet {
    let mut model = ResNetConfig::from_toml_str(toml, "test")
        .expect("a valid config")
        .init(device)
        .expect("built");
    let n = Distribution::Normal(0.0, 0.5);
    for (_, norm) in model.units_mut() {
        if let Norm::Batch(bn) = norm {
            let c = bn.gamma.dims()[0];
            bn.gamma =
                Param::from_tensor(Tensor::random([c], Distribution::Uniform(0.5, 1.5), device));
            bn.beta = Param::from_tensor(Tensor::random([c], n, device));
            bn.running_mean = RunningState::new(Tensor::random([c], n, device));
            bn.running_var =
                RunningState::new(Tensor::random([c], Distribution::Uniform(0.5, 2.0), device));
        }
    }
    model
}

/// The outputs of `model` on `x` in the blocked layout, `None` where it does not apply.
fn blocked(model: &ResNet, x: &Tensor<4>) -> Option<Vec<Tensor<4>>> {
    let spec = model.spec();
    try_forward(
        &model.stem,
        &model.layers,
        &spec.out_indices,
        spec.config.stem_output,
        x,
    )
}

/// The outputs of the NCHW reference path (`im2col` + `gemm`).
fn reference(model: &ResNet, x: &Tensor<4>) -> Vec<Tensor<4>> {
    InferenceLayout::Nchw.force(|| {
        ConvKernel::Im2colGemm
            .force(|| model.forward(x.clone()))
            .expect("always supported")
    })
}

/// Assert that `actual` matches `expected` output by output: the same NaN positions, the same
/// infinities, finite values within `1e-4` of the output's largest magnitude.
fn assert_close(actual: &[Tensor<4>], expected: &[Tensor<4>], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: outputs");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert_eq!(a.dims(), e.dims(), "{what}: output {i} shape");
        let a = a.to_data().try_to_vec::<f32>().expect("f32");
        let e = e.to_data().try_to_vec::<f32>().expect("f32");
        let scale = e
            .iter()
            .filter(|v| v.is_finite())
            .fold(0f32, |m, v| if v.abs() > m { v.abs() } else { m });
        for (j, (&a, &e)) in a.iter().zip(&e).enumerate() {
            let same = if e.is_nan() {
                a.is_nan()
            } else if e.is_infinite() {
                a == e
            } else {
                (a - e).abs() <= 1e-4 * scale.max(1e-6)
            };
            assert!(same, "{what}: output {i}, value {j}: {a} against {e}");
        }
    }
}

/// Every blocked instruction set this CPU runs, with `f` run under it.
pub(super) fn each_kernel(mut f: impl FnMut(ConvKernel)) {
    let mut ran = 0;
    for kernel in [ConvKernel::Avx512, ConvKernel::Avx2, ConvKernel::Portable] {
        if kernel.force(|| f(kernel)).is_some() {
            ran += 1;
        }
    }
    assert!(ran >= 1, "the portable kernel always runs");
}

const CASES: [(&str, &str, [usize; 4]); 7] = [
    (
        "basic blocks",
        "depth = 18\nbase_channels = 8\nzero_init_residual = false",
        [2, 3, 40, 40],
    ),
    (
        "bottlenecks, 3 stages, odd non-square input, C1 (over 1024 positions) and C3 returned",
        "depth = 50\nbase_channels = 16\nnum_stages = 3\nout_indices = [2]\nstem_output = true\nzero_init_residual = false",
        [1, 3, 75, 67],
    ),
    (
        "V1d: deep stem, avg_down (ceil-mode windows)",
        "depth = 50\nbase_channels = 8\ndeep_stem = true\navg_down = true\nzero_init_residual = false",
        [1, 3, 35, 43],
    ),
    (
        "caffe style, channels not a multiple of 16",
        "depth = 50\nbase_channels = 12\nstyle = \"caffe\"\nzero_init_residual = false",
        [2, 3, 33, 33],
    ),
    (
        "dilated stages",
        "depth = 50\nbase_channels = 8\nstrides = [1, 2, 1, 1]\ndilations = [1, 1, 2, 4]\nzero_init_residual = false",
        [1, 3, 32, 32],
    ),
    (
        "20 input channels (a blocked image)",
        "depth = 18\nbase_channels = 16\nin_channels = 20\nzero_init_residual = false",
        [1, 20, 24, 28],
    ),
    (
        "one input channel",
        "depth = 34\nbase_channels = 8\nin_channels = 1",
        [1, 1, 29, 31],
    ),
];

#[test]
fn the_blocked_layout_matches_the_nchw_path_on_every_supported_unit() {
    let device = Device::flex();
    for (what, toml, dims) in CASES {
        let model = model(toml, &device);
        let x = Tensor::<4>::random(dims, Distribution::Normal(0.0, 1.0), &device);
        let expected = reference(&model, &x);
        let folded = model.clone().fold_batch_norms();
        let expected_folded = reference(&folded, &x);
        each_kernel(|kernel| {
            let blocked =
                blocked(&model, &x).unwrap_or_else(|| panic!("{what}: the blocked layout applies"));
            assert_close(&blocked, &expected, &format!("{what}, {kernel}"));
            assert!(blocked_packing_of(&model), "{what}: the packing is kept");
            // Folded, and through `forward` (the default layout), twice: the second pass runs on
            // the stale buffers the first left.
            for pass in 0..2 {
                let outputs = folded.forward(x.clone());
                assert_close(
                    &outputs,
                    &expected_folded,
                    &format!("{what}, {kernel}, folded, pass {pass}"),
                );
            }
        });
    }
}

#[test]
fn nan_and_infinity_propagate_as_in_the_nchw_path() {
    let device = Device::flex();
    let model = model(
        "depth = 50\nbase_channels = 8\nzero_init_residual = false",
        &device,
    );
    let mut values = Tensor::<4>::random([1, 3, 40, 40], Distribution::Normal(0.0, 1.0), &device)
        .to_data()
        .try_to_vec::<f32>()
        .expect("f32");
    values[5 * 40 + 7] = f32::NAN;
    values[1600 + 30 * 40 + 30] = f32::INFINITY;
    let x = Tensor::<1>::from_floats(values.as_slice(), &device).reshape([1, 3, 40, 40]);
    let expected = reference(&model, &x);
    let first = expected[0].to_data().try_to_vec::<f32>().expect("f32");
    assert!(
        first.iter().any(|v| v.is_nan()),
        "the NaN reaches the first output"
    );
    each_kernel(|kernel| {
        assert_close(
            &model.forward(x.clone()),
            &expected,
            &format!("NaN, {kernel}"),
        )
    });
}

/// Whether the stem's first conv has a blocked packing in the weight cache.
fn blocked_packing_of(model: &ResNet) -> bool {
    let weight = flex_f32(&model.stem.layers[0].conv.weight.val()).expect("flex");
    let values = float_slice(&weight).expect("f32");
    is_cached_as(
        values.as_ptr() as usize,
        values.len(),
        Some(Packing::Blocked),
    )
}

#[test]
fn units_the_blocked_layout_does_not_run_fall_back_to_the_nchw_path() {
    let device = Device::flex();
    let plugins = "depth = 50\nbase_channels = 16\n[[plugins]]\nposition = \"after_conv3\"\ncfg = { type = \"ContextBlock\", ratio = 0.25 }";
    for toml in [
        plugins,
        "depth = 50\nbase_channels = 16\ngroups = 4\nbase_width = 4",
        "depth = 18\nbase_channels = 8\nnorm_cfg = { type = \"GN\", num_groups = 2 }",
        "depth = 50\nbase_channels = 16\ndcn = { type = \"DCN\" }\nstage_with_dcn = [false, true, true, true]",
    ] {
        let model = model(toml, &device);
        let x = Tensor::<4>::random([1, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
        assert!(blocked(&model, &x).is_none(), "{toml}: not blocked");
        // Nothing was packed for the layout it does not run (the stem comes first).
        assert!(
            !blocked_packing_of(&model),
            "{toml}: the stem's blocked packing"
        );
        assert_close(&model.forward(x.clone()), &reference(&model, &x), toml);
    }
    // Autodiff tensors (training) never take it.
    let model = model(CASES[0].1, &device.clone().autodiff());
    let x = Tensor::<4>::random(
        [1, 3, 32, 32],
        Distribution::Normal(0.0, 1.0),
        &device.autodiff(),
    );
    assert!(blocked(&model, &x).is_none());
}

/// A conv given an input with a narrower border than its padding copies it with a wide enough
/// one (the planner never does this; the conv still must not read outside the buffer).
#[test]
fn a_conv_on_an_input_without_its_border_pads_a_copy() {
    use super::activation::Activation;
    use super::conv::{BlockedConv, pack_blocked, padded};
    use super::tile::Isa;
    use crate::flex_kernels::tests::conv_profile::fill;

    let (cin, cout, side) = (20, 24, 9);
    let conv = BlockedConv {
        weights: std::sync::Arc::new(pack_blocked(&fill(cout * cin * 9, 3), cout, cin, [3, 3])),
        scale: None,
        bias: padded(&fill(cout, 5)),
        in_channels: cin,
        out_channels: cout,
        kernel: [3, 3],
        stride: [1, 1],
        padding: [2, 2],
        dilation: [2, 2],
        winograd: false,
    };
    let image = fill(2 * cin * side * side, 7);
    let run = |halo: usize| {
        let input = Activation::from_image(&image, [2, cin, side, side], halo);
        conv.run(&input, None, true, 0, Isa::Portable)
            .to_nchw(Isa::Portable)
    };
    assert_eq!(run(0), run(2));
    assert_eq!(run(1), run(3));
}

/// Winograd F(2x2, 3x3) against the direct blocked conv on the same weights, on every
/// instruction set this CPU runs: channels that do not fill their last block, odd and even
/// sides (tiles past the map's edge), a residual, an unfolded BatchNorm's scale, borders on
/// both sides, batch 2, slabs from one tile to the whole batch and tasks of 1 to 48 tiles. (Over 16 channels, so that
/// `from_image` builds blocked activations, as every Winograd conv reads in a pass.)
#[test]
fn winograd_matches_the_direct_conv() {
    use super::activation::Activation;
    use super::conv::{BlockedConv, Residual, pack_blocked, padded};
    use super::winograd::{Split, pack_winograd};
    use crate::flex_kernels::tests::conv_profile::fill;

    for (cin, cout, [h, w]) in [(20, 40, [7, 9]), (32, 24, [8, 8]), (48, 72, [5, 2])] {
        let weight = fill(cout * cin * 9, 3);
        let direct = BlockedConv {
            weights: std::sync::Arc::new(pack_blocked(&weight, cout, cin, [3, 3])),
            scale: Some(padded(
                &fill(cout, 4).iter().map(|s| s + 1.0).collect::<Vec<_>>(),
            )),
            bias: padded(&fill(cout, 5)),
            in_channels: cin,
            out_channels: cout,
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1],
            dilation: [1, 1],
            winograd: false,
        };
        let winograd = BlockedConv {
            weights: std::sync::Arc::new(pack_winograd(&weight, cout, cin)),
            winograd: true,
            scale: direct.scale.clone(),
            bias: direct.bias.clone(),
            ..direct
        };
        let image = fill(2 * cin * h * w, 7);
        let shortcut = fill(2 * cout * h * w, 9);
        each_kernel(|kernel| {
            let Some(isa) = super::isa(kernel) else {
                return;
            };
            for (in_halo, out_halo) in [(1, 0), (2, 1)] {
                let input = Activation::from_image(&image, [2, cin, h, w], in_halo);
                let residual = Activation::from_image(&shortcut, [2, cout, h, w], out_halo);
                let expected = direct.run(&input, Some(&residual), true, out_halo, isa);
                let largest = expected.values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                for split in [
                    Split::Slabs(1),
                    Split::Slabs(16 * 16 * 16 * 3),
                    Split::Slabs(usize::MAX),
                    Split::Tasks(1),
                    Split::Tasks(5),
                    Split::Tasks(48),
                ] {
                    let output = Activation::for_writing(2, cout, [h, w], out_halo);
                    let actual = winograd.run_winograd_split(
                        &input,
                        Residual::Other(&residual),
                        true,
                        output,
                        isa,
                        split,
                    );
                    // Border and padded lanes included (zero in both).
                    assert_eq!(actual.values.len(), expected.values.len());
                    for (i, (a, e)) in actual.values.iter().zip(&expected.values).enumerate() {
                        assert!(
                            (a - e).abs() <= 1e-5 * largest,
                            "{kernel} {cin}>{cout} {h}x{w} halos {in_halo}/{out_halo} {split:?}: \
                             value {i} {a} vs {e}"
                        );
                    }
                }
            }
        });
    }
}

/// A conv adding its residual in place (the residual's buffer becomes the output) gives what
/// it gives with a separate output: direct pointwise and 3x3 convs, Winograd, and a conv whose
/// input blocks come in several chunks (which must not add in place), on every instruction set.
#[test]
fn adding_the_residual_in_place_matches_a_separate_output() {
    use super::activation::Activation;
    use super::conv::{BlockedConv, pack_blocked, padded};
    use super::winograd::pack_winograd;
    use crate::flex_kernels::tests::conv_profile::fill;

    let side = 5;
    // (in channels, out channels, kernel, Winograd); 4100 input channels pass every ISA's chunk.
    for (cin, cout, k, winograd) in [
        (20, 40, 1, false),
        (24, 40, 3, false),
        (24, 40, 3, true),
        (4100, 24, 1, false),
    ] {
        let weight = fill(cout * cin * k * k, 3);
        let conv = BlockedConv {
            weights: std::sync::Arc::new(if winograd {
                pack_winograd(&weight, cout, cin)
            } else {
                pack_blocked(&weight, cout, cin, [k, k])
            }),
            scale: None,
            bias: padded(&fill(cout, 5)),
            in_channels: cin,
            out_channels: cout,
            kernel: [k, k],
            stride: [1, 1],
            padding: [k / 2, k / 2],
            dilation: [1, 1],
            winograd,
        };
        let image = fill(2 * cin * side * side, 7);
        let shortcut = fill(2 * cout * side * side, 9);
        each_kernel(|kernel| {
            let Some(isa) = super::isa(kernel) else {
                return;
            };
            for out_halo in [0, 1] {
                let input = Activation::from_image(&image, [2, cin, side, side], k / 2);
                let residual =
                    || Activation::from_image(&shortcut, [2, cout, side, side], out_halo);
                let expected = conv.run(&input, Some(&residual()), true, out_halo, isa);
                let actual = conv.run_adding_in_place(&input, residual(), true, isa);
                assert_eq!(
                    (&actual.values, actual.halo),
                    (&expected.values, expected.halo),
                    "{kernel} {cin}>{cout} {k}x{k} winograd {winograd} border {out_halo}"
                );
            }
        });
    }
}
