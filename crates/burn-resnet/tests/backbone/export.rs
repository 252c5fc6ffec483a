//! Saving: safetensors under each library's names and burnpack, loaded back bit-identical.

use std::collections::BTreeSet;
use std::path::PathBuf;

use burn_resnet::weights::WeightSource;
use burn_resnet::{ResNetConfig, ResNetError};

use crate::common::{devices, float_tensors, read_as_f32, repo_path};

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("burn-resnet-export-{}-{name}", std::process::id()))
}

fn safetensors_keys(path: &PathBuf) -> BTreeSet<String> {
    let bytes = std::fs::read(path).unwrap();
    safetensors::SafeTensors::deserialize(&bytes)
        .unwrap()
        .names()
        .into_iter()
        .map(str::to_string)
        .collect()
}

fn assert_identical(a: &burn_resnet::ResNet, b: &burn_resnet::ResNet) {
    let (a, b) = (float_tensors(a, None), float_tensors(b, None));
    assert_eq!(a.len(), b.len());
    for (a, b) in a.iter().zip(&b) {
        assert_eq!(a.path, b.path);
        assert!(
            a.values == b.values,
            "{}: values differ after the round trip",
            a.path
        );
    }
}

/// (fixture config, weights file, names it uses)
const CASES: [(&str, &str, WeightSource); 12] = [
    (
        "tests/fixtures/parity/resnet50_v1d.toml",
        "tests/fixtures/parity/resnet50_v1d.weights.safetensors",
        WeightSource::Mmdet,
    ),
    // Plugins: `layerN.i.context_block.channel_add_conv.{0,1,3}.*` back under mmdet's names.
    (
        "tests/fixtures/parity/resnet50_gcb.toml",
        "tests/fixtures/parity/resnet50_gcb.weights.safetensors",
        WeightSource::Mmdet,
    ),
    // `nonlocal_block.g.0.conv.*` (sub-sampled) and `context_block_1.*` (a postfix).
    (
        "tests/fixtures/parity/resnet50_nonlocal_gcb.toml",
        "tests/fixtures/parity/resnet50_nonlocal_gcb.weights.safetensors",
        WeightSource::Mmdet,
    ),
    (
        "tests/fixtures/checkpoints/timm_resnet18d.toml",
        "tests/fixtures/checkpoints/timm_resnet18d.safetensors",
        WeightSource::Timm,
    ),
    (
        "tests/fixtures/checkpoints/torchvision_resnet18.toml",
        "tests/fixtures/checkpoints/torchvision_resnet18.pth",
        WeightSource::Torchvision,
    ),
    // DCNv2 with plugins: `conv2.conv_offset.*` and the plugins' names go back out as mmdet's.
    (
        "tests/fixtures/parity/resnet50_dcn_gcb.toml",
        "tests/fixtures/parity/resnet50_dcn_gcb.weights.safetensors",
        WeightSource::Mmdet,
    ),
    // `gen_attention_block.{query_conv,appr_geom_fc_x,appr_bias,gamma,…}`.
    (
        "tests/fixtures/parity/resnet50_gen_attention.toml",
        "tests/fixtures/parity/resnet50_gen_attention.weights.safetensors",
        WeightSource::Mmdet,
    ),
    // Res2Net: `convs.i.*`, `bns.i.*` and the stride-1 average-pool shortcut's `downsample.1/2`.
    (
        "tests/fixtures/parity/res2net50_w4s4.toml",
        "tests/fixtures/parity/res2net50_w4s4.weights.safetensors",
        WeightSource::Mmdet,
    ),
    // ResNeSt with DCN and plugins: `conv2.conv.conv_offset.*`, `conv2.{bn0,fc1,bn1,fc2}.*`.
    (
        "tests/fixtures/parity/resnest50_dcn_gcb.toml",
        "tests/fixtures/parity/resnest50_dcn_gcb.weights.safetensors",
        WeightSource::Mmdet,
    ),
    // timm's ResNeSt: the deep stem's `conv1.N` + `bn1`, mmdet's block names.
    (
        "tests/fixtures/checkpoints/timm_resnest_tiny.toml",
        "tests/fixtures/checkpoints/timm_resnest_tiny.pth",
        WeightSource::Timm,
    ),
    // timm's Res2Nets (`stage_pool = "always"`): the 7x7 stem's `conv1`/`bn1` and the conv
    // shortcut's `downsample.0/1`; the deep stem and `downsample.1/2`.
    (
        "tests/fixtures/checkpoints/timm_res2net_tiny.toml",
        "tests/fixtures/checkpoints/timm_res2net_tiny.pth",
        WeightSource::Timm,
    ),
    (
        "tests/fixtures/checkpoints/timm_res2net_d_tiny.toml",
        "tests/fixtures/checkpoints/timm_res2net_d_tiny.pth",
        WeightSource::Timm,
    ),
];

/// A Res2Net takes the names of the library whose network it is: mmdet's Res2Net
/// (`stage_pool = "strided"`) mmdet's only, timm's (`"always"`) timm's only, torchvision's
/// never; the others are typed errors, for loading and saving alike.
#[test]
fn a_res2net_refuses_the_names_of_other_networks() {
    let (_, device) = devices().remove(0);
    for (case, refused) in [
        (7, [WeightSource::Timm, WeightSource::Torchvision]),
        (10, [WeightSource::Mmdet, WeightSource::Torchvision]),
    ] {
        let config = ResNetConfig::from_toml_file(repo_path(CASES[case].0)).unwrap();
        let backbone = config.init(&device).unwrap();
        for source in refused {
            let error = backbone
                .clone()
                .load_weights(repo_path(CASES[case].1), Some(source))
                .expect_err("refused");
            assert!(
                matches!(&error, ResNetError::Incompatible { field, .. } if field == "weights source"),
                "{error:?}"
            );
            let path = std::env::temp_dir().join(format!(
                "res2net-{case}-{source}-{}.safetensors",
                std::process::id()
            ));
            assert!(backbone.save_weights(&path, source).is_err());
            assert!(!path.exists(), "nothing written");
        }
    }
}

