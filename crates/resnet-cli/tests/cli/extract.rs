//! `resnet extract`: outputs, pictures, weights from each library, caffe preprocessing and
//! non-finite outputs.

use std::path::PathBuf;

use super::*;

#[test]
fn extract_writes_every_output_to_safetensors() {
    let file = std::env::temp_dir().join(format!(
        "resnet-cli-test-{}.safetensors",
        std::process::id()
    ));
    let out = stdout(&resnet(&[
        "extract",
        "--config",
        "configs/resnet18.toml",
        "--size",
        "64x96",
        "--out",
        file.to_str().unwrap(),
    ]));
    assert!(
        out.contains("bundled sample (64x96, RGB, ImageNet mean/std)"),
        "{out}"
    );
    assert!(out.contains("[1, 512, 2, 3]"), "{out}");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut shapes: Vec<_> = tensors
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, view.shape().to_vec()))
        .collect();
    shapes.sort();
    assert_eq!(
        shapes,
        [
            ("C2".to_string(), vec![1, 64, 16, 24]),
            ("C3".into(), vec![1, 128, 8, 12]),
            ("C4".into(), vec![1, 256, 4, 6]),
            ("C5".into(), vec![1, 512, 2, 3]),
            ("input".into(), vec![1, 3, 64, 96]),
        ]
    );
}

#[test]
fn extract_reads_an_image_file_and_loads_mmdet_weights() {
    let out = stdout(&resnet(&[
        "extract",
        "--config",
        "tests/fixtures/parity/resnet18.toml",
        "--weights",
        "tests/fixtures/parity/resnet18.weights.safetensors",
        "--image",
        "crates/resnet-cli/assets/sample.png",
        "--size",
        "32",
    ]));
    assert!(
        out.contains(
            "weights: tests/fixtures/parity/resnet18.weights.safetensors (mmdet names, detected"
        ),
        "{out}"
    );
    assert!(out.contains("[1, 64, 1, 1]"), "{out}");
}

#[test]
fn extract_loads_a_timm_checkpoint_and_reports_what_it_skipped() {
    let out = stdout(&resnet(&[
        "extract",
        "--config",
        "tests/fixtures/checkpoints/timm_resnet18d.toml",
        "--weights",
        "tests/fixtures/checkpoints/timm_resnet18d.pth",
        "--size",
        "64",
    ]));
    assert!(
        out.contains("(timm names, detected; 2 non-backbone tensors skipped: fc."),
        "{out}"
    );
    assert!(out.contains("C1"), "{out}");
    let err = stderr_of_failure(&resnet(&[
        "extract",
        "--config",
        "tests/fixtures/checkpoints/timm_resnet18d.toml",
        "--weights",
        "tests/fixtures/checkpoints/timm_resnet18d.pth",
        "--weights-source",
        "caffe2",
    ]));
    assert!(
        err.contains("invalid value 'caffe2'")
            && err.contains("[possible values: mmdet, torchvision, timm]"),
        "{err}"
    );
}

#[test]
fn caffe_style_configs_get_caffe_preprocessing() {
    let out = stdout(&resnet(&[
        "extract",
        "--config",
        "tests/fixtures/parity/resnet50_caffe.toml",
        "--size",
        "32",
    ]));
    assert!(out.contains("BGR, Caffe means, std 1"), "{out}");
}

/// A copy of the parity fixture's mmdet weights with the first element of `key` (F16) set to NaN.
fn weights_with_nan(key: &str) -> PathBuf {
    let source = repo().join("tests/fixtures/parity/resnet18.weights.safetensors");
    let mut bytes = std::fs::read(&source).unwrap();
    let offset = {
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let view = file.tensor(key).unwrap();
        assert_eq!(view.dtype(), safetensors::Dtype::F16);
        view.data().as_ptr() as usize - bytes.as_ptr() as usize
    };
    bytes[offset..offset + 2].copy_from_slice(&0x7e00u16.to_le_bytes());
    let path = std::env::temp_dir().join(format!(
        "resnet-cli-nan-{}-{key}.safetensors",
        std::process::id()
    ));
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn extract_says_when_outputs_are_not_finite() {
    let weights = weights_with_nan("layer2.0.conv1.weight");
    let output = resnet(&[
        "extract",
        "--config",
        "tests/fixtures/parity/resnet18.toml",
        "--weights",
        weights.to_str().unwrap(),
        "--size",
        "32",
    ]);
    std::fs::remove_file(&weights).unwrap();
    let out = stdout(&output);
    let err = String::from_utf8_lossy(&output.stderr);
    // C2 is before the NaN weight; C3..C5 are NaN everywhere, as in PyTorch.
    let non_finite = |level: &str| -> usize {
        let line = out
            .lines()
            .find(|l| l.starts_with(level))
            .unwrap_or_else(|| panic!("no {level} row in {out}"));
        line.split_whitespace().last().unwrap().parse().unwrap()
    };
    assert_eq!(
        [non_finite("C2"), non_finite("C3"), non_finite("C5")],
        [0, 256, 64],
        "{out}"
    );
    assert!(
        err.contains("warning: non-finite features: C3 has 256 NaN and 0 ±Inf of 256 values"),
        "{err}"
    );
    // Finite weights: no warning.
    let clean = resnet(&[
        "extract",
        "--config",
        "tests/fixtures/parity/resnet18.toml",
        "--size",
        "32",
    ]);
    assert!(
        !String::from_utf8_lossy(&clean.stderr).contains("non-finite"),
        "{}",
        String::from_utf8_lossy(&clean.stderr)
    );
}
