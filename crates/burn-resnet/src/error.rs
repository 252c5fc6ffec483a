//! The one error type of the crate. Every variant names the field, key or tensor at fault and
//! the value it had, so a user can fix a config without reading the source.

use std::path::PathBuf;

/// Everything that can go wrong building, running or loading a backbone.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResNetError {
    /// `depth` is not a row of the architecture table.
    #[error("depth: {depth} is not a ResNet depth; expected one of 18, 34, 50, 101, 152")]
    UnsupportedDepth {
        /// The depth given.
        depth: u32,
    },

    /// A numeric field lies outside its allowed range.
    #[error("{field}: {value} is out of range; expected {min}..={max}")]
    OutOfRange {
        /// The config field, e.g. `num_stages`.
        field: String,
        /// The value given.
        value: i64,
        /// Smallest allowed value.
        min: i64,
        /// Largest allowed value.
        max: i64,
    },

    /// A count (channels, groups, stride, dilation) below its minimum.
    #[error("{field}: must be at least {min}, got {value}")]
    TooSmall {
        /// The config field, e.g. `base_channels` or `strides[2]`.
        field: String,
        /// The value given.
        value: usize,
        /// Smallest allowed value.
        min: usize,
    },

    /// A per-stage list does not have one entry per stage.
    #[error(
        "{field}: expected {expected} entries (one per stage, num_stages = {expected}), got {got}"
    )]
    WrongLength {
        /// The config field, e.g. `strides`.
        field: String,
        /// `num_stages`.
        expected: usize,
        /// The length given.
        got: usize,
    },

    /// An `out_indices` entry names a stage the backbone does not have.
    #[error(
        "out_indices: {index} is out of range for num_stages = {num_stages} \
         (valid stage indices are 0..={max}; the stem output is `stem_output = true`)",
        max = .num_stages - 1
    )]
    OutIndexOutOfRange {
        /// The index given.
        index: usize,
        /// The number of stages built.
        num_stages: usize,
    },

    /// An `out_indices` entry appears twice.
    #[error("out_indices: stage {index} is listed more than once")]
    DuplicateOutIndex {
        /// The repeated index.
        index: usize,
    },

    /// Neither a stage nor the stem was selected as an output.
    #[error("out_indices: empty while stem_output is false, so the backbone would output nothing")]
    NoOutputs,

    /// Two fields that cannot be combined.
    #[error("{field}: {reason}")]
    Incompatible {
        /// The field whose value conflicts.
        field: String,
        /// What conflicts and how to fix it.
        reason: String,
    },

    /// A config file could not be parsed (syntax, unknown key, wrong type).
    #[error("{source_name}: {message}")]
    Parse {
        /// The file or string that was parsed.
        source_name: String,
        /// The parser's message, with line and column.
        message: String,
    },

    /// A file could not be read or written.
    #[error("{path}: {source}", path = .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// A weights file does not match the backbone.
    #[error("{path}: the weights do not match the backbone:\n  {}", problems.join("\n  "), path = .path.display())]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// Every missing key, unexpected key and shape mismatch found.
        problems: Vec<String>,
    },

    /// `--backend` or a backend name that the crate does not know.
    #[error("backend: unknown backend '{name}'; expected one of {known}")]
    UnknownBackend {
        /// The name given.
        name: String,
        /// The names the crate knows.
        known: String,
    },

    /// A device of a multi-device run that the machine does not have.
    #[error(
        "devices: {backend} device {index} of the {count} asked for is not available: {reason}"
    )]
    DeviceUnavailable {
        /// The backend.
        backend: &'static str,
        /// The device's index (0-based).
        index: usize,
        /// How many devices were asked for.
        count: usize,
        /// What the backend said.
        reason: String,
    },

    /// A backend whose cargo feature this build lacks.
    #[error(
        "backend: '{backend}' is not compiled into this build (enabled: {enabled}); rebuild with `--features {backend}`"
    )]
    BackendNotEnabled {
        /// The backend asked for.
        backend: &'static str,
        /// The backends this build has.
        enabled: String,
    },

    /// A weight source name the crate does not know.
    #[error("weights source: unknown source '{name}'; expected one of mmdet, torchvision, timm")]
    UnknownWeightSource {
        /// The name given.
        name: String,
    },

    /// The input tensor does not fit the backbone.
    #[error(
        "input: expected shape [batch, {expected_channels}, height >= 1, width >= 1], got {got:?}"
    )]
    InputShape {
        /// `in_channels` of the config.
        expected_channels: usize,
        /// The input's shape.
        got: [usize; 4],
    },

    /// Weights could not be written.
    #[error("{path}: cannot save the weights: {message}", path = .path.display())]
    Save {
        /// The file asked for.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },

    /// The input is smaller than the backbone can take.
    #[error(
        "input: {got_height}x{got_width} is too small for this config; the smallest input is {min}x{min} ({reason})"
    )]
    InputTooSmall {
        /// The smallest height and width the config accepts.
        min: usize,
        /// The input's height.
        got_height: usize,
        /// The input's width.
        got_width: usize,
        /// What needs the size.
        reason: String,
    },

    /// A size, count or figure the config or input size implies does not fit in 64 bits.
    #[error("{field}: {what} overflows 64-bit arithmetic; use a smaller value")]
    Overflow {
        /// The config field or input that makes it overflow, e.g. `base_channels`.
        field: String,
        /// What overflowed, e.g. `layer4's output channels (base_channels × 8 × 4)`.
        what: String,
    },

    /// The estimated memory of a model, run or training exceeds the limit.
    #[error(
        "{what} needs an estimated {needed} ({detail}), more than the memory limit of {limit} ({limit_source}); \
         use a smaller config, input or batch, or raise the limit (RESNET_MEMORY_LIMIT, or --memory-limit on the command line)",
        needed = crate::memory::format_bytes(*.needed),
        limit = crate::memory::format_bytes(*.limit)
    )]
    OutOfMemory {
        /// What was asked for, e.g. `inference at batch 1, 99999x99999`.
        what: String,
        /// Estimated bytes.
        needed: u64,
        /// The estimate's parts.
        detail: String,
        /// The limit in bytes.
        limit: u64,
        /// Where the limit comes from (the machine's memory, or a setting).
        limit_source: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, ResNetError>;
