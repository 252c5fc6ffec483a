//! Sizes that cannot fit (issue 13, item 4): every one is a typed error before anything is
//! allocated, never an abort, an overflow panic or a wrapped figure.

use burn_resnet::{MemoryLimit, ModelSummary, ResNetError, Workload};

use crate::common::config;

fn limit(text: &str) -> MemoryLimit {
    MemoryLimit::parse(text, "test").unwrap()
}

/// What validation, the summary at `side` and the weights check at a 24 GiB limit say.
fn outcome(toml: &str, side: usize) -> Result<ModelSummary, ResNetError> {
    let spec = config(toml).validate()?;
    spec.check_weights_memory(&limit("24GiB"))?;
    ModelSummary::new(&spec, side, side)
}

#[test]
fn channel_counts_that_overflow_are_overflow_errors_naming_the_field() {
    for (toml, field) in [
        (
            "depth = 50\nbase_channels = 4611686018427387904",
            "base_channels",
        ),
        ("depth = 50\nbase_channels = 1000000000", "base_channels"),
        (
            "depth = 18\nin_channels = 4611686018427387904",
            "in_channels",
        ),
        (
            "depth = 50\ngroups = 4611686018427387904\nbase_width = 4",
            "groups",
        ),
        (
            "depth = 18\nstrides = [4294967296, 4294967296, 1, 1]",
            "strides",
        ),
    ] {
        match outcome(toml, 64) {
            Err(ResNetError::Overflow { field: got, .. }) => assert_eq!(got, field, "{toml}"),
            other => panic!("{toml}: expected an overflow of {field}, got {other:?}"),
        }
    }
}

#[test]
fn dilations_past_2_to_the_32_are_out_of_range() {
    match config("depth = 18\ndilations = [1, 1, 1, 9223372036854775807]").validate() {
        Err(ResNetError::OutOfRange { field, .. }) => assert_eq!(field, "dilations[3]"),
        other => panic!("expected dilations[3] out of range, got {other:?}"),
    }
    assert!(outcome("depth = 18\ndilations = [1, 1, 1, 4294967295]", 64).is_ok());
}

#[test]
fn weights_larger_than_the_limit_are_refused_with_the_estimate() {
    for toml in [
        "depth = 50\nbase_channels = 1099511",
        "depth = 50\ngroups = 1000000",
        "depth = 50\n[[plugins]]\nposition = \"after_conv3\"\ncfg = { type = \"ContextBlock\", ratio = 1e6 }",
        "depth = 50\n[[plugins]]\nposition = \"after_conv2\"\ncfg = { type = \"GeneralizedAttention\", position_embedding_dim = 4000000000 }",
        "depth = 50\n[[plugins]]\nposition = \"after_conv3\"\ncfg = { type = \"SE\", rd_ratio = 1e6 }",
    ] {
        match outcome(toml, 32) {
            Err(ResNetError::OutOfMemory { needed, limit, .. }) => {
                assert!(needed > limit, "{toml}")
            }
            other => panic!("{toml}: expected an out-of-memory error, got {other:?}"),
        }
    }
}

#[test]
fn plugin_ratios_that_overflow_are_overflow_errors_naming_plugins() {
    for toml in [
        "depth = 50\n[[plugins]]\nposition = \"after_conv3\"\ncfg = { type = \"ContextBlock\", ratio = 1e12 }",
        "depth = 50\n[[plugins]]\nposition = \"after_conv3\"\ncfg = { type = \"SE\", rd_ratio = 1e15 }",
    ] {
        match outcome(toml, 32) {
            Err(ResNetError::Overflow { field, .. }) => assert_eq!(field, "plugins", "{toml}"),
            other => panic!("{toml}: expected an overflow in plugins, got {other:?}"),
        }
    }
}

#[test]
fn input_sizes_whose_figures_overflow_are_errors_not_wrapped_numbers() {
    let spec = config("depth = 50").validate().unwrap();
    for side in [1usize << 32, usize::MAX, usize::MAX - 1] {
        match ModelSummary::new(&spec, side, side) {
            Err(ResNetError::Overflow { field, .. }) => {
                assert!(field.starts_with("input "), "{field}")
            }
            other => panic!("{side}: expected an overflow, got {other:?}"),
        }
    }
    assert!(matches!(
        ModelSummary::new(&spec, 0, 8),
        Err(ResNetError::TooSmall { .. })
    ));
    // The largest sizes that fit give figures that grow with the input (nothing wrapped).
    let small = ModelSummary::new(&spec, 224, 224).unwrap();
    let large = ModelSummary::new(&spec, 1 << 20, 1 << 20).unwrap();
    assert!(large.total_macs() > small.total_macs() * 1000);
    assert_eq!(large.stages[4].output_size, [1 << 15, 1 << 15]);
}

