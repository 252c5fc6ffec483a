//! The conv with its epilogue, eval-mode BatchNorm and gradients.

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Distribution, Tensor};

use super::relative_difference;
use crate::ConvKernel;
use crate::flex_kernels::conv::{try_conv2d, try_conv2d_autodiff, try_conv2d_batch_norm};

pub(super) struct ConvCase {
    pub(super) batch: usize,
    pub(super) channels: [usize; 2],
    pub(super) size: [usize; 2],
    pub(super) kernel: usize,
    pub(super) stride: usize,
    pub(super) padding: usize,
    pub(super) dilation: usize,
    pub(super) residual: bool,
    pub(super) relu: bool,
    pub(super) groups: usize,
}

pub(super) fn conv(case: &ConvCase, device: &Device) -> Conv2d {
    let p = case.padding;
    Conv2dConfig::new(case.channels, [case.kernel; 2])
        .with_stride([case.stride; 2])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_dilation([case.dilation; 2])
        .with_groups(case.groups)
        .with_bias(true)
        .init(device)
}

#[test]
fn fused_conv_matches_burn_conv_bias_residual_relu() {
    let device = Device::flex();
    let case =
        |batch, channels, size, kernel, stride, padding, dilation, residual, relu| ConvCase {
            batch,
            channels,
            size,
            kernel,
            stride,
            padding,
            dilation,
            residual,
            relu,
            groups: 1,
        };
    let cases = [
        // 3x3 at batch 1 with few row blocks: the output channels are split across threads.
        case(1, [16, 96], [14, 14], 3, 1, 1, 1, true, true),
        // Odd sizes, stride 2.
        case(2, [8, 24], [17, 13], 3, 2, 1, 1, false, true),
        // The 7x7 stride-2 stem conv on 3 channels.
        case(1, [3, 64], [40, 38], 7, 2, 3, 1, false, true),
        // Pointwise (read in place) with a residual; 1x1 stride 2 (a shortcut).
        case(2, [32, 64], [9, 9], 1, 1, 0, 1, true, true),
        case(1, [32, 64], [9, 9], 1, 2, 0, 1, false, false),
        // Dilated 3x3 (dilated stages), unpadded 3x3.
        case(1, [8, 16], [12, 12], 3, 1, 2, 2, false, true),
        case(2, [8, 16], [12, 11], 3, 1, 0, 1, true, false),
        // Output channels that are not a multiple of a tile's 8, positions past a tile's 48,
        // a pointwise tail tile, and a deep conv (several depth blocks of the micro-kernels).
        case(3, [5, 13], [7, 9], 3, 1, 1, 1, true, true),
        case(1, [300, 20], [10, 5], 1, 1, 0, 1, true, true),
        case(1, [40, 12], [6, 7], 3, 1, 1, 1, false, true),
        // Wide rows: several row blocks per image.
        case(1, [64, 40], [20, 64], 3, 1, 1, 1, true, true),
        // Grouped (ResNeXt): 3x3 stride 2 with 4 groups, and 8 groups wide enough to split.
        ConvCase {
            groups: 4,
            ..case(2, [16, 24], [11, 9], 3, 2, 1, 1, false, true)
        },
        ConvCase {
            groups: 8,
            ..case(1, [64, 512], [7, 7], 3, 1, 1, 1, true, true)
        },
    ];
    for (index, case) in cases.iter().enumerate() {
        let conv = conv(case, &device);
        let n = Distribution::Normal(0.0, 1.0);
        let x = Tensor::<4>::random(
            [case.batch, case.channels[0], case.size[0], case.size[1]],
            n,
            &device,
        );
        let stock = conv.forward(x.clone());
        let residual = case
            .residual
            .then(|| Tensor::<4>::random(stock.dims(), n, &device));
        let mut expected = stock;
        if let Some(residual) = &residual {
            expected = expected + residual.clone();
        }
        if case.relu {
            expected = relu(expected);
        }
        for kernel in supported_kernels() {
            let actual = kernel
                .force(|| try_conv2d(&conv, &x, residual.as_ref(), case.relu))
                .flatten()
                .unwrap_or_else(|| {
                    panic!("case {index}: the fused conv declined a plain-flex f32 conv")
                });
            let difference = relative_difference(actual, expected.clone());
            assert!(
                difference < 1e-5,
                "case {index}, {kernel}: relative difference {difference:e}"
            );
        }
    }
}

