//! NaN and Inf propagate as in PyTorch on every backend compiled in (wgpu included), in eval and
//! training mode, through the project's own flex kernels (fused conv epilogues, BatchNorm with
//! ReLU, max-pool, the recomputed with_cp block) and Burn's stock ops alike.
//!
//! What PyTorch gives, by its rules: a NaN weight makes its conv's output channel NaN
//! everywhere (`0 · NaN` in the zero padding is NaN too), the next conv spreads it to every
//! channel and position, and ReLU and max-pool keep NaN; a negative `running_var` gives
//! `sqrt(var + eps) = NaN` in eval mode; in training, batch statistics are used, so a NaN
//! running statistic leaves the outputs finite and stays NaN after the update. A NaN input
//! pixel (eval) and the NaN gradients of a training step are checked against PyTorch itself
//! (`tools/make_non_finite_fixture.py`, which also checks the rules above on mmdet's ResNet).

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, Tensor, TensorData};
use burn_resnet::weights::WeightSource;
use burn_resnet::{BackendKind, ResNet, ResNetConfig};

use crate::common::{float_tensors, read_safetensors, repo_path, values};

/// Every backend compiled in, wgpu included (these are small cases).
fn all_devices() -> Vec<(BackendKind, Device)> {
    BackendKind::enabled()
        .into_iter()
        .map(|backend| {
            (
                backend,
                backend.device().expect("an enabled backend has a device"),
            )
        })
        .collect()
}

/// The mmdet parity fixture `resnet18` (random weights and statistics) and its input.
fn fixture(device: &Device) -> (ResNet, Tensor<4>) {
    fixture_with(device, false)
}

/// [`fixture`], with mmdet's `with_cp` as given.
fn fixture_with(device: &Device, with_cp: bool) -> (ResNet, Tensor<4>) {
    let dir = "tests/fixtures/parity";
    let config = ResNetConfig {
        with_cp,
        ..ResNetConfig::from_toml_file(repo_path(&format!("{dir}/resnet18.toml"))).unwrap()
    };
    let (io, metadata) = read_safetensors(&repo_path(&format!("{dir}/resnet18.io.safetensors")));
    let input = io
        .iter()
        .find(|(name, _)| name == "input")
        .expect("fixture input")
        .1
        .to_tensor(device);
    let backbone = config
        .init(device)
        .unwrap()
        .load_mmdet_safetensors(repo_path(&format!("{dir}/{}", metadata["weights"])))
        .unwrap();
    (backbone, input)
}

/// Sets element 0 of the float tensor at `path` (a module path as `float_tensors` prints it).
struct SetFirst<'a> {
    path: &'a str,
    value: f32,
    current: Vec<String>,
    hits: usize,
}

impl ModuleMapper for SetFirst<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.current.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.current.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if self.current.join(".") != self.path {
            return param;
        }
        self.hits += 1;
        let value = self.value;
        param.map(|tensor| {
            let (shape, device) = (tensor.shape(), tensor.device());
            let mut data = values(tensor);
            data[0] = value;
            Tensor::from_data(TensorData::new(data, shape), &device)
        })
    }
}

/// `module` with element 0 of the tensor at `path` set to `value`.
fn with_value<M: Module>(module: M, path: &str, value: f32) -> M {
    let mut mapper = SetFirst {
        path,
        value,
        current: Vec::new(),
        hits: 0,
    };
    let module = module.map(&mut mapper);
    if mapper.hits != 1 {
        let paths: Vec<String> = float_tensors(&module, None)
            .into_iter()
            .map(|t| t.path)
            .collect();
        panic!(
            "{path}: matched {} tensors; the module's tensors are {paths:?}",
            mapper.hits
        );
    }
    module
}

/// How many elements of each output are NaN, and how many are ±Inf.
fn non_finite_counts(features: &[Tensor<4>]) -> Vec<(usize, usize, usize)> {
    features
        .iter()
        .map(|f| {
            let v = values(f.clone());
            (
                v.iter().filter(|x| x.is_nan()).count(),
                v.iter().filter(|x| x.is_infinite()).count(),
                v.len(),
            )
        })
        .collect()
}

const CONV: &str = "layers.1.blocks.0.Basic.conv1.weight";
const RUNNING_VAR: &str = "layers.2.blocks.0.Basic.norm1.Batch.running_var";
const RUNNING_MEAN: &str = "layers.2.blocks.0.Basic.norm1.Batch.running_mean";

