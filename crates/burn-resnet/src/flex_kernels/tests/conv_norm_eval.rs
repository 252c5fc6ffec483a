//! The conv + eval-mode BatchNorm (+ residual, + ReLU) op against Burn's stock ops, and split
//! batches against the whole.

use burn::module::Param;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2dConfig;
use burn::tensor::activation::relu;
use burn::tensor::module::{batch_norm, conv2d};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor};

use super::{max_relative, values};
use crate::flex_kernels::batch_norm::try_batch_norm_eval;
use crate::flex_kernels::batch_norm_affine;
use crate::flex_kernels::conv::norm_eval::{EvalNorm, try_conv2d_norm_eval};
use crate::flex_kernels::conv::{ConvGeometry, try_conv2d_autodiff};

/// `(input, out channels, kernel, stride, groups, residual, relu)`.
type Case = ([usize; 4], usize, usize, usize, usize, bool, bool);

const CASES: [Case; 10] = [
    ([4, 16, 10, 10], 24, 3, 1, 1, false, true),
    ([4, 8, 3, 3], 8, 3, 1, 1, false, true),
    ([4, 8, 7, 5], 12, 3, 1, 1, false, true),
    ([4, 16, 9, 7], 16, 3, 1, 1, true, true),
    ([4, 8, 9, 9], 20, 1, 1, 1, false, false),
    ([4, 8, 10, 10], 12, 3, 2, 1, false, true),
    ([4, 16, 6, 6], 32, 1, 1, 1, true, true),
    ([4, 16, 8, 8], 32, 3, 1, 4, false, true),
    // A residual without a ReLU, on the Winograd and the GEMM conv.
    ([4, 8, 7, 6], 8, 3, 1, 1, true, false),
    ([4, 8, 5, 5], 12, 1, 1, 1, true, false),
];

fn geometry(input: [usize; 4], out: usize, k: usize, stride: usize, groups: usize) -> ConvGeometry {
    ConvGeometry {
        input,
        out_channels: out,
        kernel: [k, k],
        stride: [stride, stride],
        padding: [k / 2, k / 2],
        dilation: [1, 1],
        groups,
    }
}

#[test]
fn conv_norm_eval_matches_burn_conv_batch_norm_residual_and_relu() {
    matches_separate_and_stock_ops(false);
}

#[test]
fn conv_norm_eval_with_trainable_affine_gives_the_separate_ops_numbers() {
    matches_separate_and_stock_ops(true);
}

