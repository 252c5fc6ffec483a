//! `resnet bench`: time ResNet feature extraction and a training step, optionally side by side
//! with PyTorch (`bench/torch_baseline.py`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Distribution, Tensor};
use burn_resnet::{BackendKind, MemoryLimit, ResNet, ResNetConfig, ResNetSpec};

use crate::error::CliError;

/// The options of `resnet bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// A backbone config (TOML).
    #[arg(long, default_value = "configs/resnet50.toml")]
    config: PathBuf,
    /// flex, ndarray, wgpu, or `all` (every backend compiled in); default: flex.
    #[arg(long, default_value = "default")]
    backend: String,
    /// Comma-separated cases: `infer bN`, `train bN`.
    #[arg(long, default_value = "infer b1,infer b8,train b8", value_delimiter = ',', value_parser = Case::parse)]
    cases: Vec<Case>,
    /// Square input side.
    #[arg(long, default_value_t = 224)]
    size: usize,
    /// Untimed runs before timing.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed runs.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    runs: u64,
    /// Also time each stage of the inference cases (stem, layer1, ...).
    #[arg(long)]
    stages: bool,
    /// Run inference without folding the BatchNorms into the convs.
    #[arg(long)]
    no_fold: bool,
    /// Train with `with_cp = true` (blocks recompute their activations in the backward pass).
    #[arg(long)]
    with_cp: bool,
    /// Also run bench/torch_baseline.py with this Python and print the ratio.
    #[arg(long)]
    torch: Option<PathBuf>,
    /// Threads for PyTorch (default: all cores, like Burn's thread pool).
    #[arg(long)]
    threads: Option<usize>,
}

impl BenchArgs {
    /// Timed runs per case.
    fn runs(&self) -> usize {
        self.runs as usize
    }

    /// Whether the inference cases fold the BatchNorms into the convs.
    fn fold_batch_norms(&self) -> bool {
        !self.no_fold
    }
}

/// One benchmark case: inference or a training step at a batch size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    /// Forward in inference mode.
    Infer(usize),
    /// Forward, loss = sum of the outputs' means, backward, SGD step (momentum 0.9, no dampening).
    Train(usize),
}

impl Case {
    /// Parse `infer b1` / `train b8`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || {
            format!("'{text}' is not a case: expected 'infer bN' or 'train bN', e.g. 'infer b1'")
        };
        let (kind, batch) = text.trim().split_once(' ').ok_or_else(bad)?;
        let batch: usize = batch
            .trim()
            .trim_start_matches('b')
            .parse()
            .map_err(|_| bad())?;
        match (kind, batch) {
            (_, 0) => Err(bad()),
            ("infer", b) => Ok(Case::Infer(b)),
            ("train", b) => Ok(Case::Train(b)),
            _ => Err(bad()),
        }
    }

    /// `infer b1` / `train b8`.
    pub fn name(self) -> String {
        match self {
            Case::Infer(b) => format!("infer b{b}"),
            Case::Train(b) => format!("train b{b}"),
        }
    }

    fn batch(self) -> usize {
        match self {
            Case::Infer(b) | Case::Train(b) => b,
        }
    }
}

/// Timings of one case.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct Measurement {
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub images_per_s: f64,
    /// Peak resident memory during the case above the resident memory before it (model and
    /// input already built): what the case itself needs, in MiB; `NaN` where unknown (non-Linux).
    pub peak_mib: f64,
}

/// One line of `bench/torch_baseline.py --json`.
#[derive(serde::Deserialize)]
struct TorchRow {
    case: String,
    #[serde(flatten)]
    measurement: Measurement,
}

