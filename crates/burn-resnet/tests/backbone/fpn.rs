//! The FPN neck against mmdet 3.3's own `FPN` (`tools/make_fpn_fixtures.py`): outputs, and the
//! gradients of every parameter and input against float64, for Faster R-CNN's, RetinaNet's and
//! FCOS's settings and the other `add_extra_convs`/`end_level` variants; typed config errors.

use burn::module::Module;
use burn::store::{ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use burn::tensor::Tensor;
use burn_resnet::ResNetError;
use burn_resnet::fpn::FpnConfig;

use crate::common::{
    devices, float_tensors, l2_relative, read_safetensors, relative_error, repo_path, tensor_named,
    values,
};

#[test]
fn fpn_matches_mmdet_outputs_and_gradients() {
    let path = repo_path("tests/fixtures/fpn.safetensors");
    let (tensors, metadata) = read_safetensors(&path);
    let get = |key: &str| tensor_named(&tensors, key);
    assert_eq!(metadata.len(), 6);
    for (case, arguments) in &metadata {
        let config: FpnConfig = toml::from_str(arguments).unwrap();
        let in_channels = config.in_channels.clone().unwrap();
        for (backend, device) in devices() {
            let mut neck = config
                .validate_channels(&in_channels)
                .unwrap()
                .init(&device);
            let mut store = SafetensorsStore::from_file(&path)
                .with_key_remapping(format!(r"^{case}\."), "")
                .with_from_adapter(PyTorchToBurnAdapter)
                .allow_partial(true);
            let result = neck.load_from(&mut store).unwrap();
            assert!(
                result.missing.is_empty() && result.errors.is_empty(),
                "{case}: {result:?}"
            );

            let inputs: Vec<Tensor<4>> = (0..in_channels.len())
                .map(|i| get(&format!("{case}.input.{i}")).to_tensor(&device))
                .collect();
            let outputs = neck.try_forward(&inputs).unwrap();
            assert_eq!(outputs.len(), config.num_outs, "{case}");
            for (i, output) in outputs.iter().enumerate() {
                let error = relative_error(output, get(&format!("{case}.output.{i}")));
                assert!(
                    error < 1e-5,
                    "{case} output {i} on {backend}: relative error {error:.2e}"
                );
            }

            let training = device.clone().autodiff();
            let neck = neck.fork(&training).train();
            let inputs: Vec<Tensor<4>> = (0..in_channels.len())
                .map(|i| {
                    get(&format!("{case}.input.{i}"))
                        .to_tensor::<4>(&training)
                        .require_grad()
                })
                .collect();
            let loss = neck
                .forward(&inputs)
                .into_iter()
                .map(|o| o.mean())
                .reduce(|a, b| a + b)
                .unwrap();
            let grads = loss.backward();
            let mut worst = 0f64;
            for (i, input) in inputs.iter().enumerate() {
                let expected = &get(&format!("{case}.grad.input.{i}")).values;
                // An input the neck does not use (below start_level) gets no gradient at all.
                let actual = input
                    .grad(&grads)
                    .map(values)
                    .unwrap_or_else(|| vec![0.0; expected.len()]);
                if expected.iter().all(|v| *v == 0.0) {
                    assert!(
                        actual.iter().all(|v| *v == 0.0),
                        "{case} on {backend}: unused input {i} got a gradient"
                    );
                    continue;
                }
                let error = l2_relative(&actual, expected);
                assert!(
                    error < 1e-4,
                    "{case} on {backend}: input {i} gradient {error:.2e}"
                );
                worst = worst.max(error);
            }
            for tensor in float_tensors(&neck, Some(&grads)) {
                let expected = get(&format!("{case}.grad.{}", tensor.path));
                let error = l2_relative(&tensor.grad.unwrap(), &expected.values);
                assert!(
                    error < 1e-4,
                    "{case} on {backend}: gradient of {}: {error:.2e}",
                    tensor.path
                );
                worst = worst.max(error);
            }
            println!(
                "{case} on {backend}: outputs and gradients match, worst gradient error {worst:.2e}"
            );
        }
    }
}

#[test]
fn invalid_fpn_configs_are_typed_errors() {
    let channels = [8, 16, 32, 64];
    let error_of = |toml: &str| {
        toml::from_str::<FpnConfig>(toml)
            .unwrap()
            .validate_channels(&channels)
            .unwrap_err()
    };
    let field_of = |error: &ResNetError| match error {
        ResNetError::Incompatible { field, .. } | ResNetError::TooSmall { field, .. } => {
            field.clone()
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(
        field_of(&error_of("out_channels = 8\nnum_outs = 3")),
        "neck.num_outs"
    );
    assert_eq!(
        field_of(&error_of("out_channels = 8\nnum_outs = 5\nstart_level = 4")),
        "neck.start_level"
    );
    assert_eq!(
        field_of(&error_of("out_channels = 8\nnum_outs = 4\nend_level = 2")),
        "neck.num_outs"
    );
    assert_eq!(
        field_of(&error_of(
            "out_channels = 8\nnum_outs = 2\nstart_level = 2\nend_level = 1"
        )),
        "neck.end_level"
    );
    assert_eq!(
        field_of(&error_of("out_channels = 0\nnum_outs = 5")),
        "neck.out_channels"
    );
    let error = error_of("in_channels = [8, 16, 32]\nout_channels = 8\nnum_outs = 5");
    assert_eq!(field_of(&error), "neck.in_channels");
    assert!(error.to_string().contains("[8, 16, 32, 64]"), "{error}");
    assert!(
        toml::from_str::<FpnConfig>("out_channels = 8\nnum_outs = 5\nadd_extra_convs = \"on_top\"")
            .is_err()
    );
}
