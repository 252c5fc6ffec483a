//! mmdet's initialisation: Kaiming normal (fan-out, ReLU gain) convs, norms at weight 1 and
//! bias 0, and each block's last norm at weight 0 under `zero_init_residual`.

use burn_resnet::block::Block;

use crate::common::{config, devices, read_safetensors, repo_path, values};

fn std_of(values: &[f32]) -> f32 {
    let mean = values.iter().sum::<f32>() / values.len() as f32;
    (values.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / values.len() as f32).sqrt()
}

#[test]
fn convs_use_kaiming_normal_with_fan_out() {
    for (_, device) in devices() {
        let backbone = config("depth = 50").init(&device).unwrap();
        let Block::Bottleneck(block) = &backbone.layers[3].blocks[1] else {
            panic!("bottleneck")
        };
        // conv2 of layer4: 512 -> 512, 3x3: fan_out = 512 * 9 (grouping does not divide it).
        let weights = values(block.conv2.weight().val());
        let expected = (2.0f32 / (512.0 * 9.0)).sqrt();
        let std = std_of(&weights);
        assert!(
            (std / expected - 1.0).abs() < 0.02,
            "std {std}, expected {expected}"
        );
        let mean = weights.iter().sum::<f32>() / weights.len() as f32;
        assert!(mean.abs() < expected * 0.01, "mean {mean}");
    }
}

#[test]
fn grouped_convs_use_pytorchs_fan_out() {
    for (_, device) in devices() {
        let backbone = config("depth = 101\ngroups = 32\nbase_width = 4")
            .init(&device)
            .unwrap();
        let Block::Bottleneck(block) = &backbone.layers[2].blocks[5] else {
            panic!("bottleneck")
        };
        // conv2 of layer3 in ResNeXt-101 32x4d: width 512, 32 groups; PyTorch's fan_out = 512 * 9.
        assert_eq!(block.conv2.weight().dims(), [512, 16, 3, 3]);
        let std = std_of(&values(block.conv2.weight().val()));
        let expected = (2.0f32 / (512.0 * 9.0)).sqrt();
        assert!(
            (std / expected - 1.0).abs() < 0.03,
            "std {std}, expected {expected}"
        );
    }
}

#[test]
fn zero_init_residual_zeroes_only_the_last_norm_of_each_block() {
    for (_, device) in devices() {
        for (toml, zero) in [
            ("depth = 50\nbase_channels = 8", true),
            (
                "depth = 50\nbase_channels = 8\nzero_init_residual = false",
                false,
            ),
        ] {
            let backbone = config(toml).init(&device).unwrap();
            for layer in &backbone.layers {
                for block in &layer.blocks {
                    let Block::Bottleneck(block) = block else {
                        panic!("bottleneck")
                    };
                    let burn_resnet::norm::Norm::Batch(norm3) = &block.norm3 else {
                        panic!("batch norm")
                    };
                    let burn_resnet::norm::Norm::Batch(norm1) = &block.norm1 else {
                        panic!("batch norm")
                    };
                    let last = values(norm3.gamma.val());
                    assert!(
                        last.iter().all(|g| *g == if zero { 0.0 } else { 1.0 }),
                        "{toml}: norm3 {last:?}"
                    );
                    assert!(values(norm1.gamma.val()).iter().all(|g| *g == 1.0));
                    assert!(values(norm3.beta.val()).iter().all(|b| *b == 0.0));
                }
            }
        }
    }
}

#[test]
fn basic_blocks_zero_their_second_norm() {
    for (_, device) in devices() {
        let backbone = config("depth = 18\nbase_channels = 4")
            .init(&device)
            .unwrap();
        let Block::Basic(block) = &backbone.layers[0].blocks[0] else {
            panic!("basic")
        };
        let burn_resnet::norm::Norm::Batch(norm2) = &block.norm2 else {
            panic!("batch norm")
        };
        assert!(values(norm2.gamma.val()).iter().all(|g| *g == 0.0));
    }
}

