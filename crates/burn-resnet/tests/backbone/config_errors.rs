//! Every invalid config gives a typed error naming the field and the bad value, before any
//! tensor is made.

use burn_resnet::{ResNetConfig, ResNetError};

use crate::common::config;

fn error_of(toml: &str) -> ResNetError {
    let parsed = ResNetConfig::from_toml_str(toml, "test.toml");
    match parsed {
        Err(error) => error,
        Ok(config) => config
            .validate()
            .expect_err("the config should be rejected"),
    }
}

#[test]
fn a_depth_outside_the_table_is_rejected() {
    let error = error_of("depth = 42");
    assert!(
        matches!(error, ResNetError::UnsupportedDepth { depth: 42 }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("18, 34, 50, 101, 152"),
        "{error}"
    );
}

#[test]
fn num_stages_must_be_one_to_four() {
    for stages in [0, 5] {
        let error = error_of(&format!("depth = 50\nnum_stages = {stages}"));
        assert!(
            matches!(&error, ResNetError::OutOfRange { field, value, min: 1, max: 4 } if field == "num_stages" && *value == stages),
            "{error:?}"
        );
    }
}

#[test]
fn strides_and_dilations_need_one_entry_per_stage() {
    let error = error_of("depth = 50\nstrides = [1, 2, 2]");
    assert!(
        matches!(&error, ResNetError::WrongLength { field, expected: 4, got: 3 } if field == "strides"),
        "{error:?}"
    );
    let error = error_of("depth = 50\nnum_stages = 2\ndilations = [1, 1, 1, 1]");
    assert!(
        matches!(&error, ResNetError::WrongLength { field, expected: 2, got: 4 } if field == "dilations"),
        "{error:?}"
    );
}

#[test]
fn a_zero_stride_or_dilation_names_its_stage() {
    let error = error_of("depth = 18\nstrides = [1, 2, 0, 2]");
    assert!(
        matches!(&error, ResNetError::TooSmall { field, value: 0, min: 1 } if field == "strides[2]"),
        "{error:?}"
    );
    assert_eq!(error.to_string(), "strides[2]: must be at least 1, got 0");
    let error = error_of("depth = 18\ndilations = [1, 0, 1, 1]");
    assert!(
        matches!(&error, ResNetError::TooSmall { field, value: 0, min: 1 } if field == "dilations[1]"),
        "{error:?}"
    );
}

#[test]
fn out_indices_must_name_built_stages_once() {
    let error = error_of("depth = 50\nnum_stages = 3\nout_indices = [0, 3]");
    assert!(
        matches!(
            error,
            ResNetError::OutIndexOutOfRange {
                index: 3,
                num_stages: 3
            }
        ),
        "{error:?}"
    );
    let error = error_of("depth = 50\nout_indices = [1, 2, 1]");
    assert!(
        matches!(error, ResNetError::DuplicateOutIndex { index: 1 }),
        "{error:?}"
    );
    let error = error_of("depth = 50\nout_indices = []");
    assert!(matches!(error, ResNetError::NoOutputs), "{error:?}");
    // The stem alone is a valid output.
    assert!(
        config("depth = 50\nout_indices = []\nstem_output = true")
            .validate()
            .is_ok()
    );
}

#[test]
fn zero_channels_are_rejected() {
    for field in [
        "in_channels",
        "base_channels",
        "stem_channels",
        "groups",
        "base_width",
    ] {
        let error = error_of(&format!("depth = 50\n{field} = 0"));
        assert!(
            matches!(&error, ResNetError::TooSmall { field: f, value: 0, min: 1 } if f == field),
            "{field}: {error:?}"
        );
    }
}

#[test]
fn a_deep_stem_needs_at_least_two_channels() {
    let error = error_of("depth = 50\ndeep_stem = true\nstem_channels = 1");
    assert!(
        matches!(&error, ResNetError::TooSmall { field, value: 1, min: 2 } if field == "stem_channels"),
        "{error:?}"
    );
}

#[test]
fn resnext_groups_need_bottleneck_blocks() {
    let error = error_of("depth = 18\ngroups = 32");
    assert!(
        matches!(&error, ResNetError::Incompatible { field, .. } if field == "groups"),
        "{error:?}"
    );
    assert!(error.to_string().contains("depth 18"), "{error}");
}

#[test]
fn unknown_keys_and_wrong_types_are_parse_errors_with_the_key() {
    let error = error_of("depth = 50\nfrozen_stage = 1");
    assert!(
        matches!(&error, ResNetError::Parse { source_name, .. } if source_name == "test.toml"),
        "{error:?}"
    );
    assert!(error.to_string().contains("frozen_stage"), "{error}");
    let error = error_of("depth = 50\nstyle = \"tensorflow\"");
    assert!(error.to_string().contains("tensorflow"), "{error}");
    let error = error_of("depth = \"fifty\"");
    assert!(error.to_string().contains("depth"), "{error}");
    let error = error_of("base_channels = 8");
    assert!(
        error.to_string().contains("depth"),
        "missing depth: {error}"
    );
}

#[test]
fn a_missing_config_file_is_an_io_error_naming_the_path() {
    let error = ResNetConfig::from_toml_file("configs/does_not_exist.toml").unwrap_err();
    assert!(matches!(error, ResNetError::Io { .. }), "{error:?}");
    assert!(error.to_string().contains("does_not_exist.toml"), "{error}");
}

#[test]
fn an_input_of_the_wrong_shape_is_an_error_not_a_panic() {
    use burn::tensor::Tensor;
    for (_, device) in crate::common::devices() {
        let backbone = config("depth = 18\nbase_channels = 4")
            .init(&device)
            .unwrap();
        let error = backbone
            .try_forward(Tensor::<4>::zeros([1, 1, 32, 32], &device))
            .unwrap_err();
        assert!(
            matches!(
                error,
                ResNetError::InputShape {
                    expected_channels: 3,
                    got: [1, 1, 32, 32]
                }
            ),
            "{error:?}"
        );
        let error = backbone
            .try_forward(Tensor::<4>::zeros([1, 3, 0, 32], &device))
            .unwrap_err();
        assert!(matches!(error, ResNetError::InputShape { .. }), "{error:?}");
    }
}

/// A sub-sampling NonLocal2d max-pools its keys 2x2: its stage's maps must be at least 2x2.
/// `try_forward` refuses smaller inputs with the minimum (instead of a reshape panic inside
/// the forward pass), and runs at exactly that minimum.
#[test]
fn inputs_below_the_smallest_size_a_config_takes_are_refused_with_the_minimum() {
    use burn::tensor::Tensor;
    let toml = "depth = 50\nbase_channels = 8\n[[plugins]]\nposition = \"after_conv2\"\nstages = [false, false, false, true]\n\
                cfg = { type = \"NonLocal2d\", sub_sample = true }";
    let spec = config(toml).validate().unwrap();
    // Stage 4 is at stride 32: a side of 33 gives ceil(33 / 32) = 2.
    assert_eq!(spec.min_input_size().map(|(min, _)| min), Some(33));
    assert_eq!(
        config("depth = 50").validate().unwrap().min_input_size(),
        None
    );
    for (_, device) in crate::common::devices() {
        let backbone = config(toml).init(&device).unwrap();
        let error = backbone
            .try_forward(Tensor::<4>::zeros([1, 3, 33, 17], &device))
            .unwrap_err();
        assert!(
            matches!(
                error,
                ResNetError::InputTooSmall {
                    min: 33,
                    got_height: 33,
                    got_width: 17,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(
            error.to_string().contains("smallest input is 33x33")
                && error.to_string().contains("layer4"),
            "{error}"
        );
        let features = backbone
            .try_forward(Tensor::<4>::zeros([1, 3, 33, 33], &device))
            .unwrap();
        assert_eq!(features[3].dims(), [1, 256, 2, 2]);
    }
}

/// Assert that `toml` fails validation with `Incompatible` naming `expected_field`, and that the
/// message says `says`.
fn incompatible(toml: &str, expected_field: &str, says: &str) {
    let error = error_of(toml);
    assert!(
        matches!(&error, ResNetError::Incompatible { field, .. } if field == expected_field),
        "{toml}: {error:?}"
    );
    assert!(error.to_string().contains(says), "{toml}: {error}");
}

/// Res2Net's settings: what mmdet's Res2Net forces must be stated as it forces it, `scales`
/// belongs to Res2Net, its depths are the Bottleneck ones, and it needs two splits at least.
#[test]
fn res2net_settings_are_checked_and_name_the_field() {
    let res2net = "type = \"Res2Net\"\ndepth = 50\ndeep_stem = true\navg_down = true";
    incompatible(
        "type = \"Res2Net\"\ndepth = 50\navg_down = true",
        "deep_stem",
        "deep_stem = true",
    );
    incompatible(
        "type = \"Res2Net\"\ndepth = 50\ndeep_stem = true",
        "avg_down",
        "avg_down = true",
    );
    incompatible(
        &format!("{res2net}\nstyle = \"caffe\""),
        "style",
        "style = \"pytorch\"",
    );
    incompatible(&format!("{res2net}\ngroups = 4"), "groups", "groups = 1");
    incompatible(&format!("{res2net}\nscales = 1"), "scales", "at least 2");
    incompatible(
        "type = \"Res2Net\"\ndepth = 18\ndeep_stem = true\navg_down = true",
        "depth",
        "50, 101, 152",
    );
    incompatible("depth = 50\nscales = 4", "scales", "type = \"Res2Net\"");
    incompatible(
        "depth = 50\nstage_pool = \"always\"",
        "stage_pool",
        "type = \"Res2Net\"",
    );
    // The stem and shortcuts are free for timm's Res2Nets, and the error says how to get one.
    incompatible(
        "type = \"Res2Net\"\ndepth = 50\navg_down = true",
        "deep_stem",
        "stage_pool = \"always\"",
    );
    for timm in ["", "deep_stem = true\navg_down = true"] {
        let toml = format!("type = \"Res2Net\"\ndepth = 50\nstage_pool = \"always\"\n{timm}");
        assert!(config(&toml).validate().is_ok(), "{toml}");
    }
    let error = error_of("type = \"ResNeXt\"\ndepth = 50");
    assert!(
        matches!(&error, ResNetError::Parse { .. }) && error.to_string().contains("type"),
        "{error:?}"
    );
    // The defaults: mmdet's 26w × 4s.
    let spec = config(res2net).validate().unwrap();
    assert_eq!(
        spec.stages
            .iter()
            .map(|s| (s.width, s.scales))
            .collect::<Vec<_>>(),
        [(26, 4), (52, 4), (104, 4), (208, 4)]
    );
}

/// ResNeSt's settings: the ResNetV1d stem and shortcuts must be stated, its keys belong to it,
/// and the grouped convs' channel counts must divide as PyTorch requires.
#[test]
fn resnest_settings_are_checked_and_name_the_field() {
    let resnest = "type = \"ResNeSt\"\ndepth = 50\ndeep_stem = true\navg_down = true";
    incompatible(
        "type = \"ResNeSt\"\ndepth = 50\navg_down = true",
        "deep_stem",
        "ResNetV1d",
    );
    incompatible(
        "type = \"ResNeSt\"\ndepth = 50\ndeep_stem = true",
        "avg_down",
        "avg_down = true",
    );
    for key in [
        "radix = 2",
        "reduction_factor = 4",
        "avg_down_stride = false",
    ] {
        let field = key.split(' ').next().unwrap();
        incompatible(&format!("depth = 50\n{key}"), field, "type = \"ResNeSt\"");
        incompatible(
            &format!("type = \"Res2Net\"\ndepth = 50\ndeep_stem = true\navg_down = true\n{key}"),
            field,
            "type = \"ResNeSt\"",
        );
    }
    incompatible(
        &format!("{resnest}\nscales = 4"),
        "scales",
        "type = \"Res2Net\"",
    );
    incompatible(
        "type = \"ResNeSt\"\ndepth = 34\ndeep_stem = true\navg_down = true",
        "depth",
        "50, 101, 152, 200",
    );
    // groups · radix must divide the width (8 · 2^i at base_channels 8), fc1's channels the
    // groups (max(width · radix / reduction_factor, 32) = 32 in 3 groups).
    incompatible(
        &format!("{resnest}\nbase_channels = 8\nradix = 16"),
        "radix",
        "16 groups",
    );
    incompatible(
        &format!("{resnest}\ngroups = 3\nbase_width = 4"),
        "reduction_factor",
        "32 channels in 3 groups",
    );
    for (key, value) in [("radix", 0), ("reduction_factor", 0)] {
        let error = error_of(&format!("{resnest}\n{key} = {value}"));
        assert!(
            matches!(&error, ResNetError::TooSmall { field, .. } if field == key),
            "{error:?}"
        );
    }
    // The defaults: radix 2, reduction 4 (fc1 at least 32 channels), the stride on the pool.
    let spec = config(resnest).validate().unwrap();
    assert_eq!(
        spec.stages
            .iter()
            .map(|s| {
                let a = s.attention.unwrap();
                (s.width, a.radix, a.inter_channels, a.avg_down_stride)
            })
            .collect::<Vec<_>>(),
        [
            (64, 2, 32, true),
            (128, 2, 64, true),
            (256, 2, 128, true),
            (512, 2, 256, true)
        ]
    );
}
