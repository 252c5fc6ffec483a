//! Loading mmdet-named weights: strict, with every problem listed, and all-or-nothing.

use burn_resnet::{ResNetConfig, ResNetError};

use crate::common::{devices, float_tensors, repo_path};

#[test]
fn weights_of_another_architecture_are_rejected_with_every_problem_listed() {
    let weights = repo_path("tests/fixtures/parity/resnet18.weights.safetensors");
    // No zero-initialised norms: a change anywhere in the module shows.
    let config = ResNetConfig {
        zero_init_residual: false,
        ..ResNetConfig::from_toml_file(repo_path("tests/fixtures/parity/resnet50_pytorch.toml"))
            .unwrap()
    };
    for (_, device) in devices() {
        let backbone = config.init(&device).unwrap();
        let before = float_tensors(&backbone, None);
        let error = backbone.load_mmdet_safetensors(&weights).unwrap_err();
        let ResNetError::Weights { problems, .. } = &error else {
            panic!("{error:?}")
        };
        let message = error.to_string();
        // Bottleneck tensors absent from a BasicBlock checkpoint, by their Burn path…
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("missing: layer1.0.conv3.weight")),
            "{message}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("file key layer1.0.conv1.weight")),
            "{message}"
        );
        // …and shape mismatches, several of them, not just the first.
        assert!(problems.len() > 10, "{message}");
        // The caller's module is untouched: every tensor, parameters and statistics.
        let after = float_tensors(&backbone, None);
        assert_eq!(before.len(), after.len());
        for (b, a) in before.iter().zip(&after) {
            assert_eq!(b.path, a.path);
            assert!(
                b.values == a.values,
                "{} changed after a failed load",
                b.path
            );
        }
    }
}

/// A successful load returns a new module and leaves the caller's as it was too, running
/// statistics included (a plain clone of a Burn module shares them), for every loader.
#[test]
fn a_successful_load_leaves_the_callers_module_untouched() {
    let config = ResNetConfig {
        zero_init_residual: false,
        ..ResNetConfig::from_toml_file(repo_path("tests/fixtures/parity/resnet18.toml")).unwrap()
    };
    let weights = repo_path("tests/fixtures/parity/resnet18.weights.safetensors");
    let burnpack =
        std::env::temp_dir().join(format!("burn-resnet-untouched-{}.bpk", std::process::id()));
    for (_, device) in devices() {
        let backbone = config.init(&device).unwrap();
        let before = float_tensors(&backbone, None);
        let loaded = backbone.load_mmdet_safetensors(&weights).unwrap();
        loaded.save_burnpack(&burnpack).unwrap();
        let reloaded = backbone.load_burnpack(&burnpack).unwrap();
        let (after, loaded, reloaded) = (
            float_tensors(&backbone, None),
            float_tensors(&loaded, None),
            float_tensors(&reloaded, None),
        );
        assert_eq!(before.len(), after.len());
        for ((b, a), l) in before.iter().zip(&after).zip(&loaded) {
            assert!(
                b.values == a.values,
                "{} changed by a load into another module",
                b.path
            );
            assert!(
                b.values != l.values,
                "{}: the load did not change it",
                b.path
            );
        }
        assert!(
            loaded
                .iter()
                .zip(&reloaded)
                .all(|(l, r)| l.values == r.values),
            "burnpack round trip"
        );
    }
    std::fs::remove_file(&burnpack).unwrap();
}

#[test]
fn a_missing_weights_file_is_an_io_error() {
    let config = ResNetConfig::from_toml_str("depth = 18\nbase_channels = 4", "test").unwrap();
    for (_, device) in devices() {
        let error = config
            .init(&device)
            .unwrap()
            .load_mmdet_safetensors("nope.safetensors")
            .unwrap_err();
        assert!(matches!(error, ResNetError::Io { .. }), "{error:?}");
    }
}

#[test]
fn a_file_that_is_not_safetensors_is_an_error_not_a_panic() {
    let config = ResNetConfig::from_toml_str("depth = 18\nbase_channels = 4", "test").unwrap();
    for (_, device) in devices() {
        let error = config
            .init(&device)
            .unwrap()
            .load_mmdet_safetensors(repo_path("configs/resnet18.toml"))
            .unwrap_err();
        assert!(matches!(error, ResNetError::Weights { .. }), "{error:?}");
    }
}
