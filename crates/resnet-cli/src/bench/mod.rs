//! `resnet bench`: time ResNet feature extraction and a training step, optionally side by side
//! with PyTorch (`bench/torch_baseline.py`) and ONNX Runtime (`bench/ort_baseline.py`): the
//! options and the cases here, the timings in [`timing`], the baselines in [`baseline`].

mod baseline;
mod timing;

use std::path::PathBuf;

use burn_resnet::{BackendKind, MemoryLimit, ResNetConfig};

use crate::error::CliError;
use baseline::{Baseline, Runtime};
use timing::{measure, stage_profile};

/// The options of `resnet bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// A backbone config (TOML).
    #[arg(long, default_value = "configs/resnet50.toml")]
    config: PathBuf,
    /// flex, ndarray, wgpu, cuda, or `all` (every backend compiled in); default: flex.
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
    /// Train on Burn's autodiff device with its gradient checkpointing (the `Balanced`
    /// strategy: memory-bound ops recomputed in the backward pass), on any backend.
    #[arg(long)]
    burn_checkpointing: bool,
    /// Also run bench/torch_baseline.py with this Python and print the ratio.
    #[arg(long)]
    torch: Option<PathBuf>,
    /// Where bench/torch_baseline.py runs the model: cpu, or a CUDA GPU (cuda, cuda:1) to
    /// compare with `--backend cuda` or `wgpu` on the same GPU.
    #[arg(long, default_value = "cpu")]
    torch_device: String,
    /// Also run bench/ort_baseline.py with this Python: the same network exported to ONNX and
    /// timed in ONNX Runtime (inference cases), with its ratio.
    #[arg(long)]
    ort: Option<PathBuf>,
    /// Threads for PyTorch and ONNX Runtime (default: all cores, like Burn's thread pool).
    #[arg(long)]
    threads: Option<usize>,
    /// The flex inference conv's kernel: avx512, avx2, portable or im2col-gemm (default: the
    /// fastest this CPU runs); in training, im2col-gemm also for the stride-1 3x3 convs, which
    /// the others run as Winograd.
    #[cfg(feature = "flex")]
    #[arg(long)]
    conv_kernel: Option<burn_resnet::ConvKernel>,
    /// The flex inference layout: nchwc (16-channel blocks kept through the whole backbone,
    /// where it supports them; the default) or nchw (conv by conv).
    #[cfg(feature = "flex")]
    #[arg(long, default_value = "nchwc")]
    layout: burn_resnet::InferenceLayout,
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

    fn is_inference(self) -> bool {
        matches!(self, Case::Infer(_))
    }

    fn batch(self) -> usize {
        match self {
            Case::Infer(b) | Case::Train(b) => b,
        }
    }
}

