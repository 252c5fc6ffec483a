//! Parity with mmdetection's own `ResNet`/`ResNeXt`/`Res2Net` in eval mode: the fixtures in
//! `tests/fixtures/parity/` were made by `tools/make_fixtures.py` from the real mmdet code with
//! random weights and BatchNorm statistics; every output must agree within 1e-4 (max abs
//! difference relative to the max abs value).

use burn::tensor::Device;
use burn_resnet::{BackendKind, ResNetConfig};

use crate::common::{devices, read_safetensors, relative_error, repo_path};

const TOLERANCE: f32 = 1e-4;

/// Check one eval-mode fixture on one device.
pub fn check_parity_on(case: &str, backend: BackendKind, device: &Device) {
    check_parity_in("tests/fixtures/parity", case, backend, device);
}

/// [`check_parity_on`] for a fixture in `dir`.
pub fn check_parity_in(dir: &str, case: &str, backend: BackendKind, device: &Device) {
    let config = ResNetConfig::from_toml_file(repo_path(&format!("{dir}/{case}.toml"))).unwrap();
    let (io, metadata) = read_safetensors(&repo_path(&format!("{dir}/{case}.io.safetensors")));
    let weights = repo_path(&format!("{dir}/{}", metadata["weights"]));
    let (inputs, outputs): (Vec<_>, Vec<_>) = io.iter().partition(|(name, _)| name == "input");
    assert_eq!(outputs.len(), config.validate().unwrap().out_indices.len());

    let backbone = config
        .init(device)
        .unwrap()
        .load_mmdet_safetensors(&weights)
        .unwrap();
    // The backbone as loaded, and with its BatchNorms folded into the convs for inference.
    for (variant, model) in [
        ("", backbone.clone()),
        (" folded", backbone.fold_batch_norms()),
    ] {
        let features = model.try_forward(inputs[0].1.to_tensor(device)).unwrap();
        assert_eq!(
            features.len(),
            outputs.len(),
            "{case}{variant} on {backend}: number of outputs"
        );
        for (feature, (name, expected)) in features.iter().zip(&outputs) {
            let error = relative_error(feature, expected);
            println!("{case}{variant} {name} on {backend}: relative error {error:.2e}");
            assert!(
                error <= TOLERANCE,
                "{case}{variant} {name} on {backend}: relative error {error:.2e} > {TOLERANCE:.0e}"
            );
        }
    }
}

fn check_parity(case: &str) {
    for (backend, device) in devices() {
        check_parity_on(case, backend, &device);
    }
}

#[test]
fn resnet18_matches_mmdet() {
    check_parity("resnet18");
}

#[test]
fn resnet50_pytorch_style_matches_mmdet() {
    check_parity("resnet50_pytorch");
}

#[test]
fn resnet50_caffe_style_matches_mmdet() {
    check_parity("resnet50_caffe");
}

#[test]
fn resnet50_v1d_deep_stem_and_avg_down_matches_mmdet() {
    check_parity("resnet50_v1d");
}

#[test]
fn resnext50_grouped_matches_mmdet() {
    check_parity("resnext50_4x2d");
}

#[test]
fn resnet50_dilated_output_stride_8_matches_mmdet() {
    check_parity("resnet50_dilated");
}

#[test]
fn resnet50_with_three_stages_matches_mmdet() {
    check_parity("resnet50_3stages");
}

#[test]
fn resnet18_v1c_with_two_outputs_matches_mmdet() {
    check_parity("resnet18_v1c_out13");
}

/// GCNet: mmdet's ResNet-50 with ContextBlock r16 after conv3 on stages 2-4, its checkpoint
/// (`layerN.i.context_block.*`) loaded strictly.
#[test]
fn resnet50_with_context_blocks_matches_mmdet() {
    check_parity("resnet50_gcb");
}

/// Two plugins at one position, in the order given: a sub-sampled NonLocal2d, then a
/// ContextBlock (mul and add fusion, postfix `_1`), after conv2 of stages 3-4.
#[test]
fn resnet50_with_non_local_and_context_blocks_at_one_position_matches_mmdet() {
    check_parity("resnet50_nonlocal_gcb");
}

/// ResNeXt with a ContextBlock after conv2: sized for the grouped width (mmdet #4228).
#[test]
fn resnext50_with_context_blocks_after_the_grouped_conv_matches_mmdet() {
    check_parity("resnext50_4x2d_gcb");
}

