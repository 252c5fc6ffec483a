//! The other side of `resnet bench --torch` and `--ort`: run `bench/torch_baseline.py --json`
//! (PyTorch eager) or `bench/ort_baseline.py --json` (the same network exported to ONNX Runtime)
//! on the same config and read what it built (to tell whether it is the same network) and
//! measured.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use burn_resnet::ResNetSpec;

use super::BenchArgs;
use super::timing::Measurement;
use crate::error::CliError;

/// Which baseline: PyTorch eager or ONNX Runtime.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// `bench/torch_baseline.py`.
    Torch,
    /// `bench/ort_baseline.py` (inference cases only).
    OnnxRuntime,
}

impl Runtime {
    /// The script, relative to the repository root.
    pub fn script(self) -> &'static str {
        match self {
            Runtime::Torch => "bench/torch_baseline.py",
            Runtime::OnnxRuntime => "bench/ort_baseline.py",
        }
    }

    /// How the table and the messages name it.
    pub fn label(self) -> &'static str {
        match self {
            Runtime::Torch => "PyTorch",
            Runtime::OnnxRuntime => "ONNX Runtime",
        }
    }
}

/// One line of a baseline script's `--json` output.
#[derive(serde::Deserialize)]
struct TorchRow {
    case: String,
    #[serde(flatten)]
    measurement: Measurement,
}

/// What a baseline script built and measured.
pub struct Baseline {
    /// Which runtime.
    pub runtime: Runtime,
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

/// The first line of a baseline script's `--json` output.
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

/// Run the `runtime`'s script with `--json` on the same config (written out with any
/// command-line changes) and read what it built and measured.
pub fn run(
    runtime: Runtime,
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
    let script = runtime.script();
    std::fs::write(&config_file, config_text)
        .map_err(|e| bench_error(format!("{}: {e}", config_file.display())))?;
    // ONNX Runtime does not train: its script gets the inference cases only.
    let cases: Vec<String> = args
        .cases
        .iter()
        .filter(|c| runtime == Runtime::Torch || c.is_inference())
        .map(|c| c.name())
        .collect();
    let output = Command::new(python)
        .args([script, "--json", "--threads", &threads.to_string()])
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
        .args(match runtime {
            Runtime::Torch => vec!["--device", args.torch_device.as_str()],
            Runtime::OnnxRuntime => vec![],
        })
        .output();
    let _ = std::fs::remove_file(&config_file);
    let output = output
        .map_err(|e| bench_error(format!("cannot run {} {script}: {e}", python.display())))?;
    if !output.status.success() {
        return Err(bench_error(format!(
            "{script} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut lines = stdout.lines().filter(|l| l.starts_with('{'));
    let model = lines
        .next()
        .ok_or_else(|| bench_error(format!("{script} printed nothing")))?;
    let ModelLine { model } = serde_json::from_str(model).map_err(|e| {
        bench_error(format!(
            "{script} printed '{model}' where the model line belongs: {e}"
        ))
    })?;
    let mut cases = HashMap::new();
    for line in lines {
        let row: TorchRow = serde_json::from_str(line)
            .map_err(|e| bench_error(format!("{script} printed '{line}': {e}")))?;
        cases.insert(row.case, row.measurement);
    }
    Ok(Baseline {
        runtime,
        builder: model.builder,
        params: model.params,
        unmirrored: model.unmirrored,
        cases,
    })
}
