//! Where a ResNet-50 training step's time goes on flex: forward, backward and optimizer phases
//! at batch 8. `cargo run --release -p resnet-cli --example train_profile` (the per-op profile
//! of the project's kernels is the ignored `op_profile` test of burn-resnet's flex kernels).

use std::time::Instant;

use burn::module::Module;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Distribution, Tensor};
use burn_resnet::ResNetConfig;

fn main() {
    step_profile();
}

/// The phases of one ResNet-50 training step at batch 8.
fn step_profile() {
    let device = Device::flex();
    let training = device.clone().autodiff();
    let config = ResNetConfig::from_toml_file("configs/resnet50.toml")
        .expect("run from the repository root");
    let mut model = config.init(&device).expect("valid").fork(&training).train();
    let momentum = MomentumConfig {
        momentum: 0.9,
        dampening: 0.0,
        nesterov: false,
    };
    let mut optimizer = SgdConfig::new().with_momentum(Some(momentum)).init();
    let images = Tensor::<4>::random([8, 3, 224, 224], Distribution::Normal(0.0, 1.0), &training);
    for run in 0..3 {
        let started = Instant::now();
        let loss = model
            .forward(images.clone())
            .into_iter()
            .map(|f| f.mean())
            .reduce(|a, b| a + b)
            .unwrap();
        let _ = loss.clone().into_scalar::<f32>();
        let forward = started.elapsed();
        let grads = loss.backward();
        let backward = started.elapsed();
        let grads = GradientsParams::from_grads(grads, &model);
        model = optimizer.step(0.01, model, grads);
        let _ = model.stem.layers[0]
            .conv
            .weight
            .val()
            .slice([0..1, 0..1, 0..1, 0..1])
            .into_scalar::<f32>();
        let step = started.elapsed();
        println!(
            "step {run}: forward {:.0} ms, backward {:.0} ms, optimizer {:.0} ms",
            forward.as_secs_f64() * 1e3,
            (backward - forward).as_secs_f64() * 1e3,
            (step - backward).as_secs_f64() * 1e3
        );
    }
}
