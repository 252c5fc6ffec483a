//! Deformable convs (`dcn` / `stage_with_dcn`) beyond the mmdet fixtures of `parity.rs`:
//! ImageNet weights into a DCN backbone, strictness about offset convs, `fallback_on_stride`,
//! typed config errors.

use std::collections::HashMap;

use burn_resnet::block::Block;
use burn_resnet::dcn::SpatialConv;
use burn_resnet::{ResNetConfig, ResNetError};

use crate::common::{config, devices, read_safetensors, relative_error, repo_path};

const DCN_STAGES_2_TO_4: &str = "stage_with_dcn = [false, true, true, true]";

fn error_of(toml: &str) -> ResNetError {
    match ResNetConfig::from_toml_str(toml, "test.toml") {
        Err(error) => error,
        Ok(config) => config
            .validate()
            .expect_err("the config should be rejected"),
    }
}

/// A checkpoint without offset convs (here: mmdet's plain ResNet-50 fixture) loads into a DCN
/// backbone strictly, the offset convs keep their zero init and are reported; with DCN (v1) a
/// zero offset samples exactly the pixel grid, so the outputs are the plain ResNet's.
#[test]
fn plain_weights_load_into_a_dcn_backbone_with_zero_offsets() {
    let dir = "tests/fixtures/parity";
    let plain =
        std::fs::read_to_string(repo_path(&format!("{dir}/resnet50_pytorch.toml"))).unwrap();
    let dcn = config(&format!(
        "{plain}\n{DCN_STAGES_2_TO_4}\ndcn = {{ type = \"DCN\" }}\n"
    ));
    let (io, _) = read_safetensors(&repo_path(&format!(
        "{dir}/resnet50_pytorch.io.safetensors"
    )));
    let weights = repo_path(&format!("{dir}/resnet50_pytorch.weights.safetensors"));
    for (backend, device) in devices() {
        let (backbone, report) = dcn
            .init(&device)
            .unwrap()
            .load_weights(&weights, None)
            .unwrap();
        // Stages 2-4 of ResNet-50 have 4 + 6 + 3 blocks, each with an offset conv weight and bias.
        assert_eq!(
            report.zero_offsets.len(),
            2 * 13,
            "{:?}",
            report.zero_offsets
        );
        assert!(
            report
                .zero_offsets
                .contains(&"layer3.5.conv2.conv_offset.weight".to_string()),
            "{:?}",
            report.zero_offsets
        );
        let input = io
            .iter()
            .find(|(name, _)| name == "input")
            .unwrap()
            .1
            .to_tensor(&device);
        let features = backbone.forward(input);
        assert_eq!(features.len(), io.len() - 1, "{backend}: outputs");
        for (feature, (name, expected)) in features
            .iter()
            .zip(io.iter().filter(|(name, _)| name != "input"))
        {
            let error = relative_error(feature, expected);
            assert!(
                error <= 1e-5,
                "{name} on {backend}: relative error {error:.2e}"
            );
        }
    }
}

/// A file that has offset convs must have every one: a missing one is an error, by its key.
#[test]
fn a_checkpoint_with_some_offset_convs_must_have_all() {
    let dir = "tests/fixtures/parity";
    let config =
        ResNetConfig::from_toml_file(repo_path(&format!("{dir}/resnet50_dcnv2.toml"))).unwrap();
    let bytes = std::fs::read(repo_path(&format!(
        "{dir}/resnet50_dcnv2.weights.safetensors"
    )))
    .unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let dropped = "layer4.2.conv2.conv_offset.bias";
    let kept: HashMap<String, safetensors::tensor::TensorView> = file
        .tensors()
        .into_iter()
        .filter(|(name, _)| name != dropped)
        .collect();
    let path = std::env::temp_dir().join(format!(
        "burn-resnet-dcn-partial-{}.safetensors",
        std::process::id()
    ));
    safetensors::serialize_to_file(kept, None, &path).unwrap();
    let (_, device) = devices().remove(0);
    let error = config
        .init(&device)
        .unwrap()
        .load_weights(&path, None)
        .unwrap_err();
    std::fs::remove_file(&path).unwrap();
    let ResNetError::Weights { problems, .. } = &error else {
        panic!("{error:?}")
    };
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with(&format!("missing: {dropped}"))),
        "{error}"
    );
}