/// The op (the norm's weight and bias training when `trainable`) against the project's conv
/// and norm ops, to the bit (output and every gradient), and against Burn's stock ops within
/// rounding.
fn matches_separate_and_stock_ops(trainable: bool) {
    let device = Device::flex().autodiff();
    let n = Distribution::Normal(0.0, 1.0);
    for (case, (input, out, k, stride, groups, with_residual, relu_after)) in
        CASES.into_iter().enumerate()
    {
        let g = geometry(input, out, k, stride, groups);
        let output = g.output().unwrap();
        let x = Tensor::<4>::random(input, n, &device).require_grad();
        let w = Tensor::<4>::random([out, input[1] / groups, k, k], n, &device).require_grad();
        // Some γ exactly 0 (a zero-initialised last norm) in one case.
        let gamma = match case {
            3 => Tensor::<1>::random([out], n, &device).mask_fill(
                Tensor::<1>::random([out], Distribution::Uniform(0.0, 1.0), &device)
                    .lower_elem(0.5),
                0.0,
            ),
            _ => Tensor::<1>::random([out], n, &device),
        };
        let beta = Tensor::<1>::random([out], n, &device);
        let (gamma, beta) = match trainable {
            true => (gamma.require_grad(), beta.require_grad()),
            false => (gamma, beta),
        };
        let mean: Vec<f32> = values(Tensor::<1>::random(
            [out],
            Distribution::Normal(0.5, 1.0),
            &device,
        ));
        let variance: Vec<f32> = values(Tensor::<1>::random(
            [out],
            Distribution::Uniform(0.2, 3.0),
            &device,
        ));
        let residual = with_residual.then(|| {
            Tensor::<4>::random(output, Distribution::Normal(0.0, 2.0), &device).require_grad()
        });
        let (gamma_values, beta_values) = (values(gamma.clone()), values(beta.clone()));
        let (scale, shift) = batch_norm_affine(&gamma_values, &beta_values, &mean, &variance, 1e-5);
        let norm = match trainable {
            true => EvalNorm::Trainable {
                gamma: &gamma,
                beta: &beta,
                mean: &mean,
                variance: &variance,
                epsilon: 1e-5,
            },
            false => EvalNorm::Fixed {
                scale: &scale,
                shift: &shift,
            },
        };
        let tail = (residual.as_ref(), relu_after);
        let ours = try_conv2d_norm_eval(&x, &w, &g, norm, tail).expect("flex autodiff f32");

        // The project's conv op, then its norm op: the same numbers, to the bit.
        let mut conv = Conv2dConfig::new([input[1], out], [k, k])
            .with_stride([stride; 2])
            .with_groups(groups)
            .with_padding(PaddingConfig2d::Explicit(k / 2, k / 2, k / 2, k / 2))
            .with_bias(false)
            .init(&device);
        conv.weight = Param::from_tensor(w.clone());
        let z = try_conv2d_autodiff(&conv, &x).expect("flex autodiff f32");
        let separate = try_batch_norm_eval(&z, (&gamma, &beta), (&mean, &variance), 1e-5, tail)
            .expect("flex autodiff f32");
        let label = format!("case {case}, trainable {trainable}");
        assert!(
            values(ours.clone()) == values(separate.clone()),
            "{label}: output differs from the conv and norm ops'"
        );

        let options = ConvOptions::new([stride; 2], [k / 2; 2], [1, 1], groups);
        let plain = |v: &[f32]| Tensor::<1>::from_floats(v, &device);
        let mut expected = batch_norm(
            conv2d(x.clone(), w.clone(), None, options),
            gamma.clone(),
            beta.clone(),
            plain(&mean),
            plain(&variance),
            1e-5,
        );
        if let Some(r) = &residual {
            expected = expected + r.clone();
        }
        if relu_after {
            expected = relu(expected);
        }
        let d = max_relative(&values(ours.clone()), &values(expected.clone()));
        assert!(d < 1e-5, "{label}: output {d:e}");
        let loss_weights = Tensor::<4>::random(output, n, &device);
        let backward = |y: Tensor<4>| (y * loss_weights.clone()).sum().backward();
        let (ours_grads, separate_grads, expected_grads) =
            (backward(ours), backward(separate), backward(expected));
        let mut gradients: Vec<(&str, [Vec<f32>; 3])> = vec![
            (
                "x",
                [&ours_grads, &separate_grads, &expected_grads].map(|g| grad(&x, g)),
            ),
            (
                "weight",
                [&ours_grads, &separate_grads, &expected_grads].map(|g| grad(&w, g)),
            ),
        ];
        if let Some(r) = &residual {
            let all = [&ours_grads, &separate_grads, &expected_grads].map(|g| grad(r, g));
            gradients.push(("residual", all));
        }
        if trainable {
            for (name, param) in [("gamma", &gamma), ("beta", &beta)] {
                let all = [&ours_grads, &separate_grads, &expected_grads]
                    .map(|g| values(param.grad(g).expect("a gradient")));
                gradients.push((name, all));
            }
        }
        for (name, [ours, separate, expected]) in gradients {
            assert!(
                ours == separate,
                "{label}: {name} gradient differs from the ops'"
            );
            let d = max_relative(&ours, &expected);
            assert!(d < 1e-4, "{label}: {name} gradient {d:e}");
        }
    }
}

fn grad(t: &Tensor<4>, grads: &burn::tensor::Gradients) -> Vec<f32> {
    values(t.grad(grads).expect("a gradient"))
}

#[test]
fn conv_norm_eval_gives_each_image_the_same_numbers_in_any_batch() {
    let device = Device::flex().autodiff();
    let n = Distribution::Normal(0.0, 1.0);
    for (case, (input, out, k, stride, groups, with_residual, relu_after)) in
        CASES.into_iter().enumerate()
    {
        let g = geometry(input, out, k, stride, groups);
        let output = g.output().unwrap();
        let x = Tensor::<4>::random(input, n, &device);
        let w = Tensor::<4>::random([out, input[1] / groups, k, k], n, &device).require_grad();
        let (scale, shift) = (
            values(Tensor::<1>::random([out], n, &device)),
            values(Tensor::<1>::random([out], n, &device)),
        );
        let residual = Tensor::<4>::random(output, n, &device);
        let loss_weights = Tensor::<4>::random(output, n, &device);
        let run = |range: std::ops::Range<usize>| {
            let x = x.clone().slice([range.clone()]).require_grad();
            let r = with_residual.then(|| residual.clone().slice([range.clone()]).require_grad());
            let g = geometry(
                [range.len(), input[1], input[2], input[3]],
                out,
                k,
                stride,
                groups,
            );
            let norm = EvalNorm::Fixed {
                scale: &scale,
                shift: &shift,
            };
            let y = try_conv2d_norm_eval(&x, &w, &g, norm, (r.as_ref(), relu_after)).unwrap();
            let grads = (y.clone() * loss_weights.clone().slice([range]))
                .sum()
                .backward();
            (
                values(y),
                values(x.grad(&grads).unwrap()),
                values(w.grad(&grads).unwrap()),
            )
        };
        let (y, dx, dw) = run(0..4);
        let (y0, dx0, dw0) = run(0..2);
        let (y1, dx1, dw1) = run(2..4);
        let label = format!("case {case}");
        assert_eq!(y, [y0, y1].concat(), "{label}: outputs");
        assert_eq!(dx, [dx0, dx1].concat(), "{label}: input gradients");
        let dw_sum: Vec<f32> = dw0.iter().zip(&dw1).map(|(a, b)| a + b).collect();
        let d = max_relative(&dw, &dw_sum);
        assert!(d < 1e-6, "{label}: weight gradient {d:e}");
    }
}