/// Run every case on every backend and print one line per case. Every case's estimated memory
/// must fit in `memory_limit`.
pub fn run(args: &BenchArgs, memory_limit: &MemoryLimit) -> Result<(), CliError> {
    let mut config = ResNetConfig::from_toml_file(&args.config)?;
    config.with_cp |= args.with_cp;
    let spec = config.validate()?;
    let backends = match args.backend.as_str() {
        "all" => BackendKind::enabled(),
        "default" => vec![BackendKind::default_enabled().ok_or(CliError::NoBackend)?],
        name => vec![name.parse::<BackendKind>()?],
    };
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let summary = burn_resnet::ModelSummary::new(&spec, args.size, args.size)?;
    for &case in &args.cases {
        let workload = match case {
            Case::Infer(_) => burn_resnet::Workload::Inference,
            Case::Train(_) => burn_resnet::Workload::Training,
        };
        let what = format!(
            "bench case `{}` at {}x{}",
            case.name(),
            args.size,
            args.size
        );
        summary
            .memory(case.batch(), workload)?
            .check(&what, memory_limit)?;
    }
    let torch = match &args.torch {
        Some(python) => Some(torch_baseline(python, threads, &spec, args)?),
        None => None,
    };
    // A ratio only against the same network.
    let mismatch = torch.as_ref().and_then(|t| t.mismatch(&spec, args.size));
    if let Some(baseline) = &torch {
        match &mismatch {
            None => println!(
                "PyTorch baseline: {}, {} parameters, the same as this config's",
                baseline.builder, baseline.params
            ),
            Some(why) => println!(
                "PyTorch baseline: {} is not this network ({why}): not timed, no ratio",
                baseline.builder
            ),
        }
    }
    println!(
        "ResNet-{} features, {}x{} f32, {} warm-up + {} timed runs, inference {}{}",
        spec.config.depth,
        args.size,
        args.size,
        args.warmup,
        args.runs,
        if args.fold_batch_norms() {
            "with BatchNorms folded into the convs"
        } else {
            "unfolded"
        },
        torch
            .as_ref()
            .map_or(String::new(), |_| ", against PyTorch eager".into())
    );
    println!(
        "{:<8} {:<9} {:>10} {:>10} {:>10} {:>9} {:>9}{}",
        "backend",
        "case",
        "median ms",
        "min ms",
        "max ms",
        "img/s",
        "+peak MiB",
        if torch.is_some() {
            "   torch ms +torch MiB  time ratio"
        } else {
            ""
        }
    );
    for &backend in &backends {
        let device = backend.device()?;
        for &case in &args.cases {
            let m = measure(&spec, &device, case, args)?;
            let mut line = format!(
                "{:<8} {:<9} {:>10.1} {:>10.1} {:>10.1} {:>9.1} {:>9.0}",
                backend.name(),
                case.name(),
                m.median_ms,
                m.min_ms,
                m.max_ms,
                m.images_per_s,
                m.peak_mib
            );
            if let Some(t) = torch.as_ref().and_then(|t| t.cases.get(&case.name())) {
                let ratio = match mismatch {
                    None => format!("{:>10.2}x", m.median_ms / t.median_ms),
                    Some(_) => format!("{:>11}", "-"),
                };
                line += &format!(" {:>10.1} {:>10.0} {ratio}", t.median_ms, t.peak_mib);
            }
            println!("{line}");
            if let (true, Case::Infer(batch)) = (args.stages, case) {
                let stages = stage_profile(&spec, &device, batch, args)?;
                let total: f64 = stages.iter().map(|(_, ms)| ms).sum();
                for (name, ms) in stages {
                    println!(
                        "{:<8}   {:<7} {:>10.1} ms  {:>5.1}%",
                        "",
                        name,
                        ms,
                        100.0 * ms / total
                    );
                }
            }
        }
    }
    Ok(())
}

