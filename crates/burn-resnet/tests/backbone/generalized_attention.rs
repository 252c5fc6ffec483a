//! mmcv's `GeneralizedAttention` on its own, against mmcv's module (`tools/make_plugin_fixtures.py`):
//! every attention type alone and in pairs, query and key strides, position settings and the
//! spatial range, every weight random (the zero-initialised `gamma` included).

use burn::store::{ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use burn_resnet::plugin::{
    AttentionType, GeneralizedAttentionArgs, GeneralizedAttentionConfig, PluginConfig,
};

use burn::module::Module;

use crate::common::{
    devices, float_tensors, l2_relative, read_safetensors, relative_error, repo_path, tensor_named,
    values,
};

/// mmcv's arguments from a fixture's description (`in_channels=16 num_heads=2 …`), mmcv's
/// defaults for the rest.
fn config_of(description: &str) -> GeneralizedAttentionConfig {
    let arg = |name: &str| {
        description
            .split(' ')
            .find_map(|pair| pair.strip_prefix(&format!("{name}=")))
    };
    let defaults = GeneralizedAttentionArgs::default();
    let args = GeneralizedAttentionArgs {
        spatial_range: arg("spatial_range").map_or(defaults.spatial_range, |v| v.parse().unwrap()),
        num_heads: arg("num_heads").map_or(defaults.num_heads, |v| v.parse().unwrap()),
        position_embedding_dim: arg("position_embedding_dim")
            .map_or(defaults.position_embedding_dim, |v| v.parse().unwrap()),
        position_magnitude: arg("position_magnitude")
            .map_or(defaults.position_magnitude, |v| v.parse().unwrap()),
        kv_stride: arg("kv_stride").map_or(defaults.kv_stride, |v| v.parse().unwrap()),
        q_stride: arg("q_stride").map_or(defaults.q_stride, |v| v.parse().unwrap()),
        attention_type: arg("attention_type").map_or(defaults.attention_type, |v| {
            AttentionType::try_from(v.to_string()).unwrap()
        }),
        postfix: String::new(),
    };
    args.config(arg("in_channels").unwrap().parse().unwrap())
}

#[test]
fn generalized_attention_matches_mmcv() {
    let path = repo_path("tests/fixtures/plugins/generalized_attention.safetensors");
    let (tensors, metadata) = read_safetensors(&path);
    let get = |key: &str| tensor_named(&tensors, key);
    assert_eq!(metadata.len(), 9);
    let metadata: std::collections::HashMap<_, _> = metadata;
    for (case, description) in &metadata {
        let config = config_of(description);
        assert_eq!(config.check(), None, "{case}");
        for (backend, device) in devices() {
            let mut block = config.init(&device);
            let mut store = SafetensorsStore::from_file(&path)
                .with_key_remapping(format!(r"^{case}\."), "")
                .with_from_adapter(PyTorchToBurnAdapter)
                .allow_partial(true);
            let result = block.load_from(&mut store).unwrap();
            assert!(
                result.missing.is_empty() && result.errors.is_empty(),
                "{case}: {result:?}"
            );
            let output = block.forward(get(&format!("{case}.input")).to_tensor(&device));
            let error = relative_error(&output, get(&format!("{case}.output")));
            println!("{case} on {backend}: relative error {error:.2e}");
            assert!(
                error < 1e-5,
                "{case} on {backend}: relative error {error:e}"
            );
            // Every tensor mmcv's module has for this type was used: the block has the same parts.
            let unused: Vec<&String> = result
                .unused
                .iter()
                .filter(|key| {
                    !metadata
                        .keys()
                        .any(|other| key.starts_with(&format!("{other}.")))
                })
                .filter(|key| {
                    *key != "input"
                        && *key != "output"
                        && *key != "probe"
                        && !key.starts_with("grad.")
                })
                .collect();
            assert!(
                unused.is_empty(),
                "{case}: mmcv tensors without a place here: {unused:?}"
            );
        }
    }
}

/// Gradients of `sum(output · probe)` for the input and every parameter, against mmcv's module
/// in float64 (L2-relative per tensor; Linear weights compared transposed, Burn's layout).
#[test]
fn generalized_attention_gradients_match_mmcv() {
    let path = repo_path("tests/fixtures/plugins/generalized_attention.safetensors");
    let (tensors, metadata) = read_safetensors(&path);
    let get = |key: &str| tensor_named(&tensors, key);
    for (case, description) in &metadata {
        let config = config_of(description);
        for (backend, device) in devices() {
            let training = device.clone().autodiff();
            let mut store = SafetensorsStore::from_file(&path)
                .with_key_remapping(format!(r"^{case}\."), "")
                .with_from_adapter(PyTorchToBurnAdapter)
                .allow_partial(true);
            let mut block = config.init(&device);
            block.load_from(&mut store).unwrap();
            let block = block.fork(&training).train();
            let input = get(&format!("{case}.input"))
                .to_tensor::<4>(&training)
                .require_grad();
            let loss = (block.forward(input.clone())
                * get(&format!("{case}.probe")).to_tensor(&training))
            .sum();
            let grads = loss.backward();
            let mut compared = vec![(
                "input".to_string(),
                l2_relative(
                    &values(input.grad(&grads).unwrap()),
                    &get(&format!("{case}.grad.input")).values,
                ),
            )];
            for tensor in float_tensors(&block, Some(&grads)) {
                let expected = get(&format!("{case}.grad.{}", tensor.path));
                let mut actual = tensor
                    .grad
                    .unwrap_or_else(|| panic!("{case}: {}: no gradient", tensor.path));
                if tensor.path.starts_with("appr_geom_fc") {
                    // Burn's Linear weight is [in, out], PyTorch's [out, in].
                    let (inputs, outputs) = (expected.shape[1], expected.shape[0]);
                    actual = (0..outputs * inputs)
                        .map(|i| actual[(i % inputs) * outputs + i / inputs])
                        .collect();
                }
                compared.push((tensor.path, l2_relative(&actual, &expected.values)));
            }
            for (name, error) in &compared {
                assert!(
                    *error < 1e-4,
                    "{case} on {backend}: gradient of {name}: relative error {error:.2e}"
                );
            }
            let worst = compared.iter().map(|(_, e)| *e).fold(0.0, f64::max);
            println!(
                "{case} on {backend}: {} gradients, worst relative error {worst:.2e}",
                compared.len()
            );
        }
    }
}

#[test]
fn invalid_generalized_attention_settings_are_reported() {
    for bad in ["\"11110\"", "\"0000\"", "\"1a11\"", "\"111\""] {
        let toml = format!("type = \"GeneralizedAttention\"\nattention_type = {bad}");
        let error = toml::from_str::<PluginConfig>(&toml)
            .unwrap_err()
            .to_string();
        assert!(error.contains("four 0/1 flags"), "{bad}: {error}");
    }
    let check = |toml: &str, channels: usize| {
        toml::from_str::<PluginConfig>(toml)
            .unwrap()
            .check(channels)
    };
    let reason = check("type = \"GeneralizedAttention\"\nnum_heads = 9", 8).unwrap();
    assert!(reason.contains("num_heads 9"), "{reason}");
    // Sines and cosines of two axes: the embedding needs a multiple of 4 features.
    let reason = check(
        "type = \"GeneralizedAttention\"\nnum_heads = 2\nposition_embedding_dim = 6",
        8,
    )
    .unwrap();
    assert!(reason.contains("multiple of 4"), "{reason}");
    // Without position terms the embedding is not built, so its size does not matter.
    assert_eq!(
        check(
            "type = \"GeneralizedAttention\"\nnum_heads = 2\nattention_type = \"1010\"\nposition_embedding_dim = 6",
            8
        ),
        None
    );
    let reason = check(
        "type = \"GeneralizedAttention\"\nnum_heads = 2\nkv_stride = 0",
        8,
    )
    .unwrap();
    assert!(reason.contains("kv_stride 0"), "{reason}");
}

/// mmcv stores a GeneralizedAttention's `spatial_range` window as a uint8 "parameter"
/// (`local_constraint_map`, 84x84x42x42 at 256 channels): it is derived from the config, so a
/// checkpoint's copy is skipped (and reported), not an unexpected key.
#[test]
fn the_derived_local_constraint_map_is_skipped_when_loading() {
    use burn_resnet::ResNetConfig;
    let dir = "tests/fixtures/parity";
    let config =
        ResNetConfig::from_toml_file(repo_path(&format!("{dir}/resnet50_gen_attention.toml")))
            .unwrap();
    let bytes = std::fs::read(repo_path(&format!(
        "{dir}/resnet50_gen_attention.weights.safetensors"
    )))
    .unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, safetensors::tensor::TensorView)> = file.tensors();
    let map = vec![1u8; 4 * 4 * 2 * 2];
    let key = "layer3.0.gen_attention_block.local_constraint_map".to_string();
    tensors.push((
        key.clone(),
        safetensors::tensor::TensorView::new(safetensors::Dtype::U8, vec![4, 4, 2, 2], &map)
            .unwrap(),
    ));
    let path = std::env::temp_dir().join(format!(
        "burn-resnet-ga-map-{}.safetensors",
        std::process::id()
    ));
    safetensors::serialize_to_file(tensors, None, &path).unwrap();
    let (_, device) = devices().remove(0);
    let loaded = config.init(&device).unwrap().load_weights(&path, None);
    std::fs::remove_file(&path).unwrap();
    let (_, report) = loaded.unwrap();
    assert_eq!(report.skipped, vec![key]);
}
