//! mmdet's training controls on an autodiff device: `frozen_stages`, `norm_eval` and
//! `norm_cfg` (`requires_grad`, GroupNorm, frozen BatchNorm). Each test trains a few SGD steps
//! on random data and checks, tensor by tensor, what must stay bit-identical and what must move.

use burn::module::Module;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Distribution, Tensor, TensorData};
use burn_resnet::{ResNet, ResNetConfig, ResNetError};

use crate::common::{
    FloatTensor, config, devices, float_tensors, read_safetensors, relative_error, repo_path,
    values,
};

/// Without zero-init residuals: with a frozen last norm at weight 0 a block's convs would (rightly)
/// get no gradient at all.
const TINY: &str = "depth = 18\nbase_channels = 8\nzero_init_residual = false\n";

/// Every float tensor before and after `steps` SGD steps (momentum 0.9), toggling the model
/// through `valid()` and back to `train()` between steps (mmdet PR #577: a frozen stage that
/// came back to life after such a switch).
fn train(toml: &str, steps: usize) -> Vec<(String, FloatTensor, FloatTensor)> {
    let mut results = Vec::new();
    for (backend, device) in devices() {
        let training = device.clone().autodiff();
        let mut model: ResNet = config(toml).init(&device).unwrap().fork(&training).train();
        let before = float_tensors(&model, None);
        let momentum = MomentumConfig {
            momentum: 0.9,
            dampening: 0.0,
            nesterov: false,
        };
        let mut optimizer = SgdConfig::new().with_momentum(Some(momentum)).init();
        for step in 0..steps {
            let images =
                Tensor::<4>::random([2, 3, 64, 64], Distribution::Normal(0.5, 1.0), &training);
            let loss = model
                .forward(images)
                .into_iter()
                .map(|f| f.mean())
                .reduce(|a, b| a + b)
                .unwrap();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optimizer.step(0.1, model, grads);
            if step % 2 == 0 {
                model = model.valid().fork(&training).train();
            }
        }
        // `valid()` also syncs the running statistics Burn updates lazily.
        let after = float_tensors(&model.valid(), None);
        assert_eq!(before.len(), after.len());
        for (b, a) in before.into_iter().zip(after) {
            assert_eq!(b.path, a.path);
            results.push((backend.to_string(), b, a));
        }
    }
    results
}

fn is_running_stat(path: &str) -> bool {
    path.ends_with("running_mean") || path.ends_with("running_var")
}

fn is_norm_affine(path: &str) -> bool {
    path.contains(".norm") && (path.ends_with("gamma") || path.ends_with("beta"))
}

/// The part of the backbone a tensor belongs to: `None` for the stem, `Some(i)` for stage `i`.
fn part(path: &str) -> Option<usize> {
    path.strip_prefix("layers.")
        .map(|rest| rest.split('.').next().unwrap().parse().unwrap())
}