/// Median time of each stage of an inference forward (stem with its max-pool, then each
/// layer), syncing the device between stages; printed by `resnet bench --stages`.
pub fn stage_profile(
    spec: &ResNetSpec,
    device: &Device,
    batch: usize,
    args: &BenchArgs,
) -> Result<Vec<(&'static str, f64)>, CliError> {
    let model = spec.init(device);
    let model = if args.fold_batch_norms() {
        model.fold_batch_norms()
    } else {
        model
    };
    let images = Tensor::<4>::random(
        [batch, spec.config.in_channels, args.size, args.size],
        Distribution::Normal(0.0, 1.0),
        device,
    );
    let names = std::iter::once("stem").chain(
        burn_resnet::features::STAGE_NAMES
            .into_iter()
            .take(model.layers.len()),
    );
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); model.layers.len() + 1];
    for run in 0..args.warmup + args.runs() {
        let mut x = images.clone();
        for (index, slot) in times.iter_mut().enumerate() {
            let started = Instant::now();
            x = match index {
                0 => burn_resnet::stem::Stem::pool(
                    model.stem.forward(x, model.spec().stage_mode(None)),
                ),
                i => model.layers[i - 1].forward(x, model.spec().stage_mode(Some(i - 1))),
            };
            sync(device)?;
            if run >= args.warmup {
                slot.push(started.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    Ok(names
        .zip(times)
        .map(|(name, mut t)| {
            t.sort_by(f64::total_cmp);
            (name, t[t.len() / 2])
        })
        .collect())
}

/// Time one case on one device.
pub fn measure(
    spec: &ResNetSpec,
    device: &Device,
    case: Case,
    args: &BenchArgs,
) -> Result<Measurement, CliError> {
    let shape = [case.batch(), spec.config.in_channels, args.size, args.size];
    // The peak is measured from just before the first run, with the model's parameters (Burn
    // initialises them lazily) and the input in memory, as in the PyTorch script: it counts
    // activations, gradients, optimizer state and workspace, not the weights.
    let baseline_mib;
    let mut times = Vec::with_capacity(args.runs());
    match case {
        Case::Infer(_) => {
            let model = spec.init(device);
            let model = if args.fold_batch_norms() {
                model.fold_batch_norms()
            } else {
                model
            };
            let images = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), device);
            model.visit(&mut Materialize);
            baseline_mib = reset_peak_memory();
            for run in 0..args.warmup + args.runs() {
                let started = Instant::now();
                let loss = feature_loss(&model, images.clone());
                let _ = loss.into_scalar::<f32>();
                sync(device)?;
                if run >= args.warmup {
                    times.push(started.elapsed().as_secs_f64() * 1e3);
                }
            }
        }
        Case::Train(_) => {
            let training = device.clone().autodiff();
            let mut model = spec.init(device).fork(&training).train();
            let momentum = MomentumConfig {
                momentum: 0.9,
                dampening: 0.0,
                nesterov: false,
            };
            let mut optimizer = SgdConfig::new().with_momentum(Some(momentum)).init();
            let images = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &training);
            model.visit(&mut Materialize);
            baseline_mib = reset_peak_memory();
            for run in 0..args.warmup + args.runs() {
                let started = Instant::now();
                let grads = feature_loss(&model, images.clone()).backward();
                let grads = GradientsParams::from_grads(grads, &model);
                model = optimizer.step(0.01, model, grads);
                sync(device)?;
                if run >= args.warmup {
                    times.push(started.elapsed().as_secs_f64() * 1e3);
                }
            }
        }
    }
    times.sort_by(f64::total_cmp);
    let median_ms = times[times.len() / 2];
    Ok(Measurement {
        median_ms,
        min_ms: times[0],
        max_ms: times[times.len() - 1],
        images_per_s: case.batch() as f64 * 1e3 / median_ms,
        // The high-water mark can sit a fraction below the baseline read before; NaN (unknown)
        // stays NaN.
        peak_mib: match memory_mib("VmHWM:") - baseline_mib {
            peak if peak < 0.0 => 0.0,
            peak => peak,
        },
    })
}

/// The benchmark's loss: the sum of the outputs' means (a scalar that depends on every output).
fn feature_loss(model: &ResNet, images: Tensor<4>) -> Tensor<1> {
    model
        .forward(images)
        .into_iter()
        .map(|f| f.mean())
        .reduce(|a, b| a + b)
        .expect("at least one output")
}

fn sync(device: &Device) -> Result<(), CliError> {
    device
        .sync()
        .map_err(|e| CliError::Bench(format!("device sync failed: {e:?}")))
}

/// Touches every parameter, so that lazily initialised ones are allocated now.
struct Materialize;

impl ModuleVisitor for Materialize {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let _ = param.val();
    }
}

/// Reset the process's peak resident set size (Linux `clear_refs` 5) and return the current
/// resident size in MiB, the baseline the case's peak is measured from.
fn reset_peak_memory() -> f64 {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    memory_mib("VmRSS:")
}

/// A `/proc/self/status` memory line (`VmRSS:`, `VmHWM:`) in MiB; `NaN` where unavailable.
fn memory_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with(field))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
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
fn torch_baseline(
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