/// mmcv's deformable-conv init: `conv_offset` zero (each DCN starts as its regular conv), DCNv2's
/// weight uniform in ±1/√(in·9), DCN's Kaiming-uniform in ±√(6 / (in/groups · 9)).
#[test]
fn deformable_convs_use_mmcvs_init() {
    use burn_resnet::dcn::SpatialConv;
    for (_, device) in devices() {
        for (kind, groups, stage) in [("DCNv2", 1, 1), ("DCN", 1, 2), ("DCN", 32, 3)] {
            let toml = format!(
                "depth = 50\ngroups = {groups}\nbase_width = 4\nstage_with_dcn = [false, true, true, true]\ndcn = {{ type = \"{kind}\", deform_groups = 2 }}"
            );
            let backbone = config(&toml).init(&device).unwrap();
            let Block::Bottleneck(block) = &backbone.layers[stage].blocks[1] else {
                panic!("bottleneck")
            };
            let SpatialConv::Deformable(dcn) = &block.conv2 else {
                panic!("{kind}: conv2 of stage {stage} is not deformable")
            };
            let [out, per_group, _, _] = dcn.weight.dims();
            let in_channels = per_group * groups;
            let bound = match kind {
                "DCNv2" => 1.0 / ((in_channels * 9) as f32).sqrt(),
                _ => (6.0 / ((per_group * 9) as f32)).sqrt(),
            };
            let weights = values(dcn.weight.val());
            let max = weights.iter().fold(0f32, |m, w| m.max(w.abs()));
            assert!(
                max <= bound && max > 0.99 * bound,
                "{kind}: max |w| {max}, bound {bound}"
            );
            // Uniform in ±bound: std bound/√3.
            let std = std_of(&weights);
            assert!(
                (std * 3f32.sqrt() / bound - 1.0).abs() < 0.02,
                "{kind}: std {std}, bound {bound}"
            );
            let parts = if kind == "DCNv2" { 3 } else { 2 };
            assert_eq!(
                dcn.conv_offset.weight.dims(),
                [2 * parts * 9, in_channels, 3, 3],
                "{kind}: offset channels"
            );
            assert_eq!(out, in_channels);
            assert!(
                values(dcn.conv_offset.weight.val())
                    .iter()
                    .all(|v| *v == 0.0)
            );
            assert!(
                values(dcn.conv_offset.bias.as_ref().unwrap().val())
                    .iter()
                    .all(|v| *v == 0.0)
            );
        }
        // Stage 0 is not in stage_with_dcn: regular.
        let backbone = config(
            "depth = 50\nstage_with_dcn = [false, true, true, true]\ndcn = { type = \"DCNv2\" }",
        )
        .init(&device)
        .unwrap();
        let Block::Bottleneck(block) = &backbone.layers[0].blocks[0] else {
            panic!("bottleneck")
        };
        assert!(matches!(block.conv2, SpatialConv::Regular(_)));
    }
}

/// One tensor of `tools/make_init_fixture.py`'s record of mmdet's `init_weights()`.
#[derive(serde::Deserialize)]
struct InitTensor {
    name: String,
    kind: String,
    shape: Vec<usize>,
    #[serde(default)]
    all_zero: bool,
    #[serde(default)]
    all_one: bool,
    #[serde(default)]
    std: f64,
    excess_kurtosis: Option<f64>,
}

#[derive(serde::Deserialize)]
struct InitFixture {
    toml: String,
    tensors: Vec<InitTensor>,
}

/// Where burn-resnet's init differs from mmdet's `init_weights()` on purpose (docs/differences.md,
/// "Differences from mmdet"): what ours gives instead, as `(all zero, std)`.
/// - ResNeXt: mmdet tests `block is Bottleneck`, so its ResNeXt ignores `zero_init_residual`;
///   here the flag means what it says and `norm3` starts at 0.
/// - ContextBlock: mmdet's from-scratch init re-initialises every conv with the backbone's
///   Kaiming (fan-out), so its last conv is not zero and the block does not start as the
///   identity; here it is mmcv's own init (`conv_mask` Kaiming fan-in, transforms PyTorch's
///   default, last conv zero), which is also what mmdet's detectors get when the backbone
///   starts from ImageNet weights (the plugin is not in the checkpoint).
fn documented_difference(
    case: &str,
    tensor: &InitTensor,
    all: &[InitTensor],
) -> Option<(bool, f64)> {
    let name = tensor.name.as_str();
    // The fan-in of the conv the tensor belongs to (a bias's from its weight's shape).
    let weight = all
        .iter()
        .find(|t| t.name == name.replace(".bias", ".weight"))
        .unwrap_or(tensor);
    let fan_in = weight.shape.iter().skip(1).product::<usize>() as f64;
    if case == "resnext50_4x4d" && name.ends_with(".bn3.weight") {
        return Some((true, 0.0));
    }
    if name.contains(".context_block.") {
        return Some(match name {
            n if n.ends_with("conv_mask.weight") => (false, (2.0 / fan_in).sqrt()),
            // PyTorch's default: uniform in ±1/√fan_in, weight and bias.
            n if n.contains("channel_add_conv.0.") => (false, 1.0 / (3.0 * fan_in).sqrt()),
            n if n.contains("channel_add_conv.3.") => (true, 0.0),
            _ => return None,
        });
    }
    None
}

