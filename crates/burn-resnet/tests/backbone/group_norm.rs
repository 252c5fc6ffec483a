//! GroupNorm backbones under mmdet's real names: mmcv calls GroupNorm layers `gn1`, `gn2`,
//! `gn3` (its `infer_abbr`), so mmdet's GN checkpoints (`configs/gn`) say `layer1.0.gn1.weight`
//! where BatchNorm ones say `bn1`. Fixtures from mmdet's own ResNet with GroupNorm
//! (`tools/make_gn_fixture.py`): random weights, eval outputs, and a `.pth` as mmdet saves it.

use burn_resnet::ResNetConfig;
use burn_resnet::weights::WeightSource;

use crate::common::{devices, read_safetensors, relative_error, repo_path};
use crate::parity::check_parity_in;

const DIR: &str = "tests/fixtures/gn";

#[test]
fn group_norm_backbones_load_mmdets_gn_names_and_match_mmdet() {
    for (backend, device) in devices() {
        for case in ["resnet18_gn", "resnet50_v1d_gn"] {
            check_parity_in(DIR, case, backend, &device);
        }
    }
}

#[test]
fn an_mmdet_gn_pth_loads_with_its_names_detected() {
    let config =
        ResNetConfig::from_toml_file(repo_path(&format!("{DIR}/resnet18_gn.toml"))).unwrap();
    let (io, _) = read_safetensors(&repo_path(&format!("{DIR}/resnet18_gn.io.safetensors")));
    let outputs: Vec<_> = io
        .iter()
        .filter(|(n, _)| n.starts_with("output."))
        .collect();
    let input = &io.iter().find(|(n, _)| n == "input").unwrap().1;
    for (backend, device) in devices() {
        let (backbone, report) = config
            .init(&device)
            .unwrap()
            .load_weights(repo_path(&format!("{DIR}/resnet18_gn.pth")), None)
            .unwrap();
        assert_eq!(
            (report.source, report.detected),
            (WeightSource::Mmdet, true)
        );
        let features = backbone.forward(input.to_tensor(&device));
        assert_eq!(features.len(), outputs.len());
        for (feature, (name, expected)) in features.iter().zip(&outputs) {
            let error = relative_error(feature, expected);
            assert!(
                error <= 1e-4,
                "resnet18_gn.pth {name} on {backend}: {error:.2e}"
            );
        }
    }
}

/// Saved under mmdet names, a GN backbone writes exactly the keys and values of mmdet's file.
#[test]
fn a_group_norm_backbone_saves_under_mmdets_gn_names() {
    let (_, device) = devices().remove(0);
    for case in ["resnet18_gn", "resnet50_v1d_gn"] {
        let config =
            ResNetConfig::from_toml_file(repo_path(&format!("{DIR}/{case}.toml"))).unwrap();
        let source = repo_path(&format!("{DIR}/{case}.weights.safetensors"));
        let backbone = config
            .init(&device)
            .unwrap()
            .load_mmdet_safetensors(&source)
            .unwrap();
        let out = std::env::temp_dir().join(format!(
            "burn-resnet-gn-{}-{case}.safetensors",
            std::process::id()
        ));
        backbone.save_weights(&out, WeightSource::Mmdet).unwrap();
        let (saved, _) = read_safetensors(&out);
        std::fs::remove_file(&out).unwrap();
        let original = crate::common::read_as_f32(&source);
        let original: Vec<_> = original
            .into_iter()
            .filter(|(key, _)| !key.ends_with("num_batches_tracked"))
            .collect();
        assert_eq!(saved.len(), original.len(), "{case}: tensors saved");
        assert!(
            saved
                .iter()
                .any(|(key, _)| key.contains(".gn3.") || key.contains(".gn2.")),
            "{case}: no gn names"
        );
        for ((key, tensor), (expected_key, expected)) in saved.iter().zip(&original) {
            assert_eq!(key, expected_key, "{case}");
            assert_eq!(tensor.shape, expected.shape, "{case}: {key}");
            assert!(
                tensor.values == expected.values,
                "{case}: {key} differs from the source file"
            );
        }
    }
}
