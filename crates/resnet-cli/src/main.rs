//! `resnet`: inspect, run and benchmark burn-resnet backbones from the command line.

mod bench;
mod error;
mod extract;
mod image_input;
mod info;
mod output;
mod train;

use std::path::PathBuf;
use std::process::ExitCode;

use burn_resnet::weights::WeightSource;
use burn_resnet::{BackendKind, MemoryLimit, ResNetConfig};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand};

use crate::error::CliError;

#[derive(Parser)]
#[command(
    name = "resnet",
    version,
    about = "mmdetection's ResNet family on Burn"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// The most memory a command may plan to use (estimated from the config and input size
    /// before anything is allocated), e.g. 16GiB, 512MiB or none; default: RESNET_MEMORY_LIMIT,
    /// else this machine's memory. On a GPU, give the card's memory.
    #[arg(long, global = true)]
    memory_limit: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Print each stage's blocks, channels, stride, parameters and multiply-adds.
    Info {
        /// A backbone config (TOML), e.g. configs/resnet50.toml.
        #[arg(long)]
        config: PathBuf,
        /// Input size as HEIGHTxWIDTH (or one number for a square).
        #[arg(long, default_value = "224x224", value_parser = parse_size)]
        input: [usize; 2],
    },
    /// Run an image through the backbone and print each output's shape and the time taken.
    Extract {
        /// A backbone config (TOML).
        #[arg(long)]
        config: PathBuf,
        /// The image (PNG or JPEG); without it, a bundled sample picture.
        #[arg(long)]
        image: Option<PathBuf>,
        /// Resize the image to HEIGHTxWIDTH before the backbone.
        #[arg(long, default_value = "224x224", value_parser = parse_size)]
        size: [usize; 2],
        /// A torchvision, timm or mmdet checkpoint (.pth or .safetensors); without it, mmdet's
        /// random init.
        #[arg(long)]
        weights: Option<PathBuf>,
        /// The checkpoint's key names: mmdet, torchvision or timm; default: detected.
        #[arg(long, value_parser = weight_source())]
        weights_source: Option<WeightSource>,
        /// Load what matches, keep the initial values of the rest, and list it.
        #[arg(long)]
        partial: bool,
        /// flex, ndarray or wgpu; default: the fastest CPU backend compiled in (flex).
        #[arg(long, value_parser = backend())]
        backend: Option<BackendKind>,
        /// Write the features (keys C1..C5) and the preprocessed image (`input`) to this
        /// safetensors file. Never onto an input, a directory, a device or a symbolic link; an
        /// existing file only with --force.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace an existing regular file at --out.
        #[arg(long)]
        force: bool,
    },
    /// Convert a checkpoint to another library's key names (safetensors) or to burnpack.
    Convert {
        /// The backbone config the checkpoint belongs to (TOML).
        #[arg(long)]
        config: PathBuf,
        /// The checkpoint to read (.pth or .safetensors).
        input: PathBuf,
        /// The file to write, at exactly this path. Never the input, a directory, a device or a
        /// symbolic link; an existing file only with --force.
        output: PathBuf,
        /// Replace an existing regular file at OUTPUT.
        #[arg(long)]
        force: bool,
        /// The input's key names: mmdet, torchvision or timm; default: detected.
        #[arg(long, value_parser = weight_source())]
        from: Option<WeightSource>,
        /// burnpack, or mmdet, torchvision or timm (safetensors with those names).
        #[arg(long, default_value = "burnpack", value_parser = convert_target())]
        to: ConvertTarget,
    },
    /// Time inference and a training step (median, min/max, images/s, peak memory).
    Bench {
        /// A backbone config (TOML).
        #[arg(long, default_value = "configs/resnet50.toml")]
        config: PathBuf,
        /// flex, ndarray, wgpu, or `all` (every backend compiled in); default: flex.
        #[arg(long, default_value = "default")]
        backend: String,
        /// Comma-separated cases: `infer bN`, `train bN`.
        #[arg(long, default_value = "infer b1,infer b8,train b8", value_delimiter = ',', value_parser = bench::Case::parse)]
        cases: Vec<bench::Case>,
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
    },
    /// Train the backbone with a small classification head, or (`task = "detect"`) under an FPN
    /// with a detection head, on generated shapes (burn-train: progress display, validation
    /// split, metrics, checkpoints every epoch; mAP@0.5 and pictures for detection).
    Train {
        /// A training config (TOML), e.g. configs/train/shapes_r18.toml or shapes_detect_r18.toml.
        #[arg(long)]
        config: PathBuf,
        /// flex, ndarray or wgpu; default: the fastest CPU backend compiled in (flex).
        #[arg(long, value_parser = backend())]
        backend: Option<BackendKind>,
        /// Run directory for logs and checkpoints.
        #[arg(long, default_value = "runs/shapes")]
        out: PathBuf,
        /// Continue from the last checkpoint in the run directory.
        #[arg(long)]
        resume: bool,
        /// Stop after this epoch (the learning-rate schedule still spans the config's epochs);
        /// continue later with --resume.
        #[arg(long)]
        stop_after: Option<usize>,
        /// Start over in a run directory that holds another run: removes its checkpoints and
        /// logs. Without it a new run refuses such a directory; --resume continues only the
        /// run's own config (saved as OUT/train.toml).
        #[arg(long)]
        force: bool,
    },
}

