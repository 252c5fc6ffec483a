//! The project's deformable conv against Burn's stock
//! `deform_conv2d` on flex: outputs, and gradients of the input, offsets, masks and weight.

use burn::tensor::module::deform_conv2d;
use burn::tensor::ops::DeformConvOptions;
use burn::tensor::{Device, Distribution, Tensor};

use super::{l2_relative, values};
use crate::flex_kernels::conv::ConvGeometry;
use crate::flex_kernels::deform::{DeformGeometry, try_deform_conv2d};

struct Case {
    batch: usize,
    channels: [usize; 2],
    size: [usize; 2],
    stride: usize,
    padding: usize,
    dilation: usize,
    groups: usize,
    deform_groups: usize,
    modulated: bool,
    /// Offsets' standard deviation in pixels.
    spread: f64,
}

const CASES: [Case; 5] = [
    // ResNet's 3x3 conv2 with DCNv2, offsets within a pixel or two.
    Case {
        batch: 2,
        channels: [8, 12],
        size: [9, 7],
        stride: 1,
        padding: 1,
        dilation: 1,
        groups: 1,
        deform_groups: 1,
        modulated: true,
        spread: 1.0,
    },
    // Strided, as the first block of a stage.
    Case {
        batch: 1,
        channels: [6, 6],
        size: [11, 8],
        stride: 2,
        padding: 1,
        dilation: 1,
        groups: 1,
        deform_groups: 1,
        modulated: true,
        spread: 2.0,
    },
    // ResNeXt: weight groups and offset groups, DCN v1.
    Case {
        batch: 2,
        channels: [8, 8],
        size: [7, 7],
        stride: 1,
        padding: 1,
        dilation: 1,
        groups: 4,
        deform_groups: 2,
        modulated: false,
        spread: 1.5,
    },
    // Dilated, large offsets (many samples outside the map).
    Case {
        batch: 1,
        channels: [4, 10],
        size: [8, 9],
        stride: 1,
        padding: 2,
        dilation: 2,
        groups: 2,
        deform_groups: 4,
        modulated: true,
        spread: 6.0,
    },
    // More channels than one chunk per deform group (the backward pass sums chunks).
    Case {
        batch: 1,
        channels: [40, 16],
        size: [5, 6],
        stride: 1,
        padding: 1,
        dilation: 1,
        groups: 1,
        deform_groups: 2,
        modulated: true,
        spread: 1.0,
    },
];

fn geometry(case: &Case) -> DeformGeometry {
    DeformGeometry {
        conv: ConvGeometry {
            input: [case.batch, case.channels[0], case.size[0], case.size[1]],
            out_channels: case.channels[1],
            kernel: [3, 3],
            stride: [case.stride; 2],
            padding: [case.padding; 2],
            dilation: [case.dilation; 2],
            groups: case.groups,
        },
        deform_groups: case.deform_groups,
    }
}

/// Random input, offsets, masks (in (0, 1)) and weight for a case.
fn tensors(case: &Case, device: &Device) -> [Tensor<4>; 4] {
    let geometry = geometry(case);
    let normal = |shape: [usize; 4], std: f64| {
        Tensor::<4>::random(shape, Distribution::Normal(0.0, std), device)
    };
    let weight_shape = [case.channels[1], case.channels[0] / case.groups, 3, 3];
    [
        normal(geometry.conv.input, 1.0),
        normal(geometry.offset_shape(), case.spread),
        Tensor::random(
            geometry.mask_shape(),
            Distribution::Uniform(0.0, 1.0),
            device,
        ),
        normal(weight_shape, 0.3),
    ]
}

fn burn_deform(case: &Case, [x, offset, mask, weight]: [Tensor<4>; 4]) -> Tensor<4> {
    let options = DeformConvOptions::new(
        [case.stride; 2],
        [case.padding; 2],
        [case.dilation; 2],
        case.groups,
        case.deform_groups,
    );
    deform_conv2d(
        x,
        offset,
        weight,
        case.modulated.then_some(mask),
        None,
        options,
    )
}

fn ours(
    case: &Case,
    [x, offset, mask, weight]: [Tensor<4>; 4],
    bias: Option<&Tensor<1>>,
) -> Tensor<4> {
    let mask = case.modulated.then_some(mask);
    try_deform_conv2d(&x, &offset, mask.as_ref(), &weight, bias, &geometry(case))
        .expect("the project's deformable conv applies")
}

#[test]
fn deformable_conv_matches_burns() {
    let device = Device::flex();
    for (index, case) in CASES.iter().enumerate() {
        let inputs = tensors(case, &device);
        let bias = Tensor::<1>::random([case.channels[1]], Distribution::Normal(0.0, 1.0), &device);
        let expected =
            burn_deform(case, inputs.clone()) + bias.clone().reshape([1, case.channels[1], 1, 1]);
        let error = l2_relative(&values(ours(case, inputs, Some(&bias))), &values(expected));
        assert!(error < 1e-6, "case {index}: relative error {error:.2e}");
    }
}

#[test]
fn deformable_conv_gradients_match_burns() {
    let device = Device::flex().autodiff();
    for (index, case) in CASES.iter().enumerate() {
        let inputs = tensors(case, &device).map(|t| t.require_grad());
        let probe = Tensor::<4>::random(
            geometry(case).conv.output().unwrap(),
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let grads_of = |output: Tensor<4>| {
            let grads = (output * probe.clone()).sum().backward();
            let [x, offset, mask, weight] = &inputs;
            let mask_grad = case.modulated.then(|| values(mask.grad(&grads).unwrap()));
            (
                values(x.grad(&grads).unwrap()),
                values(offset.grad(&grads).unwrap()),
                mask_grad,
                values(weight.grad(&grads).unwrap()),
            )
        };
        let actual = grads_of(ours(case, inputs.clone(), None));
        let expected = grads_of(burn_deform(case, inputs.clone()));
        for (name, a, e) in [
            ("input", actual.0, expected.0),
            ("offset", actual.1, expected.1),
            ("weight", actual.3, expected.3),
        ] {
            let error = l2_relative(&a, &e);
            assert!(
                error < 1e-5,
                "case {index}: {name} gradient: relative error {error:.2e}"
            );
        }
        if let (Some(a), Some(e)) = (actual.2, expected.2) {
            let error = l2_relative(&a, &e);
            assert!(
                error < 1e-5,
                "case {index}: mask gradient: relative error {error:.2e}"
            );
        }
    }
}

/// Shapes that do not fit the geometry are left to Burn's op.
#[test]
fn deformable_conv_stands_aside_for_shapes_it_was_not_given() {
    let device = Device::flex();
    let case = &CASES[0];
    let [x, offset, mask, weight] = tensors(case, &device);
    let wrong_offset = offset.narrow(1, 0, 9);
    assert!(
        try_deform_conv2d(
            &x,
            &wrong_offset,
            Some(&mask),
            &weight,
            None,
            &geometry(case)
        )
        .is_none()
    );
}
