//! Every config shipped in `configs/` builds at full width, and its outputs have the channels
//! and strides of the published architecture, which `feature_info()` reports truthfully.

use burn::tensor::Tensor;
use burn_resnet::ResNetConfig;

use crate::common::{devices, repo_path};

const BASIC: [(usize, usize); 4] = [(64, 4), (128, 8), (256, 16), (512, 32)];
const BOTTLENECK: [(usize, usize); 4] = [(256, 4), (512, 8), (1024, 16), (2048, 32)];
const DILATED_OS8: [(usize, usize); 4] = [(256, 4), (512, 8), (1024, 8), (2048, 8)];

/// (config file, expected (channels, stride) of each output) — the published figures.
const SHIPPED: [(&str, [(usize, usize); 4]); 20] = [
    ("resnet18", BASIC),
    ("resnet34", BASIC),
    ("resnet50", BOTTLENECK),
    ("resnet101", BOTTLENECK),
    ("resnet152", BOTTLENECK),
    ("resnet50_v1c", BOTTLENECK),
    ("resnet50_v1d", BOTTLENECK),
    ("resnext101_32x4d", BOTTLENECK),
    ("resnet50_caffe", BOTTLENECK),
    ("resnet50_dilated", DILATED_OS8),
    ("resnet50_gcb_r16", BOTTLENECK),
    ("resnet50_dcn_c3-c5", BOTTLENECK),
    ("resnet50_dcnv2_c3-c5", BOTTLENECK),
    ("resnet50_attention1111_c4-c5", BOTTLENECK),
    ("resnet50_detector", BOTTLENECK),
    ("res2net50_26w_4s", BOTTLENECK),
    ("res2net101_26w_4s", BOTTLENECK),
    ("res2net50_26w_4s_timm", BOTTLENECK),
    ("resnest50", BOTTLENECK),
    ("resnest101", BOTTLENECK),
];