/// `fallback_on_stride` keeps a regular conv where the 3x3 conv is strided: the first block of
/// stages 2-4 under `style = "pytorch"`, none under `"caffe"` (stride on conv1).
#[test]
fn fallback_on_stride_keeps_regular_convs_where_conv2_is_strided() {
    let (_, device) = devices().remove(0);
    for (style, first_block_regular) in [("pytorch", true), ("caffe", false)] {
        let toml = format!(
            "depth = 50\nbase_channels = 8\nstyle = \"{style}\"\n{DCN_STAGES_2_TO_4}\ndcn = {{ type = \"DCNv2\", fallback_on_stride = true }}"
        );
        let backbone = config(&toml).init(&device).unwrap();
        for (stage, layer) in backbone.layers.iter().enumerate() {
            for (index, block) in layer.blocks.iter().enumerate() {
                let Block::Bottleneck(block) = block else {
                    panic!("bottleneck")
                };
                let regular = matches!(block.conv2, SpatialConv::Regular(_));
                let expected = stage == 0 || (index == 0 && first_block_regular);
                assert_eq!(
                    regular,
                    expected,
                    "{style}: layer{} block {index}",
                    stage + 1
                );
            }
        }
    }
}

#[test]
fn invalid_dcn_configs_are_typed_errors() {
    let error =
        error_of("depth = 50\nstage_with_dcn = [false, true, true]\ndcn = { type = \"DCNv2\" }");
    assert!(
        matches!(&error, ResNetError::WrongLength { field, expected: 4, got: 3 } if field == "stage_with_dcn"),
        "{error:?}"
    );

    let error = error_of(&format!("depth = 50\n{DCN_STAGES_2_TO_4}"));
    assert!(
        matches!(&error, ResNetError::Incompatible { field, .. } if field == "stage_with_dcn"),
        "{error:?}"
    );

    let error = error_of("depth = 50\ndcn = { type = \"DCNv2\" }");
    assert!(
        matches!(&error, ResNetError::Incompatible { field, .. } if field == "dcn"),
        "{error:?}"
    );
    assert!(error.to_string().contains("stage_with_dcn"), "{error}");

    let error = error_of(&format!(
        "depth = 18\n{DCN_STAGES_2_TO_4}\ndcn = {{ type = \"DCN\" }}"
    ));
    assert!(
        matches!(&error, ResNetError::Incompatible { field, .. } if field == "dcn"),
        "{error:?}"
    );
    assert!(error.to_string().contains("BasicBlock"), "{error}");

    // Stage 2's conv2 has 128 channels: 3 deform groups do not divide them.
    let error = error_of(&format!(
        "depth = 50\n{DCN_STAGES_2_TO_4}\ndcn = {{ type = \"DCN\", deform_groups = 3 }}"
    ));
    assert!(
        matches!(&error, ResNetError::Incompatible { field, .. } if field == "dcn.deform_groups"),
        "{error:?}"
    );
    assert!(error.to_string().contains("128"), "{error}");

    let error = error_of(&format!(
        "depth = 50\n{DCN_STAGES_2_TO_4}\ndcn = {{ type = \"DCN\", deform_groups = 0 }}"
    ));
    assert!(
        matches!(&error, ResNetError::TooSmall { field, .. } if field == "dcn.deform_groups"),
        "{error:?}"
    );

    for bad in [
        "dcn = { type = \"DCNv3\" }",
        "dcn = { type = \"DCN\", groups = 2 }",
    ] {
        let error = error_of(&format!("depth = 50\n{DCN_STAGES_2_TO_4}\n{bad}"));
        assert!(
            matches!(&error, ResNetError::Parse { .. }),
            "{bad}: {error:?}"
        );
    }
}
