//! Real checkpoint files as timm, torchvision-style code and mmdet write them
//! (`tools/make_checkpoints.py`): detected, loaded strictly, and computing the same features.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{DType, Tensor};
use burn_resnet::ResNetConfig;
use burn_resnet::ResNetError;
use burn_resnet::weights::WeightSource;

use crate::common::{devices, read_safetensors, relative_error, repo_path};

const DIR: &str = "tests/fixtures/checkpoints";

/// Load `file` into the `case` backbone and compare its features with the library's own.
fn check(case: &str, file: &str, expected_source: WeightSource, expected_skipped: &[&str]) {
    check_with_features(case, case, file, expected_source, expected_skipped);
}

/// [`check`] with the features of `io_case`.
fn check_with_features(
    case: &str,
    io_case: &str,
    file: &str,
    expected_source: WeightSource,
    expected_skipped: &[&str],
) {
    let config = ResNetConfig::from_toml_file(repo_path(&format!("{DIR}/{case}.toml"))).unwrap();
    let (io, _) = read_safetensors(&repo_path(&format!("{DIR}/{io_case}.io.safetensors")));
    let input = &io.iter().find(|(n, _)| n == "input").unwrap().1;
    let mut outputs: Vec<_> = io
        .iter()
        .filter(|(n, _)| n.starts_with("output."))
        .collect();
    outputs.sort_by_key(|(n, _)| n["output.".len()..].parse::<usize>().unwrap());
    for (backend, device) in devices() {
        let (backbone, report) = config
            .init(&device)
            .unwrap()
            .load_weights(repo_path(&format!("{DIR}/{file}")), None)
            .unwrap();
        assert_eq!(report.source, expected_source, "{file}");
        assert!(report.detected);
        let mut skipped = report.skipped.clone();
        skipped.sort();
        assert_eq!(skipped, expected_skipped, "{file}");
        let mut dtypes = FloatDTypes::default();
        backbone.visit(&mut dtypes);
        assert!(
            dtypes.0.iter().all(|d| *d == DType::F32),
            "{file}: parameters loaded as {:?}",
            dtypes.0
        );
        let features = backbone.forward(input.to_tensor(&device));
        assert_eq!(features.len(), outputs.len());
        for (feature, (name, expected)) in features.iter().zip(&outputs) {
            let error = relative_error(feature, expected);
            println!("{file} {name} on {backend}: relative error {error:.2e}");
            assert!(error <= 1e-4, "{file} {name} on {backend}: {error:.2e}");
        }
    }
}

#[test]
fn a_timm_resnet18d_pth_loads_with_its_deep_stem_and_c1_output() {
    check(
        "timm_resnet18d",
        "timm_resnet18d.pth",
        WeightSource::Timm,
        &["fc.bias", "fc.weight"],
    );
}

/// A timm ResNeSt (`resnest50d`'s construction: `ResNestBottleneck`, deep stem, avg_down,
/// radix 2, the pool after the attention) at tiny width, as timm saves it: its names are
/// detected and its features (C1 to C5) are timm's own.
#[test]
fn a_timm_resnest_pth_loads_with_timms_features() {
    check(
        "timm_resnest_tiny",
        "timm_resnest_tiny.pth",
        WeightSource::Timm,
        &["fc.bias", "fc.weight"],
    );
}

/// timm's Res2Nets (`res2net50_26w_4s`: 7x7 stem, conv shortcuts; `res2net50d`: deep stem,
/// average-pool shortcuts) at tiny width, as timm saves them, with `stage_pool = "always"`:
/// their names are detected as timm's (the plain stem's read as torchvision's, which has no
/// Res2Net) and their features are timm's own, layer1's first block pooling its last split.
#[test]
fn timm_res2net_pths_load_with_timms_features() {
    for case in ["timm_res2net_tiny", "timm_res2net_d_tiny"] {
        check(
            case,
            &format!("{case}.pth"),
            WeightSource::Timm,
            &["fc.bias", "fc.weight"],
        );
    }
}

#[test]
fn a_timm_safetensors_file_loads_the_same() {
    check(
        "timm_resnet18d",
        "timm_resnet18d.safetensors",
        WeightSource::Timm,
        &["fc.bias", "fc.weight"],
    );
}