#[test]
fn every_shipped_config_is_listed_here() {
    let mut files: Vec<String> = std::fs::read_dir(repo_path("configs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|name| name.strip_suffix(".toml").map(str::to_string))
        .collect();
    files.sort();
    let mut listed: Vec<String> = SHIPPED.iter().map(|(name, _)| name.to_string()).collect();
    listed.sort();
    assert_eq!(files, listed);
}

#[test]
fn every_shipped_config_outputs_the_published_channels_and_strides() {
    // Odd sides: a stride-s stage maps n to ceil(n / s).
    let (height, width): (usize, usize) = (33, 47);
    for (name, expected) in SHIPPED {
        let config =
            ResNetConfig::from_toml_file(repo_path(&format!("configs/{name}.toml"))).unwrap();
        for (backend, device) in devices() {
            let backbone = config.init(&device).unwrap();
            let info = backbone.feature_info();
            let reported: Vec<_> = info.iter().map(|f| (f.channels, f.reduction)).collect();
            assert_eq!(reported, expected, "{name}: feature_info");

            let features = backbone
                .try_forward(Tensor::<4>::ones([1, 3, height, width], &device))
                .unwrap();
            assert_eq!(features.len(), 4, "{name} on {backend}");
            for (feature, (channels, stride)) in features.iter().zip(expected) {
                let dims = [1, channels, height.div_ceil(stride), width.div_ceil(stride)];
                assert_eq!(feature.dims(), dims, "{name} on {backend}");
            }
            for (feature, meta) in features.iter().zip(&info) {
                assert_eq!(
                    feature.dims()[2..],
                    meta.spatial_size(height, width),
                    "{name}: spatial_size"
                );
            }
        }
    }
}

#[test]
fn the_stem_output_c1_comes_first_at_stride_2() {
    let config = crate::common::config(
        "depth = 50\nbase_channels = 8\nstem_output = true\nout_indices = [0, 3]",
    );
    for (backend, device) in devices() {
        let backbone = config.init(&device).unwrap();
        let info = backbone.feature_info();
        let names: Vec<_> = info
            .iter()
            .map(|f| (f.module, f.level_name(), f.stage))
            .collect();
        assert_eq!(
            names,
            [
                ("stem", "C1".to_string(), None),
                ("layer1", "C2".into(), Some(0)),
                ("layer4", "C5".into(), Some(3))
            ]
        );
        let features = backbone.forward(Tensor::<4>::ones([2, 3, 32, 32], &device));
        let dims: Vec<_> = features.iter().map(|f| f.dims()).collect();
        assert_eq!(
            dims,
            [[2, 8, 16, 16], [2, 32, 8, 8], [2, 256, 1, 1]],
            "{backend}"
        );
    }
}

#[test]
fn out_indices_are_returned_in_stage_order() {
    let config = crate::common::config("depth = 18\nbase_channels = 4\nout_indices = [3, 1]");
    for (_, device) in devices() {
        let backbone = config.init(&device).unwrap();
        let features = backbone.forward(Tensor::<4>::ones([1, 3, 32, 32], &device));
        let channels: Vec<_> = features.iter().map(|f| f.dims()[1]).collect();
        assert_eq!(channels, [8, 32]);
    }
}

#[test]
fn the_stem_alone_can_be_the_only_output() {
    let config = crate::common::config(
        "depth = 18\nbase_channels = 4\nout_indices = []\nstem_output = true",
    );
    for (_, device) in devices() {
        let backbone = config.init(&device).unwrap();
        let features = backbone.forward(Tensor::<4>::ones([1, 3, 30, 30], &device));
        let dims: Vec<_> = features.iter().map(|f| f.dims()).collect();
        assert_eq!(dims, [[1, 4, 15, 15]]);
        assert_eq!(backbone.feature_info().len(), 1);
    }
}

/// The config reference (docs/configs.md) gives each default as the code has it
/// (`burn_resnet::config::defaults`, `burn_resnet::norm`'s constants and the types' own), and
/// has a row for every key: the defaults are stated once, in the code, and the reference is
/// checked against them.
#[test]
fn config_reference_states_the_defaults_of_the_code() {
    let text = std::fs::read_to_string(repo_path("docs/configs.md")).unwrap();
    // Rows `| `key` | default | meaning |`, tables written `[norm_cfg]` / `[[plugins]]`.
    let rows: std::collections::BTreeMap<String, (String, String)> = text
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let key = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let key = key.trim_matches(|c| c == '[' || c == ']');
            Some((
                key.to_string(),
                (cells.get(2)?.to_string(), cells.get(3)?.to_string()),
            ))
        })
        .collect();
    let render = |value: &toml::Value| match value {
        toml::Value::Integer(v) => v.to_string(),
        toml::Value::Float(v) => format!("{v:?}"),
        toml::Value::Boolean(v) => v.to_string(),
        toml::Value::String(v) => format!("`\"{v}\"`"),
        other => panic!("no rendering for {other:?}"),
    };
    let defaults = toml::Table::try_from(ResNetConfig::new(50)).unwrap();
    for (key, value) in &defaults {
        let (cell, meaning) = rows
            .get(key)
            .unwrap_or_else(|| panic!("docs/configs.md has no row for `{key}`"));
        match value {
            _ if key == "depth" => assert_eq!(cell, "required"),
            toml::Value::Array(v) if v.is_empty() => assert_eq!(cell, "none", "`{key}`"),
            // A table (`norm_cfg`): its type in the default column, each other key's default
            // in the meaning, as "`key` (value)".
            toml::Value::Table(table) => {
                let kind = render(&table["type"]);
                assert_eq!(
                    cell,
                    &format!("`type = {}`", kind.trim_matches('`')),
                    "`{key}`"
                );
                for (inner, value) in table.iter().filter(|(inner, _)| *inner != "type") {
                    let stated = format!("`{inner}` ({})", render(value));
                    assert!(
                        meaning.contains(&stated),
                        "`{key}`: no {stated} in {meaning}"
                    );
                }
            }
            value => assert_eq!(cell, &render(value), "docs/configs.md's default of `{key}`"),
        }
    }
    // The keys whose default depends on `type` (unset in the config until it is resolved).
    use burn_resnet::config::defaults;
    for (key, stated) in [
        (
            "base_width",
            format!(
                "{} (ResNeXt, ResNeSt), {} (Res2Net)",
                defaults::RESNEXT_BASE_WIDTH,
                defaults::RES2NET_BASE_WIDTH
            ),
        ),
        ("scales", format!("{} (Res2Net)", defaults::RES2NET_SCALES)),
        (
            "stage_pool",
            format!(
                "`{}` (Res2Net)",
                toml::Value::try_from(burn_resnet::config::StagePool::default()).unwrap()
            ),
        ),
        ("radix", format!("{} (ResNeSt)", defaults::RESNEST_RADIX)),
        (
            "reduction_factor",
            format!("{} (ResNeSt)", defaults::RESNEST_REDUCTION_FACTOR),
        ),
        (
            "avg_down_stride",
            format!("{} (ResNeSt)", defaults::RESNEST_AVG_DOWN_STRIDE),
        ),
    ] {
        let (cell, _) = rows
            .get(key)
            .unwrap_or_else(|| panic!("docs/configs.md has no row for `{key}`"));
        assert_eq!(cell, &stated, "docs/configs.md's default of `{key}`");
    }
}