fn parse_size(text: &str) -> Result<[usize; 2], String> {
    let parse = |s: &str| match s.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "'{text}' is not a size: expected HEIGHTxWIDTH, e.g. 224x224, with sides >= 1"
        )),
    };
    match text.split_once(['x', 'X']) {
        Some((h, w)) => Ok([parse(h)?, parse(w)?]),
        None => parse(text).map(|n| [n, n]),
    }
}

/// `--weights-source`/`--from`: one of the library's source names (listed in `--help`).
fn weight_source() -> impl TypedValueParser<Value = WeightSource> {
    PossibleValuesParser::new(WeightSource::ALL.map(WeightSource::name))
        .try_map(|name| name.parse::<WeightSource>())
}

/// `--backend`: one of the library's backend names (listed in `--help`; whether it is
/// compiled in is checked when the device is made).
fn backend() -> impl TypedValueParser<Value = BackendKind> {
    PossibleValuesParser::new(BackendKind::ALL.map(BackendKind::name))
        .try_map(|name| name.parse::<BackendKind>())
}

/// What `convert --to` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConvertTarget {
    /// Burn's burnpack, under burn-resnet's own module paths.
    Burnpack,
    /// safetensors under a library's key names.
    Names(WeightSource),
}

impl std::fmt::Display for ConvertTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConvertTarget::Burnpack => "burnpack",
            ConvertTarget::Names(source) => source.name(),
        })
    }
}

/// `--to`: burnpack or a weight source name (listed in `--help`).
fn convert_target() -> impl TypedValueParser<Value = ConvertTarget> {
    let names = std::iter::once("burnpack").chain(WeightSource::ALL.map(WeightSource::name));
    PossibleValuesParser::new(names).try_map(|name| match name.as_str() {
        "burnpack" => Ok(ConvertTarget::Burnpack),
        name => name.parse::<WeightSource>().map(ConvertTarget::Names),
    })
}

fn run(cli: Cli) -> Result<(), CliError> {
    let memory_limit = match &cli.memory_limit {
        Some(text) => MemoryLimit::parse(text, "--memory-limit")?,
        None => MemoryLimit::from_env()?,
    };
    match cli.command {
        Command::Info { config, input } => {
            let spec = ResNetConfig::from_toml_file(&config)?.validate()?;
            print!("{}", info::render(&spec, input, &memory_limit)?);
            Ok(())
        }
        Command::Extract {
            config,
            image,
            size,
            weights,
            weights_source,
            partial,
            backend,
            out,
            force,
        } => {
            let backend = match backend {
                Some(backend) => backend,
                None => BackendKind::default_enabled().ok_or(CliError::NoBackend)?,
            };
            let request = extract::Request {
                config,
                image,
                size,
                weights,
                weights_source,
                partial,
                backend,
                out,
                force,
                memory_limit,
            };
            extract::run(&request)
        }
        Command::Convert {
            config,
            input,
            output,
            from,
            to,
            force,
        } => {
            output::check(&output, &[&config, &input], force)?;
            let spec = ResNetConfig::from_toml_file(&config)?.validate()?;
            spec.check_weights_memory(&memory_limit)?;
            let device = BackendKind::default_enabled()
                .ok_or(CliError::NoBackend)?
                .device()?;
            let (backbone, report) = spec.init(&device).load_weights(&input, from)?;
            match to {
                ConvertTarget::Burnpack => backbone.save_burnpack(&output)?,
                ConvertTarget::Names(names) => backbone.save_weights(&output, names)?,
            }
            println!(
                "{} ({} names) -> {} ({to}); {} non-backbone tensors left out",
                input.display(),
                report.source,
                output.display(),
                report.skipped.len()
            );
            Ok(())
        }
        Command::Train {
            config,
            backend,
            out,
            resume,
            stop_after,
            force,
        } => {
            let config = train::TrainConfig::from_file(&config)?;
            let backend = match backend {
                Some(backend) => backend,
                None => BackendKind::default_enabled().ok_or(CliError::NoBackend)?,
            };
            train::run(&train::Request {
                config,
                backend,
                out,
                resume,
                stop_after,
                force,
                memory_limit,
            })
        }
        Command::Bench {
            config,
            backend,
            cases,
            size,
            warmup,
            runs,
            stages,
            no_fold,
            with_cp,
            torch,
            threads,
        } => {
            let mut config = ResNetConfig::from_toml_file(&config)?;
            config.with_cp |= with_cp;
            let spec = config.validate()?;
            let backends = match backend.as_str() {
                "all" => BackendKind::enabled(),
                "default" => vec![BackendKind::default_enabled().ok_or(CliError::NoBackend)?],
                name => vec![name.parse::<BackendKind>()?],
            };
            let threads = threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let runs = runs as usize;
            let request = bench::Request {
                spec,
                backends,
                cases,
                size,
                warmup,
                runs,
                stages,
                fold_batch_norms: !no_fold,
                torch: torch.map(|p| (p, threads)),
                memory_limit,
            };
            bench::run(&request)
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
