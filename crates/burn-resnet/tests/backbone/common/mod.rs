//! Helpers shared by the tests: the backend list, fixture paths and the parity check.

use std::path::PathBuf;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Gradients, Tensor, TensorData};
use burn_resnet::{BackendKind, ResNetConfig};

/// Every CPU backend compiled into this test build, with a plain (inference) device. (wgpu
/// runs the small cases of `backends.rs`: on a software Vulkan driver every kernel shape
/// compiles on first use, which full-width configs would make slow.)
pub fn devices() -> Vec<(BackendKind, Device)> {
    let devices: Vec<_> = BackendKind::enabled()
        .into_iter()
        .filter(|backend| backend.is_cpu())
        .map(|backend| {
            (
                backend,
                backend.device().expect("an enabled backend has a device"),
            )
        })
        .collect();
    assert!(
        !devices.is_empty(),
        "build the tests with at least one CPU backend feature"
    );
    devices
}

/// A path relative to the workspace root.
pub fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative)
}

/// A tiny config from TOML text.
pub fn config(toml: &str) -> ResNetConfig {
    ResNetConfig::from_toml_str(toml, "test").expect("test config parses")
}

/// A tensor read from a safetensors file.
pub struct NamedTensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

impl NamedTensor {
    pub fn to_tensor<const D: usize>(&self, device: &Device) -> Tensor<D> {
        Tensor::from_data(
            TensorData::new(self.values.clone(), self.shape.clone()),
            device,
        )
    }
}

/// The tensor called `key` among `tensors` (as [`read_safetensors`] returns them); panics
/// naming the key when the fixture has none.
pub fn tensor_named<'a>(tensors: &'a [(String, NamedTensor)], key: &str) -> &'a NamedTensor {
    &tensors
        .iter()
        .find(|(name, _)| name == key)
        .unwrap_or_else(|| panic!("{key}"))
        .1
}

/// Read the float32 tensors and the metadata of a safetensors file.
pub fn read_safetensors(
    path: &PathBuf,
) -> (
    Vec<(String, NamedTensor)>,
    std::collections::HashMap<String, String>,
) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (_, metadata) =
        safetensors::SafeTensors::read_metadata(&bytes).expect("safetensors header");
    let metadata = metadata.metadata().clone().unwrap_or_default();
    let file = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors file");
    let mut tensors: Vec<_> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(
                view.dtype(),
                safetensors::Dtype::F32,
                "{name}: fixtures store float32"
            );
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (
                name,
                NamedTensor {
                    shape: view.shape().to_vec(),
                    values,
                },
            )
        })
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    (tensors, metadata)
}

/// Largest absolute difference relative to the largest absolute expected value.
pub fn relative_error(actual: &Tensor<4>, expected: &NamedTensor) -> f32 {
    assert_eq!(actual.dims().to_vec(), expected.shape, "shape");
    let actual = actual
        .to_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 data");
    let scale = expected
        .values
        .iter()
        .fold(0f32, |m, v| m.max(v.abs()))
        .max(f32::MIN_POSITIVE);
    let diff = actual
        .iter()
        .zip(&expected.values)
        .fold(0f32, |m, (a, e)| m.max((a - e).abs()));
    diff / scale
}

/// Values of a tensor as f32.
pub fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 data")
}

/// One float tensor of a module, found by [`float_tensors`].
pub struct FloatTensor {
    /// Module path, e.g. `layers.0.blocks.1.Basic.norm1.Batch.gamma`.
    pub path: String,
    /// A parameter that requires gradients (not a BatchNorm running statistic).
    pub trainable: bool,
    pub values: Vec<f32>,
    /// Its gradient in `grads`, for a trainable tensor.
    pub grad: Option<Vec<f32>>,
}

/// Every float tensor of `module` by path, with its gradient when `grads` is given.
pub fn float_tensors(module: &impl Module, grads: Option<&Gradients>) -> Vec<FloatTensor> {
    struct Collect<'a> {
        grads: Option<&'a Gradients>,
        path: Vec<String>,
        tensors: Vec<FloatTensor>,
    }
    impl ModuleVisitor for Collect<'_> {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let tensor = param.val();
            let trainable = tensor.is_require_grad();
            let grad = match self.grads {
                Some(grads) if trainable => tensor.grad(grads).map(values),
                _ => None,
            };
            self.tensors.push(FloatTensor {
                path: self.path.join("."),
                trainable,
                values: values(tensor),
                grad,
            });
        }
    }
    let mut collect = Collect {
        grads,
        path: Vec::new(),
        tensors: Vec::new(),
    };
    module.visit(&mut collect);
    collect.tensors
}

/// `‖actual − expected‖ / ‖expected‖` (L2 over all elements).
pub fn l2_relative(actual: &[f32], expected: &[f32]) -> f64 {
    assert_eq!(actual.len(), expected.len(), "lengths");
    let diff: f64 = actual
        .iter()
        .zip(expected)
        .map(|(a, e)| ((a - e) as f64).powi(2))
        .sum();
    let norm: f64 = expected.iter().map(|e| (*e as f64).powi(2)).sum();
    diff.sqrt() / norm.sqrt().max(1e-30)
}

/// Every float tensor of a safetensors file as f32 (F32, F16 and BF16 files alike), sorted by
/// name; integer tensors (`num_batches_tracked`) are left out.
pub fn read_as_f32(path: &PathBuf) -> Vec<(String, NamedTensor)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors file");
    let mut tensors: Vec<_> = file
        .tensors()
        .into_iter()
        .filter_map(|(name, view)| {
            let values: Vec<f32> = match view.dtype() {
                safetensors::Dtype::F32 => view
                    .data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                safetensors::Dtype::F16 => view
                    .data()
                    .chunks_exact(2)
                    .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
                    .collect(),
                safetensors::Dtype::BF16 => view
                    .data()
                    .chunks_exact(2)
                    .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))
                    .collect(),
                _ => return None,
            };
            Some((
                name,
                NamedTensor {
                    shape: view.shape().to_vec(),
                    values,
                },
            ))
        })
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    tensors
}

/// IEEE half precision to f32 (exact).
fn f16_to_f32(bits: u16) -> f32 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exponent = ((bits >> 10) & 0x1f) as i32;
    let mantissa = (bits & 0x3ff) as f32;
    sign * match exponent {
        0 => mantissa * 2f32.powi(-24),
        31 if mantissa == 0.0 => f32::INFINITY,
        31 => f32::NAN,
        e => (1.0 + mantissa / 1024.0) * 2f32.powi(e - 15),
    }
}

/// A ResNet-18 at width 8 for training tests, without zero-init residuals: with a frozen last
/// norm at weight 0 a block's convs would (rightly) get no gradient at all.
pub const TINY: &str = "depth = 18\nbase_channels = 8\nzero_init_residual = false\n";