#[test]
fn the_memory_estimate_counts_weights_activations_and_training_state() {
    let spec = config("depth = 50").validate().unwrap();
    let summary = ModelSummary::new(&spec, 224, 224).unwrap();
    let inference = summary.memory(1, Workload::Inference).unwrap();
    assert_eq!(inference.weights, 4 * summary.total_params() as u64);
    assert_eq!(inference.training_state, 0);
    // The flex conv kernels' packed copy of the conv weights (not the norms' 2 x 26,560
    // values), in the larger packing: the blocked layout rounds the stem's 3 input channels up
    // to 16; every other channel count is a multiple of 16.
    assert_eq!(
        inference.packed_weights,
        4 * (summary.total_params() as u64 - 2 * 26_560 + 13 * 64 * 49)
    );
    // Both packings round: panels the output channels to 8, blocks both counts to 16.
    let tiny = ModelSummary::new(
        &config("depth = 18\nbase_channels = 8\nnum_stages = 1\ngroups = 1")
            .validate()
            .unwrap(),
        64,
        64,
    )
    .unwrap();
    assert_eq!(tiny.packed_weights(), 16 * 16 * 49 + 4 * 16 * 16 * 9);
    // The largest map of a ResNet-50 at 224: layer1's 256 x 56 x 56 (the stem's 64 x 112 x 112
    // is smaller).
    assert_eq!(summary.largest_activation(), 256 * 56 * 56);
    assert_eq!(
        inference.activations,
        4 * (3 * 224 * 224 + 4 * 256 * 56 * 56)
    );
    let training = summary.memory(8, Workload::Training).unwrap();
    assert_eq!(training.training_state, 3 * training.weights);
    assert_eq!(training.packed_weights, 0);
    assert_eq!(
        training.activations,
        8 * 4 * (3 * 224 * 224 + 3 * summary.total_activations())
    );
    assert!(training.total() > summary.memory(8, Workload::Inference).unwrap().total());
    let huge = ModelSummary::new(&spec, 100_000, 100_000)
        .unwrap()
        .memory(64, Workload::Training)
        .unwrap();
    let error = huge
        .check("training", &limit("24GiB"))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("needs an estimated") && error.contains("24.0 GiB"),
        "{error}"
    );
    assert!(matches!(
        ModelSummary::new(&spec, 1 << 20, 1 << 20)
            .unwrap()
            .memory(usize::MAX, Workload::Training),
        Err(ResNetError::Overflow { .. })
    ));
}

#[test]
fn memory_limits_parse_units_and_refuse_nonsense() {
    assert_eq!(limit("24GiB").bytes, Some(24 << 30));
    assert_eq!(limit("512 MiB").bytes, Some(512 << 20));
    assert_eq!(limit("2GB").bytes, Some(2_000_000_000));
    assert_eq!(limit("1.5GiB").bytes, Some(3 << 29));
    assert_eq!(limit("4096").bytes, Some(4096));
    assert_eq!(limit("none").bytes, None);
    for bad in ["", "GiB", "-1GiB", "12 parsecs", "1e400", "0", "NaN"] {
        assert!(
            matches!(
                MemoryLimit::parse(bad, "--memory-limit"),
                Err(ResNetError::Parse { .. })
            ),
            "{bad}"
        );
    }
}

#[test]
fn fpn_sizes_that_cannot_fit_are_errors() {
    use burn_resnet::fpn::FpnConfig;
    let spec = config("depth = 18").validate().unwrap();
    let features = burn_resnet::features::feature_info(&spec);
    let overflow = FpnConfig::new(usize::MAX / 2, 5).validate(&features);
    assert!(
        matches!(overflow, Err(ResNetError::Overflow { .. })),
        "{overflow:?}"
    );
    let levels = FpnConfig::new(8, usize::MAX).validate(&features);
    assert!(
        matches!(levels, Err(ResNetError::Incompatible { .. })),
        "{levels:?}"
    );
    let huge = FpnConfig::new(100_000_000, 5).validate(&features).unwrap();
    let bytes = huge.params().unwrap() * 4;
    assert!(bytes > 24 << 30, "{bytes}");
}
