//! The plugins ported from mmcv against mmcv itself: ContextBlock and NonLocal2d with random
//! weights (`tools/make_plugin_fixtures.py`), every variant; GeneralizedAttention's are in
//! `generalized_attention.rs`.

use burn::tensor::{Device, Tensor};

use crate::common::{devices, tensor_named};

/// mmcv's ContextBlock with random weights (`tools/make_plugin_fixtures.py`), every pooling and
/// fusion variant: the same output.
#[test]
fn context_block_matches_mmcv() {
    use crate::common::{NamedTensor, read_safetensors, relative_error, repo_path};
    use burn::module::Param;
    use burn_resnet::plugin::{
        ContextBlock, ContextBlockConfig, ContextTransform, Fusion, Pooling,
    };

    let (tensors, metadata) = read_safetensors(&repo_path(
        "tests/fixtures/plugins/context_block.safetensors",
    ));
    let get = |key: &str| tensor_named(&tensors, key);
    let vector = |t: &NamedTensor, device: &Device| -> Tensor<1> {
        Tensor::from_data(
            burn::tensor::TensorData::new(t.values.clone(), [t.values.len()]),
            device,
        )
    };
    for (case, description) in &metadata {
        let fields: Vec<&str> = description.split(' ').collect();
        let config = ContextBlockConfig {
            channels: fields[0].parse().unwrap(),
            ratio: fields[1].parse().unwrap(),
            pooling: if fields[2] == "att" {
                Pooling::Attention
            } else {
                Pooling::Average
            },
            fusions: fields[3]
                .split(',')
                .map(|f| {
                    if f == "channel_add" {
                        Fusion::ChannelAdd
                    } else {
                        Fusion::ChannelMul
                    }
                })
                .collect(),
        };
        for (backend, device) in devices() {
            let mut block: ContextBlock = config.init(&device);
            let conv = |prefix: &str, conv: &mut burn::nn::conv::Conv2d| {
                conv.weight =
                    Param::from_tensor(get(&format!("{case}.{prefix}.weight")).to_tensor(&device));
                conv.bias = Some(Param::from_tensor(vector(
                    get(&format!("{case}.{prefix}.bias")),
                    &device,
                )));
            };
            if let Some(mask) = block.conv_mask.as_mut() {
                conv("conv_mask", mask);
            }
            let transform = |name: &str, t: &mut ContextTransform| {
                conv(&format!("{name}.0"), &mut t.reduce);
                t.norm.weight =
                    Param::from_tensor(get(&format!("{case}.{name}.1.weight")).to_tensor(&device));
                t.norm.bias =
                    Param::from_tensor(get(&format!("{case}.{name}.1.bias")).to_tensor(&device));
                conv(&format!("{name}.3"), &mut t.expand);
            };
            if let Some(t) = block.channel_add.as_mut() {
                transform("channel_add_conv", t);
            }
            if let Some(t) = block.channel_mul.as_mut() {
                transform("channel_mul_conv", t);
            }
            let output = block.forward(get(&format!("{case}.input")).to_tensor(&device));
            let error = relative_error(&output, get(&format!("{case}.output")));
            assert!(
                error < 1e-5,
                "{case} on {backend}: relative error {error:e}"
            );
        }
    }
}

/// mmcv's NonLocal2d with random weights, every mode, with and without `sub_sample`.
#[test]
fn non_local_matches_mmcv() {
    use crate::common::{read_safetensors, relative_error, repo_path};
    use burn::module::Param;
    use burn_resnet::plugin::{NonLocal2dConfig, NonLocalMode};

    let (tensors, metadata) =
        read_safetensors(&repo_path("tests/fixtures/plugins/non_local.safetensors"));
    let get = |key: &str| tensor_named(&tensors, key);
    for (case, description) in &metadata {
        let f: Vec<&str> = description.split(' ').collect();
        let config = NonLocal2dConfig {
            channels: f[0].parse().unwrap(),
            reduction: f[1].parse().unwrap(),
            use_scale: f[2] == "true",
            mode: match f[3] {
                "embedded_gaussian" => NonLocalMode::EmbeddedGaussian,
                "dot_product" => NonLocalMode::DotProduct,
                _ => NonLocalMode::Gaussian,
            },
            sub_sample: f[4] == "true",
        };
        for (backend, device) in devices() {
            let mut block = config.init(&device);
            let load = |conv: &mut burn::nn::conv::Conv2d, part: &str| {
                let prefix = if config.sub_sample && (part == "g" || part == "phi") {
                    format!("{case}.{part}.0.conv")
                } else {
                    format!("{case}.{part}.conv")
                };
                conv.weight =
                    Param::from_tensor(get(&format!("{prefix}.weight")).to_tensor(&device));
                let bias = get(&format!("{prefix}.bias"));
                conv.bias = Some(Param::from_tensor(Tensor::from_data(
                    burn::tensor::TensorData::new(bias.values.clone(), [bias.values.len()]),
                    &device,
                )));
            };
            load(&mut block.g, "g");
            load(&mut block.conv_out, "conv_out");
            if let Some(theta) = block.theta.as_mut() {
                load(theta, "theta");
            }
            if let Some(phi) = block.phi.as_mut() {
                load(phi, "phi");
            }
            let output = block.forward(get(&format!("{case}.input")).to_tensor(&device));
            let error = relative_error(&output, get(&format!("{case}.output")));
            assert!(
                error < 1e-5,
                "{case} on {backend}: relative error {error:e}"
            );
        }
    }
}