/// Every conv kernel this CPU runs (the default and each micro-kernel).
pub(super) fn supported_kernels() -> Vec<ConvKernel> {
    ConvKernel::ALL
        .into_iter()
        .filter(|k| k.is_supported())
        .collect()
}

#[test]
fn conv_with_eval_batch_norm_in_the_epilogue_matches_burn_conv_then_batch_norm() {
    let device = Device::flex();
    let n = Distribution::Normal(0.0, 1.0);
    for (index, (residual, relu_after, conv_bias)) in [
        (true, true, false),
        (false, true, true),
        (false, false, false),
    ]
    .into_iter()
    .enumerate()
    {
        let case = ConvCase {
            batch: 2,
            channels: [8, 16],
            size: [9, 7],
            kernel: 3,
            stride: 1,
            padding: 1,
            dilation: 1,
            residual,
            relu: relu_after,
            groups: 1,
        };
        let mut conv = conv(&case, &device);
        if !conv_bias {
            conv.bias = None;
        }
        let mut norm = burn::nn::BatchNormConfig::new(16).init(&device);
        norm.gamma = burn::module::Param::from_tensor(Tensor::random([16], n, &device));
        norm.beta = burn::module::Param::from_tensor(Tensor::random([16], n, &device));
        norm.running_mean = burn::module::RunningState::new(Tensor::random([16], n, &device));
        norm.running_var = burn::module::RunningState::new(Tensor::random(
            [16],
            Distribution::Uniform(0.5, 2.0),
            &device,
        ));
        let x = Tensor::<4>::random([2, 8, 9, 7], n, &device);
        let stock = conv.forward(x.clone());
        let residual = case
            .residual
            .then(|| Tensor::<4>::random(stock.dims(), n, &device));
        let mut expected = burn::tensor::module::batch_norm(
            stock,
            norm.gamma.val(),
            norm.beta.val(),
            norm.running_mean.value(),
            norm.running_var.value(),
            norm.epsilon,
        );
        if let Some(residual) = &residual {
            expected = expected + residual.clone();
        }
        if case.relu {
            expected = relu(expected);
        }
        for kernel in supported_kernels() {
            let actual = kernel
                .force(|| try_conv2d_batch_norm(&conv, &norm, &x, residual.as_ref(), case.relu))
                .flatten()
                .expect("plain flex f32");
            let difference = relative_difference(actual, expected.clone());
            assert!(
                difference < 1e-5,
                "case {index}, {kernel}: relative difference {difference:e}"
            );
        }
    }
}

#[test]
fn differentiable_conv_matches_burn_conv_gradients() {
    let device = Device::flex().autodiff();
    let case = |batch, channels, size, kernel, stride, padding, dilation| ConvCase {
        batch,
        channels,
        size,
        kernel,
        stride,
        padding,
        dilation,
        residual: false,
        relu: false,
        groups: 1,
    };
    let cases = [
        case(2, [8, 24], [17, 13], 3, 2, 1, 1),
        case(1, [3, 16], [20, 18], 7, 2, 3, 1),
        case(3, [16, 32], [9, 9], 1, 1, 0, 1),
        case(2, [16, 32], [9, 10], 1, 2, 0, 1),
        case(1, [8, 16], [12, 12], 3, 1, 2, 2),
        case(2, [8, 8], [12, 11], 3, 1, 0, 1),
        ConvCase {
            groups: 4,
            ..case(2, [16, 24], [11, 9], 3, 2, 1, 1)
        },
        ConvCase {
            groups: 2,
            ..case(2, [8, 16], [6, 6], 1, 1, 0, 1)
        },
    ];
    for (index, case) in cases.iter().enumerate() {
        let p = case.padding;
        let conv = Conv2dConfig::new(case.channels, [case.kernel; 2])
            .with_stride([case.stride; 2])
            .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
            .with_dilation([case.dilation; 2])
            .with_groups(case.groups)
            .with_bias(false)
            .init(&device);
        let n = Distribution::Normal(0.0, 1.0);
        let x = Tensor::<4>::random(
            [case.batch, case.channels[0], case.size[0], case.size[1]],
            n,
            &device,
        )
        .require_grad();
        let stock = conv.forward(x.clone());
        // A loss that weighs every output differently, so that every gradient entry is tested.
        let weights = Tensor::<4>::random(stock.dims(), n, &device);
        let expected_grads = (stock.clone() * weights.clone()).sum().backward();
        let ours =
            try_conv2d_autodiff(&conv, &x).unwrap_or_else(|| panic!("case {index}: declined"));
        let difference = relative_difference(ours.clone(), stock);
        assert!(
            difference < 1e-5,
            "case {index}: forward relative difference {difference:e}"
        );
        let grads = (ours * weights).sum().backward();
        for (name, actual, expected) in [
            ("input", x.grad(&grads), x.grad(&expected_grads)),
            (
                "weight",
                conv.weight.val().grad(&grads),
                conv.weight.val().grad(&expected_grads),
            ),
        ] {
            let (actual, expected) = (actual.expect("gradient"), expected.expect("gradient"));
            let difference = relative_difference(actual, expected);
            assert!(
                difference < 1e-5,
                "case {index}: {name} gradient relative difference {difference:e}"
            );
        }
    }
}

