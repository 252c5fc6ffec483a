//! Parameter and multiply-add counts agree with the published figures and with the modules.

use burn::module::Module;
use burn_resnet::{ModelSummary, ResNetConfig};

use crate::common::{devices, float_tensors, repo_path};

fn summary(name: &str, side: usize) -> ModelSummary {
    let config = ResNetConfig::from_toml_file(repo_path(&format!("configs/{name}.toml"))).unwrap();
    ModelSummary::new(&config.validate().unwrap(), side, side).unwrap()
}

/// torchvision's parameter counts without the classifier (`fc`: 512 or 2048 x 1000 + 1000).
#[test]
fn parameter_counts_match_torchvision_without_the_classifier() {
    for (name, total_with_fc, fc_in) in [
        ("resnet18", 11_689_512, 512),
        ("resnet34", 21_797_672, 512),
        ("resnet50", 25_557_032, 2048),
        ("resnet101", 44_549_160, 2048),
        ("resnet152", 60_192_808, 2048),
    ] {
        assert_eq!(
            summary(name, 224).total_params(),
            total_with_fc - (fc_in * 1000 + 1000),
            "{name}"
        );
    }
}

/// timm's parameter counts (`sum(p.numel() for p in timm.create_model(name).parameters())`)
/// without the classifier, for the shipped configs timm's models map onto.
#[test]
fn parameter_counts_match_timm_without_the_classifier() {
    for (name, timm_model, total_with_fc) in [
        ("res2net50_26w_4s_timm", "res2net50_26w_4s", 25_699_120),
        ("resnest50", "resnest50d", 27_483_240),
        ("resnest101", "resnest101e", 48_275_016),
    ] {
        assert_eq!(
            summary(name, 224).total_params(),
            total_with_fc - (2048 * 1000 + 1000),
            "{name} as timm's {timm_model}"
        );
    }
}

#[test]
fn resnet50_costs_4_1_giga_multiply_adds_at_224() {
    let summary = summary("resnet50", 224);
    let gmacs = summary.total_macs() as f64 / 1e9;
    // torchvision's 4.09 GMACs include the 2 M of the classifier.
    assert!((4.07..4.10).contains(&gmacs), "{gmacs}");
    let outputs: Vec<_> = summary
        .stages
        .iter()
        .map(|s| (s.name, s.output_size, s.out_channels))
        .collect();
    assert_eq!(
        outputs,
        [
            ("stem", [112, 112], 64),
            ("layer1", [56, 56], 256),
            ("layer2", [28, 28], 512),
            ("layer3", [14, 14], 1024),
            ("layer4", [7, 7], 2048)
        ]
    );
}

/// Every parameter of a module, trainable or frozen, without BatchNorm running statistics (what
/// PyTorch's `sum(p.numel() for p in model.parameters())` counts).
pub(crate) fn parameters(backbone: &impl Module) -> usize {
    let tensors = float_tensors(backbone, None);
    tensors
        .iter()
        .filter(|t| !t.path.ends_with("running_mean") && !t.path.ends_with("running_var"))
        .map(|t| t.values.len())
        .sum()
}

/// Every shipped config.
fn shipped_configs() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo_path("configs"))
        .unwrap()
        .filter_map(|entry| {
            entry
                .unwrap()
                .file_name()
                .into_string()
                .ok()?
                .strip_suffix(".toml")
                .map(str::to_string)
        })
        .collect();
    names.sort();
    assert!(names.len() >= 15, "configs/: {names:?}");
    names
}

#[test]
fn the_summary_counts_every_parameter_of_every_shipped_config() {
    let (_, device) = devices().remove(0);
    for name in shipped_configs() {
        let config =
            ResNetConfig::from_toml_file(repo_path(&format!("configs/{name}.toml"))).unwrap();
        let backbone = config.init(&device).unwrap();
        let summary = summary(&name, 224);
        assert_eq!(summary.total_params(), parameters(&backbone), "{name}");
        assert_eq!(
            summary.total_params(),
            backbone.num_params() - running_statistics(&backbone),
            "{name}"
        );
    }
}

/// Elements of the BatchNorm running statistics.
fn running_statistics(backbone: &impl Module) -> usize {
    float_tensors(backbone, None)
        .iter()
        .filter(|t| t.path.ends_with("running_mean") || t.path.ends_with("running_var"))
        .map(|t| t.values.len())
        .sum()
}

