//! The project's own CPU kernels (`burn_resnet::cpu`) against Burn's stock ops on flex, and the
//! cases where they must stand aside.

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::activation::relu;
use burn::tensor::module::{batch_norm_train, max_pool2d};
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::{Device, Distribution, Tensor};
use burn_resnet::cpu::{
    try_batch_norm_eval, try_batch_norm_train, try_conv2d, try_conv2d_autodiff,
    try_conv2d_batch_norm, try_max_pool2d,
};

use crate::common::values;

/// Largest absolute difference over the largest magnitude of `expected`.
fn relative_difference(actual: Tensor<4>, expected: Tensor<4>) -> f32 {
    assert_eq!(actual.dims(), expected.dims(), "shape");
    let (actual, expected) = (values(actual), values(expected));
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = actual
        .iter()
        .zip(&expected)
        .fold(0f32, |m, (a, e)| m.max((a - e).abs()));
    diff / scale
}

struct ConvCase {
    batch: usize,
    channels: [usize; 2],
    size: [usize; 2],
    kernel: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
    residual: bool,
    relu: bool,
    groups: usize,
}

fn conv(case: &ConvCase, device: &Device) -> Conv2d {
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
        let actual = try_conv2d(&conv, &x, residual.as_ref(), case.relu).unwrap_or_else(|| {
            panic!("case {index}: the fused conv declined a plain-flex f32 conv")
        });
        let difference = relative_difference(actual, expected);
        assert!(
            difference < 1e-5,
            "case {index}: relative difference {difference:e}"
        );
    }
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
        let actual = try_conv2d_batch_norm(&conv, &norm, &x, residual.as_ref(), case.relu)
            .expect("plain flex f32");
        let difference = relative_difference(actual, expected);
        assert!(
            difference < 1e-5,
            "case {index}: relative difference {difference:e}"
        );
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
fn batch_norm_train_matches_burn_batch_norm_and_relu() {
    let device = Device::flex().autodiff();
    let n = Distribution::Normal(0.0, 1.0);
    for (shape, relu_after) in [
        ([4, 6, 7, 5], true),
        ([2, 3, 9, 9], false),
        ([1, 5, 1, 3], true),
    ] {
        let x = Tensor::<4>::random(shape, Distribution::Normal(0.5, 2.0), &device).require_grad();
        let gamma = Tensor::<1>::random([shape[1]], n, &device).require_grad();
        let beta = Tensor::<1>::random([shape[1]], n, &device).require_grad();
        let stock = batch_norm_train(x.clone(), gamma.clone(), beta.clone(), 1e-5);
        let expected = if relu_after {
            relu(stock.output)
        } else {
            stock.output
        };
        let weights = Tensor::<4>::random(shape, n, &device);
        let expected_grads = (expected.clone() * weights.clone()).sum().backward();
        let ours =
            try_batch_norm_train(&x, &gamma, &beta, 1e-5, relu_after).expect("flex autodiff f32");
        let label = format!("{shape:?} relu {relu_after}");
        let difference = relative_difference(ours.output.clone(), expected);
        assert!(
            difference < 1e-5,
            "{label}: output relative difference {difference:e}"
        );
        for (name, actual, reference) in [
            ("mean", &ours.mean, stock.mean),
            ("variance", &ours.variance, stock.variance),
        ] {
            let reference = values(reference);
            let worst = actual
                .iter()
                .zip(&reference)
                .fold(0f32, |m, (a, e)| m.max((a - e).abs() / e.abs().max(1e-3)));
            assert!(
                worst < 1e-5,
                "{label}: {name} relative difference {worst:e}"
            );
        }
        let grads = (ours.output * weights).sum().backward();
        assert_norm_gradients_match(&label, (&x, &gamma, &beta), &grads, &expected_grads);
    }
}

/// The gradients of a norm's input, gamma and beta in `grads` against `expected` (1e-4).
fn assert_norm_gradients_match(
    label: &str,
    (x, gamma, beta): (&Tensor<4>, &Tensor<1>, &Tensor<1>),
    grads: &burn::tensor::Gradients,
    expected: &burn::tensor::Gradients,
) {
    let channels = gamma.dims()[0];
    let reshape = |t: Tensor<1>| t.reshape([1, channels, 1, 1]);
    for (name, actual, reference) in [
        ("input", x.grad(grads), x.grad(expected)),
        (
            "gamma",
            gamma.grad(grads).map(reshape),
            gamma.grad(expected).map(reshape),
        ),
        (
            "beta",
            beta.grad(grads).map(reshape),
            beta.grad(expected).map(reshape),
        ),
    ] {
        let difference =
            relative_difference(actual.expect("gradient"), reference.expect("gradient"));
        assert!(
            difference < 1e-4,
            "{label}: {name} gradient relative difference {difference:e}"
        );
    }
}

