//! A model that embeds the backbone, as a detector does, gives it its own learning rate through
//! `ResNet::param_group` (mmdet's `paramwise_cfg` for the backbone), or freezes it entirely.

use burn::module::Module;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Distribution, Tensor};
use burn_resnet::ResNet;

use crate::common::{TINY, config, devices, float_tensors};

/// A model that embeds the backbone, as a detector would.
#[derive(Module, Debug)]
struct Embedding {
    backbone: ResNet,
    head: burn::nn::conv::Conv2d,
}

impl Embedding {
    fn new(backbone_toml: &str, device: &burn::tensor::Device) -> Self {
        let backbone = config(backbone_toml).init(device).unwrap();
        let head = burn::nn::conv::Conv2dConfig::new([64, 4], [1, 1]).init(device);
        Self { backbone, head }
    }

    fn loss(&self, images: Tensor<4>) -> Tensor<1> {
        let c5 = self.backbone.forward(images).pop().unwrap();
        self.head.forward(c5).mean()
    }
}

/// One plain SGD step (no momentum) with the backbone's parameter group at `backbone_lr` and
/// the rest at `head_lr`; returns, per tensor path, `(before − after) / gradient` (the learning
/// rate each parameter actually got; `None` where it did not change or has no gradient).
fn effective_learning_rates(
    backbone_toml: &str,
    head_lr: f64,
    backbone_lr: f64,
) -> Vec<(String, Option<f64>)> {
    use burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
    let training = devices()[0].1.clone().autodiff();
    let model = Embedding::new(backbone_toml, &training).train();
    let images = Tensor::<4>::random([2, 3, 64, 64], Distribution::Normal(0.5, 1.0), &training);
    let gradients = model.loss(images).backward();
    let before = float_tensors(&model, Some(&gradients));
    let mut scheduler =
        ModuleLrScheduler::new(head_lr).with_group(model.backbone.param_group(), backbone_lr);
    let mut optimizer = SgdConfig::new().init();
    let model = optimizer.step(
        scheduler.step(),
        model.clone(),
        GradientsParams::from_grads(gradients, &model),
    );
    let after = float_tensors(&model.valid(), None);
    assert_eq!(before.len(), after.len(), "tensors");
    before
        .into_iter()
        .zip(after)
        .map(|(b, a)| {
            let rate = b.grad.as_ref().and_then(|grad| {
                // The entry with the largest gradient gives the most precise ratio.
                let (i, g) = grad
                    .iter()
                    .enumerate()
                    .max_by(|x, y| x.1.abs().total_cmp(&y.1.abs()))?;
                (g.abs() > 1e-6 && a.values[i] != b.values[i])
                    .then(|| (b.values[i] - a.values[i]) as f64 / *g as f64)
            });
            (b.path, rate)
        })
        .collect()
}

#[test]
fn an_embedding_model_gives_the_backbone_its_own_learning_rate_or_freezes_it() {
    let rates = effective_learning_rates(TINY, 0.1, 0.01);
    for (path, rate) in &rates {
        let expected = if path.starts_with("backbone.") {
            0.01
        } else {
            0.1
        };
        if path.contains("running_") {
            continue;
        }
        let rate = rate.unwrap_or_else(|| panic!("{path}: not updated"));
        assert!(
            (rate - expected).abs() < expected * 1e-2,
            "{path}: learning rate {rate}, expected {expected}"
        );
    }
    // Frozen entirely from the embedding model's own config: the backbone keeps every tensor.
    let frozen = effective_learning_rates(&format!("{TINY}frozen_stages = 4\n"), 0.1, 0.01);
    for (path, rate) in &frozen {
        assert_eq!(
            rate.is_some(),
            path.starts_with("head."),
            "{path}: {rate:?}"
        );
    }
}