/// Outputs before the damaged layer stay finite, every element after it is NaN.
fn assert_nan_from(what: &str, features: &[Tensor<4>], first_nan_output: usize) {
    let counts = non_finite_counts(features);
    assert_eq!(counts.len(), 4, "{what}: outputs");
    for (index, &(nan, inf, len)) in counts.iter().enumerate() {
        if index < first_nan_output {
            assert_eq!(
                (nan, inf),
                (0, 0),
                "{what}: output {index} should be finite"
            );
        } else {
            assert_eq!(
                nan, len,
                "{what}: output {index} has {nan} NaN of {len} (PyTorch: all NaN)"
            );
        }
    }
}

#[test]
fn a_nan_or_inf_weight_makes_the_following_outputs_nan_in_eval_mode() {
    for (backend, device) in all_devices() {
        let (backbone, input) = fixture(&device);
        for value in [f32::NAN, f32::INFINITY] {
            let damaged = with_value(backbone.clone(), CONV, value);
            // An Inf weight gives ±Inf in its channel and Inf − Inf = NaN after the next conv.
            for (variant, model) in [
                ("", damaged.clone()),
                (" folded", damaged.fold_batch_norms()),
            ] {
                assert_nan_from(
                    &format!("{value} weight{variant} on {backend}"),
                    &model.forward(input.clone()),
                    1,
                );
            }
        }
    }
}

#[test]
fn a_negative_or_nan_running_variance_gives_nan_in_eval_mode() {
    for (backend, device) in all_devices() {
        let (backbone, input) = fixture(&device);
        for (path, value) in [
            (RUNNING_VAR, -1.0),
            (RUNNING_VAR, f32::NAN),
            (RUNNING_MEAN, f32::NAN),
        ] {
            let damaged = with_value(backbone.clone(), path, value);
            for (variant, model) in [
                ("", damaged.clone()),
                (" folded", damaged.fold_batch_norms()),
            ] {
                assert_nan_from(
                    &format!("{path} = {value}{variant} on {backend}"),
                    &model.forward(input.clone()),
                    2,
                );
            }
        }
    }
}

/// One training step of `backbone` (autodiff on `device`): the outputs, the loss, per
/// trainable tensor (under mmdet's key) how many elements of its gradient are NaN, and the
/// module after the step's statistic updates.
fn train_step(
    backbone: ResNet,
    input: Tensor<4>,
    device: &Device,
) -> (Vec<Tensor<4>>, f32, Vec<(String, usize)>, ResNet) {
    let training = device.clone().autodiff();
    let backbone = backbone.fork(&training).train();
    let features = backbone.forward(input.to_device(&training));
    let loss = features
        .iter()
        .map(|f| f.clone().mean())
        .reduce(|a, b| a + b)
        .unwrap();
    let loss_value = values(loss.clone())[0];
    let grads = loss.backward();
    let trainable = float_tensors(&backbone, None)
        .iter()
        .filter(|t| t.trainable)
        .count();
    // Export the gradients under mmdet's names: the module with each parameter replaced by its
    // gradient, saved as an mmdet checkpoint.
    let gradients = backbone.clone().map(&mut ToGradients { grads: &grads });
    let file = std::env::temp_dir().join(format!(
        "burn-resnet-nan-grads-{}-{:?}.safetensors",
        std::process::id(),
        std::thread::current().id()
    ));
    gradients.save_weights(&file, WeightSource::Mmdet).unwrap();
    let (exported, _) = read_safetensors(&file);
    std::fs::remove_file(&file).unwrap();
    let nan_counts: Vec<(String, usize)> = exported
        .into_iter()
        .filter(|(key, _)| !key.contains("running_"))
        .map(|(key, grad)| (key, grad.values.iter().filter(|g| g.is_nan()).count()))
        .collect();
    assert_eq!(
        nan_counts.len(),
        trainable,
        "one gradient per trainable tensor"
    );
    (features, loss_value, nan_counts, backbone.valid())
}

/// Replaces every trainable parameter by its gradient.
struct ToGradients<'a> {
    grads: &'a burn::tensor::Gradients,
}

impl ModuleMapper for ToGradients<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(grad) = param.val().grad(self.grads) else {
            return param;
        };
        param.map(|tensor| Tensor::from_data(grad.into_data(), &tensor.device()))
    }
}

