//! Where ResNet-50 inference time goes on a backend: times each op kind on the shapes of one
//! stage. `cargo run --release -p resnet-cli --example op_profile [flex|ndarray]`.

use std::time::Instant;

use burn::tensor::activation::relu;
use burn::tensor::module::{batch_norm, conv2d};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor};
use burn_resnet::BackendKind;

fn time(label: &str, runs: usize, device: &Device, mut f: impl FnMut() -> Tensor<4>) {
    let _ = f().into_data();
    let started = Instant::now();
    for _ in 0..runs {
        let out = f();
        let _ = out.slice([0..1, 0..1, 0..1, 0..1]).into_data();
    }
    device.sync().unwrap();
    println!(
        "{label:<48} {:8.3} ms",
        started.elapsed().as_secs_f64() * 1e3 / runs as f64
    );
}

fn main() {
    let backend: BackendKind = std::env::args()
        .nth(1)
        .unwrap_or("flex".into())
        .parse()
        .unwrap();
    let device = backend.device().unwrap();
    matmul_profile(&device);
    let n = Distribution::Normal(0.0, 1.0);
    for batch in [1, 8] {
        let image = Tensor::<4>::random([batch, 3, 224, 224], n, &device);
        let w7 = Tensor::<4>::random([64, 3, 7, 7], n, &device);
        let bias = Tensor::<1>::random([64], n, &device);
        let c1 = Tensor::<4>::random([batch, 64, 112, 112], n, &device);
        let o7 = ConvOptions::new([2, 2], [3, 3], [1, 1], 1);
        println!("stem, batch {batch}");
        time("  conv7x7 stride 2, 3->64, + bias", 10, &device, || {
            conv2d(image.clone(), w7.clone(), Some(bias.clone()), o7.clone())
        });
        time("  max_pool 3x3 stride 2 on 64x112x112", 10, &device, || {
            burn_resnet::stem::Stem::pool(c1.clone())
        });
    }
    for (batch, channels, side) in [(1, 64, 56), (1, 256, 14), (8, 64, 56)] {
        let width = channels;
        let x = Tensor::<4>::random([batch, width, side, side], n, &device);
        let wide = Tensor::<4>::random([batch, width * 4, side, side], n, &device);
        let w3 = Tensor::<4>::random([width, width, 3, 3], n, &device);
        let w1 = Tensor::<4>::random([width * 4, width, 1, 1], n, &device);
        let bias = Tensor::<1>::random([width], n, &device);
        let bias4 = Tensor::<1>::random([width * 4], n, &device);
        let ones = Tensor::<1>::ones([width], &device);
        let o3 = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
        let o1 = ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
        let runs = 20;
        println!("batch {batch}, {width} channels, {side}x{side}");
        time("  conv3x3", runs, &device, || {
            conv2d(x.clone(), w3.clone(), None, o3.clone())
        });
        time("  conv3x3 + bias", runs, &device, || {
            conv2d(x.clone(), w3.clone(), Some(bias.clone()), o3.clone())
        });
        time("  conv1x1 expand x4", runs, &device, || {
            conv2d(x.clone(), w1.clone(), None, o1.clone())
        });
        time("  conv1x1 expand x4 + bias", runs, &device, || {
            conv2d(x.clone(), w1.clone(), Some(bias4.clone()), o1.clone())
        });
        time("  batch_norm (inference)", runs, &device, || {
            batch_norm(
                x.clone(),
                ones.clone(),
                bias.clone(),
                bias.clone(),
                ones.clone(),
                1e-5,
            )
        });
        time("  relu", runs, &device, || relu(x.clone()));
        time("  add", runs, &device, || x.clone() + x.clone());
        time("  add + relu on expanded", runs, &device, || {
            relu(wide.clone() + wide.clone())
        });
    }
}

/// Throughput of the backend's matmul on the im2col shapes of ResNet-50's 3x3 convs.
fn matmul_profile(device: &Device) {
    let n = Distribution::Normal(0.0, 1.0);
    for (m, k, cols) in [(3136, 576, 64), (196, 2304, 256), (1024, 1024, 1024)] {
        let a = Tensor::<2>::random([m, k], n, device);
        let b = Tensor::<2>::random([k, cols], n, device);
        let _ = a.clone().matmul(b.clone()).into_data();
        let runs = 20;
        let started = Instant::now();
        for _ in 0..runs {
            let _ = a.clone().matmul(b.clone()).slice([0..1, 0..1]).into_data();
        }
        let secs = started.elapsed().as_secs_f64() / runs as f64;
        println!(
            "matmul {m}x{k} · {k}x{cols}: {:.3} ms, {:.0} GFLOP/s",
            secs * 1e3,
            2.0 * (m * k * cols) as f64 / secs / 1e9
        );
    }
}
