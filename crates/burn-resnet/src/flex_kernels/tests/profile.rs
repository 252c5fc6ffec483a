//! Where a training step's time goes per op kind, Burn's stock ops beside the project's kernels,
//! on ResNet-50 layer1's and layer3's shapes at batch 8. A profile, not a check (ignored by
//! default): `cargo test --release --workspace --features burn-resnet/ndarray,burn-resnet/wgpu
//! --lib -- --ignored --nocapture op_profile`.

use std::time::Instant;

use burn::tensor::activation::relu;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor};

use crate::flex_kernels::batch_norm::{try_batch_norm_eval, try_batch_norm_train};
use crate::flex_kernels::conv::try_conv2d_autodiff;

fn time(label: &str, runs: usize, mut f: impl FnMut()) {
    f();
    let started = Instant::now();
    for _ in 0..runs {
        f();
    }
    println!(
        "{label:<48} {:8.3} ms",
        started.elapsed().as_secs_f64() * 1e3 / runs as f64
    );
}

#[test]
#[ignore = "a profile: run with --release --ignored --nocapture"]
fn op_profile() {
    let device = Device::flex().autodiff();
    let n = Distribution::Normal(0.0, 1.0);
    for (batch, width, side) in [(8, 64, 56), (8, 256, 14)] {
        println!("batch {batch}, {width} channels, {side}x{side}");
        let x = Tensor::<4>::random([batch, width, side, side], n, &device).require_grad();
        let w3 = Tensor::<4>::random([width, width, 3, 3], n, &device).require_grad();
        let w1 = Tensor::<4>::random([width * 4, width, 1, 1], n, &device).require_grad();
        let o3 = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
        let o1 = ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
        let runs = 5;
        time("  conv3x3 forward", runs, || {
            let _ = conv2d(x.clone(), w3.clone(), None, o3.clone())
                .sum()
                .into_scalar::<f32>();
        });
        time("  conv3x3 forward + backward", runs, || {
            let _ = conv2d(x.clone(), w3.clone(), None, o3.clone())
                .sum()
                .backward();
        });
        time("  conv1x1 x4 forward", runs, || {
            let _ = conv2d(x.clone(), w1.clone(), None, o1.clone())
                .sum()
                .into_scalar::<f32>();
        });
        time("  conv1x1 x4 forward + backward", runs, || {
            let _ = conv2d(x.clone(), w1.clone(), None, o1.clone())
                .sum()
                .backward();
        });
        let conv3 = burn::nn::conv::Conv2dConfig::new([width, width], [3, 3])
            .with_padding(burn::nn::PaddingConfig2d::Explicit(1, 1, 1, 1))
            .with_bias(false)
            .init(&device);
        let conv1 = burn::nn::conv::Conv2dConfig::new([width, width * 4], [1, 1])
            .with_bias(false)
            .init(&device);
        time("  project conv3x3 forward + backward", runs, || {
            let _ = try_conv2d_autodiff(&conv3, &x).unwrap().sum().backward();
        });
        time("  project conv1x1 x4 forward + backward", runs, || {
            let _ = try_conv2d_autodiff(&conv1, &x).unwrap().sum().backward();
        });
        let gamma = Tensor::<1>::ones([width], &device).require_grad();
        let beta = Tensor::<1>::zeros([width], &device).require_grad();
        let bn = |x: Tensor<4>| {
            let mean = x.clone().mean_dim(0).mean_dim(2).mean_dim(3);
            let centered = x - mean;
            let var = centered
                .clone()
                .square()
                .mean_dim(0)
                .mean_dim(2)
                .mean_dim(3);
            let normed = centered / (var + 1e-5).sqrt();
            normed * gamma.clone().reshape([1, width, 1, 1])
                + beta.clone().reshape([1, width, 1, 1])
        };
        time(
            "  batch-norm (train) + relu forward + backward",
            runs,
            || {
                let _ = relu(bn(x.clone())).sum().backward();
            },
        );
        time("  project batch-norm (train) + relu forward", runs, || {
            let out = try_batch_norm_train(&x, (&gamma, &beta), 1e-5, (None, true)).unwrap();
            let _ = out.output.sum().into_scalar::<f32>();
        });
        // norm_eval: running statistics, trainable affine. The probe makes the incoming gradient
        // a dense tensor, as in a network (the gradient of a plain sum is a broadcast scalar).
        let probe = Tensor::<4>::random([batch, width, side, side], n, &device);
        let (mean, variance) = (
            Tensor::<1>::zeros([width], &device),
            Tensor::<1>::ones([width], &device),
        );
        time(
            "  batch-norm (eval) + relu forward + backward",
            runs,
            || {
                let out = burn::tensor::module::batch_norm(
                    x.clone(),
                    gamma.clone(),
                    beta.clone(),
                    mean.clone(),
                    variance.clone(),
                    1e-5,
                );
                let _ = (relu(out) * probe.clone()).sum().backward();
            },
        );
        let (mean_values, variance_values) = (vec![0.0f32; width], vec![1.0f32; width]);
        time("  project batch-norm (eval) + relu forward", runs, || {
            let out = try_batch_norm_eval(
                &x.clone().detach(),
                (&gamma.clone().detach(), &beta.clone().detach()),
                (&mean_values, &variance_values),
                1e-5,
                (None, true),
            )
            .unwrap();
            let _ = out.sum().into_scalar::<f32>();
        });
        time("  batch-norm (eval) + relu forward", runs, || {
            let out = burn::tensor::module::batch_norm(
                x.clone().detach(),
                gamma.clone().detach(),
                beta.clone().detach(),
                mean.clone(),
                variance.clone(),
                1e-5,
            );
            let _ = relu(out).sum().into_scalar::<f32>();
        });
        time(
            "  project batch-norm (eval) + relu forward + backward",
            runs,
            || {
                let out = try_batch_norm_eval(
                    &x,
                    (&gamma, &beta),
                    (&mean_values, &variance_values),
                    1e-5,
                    (None, true),
                )
                .unwrap();
                let _ = (out * probe.clone()).sum().backward();
            },
        );
    }
}
