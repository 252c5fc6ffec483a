//! mmdet's training controls on an autodiff device: `frozen_stages`, `norm_eval` and
//! `norm_cfg` (`requires_grad`, GroupNorm, frozen BatchNorm). Each test trains a few SGD steps
//! on random data and checks, tensor by tensor, what must stay bit-identical and what must move.

use burn::module::Module;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Distribution, Tensor, TensorData};
use burn_resnet::{ResNet, ResNetConfig, ResNetError};

use crate::common::{
    FloatTensor, TINY, config, devices, float_tensors, read_safetensors, relative_error, repo_path,
    values,
};

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
/// autodiff device in training mode: the mmdet eval fixture, loaded into a FrozenBN config; and
/// every backend gives the convs the same gradients through it.
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
    let mut first = None;
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
        // The conv weights' gradients through the frozen norms (flex runs each conv and its
        // norm as one op): the same on every backend.
        let loss = features
            .iter()
            .map(|f| (f.clone() * f.clone()).mean())
            .reduce(|a, b| a + b)
            .unwrap();
        let grads = loss.backward();
        let grads: Vec<_> = float_tensors(&backbone, Some(&grads))
            .into_iter()
            .filter_map(|t| Some((t.path, t.grad?)))
            .collect();
        assert!(grads.len() >= 20, "{backend}: {} gradients", grads.len());
        match &first {
            None => first = Some((backend, grads)),
            Some((first_backend, expected)) => {
                assert_eq!(grads.len(), expected.len(), "{backend}");
                for ((path, actual), (_, expected)) in grads.iter().zip(expected) {
                    let error = relative_error_of(actual, expected);
                    assert!(
                        error < 1e-4,
                        "gradient of {path}: {backend} against {first_backend} {error:.2e}"
                    );
                }
            }
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

/// A training forward pass with frozen stages (flex runs a frozen stem and stages after it as
/// inference in the blocked layout) returns what the NCHW path returns, in the same order:
/// the stem's output, then every stage, for each count of frozen stages.
#[test]
fn frozen_parts_give_the_same_outputs_in_either_layout() {
    for frozen_stages in [-1, 0, 1, 3] {
        let toml = format!(
            "{TINY}frozen_stages = {frozen_stages}\nstem_output = true\nout_indices = [0, 1, 2, 3]\n"
        );
        for (backend, device) in devices() {
            let training = device.clone().autodiff();
            let model: ResNet = config(&toml).init(&device).unwrap().fork(&training).train();
            let images =
                Tensor::<4>::random([2, 3, 48, 40], Distribution::Normal(0.5, 1.0), &training);
            let run = |layout: burn_resnet::InferenceLayout| {
                layout.force(|| {
                    let outputs = model.forward(images.clone());
                    let loss = outputs
                        .iter()
                        .map(|f| (f.clone() * f.clone()).mean())
                        .reduce(|a, b| a + b)
                        .unwrap();
                    let grads = loss.backward();
                    let grads: Vec<_> = float_tensors(&model, Some(&grads))
                        .into_iter()
                        .filter_map(|t| Some((t.path, t.grad?)))
                        .collect();
                    (outputs.into_iter().map(values).collect::<Vec<_>>(), grads)
                })
            };
            let (blocked, blocked_grad) = run(burn_resnet::InferenceLayout::Nchwc);
            let (nchw, nchw_grad) = run(burn_resnet::InferenceLayout::Nchw);
            assert_eq!(
                blocked.len(),
                5,
                "{backend} frozen_stages = {frozen_stages}"
            );
            for (i, (b, n)) in blocked.iter().zip(&nchw).enumerate() {
                let error = relative_error_of(b, n);
                assert!(
                    error < 1e-5,
                    "{backend} frozen_stages = {frozen_stages}: output {i} differs by {error:e}"
                );
            }
            // Every trainable tensor's gradient, none lost (a frozen part has none).
            assert_eq!(
                blocked_grad.len(),
                nchw_grad.len(),
                "{backend} {frozen_stages}"
            );
            assert!(
                !blocked_grad.is_empty(),
                "{backend} {frozen_stages}: no gradient"
            );
            for ((path, b), (_, n)) in blocked_grad.iter().zip(&nchw_grad) {
                let error = relative_error_of(b, n);
                assert!(
                    error < 1e-4,
                    "{backend} frozen_stages = {frozen_stages}: gradient of {path} differs by {error:e}"
                );
            }
        }
    }
}

/// The largest difference over the largest magnitude of `expected`.
fn relative_error_of(actual: &[f32], expected: &[f32]) -> f32 {
    assert_eq!(actual.len(), expected.len(), "length");
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    actual
        .iter()
        .zip(expected)
        .fold(0f32, |m, (a, e)| m.max((a - e).abs()))
        / scale
}