#[test]
fn fused_conv_stands_aside_where_it_does_not_apply() {
    let device = Device::flex();
    let x = Tensor::<4>::ones([1, 8, 6, 6], &device);
    let same = Conv2dConfig::new([8, 8], [3, 3])
        .with_padding(PaddingConfig2d::Same)
        .init(&device);
    assert!(
        try_conv2d(&same, &x, None, false).is_none(),
        "`Same` padding"
    );
    let plain = Conv2dConfig::new([8, 8], [3, 3]).init(&device);
    let wrong_residual = Tensor::<4>::ones([1, 8, 6, 6], &device);
    assert!(
        try_conv2d(&plain, &x, Some(&wrong_residual), false).is_none(),
        "residual shape"
    );
    // Autodiff: the stock ops keep the graph.
    let autodiff = device.clone().autodiff();
    let conv_ad = Conv2dConfig::new([8, 8], [3, 3]).init(&autodiff);
    let x_ad = Tensor::<4>::ones([1, 8, 6, 6], &autodiff);
    assert!(
        try_conv2d(&conv_ad, &x_ad, None, false).is_none(),
        "autodiff device"
    );
    #[cfg(feature = "ndarray")]
    {
        let ndarray = crate::BackendKind::Ndarray.device().expect("enabled");
        let conv = plain.fork(&ndarray);
        assert!(
            try_conv2d(&conv, &x.fork(&ndarray), None, false).is_none(),
            "ndarray device"
        );
    }
}

/// A channel slice of a batch (Res2Net's splits) is not contiguous: the kernels copy it and
/// match Burn's conv, forward (plain flex) and backward (the gradient reaches the whole tensor
/// the slice came from).
#[test]
fn conv_of_a_channel_slice_matches_burn_conv() {
    let (plain, device) = (Device::flex(), Device::flex().autodiff());
    let n = Distribution::Normal(0.0, 1.0);
    let plain_conv = Conv2dConfig::new([4, 6], [3, 3])
        .with_stride([2, 2])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_bias(false)
        .init(&plain);
    let whole = Tensor::<4>::random([2, 12, 9, 7], n, &plain);
    let slice = |t: &Tensor<4>| t.clone().narrow(1, 4, 4);

    let ours = try_conv2d(&plain_conv, &slice(&whole), None, false).expect("a slice is taken");
    let difference = relative_difference(ours, plain_conv.forward(slice(&whole)));
    assert!(
        difference < 1e-5,
        "forward relative difference {difference:e}"
    );

    let conv = plain_conv.fork(&device).train();
    let whole = Tensor::<4>::from_data(whole.to_data(), &device).require_grad();
    let stock = conv.forward(slice(&whole));
    let weights = Tensor::<4>::random(stock.dims(), n, &device);
    let expected_grads = (stock * weights.clone()).sum().backward();
    let ours = try_conv2d_autodiff(&conv, &slice(&whole)).expect("a slice is taken");
    let grads = (ours * weights).sum().backward();
    for (name, actual, expected) in [
        ("input", whole.grad(&grads), whole.grad(&expected_grads)),
        (
            "weight",
            conv.weight.val().grad(&grads),
            conv.weight.val().grad(&expected_grads),
        ),
    ] {
        let (actual, expected) = (actual.expect("gradient"), expected.expect("gradient"));
        let difference = relative_difference(actual, expected);
        assert!(
            difference < 1e-5,
            "{name} gradient relative difference {difference:e}"
        );
    }
}
