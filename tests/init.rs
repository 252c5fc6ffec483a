//! mmdet's initialisation: Kaiming normal (fan-out, ReLU gain) convs, norms at weight 1 and
//! bias 0, and each block's last norm at weight 0 under `zero_init_residual`.

use burn_resnet::block::Block;

use crate::common::{config, devices, values};

fn std_of(values: &[f32]) -> f32 {
    let mean = values.iter().sum::<f32>() / values.len() as f32;
    (values.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / values.len() as f32).sqrt()
}

#[test]
fn convs_use_kaiming_normal_with_fan_out() {
    for (_, device) in devices() {
        let backbone = config("depth = 50").init(&device).unwrap();
        let Block::Bottleneck(block) = &backbone.layers[3].blocks[1] else { panic!("bottleneck") };
        // conv2 of layer4: 512 -> 512, 3x3: fan_out = 512 * 9 (grouping does not divide it).
        let weights = values(block.conv2.weight().val());
        let expected = (2.0f32 / (512.0 * 9.0)).sqrt();
        let std = std_of(&weights);
        assert!((std / expected - 1.0).abs() < 0.02, "std {std}, expected {expected}");
        let mean = weights.iter().sum::<f32>() / weights.len() as f32;
        assert!(mean.abs() < expected * 0.01, "mean {mean}");
    }
}

#[test]
fn grouped_convs_use_pytorchs_fan_out() {
    for (_, device) in devices() {
        let backbone = config("depth = 101\ngroups = 32\nbase_width = 4").init(&device).unwrap();
        let Block::Bottleneck(block) = &backbone.layers[2].blocks[5] else { panic!("bottleneck") };
        // conv2 of layer3 in ResNeXt-101 32x4d: width 512, 32 groups; PyTorch's fan_out = 512 * 9.
        assert_eq!(block.conv2.weight().dims(), [512, 16, 3, 3]);
        let std = std_of(&values(block.conv2.weight().val()));
        let expected = (2.0f32 / (512.0 * 9.0)).sqrt();
        assert!((std / expected - 1.0).abs() < 0.03, "std {std}, expected {expected}");
    }
}

#[test]
fn zero_init_residual_zeroes_only_the_last_norm_of_each_block() {
    for (_, device) in devices() {
        for (toml, zero) in [("depth = 50\nbase_channels = 8", true), ("depth = 50\nbase_channels = 8\nzero_init_residual = false", false)] {
            let backbone = config(toml).init(&device).unwrap();
            for layer in &backbone.layers {
                for block in &layer.blocks {
                    let Block::Bottleneck(block) = block else { panic!("bottleneck") };
                    let burn_resnet::norm::Norm::Batch(norm3) = &block.norm3 else { panic!("batch norm") };
                    let burn_resnet::norm::Norm::Batch(norm1) = &block.norm1 else { panic!("batch norm") };
                    let last = values(norm3.gamma.val());
                    assert!(last.iter().all(|g| *g == if zero { 0.0 } else { 1.0 }), "{toml}: norm3 {last:?}");
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
        let backbone = config("depth = 18\nbase_channels = 4").init(&device).unwrap();
        let Block::Basic(block) = &backbone.layers[0].blocks[0] else { panic!("basic") };
        let burn_resnet::norm::Norm::Batch(norm2) = &block.norm2 else { panic!("batch norm") };
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
            let Block::Bottleneck(block) = &backbone.layers[stage].blocks[1] else { panic!("bottleneck") };
            let SpatialConv::Deformable(dcn) = &block.conv2 else { panic!("{kind}: conv2 of stage {stage} is not deformable") };
            let [out, per_group, _, _] = dcn.weight.dims();
            let in_channels = per_group * groups;
            let bound = match kind {
                "DCNv2" => 1.0 / ((in_channels * 9) as f32).sqrt(),
                _ => (6.0 / ((per_group * 9) as f32)).sqrt(),
            };
            let weights = values(dcn.weight.val());
            let max = weights.iter().fold(0f32, |m, w| m.max(w.abs()));
            assert!(max <= bound && max > 0.99 * bound, "{kind}: max |w| {max}, bound {bound}");
            // Uniform in ±bound: std bound/√3.
            let std = std_of(&weights);
            assert!((std * 3f32.sqrt() / bound - 1.0).abs() < 0.02, "{kind}: std {std}, bound {bound}");
            let parts = if kind == "DCNv2" { 3 } else { 2 };
            assert_eq!(dcn.conv_offset.weight.dims(), [2 * parts * 9, in_channels, 3, 3], "{kind}: offset channels");
            assert_eq!(out, in_channels);
            assert!(values(dcn.conv_offset.weight.val()).iter().all(|v| *v == 0.0));
            assert!(values(dcn.conv_offset.bias.as_ref().unwrap().val()).iter().all(|v| *v == 0.0));
        }
        // Stage 0 is not in stage_with_dcn: regular.
        let backbone = config("depth = 50\nstage_with_dcn = [false, true, true, true]\ndcn = { type = \"DCNv2\" }").init(&device).unwrap();
        let Block::Bottleneck(block) = &backbone.layers[0].blocks[0] else { panic!("bottleneck") };
        assert!(matches!(block.conv2, SpatialConv::Regular(_)));
    }
}
