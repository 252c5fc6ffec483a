//! BatchNorm with batch and running statistics, + ReLU, and NaN handling.

use burn::tensor::activation::relu;
use burn::tensor::module::batch_norm_train;
use burn::tensor::{Device, Distribution, Tensor};

use super::{relative_difference, values};
use crate::flex_kernels::batch_norm::{try_batch_norm_eval, try_batch_norm_train};

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
