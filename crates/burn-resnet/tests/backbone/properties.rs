//! Property tests (issue 13): random configs built from the real keys with extreme values
//! validate to a typed error or to figures that do not wrap, and build and run as their summary
//! says; random truncations and byte flips of real checkpoints load exactly or fail, never
//! panic. CI runs proptest's default 256 cases per property; `PROPTEST_CASES=20000 cargo test
//! --test backbone properties` runs more (see docs/cli.md).

use burn::tensor::{Device, Distribution, Tensor};
use burn_resnet::weights::WeightSource;
use burn_resnet::{MemoryLimit, ModelSummary, ResNetConfig, Workload};
use proptest::prelude::*;
use proptest::sample::select;

use crate::common::repo_path;

/// Integers at and around every boundary the code has: 0, 1, small, powers of two near 2^32
/// and 2^64 (TOML integers stop at i64::MAX), and negatives.
fn integer() -> impl Strategy<Value = String> {
    select(vec![
        0i64,
        1,
        2,
        3,
        4,
        8,
        9,
        16,
        64,
        255,
        1 << 31,
        1 << 32,
        (1 << 32) + 1,
        1 << 40,
        1 << 62,
        i64::MAX,
        -1,
        -2,
        i64::MIN,
    ])
    .prop_map(|v| v.to_string())
}

/// Small integers most of the time, so that many configs validate; extremes the rest.
fn count() -> impl Strategy<Value = String> {
    prop_oneof![3 => (1u8..9).prop_map(|v| v.to_string()), 1 => integer()]
}

fn ratio() -> impl Strategy<Value = String> {
    select(vec![
        "0.0625", "0.25", "1.0", "1e-9", "1e6", "1e12", "1e15", "1e300", "0.0", "-1.0", "nan",
        "inf", "-inf",
    ])
    .prop_map(String::from)
}

fn list(item: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    prop::collection::vec(item, 0..6).prop_map(|items| format!("[{}]", items.join(", ")))
}

fn plugin() -> impl Strategy<Value = String> {
    let position = select(vec!["after_conv1", "after_conv2", "after_conv3"]);
    let cfg = prop_oneof![
        ratio().prop_map(|r| format!("{{ type = \"ContextBlock\", ratio = {r} }}")),
        ratio().prop_map(|r| format!("{{ type = \"SE\", rd_ratio = {r} }}")),
        (count(), any::<bool>()).prop_map(|(r, s)| format!("{{ type = \"NonLocal2d\", reduction = {r}, sub_sample = {s} }}")),
        (count(), count(), count(), select(vec!["-1", "4", "8", "4000000000", "9223372036854775807"]))
            .prop_map(|(h, kv, q, d)| format!("{{ type = \"GeneralizedAttention\", num_heads = {h}, kv_stride = {kv}, q_stride = {q}, position_embedding_dim = {d} }}")),
    ];
    (
        position,
        cfg,
        prop::option::of(list(select(vec!["true", "false"]).prop_map(String::from))),
    )
        .prop_map(|(p, c, stages)| {
            format!(
                "[[plugins]]\nposition = \"{p}\"\ncfg = {c}\n{}",
                stages.map_or(String::new(), |s| format!("stages = {s}\n"))
            )
        })
}

