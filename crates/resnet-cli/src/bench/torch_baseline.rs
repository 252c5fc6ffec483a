//! The PyTorch side of `resnet bench --torch`: run `bench/torch_baseline.py --json` on the same
//! config and read what it built (to tell whether it is the same network) and measured.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use burn_resnet::ResNetSpec;

use super::BenchArgs;
use super::timing::Measurement;
use crate::error::CliError;

/// One line of `bench/torch_baseline.py --json`.
#[derive(serde::Deserialize)]
struct TorchRow {
    case: String,
    #[serde(flatten)]
    measurement: Measurement,
}

/// What `bench/torch_baseline.py` built and measured.
pub struct Baseline {
    /// What built the network (`mmdet 3.3.0 ResNeXt`, `torchvision …`, with additions).
    pub builder: String,
    /// Its parameters, frozen ones included.
    pub params: usize,
    /// Config keys or values the baseline could not reproduce.
    pub unmirrored: Vec<String>,
    /// Measurements by case name.
    pub cases: HashMap<String, Measurement>,
}

impl Baseline {
    /// Why the baseline is not the same network as `spec`, if it is not: a key it could not
    /// mirror, or another parameter count than the project's own.
    pub fn mismatch(&self, spec: &ResNetSpec, size: usize) -> Option<String> {
        let ours = match burn_resnet::ModelSummary::new(spec, size, size) {
            Ok(summary) => summary.total_params(),
            Err(e) => return Some(e.to_string()),
        };
        if !self.unmirrored.is_empty() {
            Some(format!("it cannot mirror {}", self.unmirrored.join(", ")))
        } else if self.params != ours {
            Some(format!(
                "it has {} parameters, this config {ours}",
                self.params
            ))
        } else {
            None
        }
    }
}

/// The first line of `bench/torch_baseline.py --json`.
#[derive(serde::Deserialize)]
struct ModelLine {
    model: ModelInfo,
}

#[derive(serde::Deserialize)]
struct ModelInfo {
    builder: String,
    params: usize,
    unmirrored: Vec<String>,
}

/// Run `bench/torch_baseline.py --json` on the same config (written out with any command-line
/// changes) and read what it built and measured.
pub fn run(
    python: &PathBuf,
    threads: usize,
    spec: &ResNetSpec,
    args: &BenchArgs,
) -> Result<Baseline, CliError> {
    let bench_error = |message: String| CliError::Bench(message);
    let config_text = toml::to_string(&spec.config)
        .map_err(|e| bench_error(format!("cannot write the config for the baseline: {e}")))?;
    let config_file =
        std::env::temp_dir().join(format!("resnet-bench-{}.toml", std::process::id()));
    std::fs::write(&config_file, config_text)
        .map_err(|e| bench_error(format!("{}: {e}", config_file.display())))?;
    let cases: Vec<String> = args.cases.iter().map(|c| c.name()).collect();
    let output = Command::new(python)
        .args([
            "bench/torch_baseline.py",
            "--json",
            "--threads",
            &threads.to_string(),
        ])
        .arg("--config")
        .arg(&config_file)
        .args(["--size", &args.size.to_string()])
        // The baseline checks the network against the project's own count before timing it.
        .args([
            "--expect-params",
            &burn_resnet::ModelSummary::new(spec, args.size, args.size)?
                .total_params()
                .to_string(),
        ])
        .args([
            "--warmup",
            &args.warmup.to_string(),
            "--runs",
            &args.runs.to_string(),
        ])
        .args(["--cases", &cases.join(",")])
        .output();
    let _ = std::fs::remove_file(&config_file);
    let output = output.map_err(|e| {
        bench_error(format!(
            "cannot run {} bench/torch_baseline.py: {e}",
            python.display()
        ))
    })?;
    if !output.status.success() {
        return Err(bench_error(format!(
            "bench/torch_baseline.py failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut lines = stdout.lines().filter(|l| l.starts_with('{'));
    let model = lines
        .next()
        .ok_or_else(|| bench_error("bench/torch_baseline.py printed nothing".into()))?;
    let ModelLine { model } = serde_json::from_str(model).map_err(|e| {
        bench_error(format!(
            "bench/torch_baseline.py printed '{model}' where the model line belongs: {e}"
        ))
    })?;
    let mut cases = HashMap::new();
    for line in lines {
        let row: TorchRow = serde_json::from_str(line)
            .map_err(|e| bench_error(format!("bench/torch_baseline.py printed '{line}': {e}")))?;
        cases.insert(row.case, row.measurement);
    }
    Ok(Baseline {
        builder: model.builder,
        params: model.params,
        unmirrored: model.unmirrored,
        cases,
    })
}