fn kurtosis(values: &[f32], std: f32) -> f64 {
    let mean = values.iter().map(|v| *v as f64).sum::<f64>() / values.len() as f64;
    values
        .iter()
        .map(|v| ((*v as f64 - mean) / std as f64).powi(4))
        .sum::<f64>()
        / values.len() as f64
        - 3.0
}

/// Every tensor of a freshly built backbone against mmdet's `init_weights()` (fixtures from
/// mmdet's real ResNet/ResNeXt with plugins): the same tensors are zero and one, the random ones
/// have mmdet's std (within sampling error) and distribution shape (normal or uniform, by the
/// kurtosis), except where `documented_difference` says otherwise.
#[test]
fn initialisation_matches_mmdets_init_weights() {
    let (_, device) = devices().remove(0);
    let cases = [
        "resnet18",
        "resnet50",
        "resnext50_4x4d",
        "resnet50_gcb",
        "resnet50_nonlocal_attention",
    ];
    for case in cases {
        let path = repo_path(&format!("tests/fixtures/init/{case}.json"));
        let fixture: InitFixture =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let backbone = config(&fixture.toml).init(&device).unwrap();
        let file = std::env::temp_dir().join(format!(
            "burn-resnet-init-{}-{case}.safetensors",
            std::process::id()
        ));
        backbone
            .save_weights(&file, burn_resnet::weights::WeightSource::Mmdet)
            .unwrap();
        let (ours, _) = read_safetensors(&file);
        std::fs::remove_file(&file).unwrap();
        let expected: Vec<&InitTensor> = fixture
            .tensors
            .iter()
            .filter(|t| !t.name.ends_with("num_batches_tracked"))
            .collect();
        assert_eq!(ours.len(), expected.len(), "{case}: tensors");
        let mut differences = 0;
        for reference in expected {
            let what = format!("{case}: {} ({})", reference.name, reference.kind);
            let (_, tensor) = ours
                .iter()
                .find(|(name, _)| *name == reference.name)
                .unwrap_or_else(|| panic!("{what}: not in ours"));
            assert_eq!(tensor.shape, reference.shape, "{what}");
            let values = &tensor.values;
            let n = values.len() as f64;
            let all_zero = values.iter().all(|v| *v == 0.0);
            let all_one = values.iter().all(|v| *v == 1.0);
            let std = std_of(values);
            let difference = documented_difference(case, reference, &fixture.tensors);
            let (zero, expected_std, one) = match difference {
                Some((zero, std)) => {
                    differences += 1;
                    (zero, std, false)
                }
                None => (reference.all_zero, reference.std, reference.all_one),
            };
            assert_eq!((all_zero, all_one), (zero, one), "{what}: zero/one");
            if expected_std > 0.0 && !one {
                // The sample std of n draws is within a few 1/√(2n) of the true one.
                let tolerance = 5.0 / (2.0 * n).sqrt() + 0.01;
                assert!(
                    (std as f64 / expected_std - 1.0).abs() < tolerance,
                    "{what}: std {std}, mmdet's {expected_std}"
                );
            }
            if let (Some(reference_kurtosis), true) = (
                reference.excess_kurtosis,
                n >= 4000.0 && difference.is_none(),
            ) {
                let ours = kurtosis(values, std);
                assert!(
                    (ours - reference_kurtosis).abs() < 0.4,
                    "{what}: kurtosis {ours:.2}, mmdet's {reference_kurtosis:.2} (normal 0, uniform -1.2)"
                );
            }
        }
        let expected_differences = match case {
            "resnext50_4x4d" => 16,
            "resnet50_gcb" => 13 * 5,
            _ => 0,
        };
        assert_eq!(
            differences, expected_differences,
            "{case}: documented differences"
        );
    }
}