/// A NaN weight in layer2's first conv, one training step: the loss is NaN and each
/// gradient has exactly as many NaN elements as PyTorch's (not all do: PyTorch's ReLU backward
/// passes the gradient at a NaN output, so a last BatchNorm bias gets a finite sum).
#[test]
fn a_nan_weight_gives_pytorchs_nan_gradients_in_training() {
    let (expected, _) = read_safetensors(&repo_path(
        "tests/fixtures/non_finite/resnet18_nan_weight_train.counts.safetensors",
    ));
    for (backend, device) in all_devices() {
        // with_cp runs the project's recomputed block on flex; the plain path its fused ops.
        for with_cp in [false, true] {
            let (backbone, input) = fixture_with(&device, with_cp);
            let what = format!("NaN weight, with_cp {with_cp}, on {backend}");
            let (features, loss, nan_counts, _) =
                train_step(with_value(backbone, CONV, f32::NAN), input.clone(), &device);
            assert_nan_from(&what, &features, 1);
            assert!(loss.is_nan(), "{what}: loss {loss}");
            assert_eq!(nan_counts.len(), expected.len(), "{what}: gradients");
            for ((key, count), (expected_key, expected_count)) in nan_counts.iter().zip(&expected) {
                assert_eq!(key, expected_key, "{what}");
                assert_eq!(
                    *count, expected_count.values[0] as usize,
                    "{what}: NaN elements in the gradient of {key}"
                );
            }
        }
    }
}

#[test]
fn a_nan_input_makes_every_training_output_nan() {
    for (backend, device) in all_devices() {
        let (backbone, input) = fixture(&device);
        let input = with_first(input, f32::NAN);
        let (features, loss, _, _) = train_step(backbone, input, &device);
        // The first BatchNorm's batch statistics are NaN for every channel.
        assert_nan_from(
            &format!("NaN input pixel, training, on {backend}"),
            &features,
            0,
        );
        assert!(loss.is_nan(), "NaN input on {backend}: loss {loss}");
    }
}

#[test]
fn a_nan_running_statistic_stays_nan_while_training_uses_batch_statistics() {
    for (backend, device) in all_devices() {
        let (backbone, input) = fixture(&device);
        let (features, loss, grads, after) =
            train_step(with_value(backbone, RUNNING_MEAN, f32::NAN), input, &device);
        assert_nan_from(
            &format!("NaN running_mean, training, on {backend}"),
            &features,
            4,
        );
        assert!(
            loss.is_finite() && grads.iter().all(|(_, nan)| *nan == 0),
            "{backend}: loss {loss}"
        );
        let mean = float_tensors(&after, None)
            .into_iter()
            .find(|t| t.path == RUNNING_MEAN)
            .unwrap();
        assert!(
            mean.values[0].is_nan(),
            "{backend}: the updated running_mean lost its NaN: {}",
            mean.values[0]
        );
        assert!(
            mean.values[1..].iter().all(|v| v.is_finite()),
            "{backend}: other channels must stay finite"
        );
    }
}

/// `input` with its first element set to `value`.
fn with_first(input: Tensor<4>, value: f32) -> Tensor<4> {
    let (shape, device) = (input.shape(), input.device());
    let mut data = values(input);
    data[0] = value;
    Tensor::from_data(TensorData::new(data, shape), &device)
}

/// A NaN input pixel in eval mode: the NaN positions of every output are PyTorch's, and the
/// other values match it (fixture from mmdet's ResNet-18 with the parity weights).
#[test]
fn a_nan_input_pixel_spreads_as_in_pytorch() {
    let (io, _) = read_safetensors(&repo_path(
        "tests/fixtures/non_finite/resnet18_nan_pixel.io.safetensors",
    ));
    let input = io.iter().find(|(name, _)| name == "input").expect("input");
    let expected: Vec<_> = io
        .iter()
        .filter(|(name, _)| name.starts_with("output."))
        .collect();
    for (backend, device) in all_devices() {
        let (backbone, _) = fixture(&device);
        for (variant, model) in [
            ("", backbone.clone()),
            (" folded", backbone.fold_batch_norms()),
        ] {
            let features = model.forward(input.1.to_tensor(&device));
            assert_eq!(features.len(), expected.len(), "outputs");
            for (feature, (name, reference)) in features.iter().zip(&expected) {
                let actual = values(feature.clone());
                assert_eq!(actual.len(), reference.values.len(), "{name}");
                let (mut nan, mut worst, mut scale) = (0, 0f32, 0f32);
                for (i, (a, e)) in actual.iter().zip(&reference.values).enumerate() {
                    assert_eq!(
                        a.is_nan(),
                        e.is_nan(),
                        "{name}{variant} on {backend}: element {i} is {a}, PyTorch's {e}"
                    );
                    if e.is_nan() {
                        nan += 1;
                    } else {
                        worst = worst.max((a - e).abs());
                        scale = scale.max(e.abs());
                    }
                }
                println!(
                    "{name}{variant} on {backend}: {nan} NaN as in PyTorch, finite values within {:.1e}",
                    worst / scale
                );
                assert!(nan > 0, "{name}: the fixture should reach every output");
                assert!(
                    worst <= 1e-4 * scale,
                    "{name}{variant} on {backend}: {worst} > 1e-4 × {scale}"
                );
            }
        }
    }
}