/// Every plugin type and setting, at every position it can take, on Bottleneck and BasicBlock
/// backbones (small widths), and DCN: the summary counts what the module holds.
#[test]
fn the_summary_counts_every_plugin_and_dcn() {
    let (_, device) = devices().remove(0);
    let plugins = [
        r#"{ type = "ContextBlock", ratio = 0.25 }"#,
        r#"{ type = "ContextBlock", ratio = 0.25, pooling_type = "avg", fusion_types = ["channel_add", "channel_mul"] }"#,
        r#"{ type = "ContextBlock", ratio = 0.5, fusion_types = ["channel_mul"] }"#,
        r#"{ type = "NonLocal2d" }"#,
        r#"{ type = "NonLocal2d", mode = "dot_product", sub_sample = true, reduction = 4 }"#,
        r#"{ type = "NonLocal2d", mode = "gaussian", sub_sample = true }"#,
        r#"{ type = "GeneralizedAttention", num_heads = 2, attention_type = "1111", kv_stride = 2 }"#,
        r#"{ type = "GeneralizedAttention", num_heads = 4, attention_type = "0010", q_stride = 2, spatial_range = 3 }"#,
        r#"{ type = "GeneralizedAttention", num_heads = 2, attention_type = "0101", position_embedding_dim = 8, kv_stride = 1 }"#,
        r#"{ type = "SE" }"#,
        r#"{ type = "SE", rd_ratio = 0.25 }"#,
    ];
    let mut cases = Vec::new();
    for plugin in plugins {
        for (depth, positions) in [
            (50, &["after_conv1", "after_conv2", "after_conv3"][..]),
            (18, &["after_conv1", "after_conv2"][..]),
        ] {
            for position in positions {
                cases.push(format!(
                    "depth = {depth}\nbase_channels = 16\n[[plugins]]\nposition = \"{position}\"\nstages = [false, true, false, true]\ncfg = {plugin}"
                ));
            }
        }
    }
    cases.push("depth = 50\nbase_channels = 16\ngroups = 4\nbase_width = 4\ndcn = { type = \"DCNv2\", deform_groups = 2 }\nstage_with_dcn = [false, true, true, true]".into());
    cases.push("depth = 50\nbase_channels = 16\ndcn = { type = \"DCN\", fallback_on_stride = true }\nstage_with_dcn = [true, true, false, true]".into());
    // Res2Net: the split convs read conv1's output, plugins see the joined splits, a DCN per
    // split conv.
    let res2net = "type = \"Res2Net\"\ndepth = 50\nbase_channels = 16\nbase_width = 4\nscales = 3\ndeep_stem = true\navg_down = true";
    for position in ["after_conv1", "after_conv2", "after_conv3"] {
        cases.push(format!(
            "{res2net}\n[[plugins]]\nposition = \"{position}\"\nstages = [false, true, false, true]\ncfg = {}",
            plugins[0]
        ));
    }
    cases.push(format!(
        "{res2net}\ndcn = {{ type = \"DCNv2\", deform_groups = 2 }}\nstage_with_dcn = [false, true, true, true]"
    ));
    // ResNeSt: the attention's fc1/fc2 (with biases) and norms, grouped; plugins see `width`;
    // a DCN on the split-attention conv.
    let resnest =
        "type = \"ResNeSt\"\ndepth = 50\nbase_channels = 16\ndeep_stem = true\navg_down = true";
    for position in ["after_conv1", "after_conv2", "after_conv3"] {
        cases.push(format!(
            "{resnest}\ngroups = 2\nbase_width = 8\nradix = 4\nreduction_factor = 1\n[[plugins]]\nposition = \"{position}\"\nstages = [false, true, false, true]\ncfg = {}",
            plugins[0]
        ));
    }
    cases.push(format!(
        "{resnest}\nradix = 1\nstyle = \"caffe\"\ndcn = {{ type = \"DCNv2\", deform_groups = 2 }}\nstage_with_dcn = [false, true, true, true]"
    ));
    cases.push(format!(
        "{resnest}\navg_down_stride = false\ndcn = {{ type = \"DCN\", fallback_on_stride = true }}\nstage_with_dcn = [true, true, false, true]"
    ));
    for toml in cases {
        let config = ResNetConfig::from_toml_str(&toml, "test").unwrap();
        let backbone = config.init(&device).unwrap();
        // An odd size, so that strided and pooled positions round.
        let summary = ModelSummary::new(&config.validate().unwrap(), 75, 61).unwrap();
        assert_eq!(summary.total_params(), parameters(&backbone), "{toml}");
        assert!(
            toml.contains("dcn") || summary.plugin_params() > 0,
            "{toml}"
        );
    }
}