/// A config: `depth` and any of the other keys, each with an ordinary or an extreme value.
fn config_text() -> impl Strategy<Value = String> {
    let depth = prop_oneof![4 => select(vec!["18", "50"]).prop_map(String::from), 1 => integer()];
    let keys = (
        prop::option::of(count().prop_map(|v| format!("in_channels = {v}"))),
        prop::option::of(count().prop_map(|v| format!("stem_channels = {v}"))),
        prop::option::of(count().prop_map(|v| format!("base_channels = {v}"))),
        prop::option::of(count().prop_map(|v| format!("num_stages = {v}"))),
        prop::option::of(list(count()).prop_map(|v| format!("strides = {v}"))),
        prop::option::of(list(count()).prop_map(|v| format!("dilations = {v}"))),
        prop::option::of(list(count()).prop_map(|v| format!("out_indices = {v}"))),
        prop::option::of(count().prop_map(|v| format!("groups = {v}"))),
        prop::option::of(count().prop_map(|v| format!("base_width = {v}"))),
        prop::option::of(integer().prop_map(|v| format!("frozen_stages = {v}"))),
        (any::<bool>(), any::<bool>(), any::<bool>())
            .prop_map(|(d, a, s)| format!("deep_stem = {d}\navg_down = {a}\nstem_output = {s}")),
        prop::option::of(
            count().prop_map(|v| format!("norm_cfg = {{ type = \"GN\", num_groups = {v} }}")),
        ),
    );
    let dcn = prop::option::of((
        select(vec!["DCN", "DCNv2"]),
        count(),
        list(select(vec!["true", "false"]).prop_map(String::from)),
    ))
    .prop_map(|dcn| {
        dcn.map_or(String::new(), |(kind, groups, mask)| {
            format!(
                "dcn = {{ type = \"{kind}\", deform_groups = {groups} }}\nstage_with_dcn = {mask}"
            )
        })
    });
    // The backbone class, Res2Net's splits and ResNeSt's attention keys (given to any, which
    // the others must refuse).
    let variant = (
        prop::option::of(select(vec!["ResNet", "Res2Net", "ResNeSt"])),
        prop::option::of(count()),
        prop::option::of(count()),
        prop::option::of(count()),
        prop::option::of(any::<bool>()),
    )
        .prop_map(|(kind, scales, radix, reduction, avd)| {
            [
                kind.map(|k| format!("type = \"{k}\"\n")),
                scales.map(|v| format!("scales = {v}\n")),
                radix.map(|v| format!("radix = {v}\n")),
                reduction.map(|v| format!("reduction_factor = {v}\n")),
                avd.map(|v| format!("avg_down_stride = {v}\n")),
            ]
            .into_iter()
            .flatten()
            .collect::<String>()
        });
    (
        depth,
        keys,
        dcn,
        prop::collection::vec(plugin(), 0..3),
        variant,
    )
        .prop_map(|(depth, keys, dcn, plugins, variant)| {
            let (a, b, c, d, e, f, g, h, i, j, k, l) = keys;
            let lines: Vec<String> = [a, b, c, d, e, f, g, h, i, j, Some(k), l, Some(dcn)]
                .into_iter()
                .flatten()
                .collect();
            format!(
                "{variant}depth = {depth}\n{}\n{}",
                lines.join("\n"),
                plugins.join("")
            )
        })
}