/// DCNv2 (mmcv's `ModulatedDeformConv2dPack`) on stages 2-4, random offsets and masks;
/// reference from `torchvision.ops.deform_conv2d` in mmcv's convention (`tools/reference_dcn.py`).
#[test]
fn resnet50_with_dcnv2_matches_mmdet() {
    check_parity("resnet50_dcnv2");
}

/// ResNeXt with DCN (v1, no mask) and two deform groups on stages 3-4.
#[test]
fn resnext50_with_grouped_dcn_matches_mmdet() {
    check_parity("resnext50_4x2d_dcn");
}

/// DCNv2 with plugins: a NonLocal2d after the deformable conv2, ContextBlocks after conv3.
#[test]
fn resnet50_with_dcn_and_plugins_matches_mmdet() {
    check_parity("resnet50_dcn_gcb");
}

/// GeneralizedAttention '1111' after conv2 of stages 3-4 (mmdet's empirical_attention configs).
#[test]
fn resnet50_with_generalized_attention_matches_mmdet() {
    check_parity("resnet50_gen_attention");
}

/// GeneralizedAttention '0010' (a learned query on key content), queries at stride 2.
#[test]
fn resnet50_with_key_content_attention_matches_mmdet() {
    check_parity("resnet50_attention0010");
}

/// Res2Net-50 (mmdet's `Res2Net`), 4 splits of width 4·2^i: deep stem, average-pool
/// shortcuts, each stage's first block without the hierarchical adds and with its last split
/// average-pooled where it strides.
#[test]
fn res2net50_matches_mmdet() {
    check_parity("res2net50_w4s4");
}

/// Res2Net with 3 splits, a dilated last stage and its stride moved to stage 3.
#[test]
fn res2net50_with_three_splits_and_dilation_matches_mmdet() {
    check_parity("res2net50_w4s3_dilated");
}

/// ResNeSt-50 (mmdet's `ResNeSt`), radix 2: the split attention's softmax over two parts, its
/// fc1/fc2 with biases and a 1x1 BatchNorm, strided blocks pooled after the attention.
#[test]
fn resnest50_matches_mmdet() {
    check_parity("resnest50_r2");
}

/// ResNeSt with radix 4 in 2 groups (the softmax per group), fc1 wider than 32 channels, the
/// stride on the conv (`avg_down_stride = false`) and a dilated last stage.
#[test]
fn resnest50_with_radix_4_groups_and_dilation_matches_mmdet() {
    check_parity("resnest50_r4_g2_dilated");
}

/// ResNeSt with radix 1 (a sigmoid gate) in caffe style (the stride on conv1, no pool).
#[test]
fn resnest50_with_radix_1_in_caffe_style_matches_mmdet() {
    check_parity("resnest50_r1_caffe");
}

/// ResNeSt with DCNv2 as the split-attention conv (stages 2-4) and ContextBlocks after the
/// attention and after conv3.
#[test]
fn resnest50_with_dcn_and_plugins_matches_mmdet() {
    check_parity("resnest50_dcn_gcb");
}

/// Every eval fixture on flex with each conv kernel this CPU runs forced: the `gemm` path, and
/// the AVX-512, AVX2 and portable micro-kernels (each CPU path checked on one machine), in both
/// inference layouts (the blocked one runs the fixtures whose units it supports: ResNet-18,
/// V1c, V1d, caffe, dilated, three stages, pytorch style; the others fall back to NCHW).
#[cfg(feature = "flex")]
#[test]
fn every_eval_fixture_matches_mmdet_with_every_conv_kernel() {
    let mut cases: Vec<String> = std::fs::read_dir(repo_path("tests/fixtures/parity"))
        .unwrap()
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            let case = name.strip_suffix(".io.safetensors")?;
            (!case.ends_with("_train")).then(|| case.to_string())
        })
        .collect();
    cases.sort();
    assert_eq!(cases.len(), 22, "the eval fixtures");
    let device = Device::flex();
    for kernel in burn_resnet::ConvKernel::ALL {
        if !kernel.is_supported() {
            println!("{kernel}: not supported by this CPU, skipped");
            continue;
        }
        for layout in burn_resnet::InferenceLayout::ALL {
            for case in &cases {
                kernel
                    .force(|| layout.force(|| check_parity_on(case, BackendKind::Flex, &device)))
                    .expect("a supported kernel");
            }
        }
    }
}

#[test]
fn every_fixture_has_a_test() {
    let tested = 22 + 9; // and the nine training cases in training_parity.rs
    let fixtures = std::fs::read_dir(repo_path("tests/fixtures/parity"))
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".io.safetensors")
        })
        .count();
    assert_eq!(
        fixtures, tested,
        "a parity fixture was added or removed; add or remove its test"
    );
}