/// The config of a fixture entry: a shipped file (`path`) or inline TOML.
fn fixture_config(name: &str, path: &Option<String>, toml: &Option<String>) -> ResNetConfig {
    match (path, toml) {
        (Some(path), None) => ResNetConfig::from_toml_file(repo_path(path)).unwrap(),
        (None, Some(toml)) => ResNetConfig::from_toml_str(toml, name).unwrap(),
        _ => panic!("{name}: a path or a toml"),
    }
}

/// One entry of `tools/mmdet_param_counts.py`'s record: a config (a shipped file or inline
/// TOML) and the parameter count of the network mmdet 3.3 builds for it
/// (`sum(p.numel() for p in model.parameters())`; `bench/mmdet_model.py` builds it).
#[derive(serde::Deserialize)]
struct MmdetCount {
    name: String,
    path: Option<String>,
    toml: Option<String>,
    params: usize,
}

/// The counts come from mmdet's own modules (plugins from mmcv, DCN from mmcv's convention),
/// not from this code: every shipped config, and every plugin type and setting at every
/// position, GroupNorm, FrozenBN, DCN and DCNv2.
#[test]
fn the_summary_and_the_module_count_what_mmdet_counts() {
    let text =
        std::fs::read_to_string(repo_path("tests/fixtures/mmdet_param_counts.json")).unwrap();
    let counts: Vec<MmdetCount> = serde_json::from_str(&text).unwrap();
    assert!(counts.len() >= 40, "{} entries", counts.len());
    let (_, device) = devices().remove(0);
    let mut shipped = 0;
    for entry in counts {
        shipped += entry.path.is_some() as usize;
        let config = fixture_config(&entry.name, &entry.path, &entry.toml);
        let summary = ModelSummary::new(&config.validate().unwrap(), 64, 64).unwrap();
        assert_eq!(
            summary.total_params(),
            entry.params,
            "{}: the summary against mmdet",
            entry.name
        );
        // Building full-width networks is slow in a debug test build; the small ones are built.
        if entry.params < 5_000_000 {
            assert_eq!(
                parameters(&config.init(&device).unwrap()),
                entry.params,
                "{}: the module against mmdet",
                entry.name
            );
        }
    }
    // timm's Res2Net is not a network mmdet builds: its count is timm's (above).
    let timm_only = ["res2net50_26w_4s_timm"];
    assert_eq!(
        shipped + timm_only.len(),
        shipped_configs().len(),
        "every shipped config but {timm_only:?} has an mmdet count"
    );
}

/// One entry of `tools/mmdet_macs.py`'s record: the multiply-accumulates fvcore counts on
/// mmdet's own network for a config (convs, linears and matrix products; not norms, softmax,
/// pooling or interpolation), per image at `height` x `width`.
#[derive(serde::Deserialize)]
struct MmdetMacs {
    name: String,
    path: Option<String>,
    toml: Option<String>,
    height: usize,
    width: usize,
    macs: u64,
}

/// The summary's multiply-adds against fvcore's count of mmdet's network, plugins and DCN
/// included. Two GeneralizedAttention settings do more work here than in mmcv, on purpose and
/// counted as done: with the bias·content term alone ('0010') mmcv computes one attention row and
/// broadcasts it, and with the bias·position term without the query·position one ('0001') it
/// multiplies the bias into each axis's positions first; this module runs those products for
/// every query (same outputs), so its count is larger.
#[test]
fn the_summarys_multiply_adds_are_what_fvcore_counts_on_mmdets_network() {
    let text = std::fs::read_to_string(repo_path("tests/fixtures/mmdet_macs.json")).unwrap();
    let entries: Vec<MmdetMacs> = serde_json::from_str(&text).unwrap();
    assert!(entries.len() >= 16, "{} entries", entries.len());
    let mut larger = Vec::new();
    for entry in entries {
        let config = fixture_config(&entry.name, &entry.path, &entry.toml);
        let macs = ModelSummary::new(&config.validate().unwrap(), entry.height, entry.width)
            .unwrap()
            .total_macs();
        let broadcast_in_mmcv = entry
            .toml
            .as_deref()
            .is_some_and(|t| t.contains("\"0010\"") || t.contains("\"0001\""));
        if broadcast_in_mmcv {
            assert!(
                macs > entry.macs,
                "{}: {macs} MACs, mmdet's {}",
                entry.name,
                entry.macs
            );
            larger.push(entry.name);
        } else {
            assert_eq!(
                macs, entry.macs,
                "{}: the summary against fvcore on mmdet's network",
                entry.name
            );
        }
    }
    assert_eq!(larger.len(), 2, "{larger:?}");
}