proptest! {
    /// Any config validates to a typed error or to a summary without wrapped figures; the small
    /// ones build and run as their summary says.
    #[test]
    fn random_configs_give_typed_errors_or_consistent_figures(text in config_text(), side in select(vec![1usize, 7, 33, 64, 1 << 20, 1 << 32, usize::MAX])) {
        let Ok(config) = ResNetConfig::from_toml_str(&text, "random") else { return Ok(()) };
        let Ok(spec) = config.validate() else { return Ok(()) };
        let Ok(summary) = ModelSummary::new(&spec, side, side) else { return Ok(()) };
        // Nothing wrapped: the totals are the sums, the stages widen and never grow their maps.
        prop_assert_eq!(summary.total_params() as u128, summary.stages.iter().map(|s| s.params as u128).sum::<u128>());
        prop_assert_eq!(summary.total_macs() as u128, summary.stages.iter().map(|s| s.macs as u128).sum::<u128>());
        for pair in summary.stages[1..].windows(2) {
            prop_assert!(pair[1].out_channels >= pair[0].out_channels, "{}", text);
            prop_assert!(pair[1].output_size[0] <= pair[0].output_size[0], "{}", text);
        }
        for workload in [Workload::Inference, Workload::Training] {
            let _ = summary.memory(8, workload);
        }
        // Small enough to build here: the built module has the summary's parameters and its
        // outputs the summary's sizes.
        let small = summary.total_params() < 300_000 && side <= 64 && spec.min_input_size().is_none_or(|(min, _)| side >= min);
        let limit = MemoryLimit::parse("1GiB", "test").unwrap();
        if small && summary.memory(1, Workload::Inference).is_ok_and(|m| m.check("test", &limit).is_ok()) {
            let device = Device::flex();
            let backbone = spec.init(&device);
            prop_assert_eq!(crate::summary::parameters(&backbone), summary.total_params(), "{}", text);
            let images = Tensor::<4>::random([1, config.in_channels, side, side], Distribution::Default, &device);
            let outputs = backbone.try_forward(images).expect("checked input");
            let expected: Vec<[usize; 2]> = backbone.feature_info().iter().map(|info| {
                let stage = summary.stages.iter().find(|s| s.stage == info.stage).expect("a summarised stage");
                stage.output_size
            }).collect();
            let got: Vec<[usize; 2]> = outputs.iter().map(|o| [o.dims()[2], o.dims()[3]]).collect();
            prop_assert_eq!(got, expected, "{}", text);
        }
    }

    /// A safetensors checkpoint cut short or with bytes changed fails with an error, or loads
    /// exactly what the file holds (every tensor equal to the file's, bit for bit).
    #[test]
    fn damaged_safetensors_checkpoints_load_exactly_or_fail(cut in any::<prop::sample::Index>(), flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..4), truncate in any::<bool>()) {
        let original = std::fs::read(repo_path("tests/fixtures/parity/resnet18.weights.safetensors")).unwrap();
        let damaged = damage(&original, truncate.then_some(cut), &flips);
        let path = scratch("damaged.safetensors");
        std::fs::write(&path, &damaged).unwrap();
        let spec = ResNetConfig::from_toml_file(repo_path("tests/fixtures/parity/resnet18.toml")).unwrap().validate().unwrap();
        let device = Device::flex();
        if let Ok((loaded, _)) = spec.init(&device).load_weights(&path, Some(WeightSource::Mmdet)) {
            let file = safetensors::SafeTensors::deserialize(&damaged).map_err(|e| TestCaseError::fail(format!("loaded a file the safetensors crate refuses: {e}")))?;
            let saved = scratch("saved.safetensors");
            loaded.save_weights(&saved, WeightSource::Mmdet).unwrap();
            let saved_bytes = std::fs::read(&saved).unwrap();
            for (name, tensor) in safetensors::SafeTensors::deserialize(&saved_bytes).unwrap().tensors() {
                let source = file.tensor(&name).map_err(|_| TestCaseError::fail(format!("{name}: loaded without being in the file")))?;
                // A flip can turn a header's F32 into another dtype, which loads converted;
                // float32 tensors must be the file's bytes exactly.
                if source.dtype() == safetensors::Dtype::F32 {
                    prop_assert_eq!(source.shape(), tensor.shape(), "{}", name);
                    prop_assert!(source.data() == tensor.data(), "{}: values differ from the file's", name);
                }
            }
        }
    }

    /// A PyTorch (zip + pickle) checkpoint cut short or with bytes changed fails with an error
    /// or loads; never a panic.
    #[test]
    fn damaged_pytorch_checkpoints_never_panic(cut in any::<prop::sample::Index>(), flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..4), truncate in any::<bool>()) {
        let original = std::fs::read(repo_path("tests/fixtures/checkpoints/timm_resnet18d.pth")).unwrap();
        let path = scratch("damaged.pth");
        std::fs::write(&path, damage(&original, truncate.then_some(cut), &flips)).unwrap();
        let spec = ResNetConfig::from_toml_file(repo_path("tests/fixtures/checkpoints/timm_resnet18d.toml")).unwrap().validate().unwrap();
        let _ = spec.init(&Device::flex()).load_weights(&path, None);
    }
}

/// `bytes` cut at `cut` (when given) with `flips` XORed in.
fn damage(
    bytes: &[u8],
    cut: Option<prop::sample::Index>,
    flips: &[(prop::sample::Index, u8)],
) -> Vec<u8> {
    let mut damaged = bytes.to_vec();
    for (at, mask) in flips {
        let i = at.index(damaged.len());
        damaged[i] ^= mask;
    }
    if let Some(cut) = cut {
        damaged.truncate(cut.index(bytes.len()));
    }
    damaged
}

/// A file in this test thread's scratch directory.
fn scratch(name: &str) -> std::path::PathBuf {
    let directory = std::env::temp_dir().join(format!(
        "burn-resnet-properties-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&directory).unwrap();
    directory.join(name)
}
