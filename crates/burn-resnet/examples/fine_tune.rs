//! Fine-tuning from a torchvision (or timm, mmdet) checkpoint: load the weights, freeze the stem
//! and the first stage (`frozen_stages = 1`: no gradients, norms on running statistics), give
//! the backbone a tenth of the head's learning rate through its parameter group, and train.
//!
//! ```sh
//! cargo run --release -p burn-resnet --example fine_tune -- configs/resnet50.toml resnet50-0676ba61.pth
//! ```
//!
//! Without arguments it uses the small torchvision-named ResNet-18 of the test fixtures (and
//! random images it learns to tell apart), so that it runs in a moment.

use burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use burn_resnet::{ResNet, ResNetConfig};

/// A classifier: the backbone's last output, average-pooled, then a linear layer.
#[derive(Module, Debug)]
struct Classifier {
    backbone: ResNet,
    head: Linear,
}

impl Classifier {
    fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let last = self
            .backbone
            .forward(images)
            .pop()
            .expect("one output at least");
        let [batch, channels, _, _] = last.dims();
        let pooled = last.mean_dim(2).mean_dim(3).reshape([batch, channels]);
        self.head.forward(pooled)
    }
}

fn fixture(name: &str) -> String {
    format!(
        "{}/../../tests/fixtures/checkpoints/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Train for `steps` and return the loss of each step.
fn run(
    config_path: &str,
    weights: &str,
    steps: usize,
) -> Result<Vec<f32>, Box<dyn std::error::Error>> {
    let mut config = ResNetConfig::from_toml_file(config_path)?;
    config.frozen_stages = 1;
    let device = Device::default();
    // Build and load on a plain device, then move to an autodiff one for training.
    let (backbone, report) = config.init(&device)?.load_weights(weights, None)?;
    println!(
        "loaded {weights} ({} names; skipped {:?})",
        report.source, report.skipped
    );
    let channels = backbone.feature_info().last().expect("an output").channels;
    let training = device.clone().autodiff();
    let head = LinearConfig::new(channels, 2).init(&device);
    let model = Classifier { backbone, head }.fork(&training).train();

    // Two kinds of random images: bright ones (class 1) and dark ones (class 0).
    let batch = 8;
    let labels: Vec<i64> = (0..batch as i64).map(|i| i % 2).collect();
    let shift: Vec<f32> = labels
        .iter()
        .map(|&l| if l == 1 { 1.0 } else { -1.0 })
        .collect();
    let shift = Tensor::<1>::from_data(TensorData::new(shift, [batch]), &training)
        .reshape([batch, 1, 1, 1]);
    let images = Tensor::<4>::random(
        [batch, 3, 32, 32],
        Distribution::Normal(0.0, 1.0),
        &training,
    ) + shift;
    let targets = Tensor::<1, Int>::from_data(TensorData::new(labels, [batch]), &training);

    let momentum = MomentumConfig {
        momentum: 0.9,
        dampening: 0.0,
        nesterov: false,
    };
    let mut optimizer = SgdConfig::new().with_momentum(Some(momentum)).init();
    let head_lr = 0.01;
    let mut scheduler =
        ModuleLrScheduler::new(head_lr).with_group(model.backbone.param_group(), head_lr * 0.1);
    let loss_fn = CrossEntropyLossConfig::new().init(&training);
    let mut model = model;
    let mut losses = Vec::new();
    for step in 0..steps {
        let loss = loss_fn.forward(model.forward(images.clone()), targets.clone());
        let value = loss.clone().into_scalar::<f32>();
        println!("step {step}: loss {value:.4}");
        losses.push(value);
        let gradients = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(scheduler.step(), model, gradients);
    }
    // For inference: `model.valid()` is the same model on the plain device.
    let _inference: Classifier = model.valid();
    Ok(losses)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (config, weights) = match args.as_slice() {
        [config, weights] => (config.clone(), weights.clone()),
        _ => (
            fixture("torchvision_resnet18.toml"),
            fixture("torchvision_resnet18.pth"),
        ),
    };
    run(&config, &weights, 10).map(|_| ())
}

/// The run on the repository's torchvision fixture (left out of a published package's build,
/// which has no fixtures: build.rs).
#[cfg(all(test, not(no_workspace_files)))]
mod tests {
    #[test]
    fn fine_tuning_lowers_the_loss() {
        let (config, weights) = (
            super::fixture("torchvision_resnet18.toml"),
            super::fixture("torchvision_resnet18.pth"),
        );
        let losses = super::run(&config, &weights, 10).unwrap();
        assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
        assert!(losses[9] < losses[0], "{losses:?}");
    }
}