/// torchvision has no ResNeSt: its names are refused for loading and saving.
#[test]
fn a_resnest_refuses_torchvision_names() {
    let (_, device) = devices().remove(0);
    let config = ResNetConfig::from_toml_file(repo_path(CASES[8].0)).unwrap();
    let backbone = config.init(&device).unwrap();
    let error = backbone
        .clone()
        .load_weights(repo_path(CASES[8].1), Some(WeightSource::Torchvision))
        .expect_err("refused");
    assert!(
        error.to_string().contains("torchvision has no ResNeSt"),
        "{error}"
    );
    let path = temp("resnest-torchvision.safetensors");
    assert!(
        backbone
            .save_weights(&path, WeightSource::Torchvision)
            .is_err()
    );
    assert!(!path.exists(), "nothing written");
}

#[test]
fn saving_under_a_librarys_names_writes_its_keys_and_loads_back_bit_identical() {
    let (_, device) = devices().remove(0);
    for (config, weights, names) in CASES {
        let config = ResNetConfig::from_toml_file(repo_path(config)).unwrap();
        let (original, report) = config
            .init(&device)
            .unwrap()
            .load_weights(repo_path(weights), Some(names))
            .unwrap();
        let out = temp(&format!("{names}.safetensors"));
        original.save_weights(&out, names).unwrap();

        // The saved keys are the source file's backbone keys (no classifier, no
        // num_batches_tracked).
        let saved = safetensors_keys(&out);
        assert!(
            saved
                .iter()
                .all(|k| !k.ends_with("num_batches_tracked") && !k.starts_with("fc.")),
            "{saved:?}"
        );
        if weights.ends_with(".safetensors") {
            let expected: BTreeSet<String> = safetensors_keys(&repo_path(weights))
                .into_iter()
                .filter(|k| !report.skipped.contains(k) && !k.ends_with("num_batches_tracked"))
                .collect();
            assert_eq!(saved, expected, "{names}: saved keys");
            // Each saved tensor holds the source file's values under the same key (a swap of
            // two same-shaped tensors would still load back "identical" below).
            let source = read_as_f32(&repo_path(weights));
            let written = read_as_f32(&out);
            let mut compared = 0;
            for (key, tensor) in &written {
                let (_, expected) = source
                    .iter()
                    .find(|(k, _)| k == key)
                    .unwrap_or_else(|| panic!("{names}: {key} not in the source"));
                assert_eq!(tensor.shape, expected.shape, "{names}: {key}");
                assert!(
                    tensor.values == expected.values,
                    "{names}: {key} holds other values than the source file's"
                );
                compared += 1;
            }
            assert_eq!(compared, expected.len(), "{names}: tensors compared");
        }
        let (reloaded, reload) = config
            .init(&device)
            .unwrap()
            .load_weights(&out, None)
            .unwrap();
        assert!(
            reload.skipped.is_empty(),
            "{names}: non-backbone tensors saved: {:?}",
            reload.skipped
        );
        assert_identical(&original, &reloaded);
        std::fs::remove_file(&out).unwrap();
    }
}

#[test]
fn burnpack_round_trips_bit_identical() {
    let (_, device) = devices().remove(0);
    let (config, weights, names) = CASES[0];
    let config = ResNetConfig::from_toml_file(repo_path(config)).unwrap();
    let (original, _) = config
        .init(&device)
        .unwrap()
        .load_weights(repo_path(weights), Some(names))
        .unwrap();
    let out = temp("model.bpk");
    original.save_burnpack(&out).unwrap();
    let reloaded = config.init(&device).unwrap().load_burnpack(&out).unwrap();
    assert_identical(&original, &reloaded);
    std::fs::remove_file(&out).unwrap();
}

#[test]
fn a_deep_stem_cannot_be_saved_under_torchvision_names() {
    let (_, device) = devices().remove(0);
    let config = ResNetConfig::from_toml_file(repo_path(CASES[0].0)).unwrap(); // ResNet-50-D: deep stem
    let error = config
        .init(&device)
        .unwrap()
        .save_weights(temp("never.safetensors"), WeightSource::Torchvision)
        .unwrap_err();
    assert!(
        matches!(&error, ResNetError::Incompatible { field, .. } if field == "names"),
        "{error:?}"
    );
}

/// A write that fails is a `Save` error naming the file asked for (not a weights mismatch).
#[test]
fn a_failed_save_names_the_target() {
    let (_, device) = devices().remove(0);
    let backbone = ResNetConfig::from_toml_str("depth = 18\nbase_channels = 4", "test")
        .unwrap()
        .init(&device)
        .unwrap();
    let target = temp("missing-directory/model.safetensors");
    for error in [
        backbone
            .save_weights(&target, WeightSource::Mmdet)
            .unwrap_err(),
        backbone.save_burnpack(&target).unwrap_err(),
    ] {
        assert!(
            matches!(&error, ResNetError::Save { path, .. } if *path == target),
            "{error:?}"
        );
        assert!(
            error.to_string().contains("cannot save the weights"),
            "{error}"
        );
    }
}
