//! BatchNorm with batch and running statistics, + residual, + ReLU, and NaN handling.

use burn::tensor::activation::relu;
use burn::tensor::module::batch_norm_train;
use burn::tensor::{Device, Distribution, Tensor};

use super::{relative_difference, values};
use crate::flex_kernels::batch_norm::{try_batch_norm_eval, try_batch_norm_train};

/// `(shape, ReLU, residual)` cases; odd plane sizes exercise the lanes' tails.
const CASES: [([usize; 4], bool, bool); 5] = [
    ([4, 6, 7, 5], true, false),
    ([2, 3, 9, 9], false, false),
    ([1, 5, 1, 3], true, false),
    ([3, 4, 6, 7], true, true),
    ([2, 3, 5, 5], false, true),
];

/// A residual to add (requiring its gradient) when `with` holds.
fn residual(shape: [usize; 4], with: bool, device: &Device) -> Option<Tensor<4>> {
    with.then(|| Tensor::<4>::random(shape, Distribution::Normal(0.0, 2.0), device).require_grad())
}

/// Burn's ops after a norm's output: `+ residual`, then ReLU.
fn stock_tail(out: Tensor<4>, residual: Option<&Tensor<4>>, relu_after: bool) -> Tensor<4> {
    let out = match residual {
        Some(residual) => out + residual.clone(),
        None => out,
    };
    if relu_after { relu(out) } else { out }
}

#[test]
fn batch_norm_train_matches_burn_batch_norm_residual_and_relu() {
    let device = Device::flex().autodiff();
    let n = Distribution::Normal(0.0, 1.0);
    for (shape, relu_after, with_residual) in CASES {
        let x = Tensor::<4>::random(shape, Distribution::Normal(0.5, 2.0), &device).require_grad();
        let gamma = Tensor::<1>::random([shape[1]], n, &device).require_grad();
        let beta = Tensor::<1>::random([shape[1]], n, &device).require_grad();
        let residual = residual(shape, with_residual, &device);
        let stock = batch_norm_train(x.clone(), gamma.clone(), beta.clone(), 1e-5);
        let expected = stock_tail(stock.output, residual.as_ref(), relu_after);
        let weights = Tensor::<4>::random(shape, n, &device);
        let expected_grads = (expected.clone() * weights.clone()).sum().backward();
        let ours = try_batch_norm_train(&x, (&gamma, &beta), 1e-5, (residual.as_ref(), relu_after))
            .expect("flex autodiff f32");
        let label = format!("{shape:?} relu {relu_after} residual {with_residual}");
        let difference = relative_difference(ours.output.clone(), expected);
        assert!(
            difference < 1e-5,
            "{label}: output relative difference {difference:e}"
        );
        // A statistic's rounding scales with the values it sums, not with its own size: a
        // channel mean near zero is still a sum of values near 2. So each statistic's
        // difference is taken relative to the larger of itself and the mean magnitude of
        // its summands (|x| for the mean, x² for the variance).
        let inputs = values(x.clone());
        let count = inputs.len() as f32;
        let mean_abs = inputs.iter().map(|v| v.abs()).sum::<f32>() / count;
        let mean_square = inputs.iter().map(|v| v * v).sum::<f32>() / count;
        for (name, actual, reference, floor) in [
            ("mean", &ours.mean, stock.mean, mean_abs),
            ("variance", &ours.variance, stock.variance, mean_square),
        ] {
            let reference = values(reference);
            let worst = actual
                .iter()
                .zip(&reference)
                .fold(0f32, |m, (a, e)| m.max((a - e).abs() / e.abs().max(floor)));
            assert!(
                worst < 1e-5,
                "{label}: {name} relative difference {worst:e}"
            );
        }
        let grads = (ours.output * weights).sum().backward();
        let inputs = (&x, &gamma, &beta, residual.as_ref());
        assert_norm_gradients_match(&label, inputs, &grads, &expected_grads);
    }
}

/// The gradients of a norm's input, gamma, beta and residual (if any) in `grads` against
/// `expected` (1e-4).
fn assert_norm_gradients_match(
    label: &str,
    (x, gamma, beta, residual): (&Tensor<4>, &Tensor<1>, &Tensor<1>, Option<&Tensor<4>>),
    grads: &burn::tensor::Gradients,
    expected: &burn::tensor::Gradients,
) {
    let channels = gamma.dims()[0];
    let reshape = |t: Tensor<1>| t.reshape([1, channels, 1, 1]);
    let residual = residual.map(|r| ("residual", r.grad(grads), r.grad(expected)));
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
    ]
    .into_iter()
    .chain(residual)
    {
        let difference =
            relative_difference(actual.expect("gradient"), reference.expect("gradient"));
        assert!(
            difference < 1e-4,
            "{label}: {name} gradient relative difference {difference:e}"
        );
    }
}

/// BatchNorm on running statistics with trainable affine parameters (`norm_eval`),
/// + residual, + ReLU.
#[test]
fn batch_norm_eval_matches_burn_batch_norm_residual_and_relu() {
    use burn::tensor::module::batch_norm;
    let device = Device::flex().autodiff();
    let n = Distribution::Normal(0.0, 1.0);
    for (shape, relu_after, with_residual) in CASES {
        let channels = shape[1];
        let residual = residual(shape, with_residual, &device);
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
        let expected = stock_tail(stock, residual.as_ref(), relu_after);
        let weights = Tensor::<4>::random(shape, n, &device);
        let expected_grads = (expected.clone() * weights.clone()).sum().backward();
        let ours = try_batch_norm_eval(
            &x,
            (&gamma, &beta),
            (&values(mean), &values(variance)),
            1e-5,
            (residual.as_ref(), relu_after),
        )
        .expect("flex autodiff f32");
        let label = format!("{shape:?} relu {relu_after} residual {with_residual}");
        let difference = relative_difference(ours.clone(), expected);
        assert!(
            difference < 1e-5,
            "{label}: output relative difference {difference:e}"
        );
        let grads = (ours * weights).sum().backward();
        let inputs = (&x, &gamma, &beta, residual.as_ref());
        assert_norm_gradients_match(&label, inputs, &grads, &expected_grads);
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
    let ours = try_batch_norm_eval(&x, (&gamma, &beta), (&mean, &variance), 1e-5, (None, true))
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