/// BatchNorm on running statistics with trainable affine parameters (`norm_eval`), + ReLU.
#[test]
fn batch_norm_eval_matches_burn_batch_norm_and_relu() {
    use burn::tensor::module::batch_norm;
    let device = Device::flex().autodiff();
    let n = Distribution::Normal(0.0, 1.0);
    // Odd plane sizes exercise the lanes' tails.
    for (shape, relu_after) in [
        ([4, 6, 7, 5], true),
        ([2, 3, 9, 9], false),
        ([1, 5, 4, 4], true),
    ] {
        let channels = shape[1];
        let x = Tensor::<4>::random(shape, Distribution::Normal(0.5, 2.0), &device).require_grad();
        let gamma = Tensor::<1>::random([channels], n, &device).require_grad();
        let beta = Tensor::<1>::random([channels], n, &device).require_grad();
        let mean = Tensor::<1>::random([channels], n, &device);
        let variance = Tensor::<1>::random([channels], Distribution::Uniform(0.5, 2.0), &device);
        let stock = batch_norm(
            x.clone(),
            gamma.clone(),
            beta.clone(),
            mean.clone(),
            variance.clone(),
            1e-5,
        );
        let expected = if relu_after { relu(stock) } else { stock };
        let weights = Tensor::<4>::random(shape, n, &device);
        let expected_grads = (expected.clone() * weights.clone()).sum().backward();
        let ours = try_batch_norm_eval(
            &x,
            &gamma,
            &beta,
            &values(mean),
            &values(variance),
            1e-5,
            relu_after,
        )
        .expect("flex autodiff f32");
        let label = format!("{shape:?} relu {relu_after}");
        let difference = relative_difference(ours.clone(), expected);
        assert!(
            difference < 1e-5,
            "{label}: output relative difference {difference:e}"
        );
        let grads = (ours * weights).sum().backward();
        assert_norm_gradients_match(&label, (&x, &gamma, &beta), &grads, &expected_grads);
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
        let ndarray = burn_resnet::BackendKind::Ndarray.device().expect("enabled");
        let conv = plain.fork(&ndarray);
        assert!(
            try_conv2d(&conv, &x.fork(&ndarray), None, false).is_none(),
            "ndarray device"
        );
    }
}

#[test]
fn max_pool_matches_burn_max_pool() {
    let device = Device::flex();
    for (shape, kernel, stride, padding) in [
        ([2, 5, 17, 12], 3, 2, 1),
        ([1, 3, 9, 10], 2, 2, 0),
        ([1, 2, 8, 8], 3, 1, 1),
    ] {
        let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let options = MaxPoolOptions::new([kernel; 2])
            .with_stride([stride; 2])
            .with_padding([padding; 2]);
        let expected = max_pool2d(x.clone(), options);
        let actual = try_max_pool2d(&x, kernel, stride, padding).expect("plain flex f32");
        assert_eq!(
            values(actual),
            values(expected),
            "{shape:?} k{kernel} s{stride} p{padding}"
        );
    }
    assert!(
        try_max_pool2d(&Tensor::<4>::ones([1, 1, 4, 4], &device), 3, 2, 2).is_none(),
        "padding over half the window"
    );
}

/// The fused ReLU keeps NaN and its backward is PyTorch's select: the gradient passes where the
/// output is NaN, and is exactly 0 where the output is `<= 0`, even for an infinite incoming
/// gradient (a multiply by a 0/1 mask would give 0 and NaN there). Against Burn's stock ReLU,
/// which does the same, on an eval-mode BatchNorm with a NaN input element.
#[test]
fn batch_norm_relu_keeps_nan_and_selects_gradients_as_pytorch() {
    let device = Device::flex().autodiff();
    let shape = [2, 3, 4, 5];
    let mut data = values(Tensor::<4>::random(
        shape,
        Distribution::Normal(0.0, 1.0),
        &Device::flex(),
    ));
    data[7] = f32::NAN;
    let x = Tensor::<4>::from_data(burn::tensor::TensorData::new(data.clone(), shape), &device)
        .require_grad();
    let gamma = Tensor::<1>::from_data([1.5f32, -0.5, 2.0], &device).require_grad();
    let beta = Tensor::<1>::from_data([0.1f32, 0.2, -0.3], &device).require_grad();
    let (mean, variance) = ([0.1f32, -0.2, 0.3], [1.0f32, 2.0, 0.5]);
    let ours = try_batch_norm_eval(&x, &gamma, &beta, &mean, &variance, 1e-5, true)
        .expect("flex autodiff f32");
    let stock = relu(burn::tensor::module::batch_norm(
        x.clone(),
        gamma.clone(),
        beta.clone(),
        Tensor::from_data(mean, &device),
        Tensor::from_data(variance, &device),
        1e-5,
    ));
    let (out, expected) = (values(ours.clone()), values(stock.clone()));
    assert!(
        out[7].is_nan() && expected[7].is_nan(),
        "ReLU of NaN: {} (stock {})",
        out[7],
        expected[7]
    );
    // An infinite incoming gradient where the ReLU blocked (output 0).
    let blocked = expected
        .iter()
        .position(|v| *v == 0.0)
        .expect("a negative pre-activation");
    let mut upstream = vec![1.0f32; data.len()];
    upstream[blocked] = f32::INFINITY;
    let upstream = Tensor::<4>::from_data(burn::tensor::TensorData::new(upstream, shape), &device);
    let grad_x = |output: Tensor<4>| {
        values(
            x.grad(&(output * upstream.clone()).sum().backward())
                .unwrap(),
        )
    };
    let (ours, stock) = (grad_x(ours), grad_x(stock));
    for (i, (a, e)) in ours.iter().zip(&stock).enumerate() {
        assert_eq!(a.is_nan(), e.is_nan(), "dx[{i}]: {a} vs stock {e}");
        assert!(
            e.is_nan() || (a - e).abs() <= 1e-5 * e.abs().max(1.0),
            "dx[{i}]: {a} vs stock {e}"
        );
    }
    assert!(
        ours[7].is_finite() && ours[7] != 0.0,
        "the gradient passes a NaN output: dx[7] = {}",
        ours[7]
    );
    assert_eq!(
        ours[blocked], 0.0,
        "an Inf gradient where the ReLU blocked gives 0"
    );
}