/// Run every case on every backend and print one line per case. Every case's estimated memory
/// must fit in `memory_limit`.
pub fn run(
    args: &BenchArgs,
    memory_limit: &MemoryLimit,
    freed_memory: burn_resnet::FreedMemory,
) -> Result<(), CliError> {
    #[cfg(feature = "flex")]
    let conv_kernel = args
        .conv_kernel
        .unwrap_or_else(burn_resnet::ConvKernel::best);
    #[cfg(feature = "flex")]
    if !conv_kernel.is_supported() {
        return Err(CliError::Bench(format!(
            "--conv-kernel {conv_kernel}: this CPU cannot run it"
        )));
    }
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
    let baselines: Vec<(Baseline, Option<String>)> = [
        (Runtime::Torch, &args.torch),
        (Runtime::OnnxRuntime, &args.ort),
    ]
    .into_iter()
    .filter_map(|(runtime, python)| Some((runtime, python.as_ref()?)))
    .map(|(runtime, python)| {
        let baseline = baseline::run(runtime, python, threads, &spec, args)?;
        // A ratio only against the same network.
        let mismatch = baseline.mismatch(&spec, args.size);
        match &mismatch {
            None => println!(
                "{} baseline: {}, {} parameters, the same as this config's",
                runtime.label(),
                baseline.builder,
                baseline.params
            ),
            Some(why) => println!(
                "{} baseline: {} is not this network ({why}): not timed, no ratio",
                runtime.label(),
                baseline.builder
            ),
        }
        Ok((baseline, mismatch))
    })
    .collect::<Result<_, CliError>>()?;
    let against: Vec<&str> = baselines
        .iter()
        .map(|(b, _)| match b.runtime {
            Runtime::Torch => "PyTorch eager",
            Runtime::OnnxRuntime => "ONNX Runtime (inference)",
        })
        .collect();
    println!(
        "{}-{} features, {}x{} f32, {} warm-up + {} timed runs, inference {}{}",
        spec.config.backbone.name(),
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
        if against.is_empty() {
            String::new()
        } else {
            format!(", against {}", against.join(" and "))
        }
    );
    for (baseline, _) in &baselines {
        let on_cpu = baseline_on_cpu(baseline, args);
        if backends.iter().any(|b| b.is_cpu() != on_cpu) {
            println!(
                "{} runs on the {}: no ratio for the {} backends (other hardware)",
                baseline.runtime.label(),
                if on_cpu { "CPU" } else { "GPU" },
                if on_cpu { "GPU" } else { "CPU" },
            );
        }
    }
    #[cfg(feature = "flex")]
    println!(
        "flex inference conv kernel: {conv_kernel}, layout: {}",
        args.layout
    );
    println!("allocator: {freed_memory}");
    let mut header = format!(
        "{:<8} {:<9} {:>10} {:>10} {:>10} {:>9} {:>9}",
        "backend", "case", "median ms", "min ms", "max ms", "img/s", "+peak MiB"
    );
    for (baseline, _) in &baselines {
        header += match baseline.runtime {
            Runtime::Torch => "   torch ms +torch MiB  time ratio",
            Runtime::OnnxRuntime => "     ort ms   +ort MiB   ort ratio",
        };
    }
    println!("{header}");
    // Every case runs on this thread, with the chosen conv kernel.
    #[cfg(feature = "flex")]
    return conv_kernel
        .force(|| {
            args.layout
                .force(|| run_cases(args, &spec, &backends, &baselines))
        })
        .expect("checked above");
    #[cfg(not(feature = "flex"))]
    run_cases(args, &spec, &backends, &baselines)
}

/// Whether `baseline` runs on the CPU: ONNX Runtime's script always does, PyTorch's unless
/// `--torch-device` names a GPU.
fn baseline_on_cpu(baseline: &Baseline, args: &BenchArgs) -> bool {
    match baseline.runtime {
        Runtime::Torch => args.torch_device == "cpu",
        Runtime::OnnxRuntime => true,
    }
}

/// Time every case on every backend and print its line (and its stages).
fn run_cases(
    args: &BenchArgs,
    spec: &burn_resnet::ResNetSpec,
    backends: &[BackendKind],
    baselines: &[(Baseline, Option<String>)],
) -> Result<(), CliError> {
    for &backend in backends {
        let device = backend.device()?;
        for &case in &args.cases {
            let m = measure(spec, &device, case, args)?;
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
            for (baseline, mismatch) in baselines {
                // A case the baseline did not time (ONNX Runtime does not train) shows dashes.
                let Some(t) = baseline.cases.get(&case.name()) else {
                    line += &format!(" {:>10} {:>10} {:>11}", "-", "-", "-");
                    continue;
                };
                // A ratio only against the same network on the same kind of hardware.
                let ratio = match (
                    mismatch,
                    backend.is_cpu() == baseline_on_cpu(baseline, args),
                ) {
                    (None, true) => format!("{:>10.2}x", m.median_ms / t.median_ms),
                    _ => format!("{:>11}", "-"),
                };
                line += &format!(" {:>10.1} {:>10.0} {ratio}", t.median_ms, t.peak_mib);
            }
            println!("{line}");
            if let (true, Case::Infer(batch)) = (args.stages, case) {
                let stages = stage_profile(spec, &device, batch, args)?;
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
