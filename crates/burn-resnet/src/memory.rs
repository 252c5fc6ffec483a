//! Memory estimates from a config's figures, and the limit they are checked against before
//! anything is allocated: a config or input that cannot fit fails with
//! [`ResNetError::OutOfMemory`] giving the estimate, instead of the process aborting when an
//! allocation fails.
//!
//! The estimate is deliberately simple and on the high side (float32 values throughout):
//! - weights: 4 bytes per parameter (running statistics add under 1%);
//! - inference: the input plus four times the largest tensor of the network (a block's input
//!   kept for the residual, its branch, the new output and a temporary), per image;
//! - training: the input plus three values per activation value (conv output, normalised and
//!   activated; what the backward pass keeps), per image, and gradients and optimizer state
//!   (three more copies of the weights).
//!
//! The limit is `RESNET_MEMORY_LIMIT` when set (`24GiB`, `512MiB`, bytes, or `none`), else the
//! machine's physical memory (Linux), else none. On a GPU, set it to the card's memory.

use crate::checked::mul;
use crate::error::{ResNetError, Result};
use crate::summary::ModelSummary;

/// What a model is asked to do, for [`ModelSummary::memory`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Forward passes without autodiff.
    Inference,
    /// Forward and backward passes and optimizer steps.
    Training,
}

/// Estimated bytes of a model and one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// The parameters.
    pub weights: u64,
    /// The input and the activations of one batch.
    pub activations: u64,
    /// Gradients and optimizer state (0 for inference).
    pub training_state: u64,
    /// The packed copy of the weights that flex's inference conv kernels keep between calls
    /// (`ConvKernel`; inference only, and only on flex with a micro-kernel: an upper bound).
    pub packed_weights: u64,
}

impl MemoryEstimate {
    /// The weights of `params` parameters alone.
    pub fn weights_only(params: usize) -> Option<Self> {
        Some(Self {
            weights: mul(&[params as u64, 4])?,
            activations: 0,
            training_state: 0,
            packed_weights: 0,
        })
    }

    /// The sum of the parts (saturating: every part fits, the sum is compared with a limit).
    pub fn total(&self) -> u64 {
        self.weights
            .saturating_add(self.activations)
            .saturating_add(self.training_state)
            .saturating_add(self.packed_weights)
    }

    /// The parts, for a message.
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("weights {}", format_bytes(self.weights))];
        if self.activations > 0 {
            parts.push(format!("activations {}", format_bytes(self.activations)));
        }
        if self.training_state > 0 {
            parts.push(format!(
                "gradients and optimizer state {}",
                format_bytes(self.training_state)
            ));
        }
        if self.packed_weights > 0 {
            parts.push(format!(
                "packed conv weights {}",
                format_bytes(self.packed_weights)
            ));
        }
        parts.join(" + ")
    }

    /// Err when the estimate exceeds `limit`; `what` names the request in the error.
    pub fn check(&self, what: &str, limit: &MemoryLimit) -> Result<()> {
        match limit.bytes {
            Some(bytes) if self.total() > bytes => Err(ResNetError::OutOfMemory {
                what: what.to_string(),
                needed: self.total(),
                detail: self.describe(),
                limit: bytes,
                limit_source: limit.source.clone(),
            }),
            _ => Ok(()),
        }
    }
}

impl ModelSummary {
    /// The estimated memory of this model running `workload` on batches of `batch` images of
    /// the summary's input size (see the [module docs](crate::memory) for what is counted).
    ///
    /// Errors: [`ResNetError::Overflow`] when the estimate does not fit in 64 bits.
    pub fn memory(&self, batch: usize, workload: Workload) -> Result<MemoryEstimate> {
        let overflow = || ResNetError::Overflow {
            field: format!("batch {batch}"),
            what: "the memory estimate".into(),
        };
        let weights = mul(&[self.total_params() as u64, 4]).ok_or_else(overflow)?;
        let per_image =
            match workload {
                Workload::Inference => mul(&[self.largest_activation(), 4])
                    .and_then(|v| v.checked_add(self.input_values)),
                Workload::Training => mul(&[self.total_activations(), 3])
                    .and_then(|v| v.checked_add(self.input_values)),
            };
        let activations = per_image
            .and_then(|values| mul(&[values, batch as u64, 4]))
            .ok_or_else(overflow)?;
        let training_state = match workload {
            Workload::Inference => 0,
            Workload::Training => mul(&[weights, 3]).ok_or_else(overflow)?,
        };
        let packed_weights = match workload {
            Workload::Inference => mul(&[self.packed_weights(), 4]).ok_or_else(overflow)?,
            Workload::Training => 0,
        };
        Ok(MemoryEstimate {
            weights,
            activations,
            training_state,
            packed_weights,
        })
    }
}

/// The most memory a request may need, and where that figure comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryLimit {
    /// Bytes; `None` for no limit.
    pub bytes: Option<u64>,
    /// Where the limit comes from, for messages.
    pub source: String,
}

impl MemoryLimit {
    /// The environment variable that sets the limit.
    pub const ENV: &'static str = "RESNET_MEMORY_LIMIT";

    /// No limit.
    pub fn unlimited() -> Self {
        Self {
            bytes: None,
            source: "no limit".into(),
        }
    }

    /// `RESNET_MEMORY_LIMIT` when set, else this machine's physical memory, else no limit.
    ///
    /// Errors: [`ResNetError::Parse`] when the variable is not a size.
    pub fn from_env() -> Result<Self> {
        match std::env::var(Self::ENV) {
            Ok(text) => Self::parse(&text, Self::ENV),
            Err(_) => Ok(
                physical_memory().map_or_else(Self::unlimited, |bytes| Self {
                    bytes: Some(bytes),
                    source: "this machine's memory".into(),
                }),
            ),
        }
    }

    /// A limit written as `24GiB`, `512MiB`, `64KiB`, `2GB`, a number of bytes, or `none`;
    /// `source` names where the text came from.
    pub fn parse(text: &str, source: &str) -> Result<Self> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("none") {
            return Ok(Self::unlimited());
        }
        let error = || ResNetError::Parse {
            source_name: source.to_string(),
            message: format!(
                "'{text}' is not a memory size; expected e.g. 24GiB, 512MiB, 2GB, a number of bytes, or none"
            ),
        };
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            "tib" => 1 << 40,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            _ => return Err(error()),
        };
        let value: f64 = number.parse().map_err(|_| error())?;
        let bytes = value * scale as f64;
        if !(bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64) {
            return Err(error());
        }
        Ok(Self {
            bytes: Some(bytes as u64),
            source: format!("{source} = {text}"),
        })
    }
}

/// The machine's physical memory (Linux: `MemTotal` of `/proc/meminfo`).
fn physical_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kib: u64 = line
        .trim_start_matches("MemTotal:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// `bytes` in binary units with three significant digits, e.g. `1.50 GiB`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} B"),
        _ => {
            let decimals = if value < 10.0 {
                2
            } else if value < 100.0 {
                1
            } else {
                0
            };
            format!("{value:.decimals$} {}", UNITS[unit])
        }
    }
}