/// Assert that the tensors for which `frozen` holds are bit-identical and all others changed.
fn assert_frozen(
    results: &[(String, FloatTensor, FloatTensor)],
    what: &str,
    frozen: impl Fn(&str) -> bool,
) {
    let mut problems = Vec::new();
    for (backend, before, after) in results {
        let same = before.values == after.values;
        match (frozen(&before.path), same) {
            (true, false) => {
                problems.push(format!("{backend}: {} changed but is {what}", before.path))
            }
            (false, true) => problems.push(format!("{backend}: {} did not change", before.path)),
            _ => {}
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn frozen_stages_keep_every_tensor_and_statistic_of_the_frozen_parts() {
    for frozen_stages in [0, 2] {
        let results = train(&format!("{TINY}frozen_stages = {frozen_stages}\n"), 3);
        let what = format!("frozen (frozen_stages = {frozen_stages})");
        assert_frozen(&results, &what, |path| {
            part(path).is_none_or(|stage| stage < frozen_stages as usize)
        });
    }
}

#[test]
fn norm_eval_keeps_running_statistics_and_trains_the_affine_parameters() {
    let results = train(&format!("{TINY}norm_eval = true\n"), 3);
    assert_frozen(
        &results,
        "a running statistic under norm_eval",
        is_running_stat,
    );
}

#[test]
fn norm_cfg_requires_grad_false_keeps_the_affine_parameters_and_updates_statistics() {
    let results = train(
        &format!("{TINY}[norm_cfg]\ntype = \"BN\"\nrequires_grad = false\n"),
        3,
    );
    assert_frozen(
        &results,
        "a norm parameter without requires_grad",
        is_norm_affine,
    );
}

#[test]
fn frozen_batch_norm_keeps_every_norm_tensor() {
    let results = train(&format!("{TINY}[norm_cfg]\ntype = \"FrozenBN\"\n"), 3);
    assert_frozen(&results, "a FrozenBN tensor", |path| {
        is_norm_affine(path) || is_running_stat(path)
    });
}

#[test]
fn group_norm_trains_every_parameter_and_has_no_running_statistics() {
    let results = train(
        &format!("{TINY}[norm_cfg]\ntype = \"GN\"\nnum_groups = 4\n"),
        3,
    );
    assert!(
        results.iter().all(|(_, t, _)| !is_running_stat(&t.path)),
        "GroupNorm keeps no statistics"
    );
    assert!(
        results.iter().any(|(_, t, _)| t.path.contains(".Group.")),
        "the norms are GroupNorms"
    );
    assert_frozen(&results, "unexpected", |_| false);
}

/// GroupNorm against values worked out by hand: one sample, 4 channels in 2 groups.
#[test]
fn group_norm_normalises_each_group_of_each_sample() {
    let toml = "depth = 18\nbase_channels = 4\nstem_channels = 4\nnum_stages = 1\nstem_output = true\nout_indices = []\n[norm_cfg]\ntype = \"GN\"\nnum_groups = 2\n";
    for (backend, device) in devices() {
        let norm = config(toml)
            .init(&device)
            .unwrap()
            .stem
            .layers
            .remove(0)
            .norm;
        // Group 0: channels 0-1 = [1, 3] and [5, 7]: mean 4, variance 5.
        // Group 1: channels 2-3 = [0, 0] and [2, 2]: mean 1, variance 1.
        let x = Tensor::<4>::from_data(
            TensorData::new(
                vec![1.0f32, 3.0, 5.0, 7.0, 0.0, 0.0, 2.0, 2.0],
                [1, 4, 1, 2],
            ),
            &device,
        );
        let y = values(norm.forward(x, burn_resnet::norm::StageMode::TRAIN));
        assert_eq!(y.len(), 8, "{backend}: outputs");
        let s5 = (5.0f32 + 1e-5).sqrt();
        let s1 = (1.0f32 + 1e-5).sqrt();
        let expected = [
            -3.0 / s5,
            -1.0 / s5,
            1.0 / s5,
            3.0 / s5,
            -1.0 / s1,
            -1.0 / s1,
            1.0 / s1,
            1.0 / s1,
        ];
        for (a, e) in y.iter().zip(expected) {
            assert!((a - e).abs() < 1e-5, "{backend}: {y:?} vs {expected:?}");
        }
    }
}

/// Frozen BatchNorm computes eval-mode BatchNorm with the checkpoint's statistics, even on an
/// autodiff device in training mode: the mmdet eval fixture, loaded into a FrozenBN config.
#[test]
fn frozen_batch_norm_uses_the_checkpoint_statistics_in_training_mode() {
    let dir = "tests/fixtures/parity";
    let text = std::fs::read_to_string(repo_path(&format!("{dir}/resnet18.toml"))).unwrap();
    let config = ResNetConfig::from_toml_str(
        &format!("{text}\n[norm_cfg]\ntype = \"FrozenBN\"\n"),
        "frozen",
    )
    .unwrap();
    let (io, metadata) = read_safetensors(&repo_path(&format!("{dir}/resnet18.io.safetensors")));
    let weights = repo_path(&format!("{dir}/{}", metadata["weights"]));
    let input = &io.iter().find(|(n, _)| n == "input").unwrap().1;
    let outputs: Vec<_> = io.iter().filter(|(n, _)| n != "input").collect();
    for (backend, device) in devices() {
        let training = device.clone().autodiff();
        let backbone = config
            .init(&device)
            .unwrap()
            .load_mmdet_safetensors(&weights)
            .unwrap()
            .fork(&training)
            .train();
        let features = backbone.forward(input.to_tensor(&training));
        assert_eq!(features.len(), outputs.len(), "{backend}: outputs");
        for (feature, (name, expected)) in features.iter().zip(&outputs) {
            let error = relative_error(feature, expected);
            assert!(
                error <= 1e-4,
                "{name} on {backend}: relative error {error:.2e}"
            );
        }
    }
}

#[test]
fn invalid_training_controls_are_typed_errors() {
    let error = |toml: &str| {
        ResNetConfig::from_toml_str(toml, "test")
            .and_then(|c| c.validate())
            .unwrap_err()
    };
    let frozen = error(&format!("{TINY}frozen_stages = 5\n"));
    assert!(
        matches!(frozen, ResNetError::OutOfRange { ref field, value: 5, min: -1, max: 4 } if field == "frozen_stages"),
        "{frozen}"
    );
    let groups = error(&format!(
        "{TINY}[norm_cfg]\ntype = \"GN\"\nnum_groups = 3\n"
    ));
    assert!(
        groups
            .to_string()
            .contains("norm_cfg.num_groups: 3 groups do not divide a norm of 8 channels"),
        "{groups}"
    );
    let kind = error(&format!("{TINY}[norm_cfg]\ntype = \"LN\"\n"));
    assert!(
        matches!(kind, ResNetError::Parse { .. }) && kind.to_string().contains("LN"),
        "{kind}"
    );
    let eps = error(&format!("{TINY}[norm_cfg]\ntype = \"BN\"\neps = -1.0\n"));
    assert!(eps.to_string().starts_with("norm_cfg.eps"), "{eps}");
    let frozen_grad = error(&format!(
        "{TINY}[norm_cfg]\ntype = \"FrozenBN\"\nrequires_grad = true\n"
    ));
    assert!(
        frozen_grad.to_string().contains("requires_grad"),
        "{frozen_grad}"
    );
}

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

/// `with_cp` recomputes each block in the backward pass: the same outputs, gradients and running
/// statistics as without it (it only changes what is kept in memory; `resnet bench --with-cp`
/// shows how much).
#[test]
fn with_cp_gives_the_same_outputs_gradients_and_statistics() {
    // zero_init_residual = false: with the last norm of each block at 0, every gradient through
    // the recomputed convs would be exactly 0 in both runs and compare equal whatever they did.
    for base in [
        TINY.to_string(),
        "depth = 50\nbase_channels = 8\nzero_init_residual = false\n".to_string(),
        "depth = 50\nbase_channels = 8\ngroups = 2\nbase_width = 4\nzero_init_residual = false\n"
            .to_string(),
    ] {
        let base = base.as_str();
        for (backend, device) in devices() {
            let training = device.clone().autodiff();
            // The same weights for both (through a burnpack file; seeding the shared generator
            // would race with the other tests), the same images and loss weights.
            let file =
                std::env::temp_dir().join(format!("with-cp-{}-{backend}.bpk", std::process::id()));
            config(base)
                .init(&device)
                .unwrap()
                .save_burnpack(&file)
                .unwrap();
            let images =
                Tensor::<4>::random([2, 3, 40, 40], Distribution::Normal(0.5, 1.0), &training);
            let loss_weights: Vec<Tensor<4>> = config(base)
                .init(&device)
                .unwrap()
                .forward(Tensor::zeros([2, 3, 40, 40], &device))
                .iter()
                .map(|o| Tensor::random(o.dims(), Distribution::Normal(0.0, 1.0), &training))
                .collect();
            let run = |with_cp: bool| {
                let fresh = config(&format!("{base}with_cp = {with_cp}\n"))
                    .init(&device)
                    .unwrap();
                let model: ResNet = fresh.load_burnpack(&file).unwrap().fork(&training).train();
                let blocks_before = burn_resnet::recomputed_blocks_on_this_thread();
                let outputs = model.forward(images.clone());
                let checkpointed = burn_resnet::recomputed_blocks_on_this_thread() - blocks_before;
                let loss = outputs
                    .iter()
                    .zip(&loss_weights)
                    .map(|(o, w)| (o.clone() * w.clone()).sum())
                    .reduce(|a, b| a + b)
                    .unwrap();
                let grads = loss.backward();
                let tensors = float_tensors(&model, Some(&grads));
                let synced = float_tensors(&model.valid(), None);
                (
                    outputs.into_iter().map(values).collect::<Vec<_>>(),
                    tensors,
                    synced,
                    checkpointed,
                )
            };
            let (plain_out, plain, plain_synced, plain_checkpointed) = run(false);
            let (cp_out, cp, cp_synced, checkpointed) = run(true);
            // The comparison means something only where the recomputing op ran: on flex, for
            // every block (elsewhere with_cp falls back to the plain blocks, documented).
            let blocks: usize = config(base)
                .validate()
                .unwrap()
                .stages
                .iter()
                .map(|s| s.num_blocks)
                .sum();
            assert_eq!(plain_checkpointed, 0, "{backend} {base}");
            if backend == burn_resnet::BackendKind::Flex {
                assert_eq!(
                    checkpointed, blocks,
                    "{backend} {base}: blocks run by the checkpointed op"
                );
            }
            assert_eq!(
                (cp_out.len(), cp.len(), cp_synced.len()),
                (plain_out.len(), plain.len(), plain_synced.len()),
                "{backend} {base}"
            );
            let close = |a: &[f32], b: &[f32]| {
                let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
                a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
            };
            for (i, (a, b)) in cp_out.iter().zip(&plain_out).enumerate() {
                assert!(
                    close(a, b) < 1e-5,
                    "{backend} {base}: output {i} differs by {:e}",
                    close(a, b)
                );
            }
            for (a, b) in cp.iter().zip(&plain) {
                if let (Some(ga), Some(gb)) = (&a.grad, &b.grad) {
                    assert!(
                        close(ga, gb) < 1e-4,
                        "{backend}: gradient of {} differs by {:e}",
                        a.path,
                        close(ga, gb)
                    );
                    assert!(
                        gb.iter().any(|g| *g != 0.0),
                        "{backend} {base}: the gradient of {} is all zero",
                        b.path
                    );
                }
                assert_eq!(a.grad.is_some(), b.grad.is_some(), "{backend}: {}", a.path);
            }
            for (a, b) in cp_synced.iter().zip(&plain_synced) {
                assert!(
                    close(&a.values, &b.values) < 1e-5,
                    "{backend}: {} differs after the step",
                    a.path
                );
            }
            std::fs::remove_file(&file).unwrap();
        }
    }
}