#[test]
fn a_torchvision_named_pth_loads_and_skips_the_classifier() {
    check(
        "torchvision_resnet18",
        "torchvision_resnet18.pth",
        WeightSource::Torchvision,
        &["fc.bias", "fc.weight"],
    );
}

#[test]
fn a_half_precision_pth_loads_as_float32() {
    let skipped = ["fc.bias", "fc.weight"];
    check_with_features(
        "torchvision_resnet18",
        "torchvision_resnet18_half",
        "torchvision_resnet18_half.pth",
        WeightSource::Torchvision,
        &skipped,
    );
}

/// The dtype of every float tensor of a module (parameters and running statistics).
#[derive(Default)]
struct FloatDTypes(Vec<DType>);

impl ModuleVisitor for FloatDTypes {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.push(param.val().dtype());
    }
}

#[test]
fn an_mmdet_detector_checkpoint_loads_its_backbone() {
    check(
        "mmdet_detector_r18",
        "mmdet_detector_r18.pth",
        WeightSource::Mmdet,
        &[
            "state_dict.neck.fpn_convs.0.conv.weight",
            "state_dict.neck.lateral_convs.0.conv.weight",
        ],
    );
}

#[test]
fn the_wrong_source_names_every_missing_tensor() {
    let config =
        ResNetConfig::from_toml_file(repo_path(&format!("{DIR}/timm_resnet18d.toml"))).unwrap();
    let (_, device) = devices().remove(0);
    let backbone = config.init(&device).unwrap();
    let error = backbone
        .load_weights(
            repo_path(&format!("{DIR}/timm_resnet18d.pth")),
            Some(WeightSource::Mmdet),
        )
        .unwrap_err();
    let ResNetError::Weights { problems, .. } = &error else {
        panic!("{error:?}")
    };
    let missing: Vec<_> = problems
        .iter()
        .filter(|p| p.starts_with("missing: stem."))
        .collect();
    // Three convs and three norms (weight, bias, running mean and variance) of the deep stem.
    assert_eq!(missing.len(), 3 + 3 * 4, "{error}");
    assert!(error.to_string().contains("read as mmdet names"), "{error}");
    // Named as the file would name them under mmdet's names, with the module path.
    let message = error.to_string();
    assert!(
        message.contains("missing: stem.0.weight (module path stem.layers.0."),
        "{message}"
    );
    assert!(message.contains("missing: stem.7.running_var"), "{message}");
}

#[test]
fn a_truncated_checkpoint_is_an_error_not_a_panic() {
    let bytes = std::fs::read(repo_path(&format!("{DIR}/timm_resnet18d.pth"))).unwrap();
    let dir = std::env::temp_dir().join(format!("burn-resnet-truncated-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_, device) = devices().remove(0);
    let config =
        ResNetConfig::from_toml_file(repo_path(&format!("{DIR}/timm_resnet18d.toml"))).unwrap();
    for (name, cut) in [
        ("half.pth", bytes.len() / 2),
        ("header.pth", 100),
        ("one.pth", 2),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let error = config
            .init(&device)
            .unwrap()
            .load_weights(&path, None)
            .unwrap_err();
        assert!(
            matches!(error, ResNetError::Weights { .. } | ResNetError::Io { .. }),
            "{name}: {error:?}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn weight_sources_parse_by_name() {
    assert_eq!("TIMM".parse::<WeightSource>().unwrap(), WeightSource::Timm);
    let error = "caffe2".parse::<WeightSource>().unwrap_err();
    assert!(
        error.to_string().contains("mmdet, torchvision, timm"),
        "{error}"
    );
}

#[test]
fn a_partial_load_keeps_what_matches_and_lists_the_rest() {
    // timm ResNet-18-D weights into a three-stage backbone: the stem and stages 1-3 load, and
    // the file's layer4 tensors, which have nowhere to go, are listed.
    let (_, device) = devices().remove(0);
    let config =
        ResNetConfig::from_toml_file(repo_path(&format!("{DIR}/timm_resnet18d.toml"))).unwrap();
    let file = repo_path(&format!("{DIR}/timm_resnet18d.pth"));
    let (reference, _) = config
        .init(&device)
        .unwrap()
        .load_weights(&file, None)
        .unwrap();
    let mut three_stages = config.clone();
    three_stages.num_stages = 3;
    let (partial, report) = three_stages
        .init(&device)
        .unwrap()
        .load_weights_partial(&file, None)
        .unwrap();
    assert!(
        !report.not_loaded.is_empty() && report.not_loaded.iter().all(|p| p.contains("layer4.")),
        "{:?}",
        report.not_loaded
    );
    // Every tensor of the three-stage backbone was loaded: equal to the full model's.
    let loaded = crate::common::float_tensors(&partial, None);
    let full = crate::common::float_tensors(&reference, None);
    for tensor in &loaded {
        let same = full.iter().find(|t| t.path == tensor.path).unwrap();
        assert!(
            tensor.values == same.values,
            "{} was not loaded",
            tensor.path
        );
    }
    // The strict load refuses the same file.
    assert!(
        three_stages
            .init(&device)
            .unwrap()
            .load_weights(&file, None)
            .is_err()
    );
}

/// `torch.save(..., _use_new_zipfile_serialization=False)` writes PyTorch's legacy (pickle)
/// format; this one also nests the weights as `{'model': state_dict}`, in float16.
#[test]
fn a_legacy_format_pth_with_a_model_entry_loads() {
    check(
        "mmdet_r18_legacy",
        "mmdet_r18_legacy.pth",
        WeightSource::Mmdet,
        &[],
    );
}

#[test]
fn files_that_are_no_checkpoint_or_a_damaged_one_name_their_format() {
    let dir = std::env::temp_dir().join(format!("burn-resnet-formats-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_, device) = devices().remove(0);
    let config =
        ResNetConfig::from_toml_file(repo_path(&format!("{DIR}/mmdet_r18_legacy.toml"))).unwrap();
    let legacy = std::fs::read(repo_path(&format!("{DIR}/mmdet_r18_legacy.pth"))).unwrap();
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "text.pth",
            b"not a checkpoint at all".to_vec(),
            "not a checkpoint",
        ),
        ("empty.safetensors", Vec::new(), "the file is empty"),
        (
            "legacy_cut.pth",
            legacy[..legacy.len() / 3].to_vec(),
            "PyTorch legacy pickle",
        ),
        (
            "safetensors_cut.safetensors",
            b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":".to_vec(),
            "safetensors",
        ),
    ];
    for (name, bytes, expected) in cases {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let error = config
            .init(&device)
            .unwrap()
            .load_weights(&path, None)
            .unwrap_err();
        assert!(
            matches!(error, ResNetError::Weights { .. }),
            "{name}: {error:?}"
        );
        assert!(
            error.to_string().contains(expected),
            "{name}: expected '{expected}' in {error}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A plain stem's `conv1.weight` / `bn1.*` offered to a deep-stem backbone under mmdet's names:
/// no rule maps them, and they are named as unexpected (strict) or not loaded (partial), not
/// dropped.
#[test]
fn backbone_keys_no_rule_maps_are_reported() {
    let (_, device) = devices().remove(0);
    let deep =
        ResNetConfig::from_toml_str("depth = 18\nbase_channels = 8\ndeep_stem = true", "test")
            .unwrap();
    let file = repo_path(&format!("{DIR}/mmdet_detector_r18.pth"));
    let error = deep
        .init(&device)
        .unwrap()
        .load_weights(&file, Some(WeightSource::Mmdet))
        .unwrap_err();
    let message = error.to_string();
    for key in [
        "unexpected: conv1.weight",
        "unexpected: bn1.weight",
        "unexpected: bn1.running_var",
        "missing: stem.0.weight",
    ] {
        assert!(message.contains(key), "'{key}' not in {message}");
    }
    let (_, report) = deep
        .init(&device)
        .unwrap()
        .load_weights_partial(&file, Some(WeightSource::Mmdet))
        .unwrap();
    assert!(
        report
            .not_loaded
            .iter()
            .any(|p| p == "unexpected: conv1.weight"),
        "{:?}",
        report.not_loaded
    );
}
