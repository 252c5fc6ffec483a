//! `resnet`: inspect, run and benchmark burn-resnet backbones from the command line.
//!
//! Each subcommand's module defines its options (one `#[derive(clap::Args)]` struct) and runs
//! it; this file holds the command line's top level, the global options, and the dispatch.

mod bench;
mod coco;
mod convert;
mod error;
mod evaluate;
mod extract;
mod image_input;
mod info;
mod options;
mod output;
mod train;
mod weights_report;

use std::process::ExitCode;

use burn_resnet::MemoryLimit;
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
    Info(info::InfoArgs),
    /// Run an image through the backbone and print each output's shape and the time taken.
    Extract(extract::ExtractArgs),
    /// Convert a checkpoint to another library's key names (safetensors) or to burnpack.
    Convert(convert::ConvertArgs),
    /// Time inference and a training step (median, min/max, images/s, peak memory).
    Bench(bench::BenchArgs),
    /// Train the backbone with a small classification head, or (`task = "detect"`) under an FPN
    /// with a detection head, on generated shapes or on an image folder / COCO set from disk
    /// (`[data]`) (burn-train: progress display, validation split, metrics, checkpoints every
    /// epoch; mAP@0.5 or COCO's metrics, and pictures, for detection).
    Train(train::TrainArgs),
    /// Score detections (a COCO results file) against COCO annotations: AP@[.50:.95], AP50,
    /// AP75, AP and AR by object size, as pycocotools computes them, and each category's AP.
    Evaluate(evaluate::EvaluateArgs),
    /// Write a training config's generated shapes to disk: an image folder (classification)
    /// or a COCO set of PNGs and annotation files (detection).
    ExportShapes(train::export_shapes::ExportShapesArgs),
}

fn run(cli: Cli) -> Result<(), CliError> {
    // Before any thread allocates: training steps then reuse the last step's pages instead of
    // faulting in fresh zeroed ones (see `burn_resnet::allocator`).
    let freed_memory = burn_resnet::keep_freed_memory();
    let memory_limit = match &cli.memory_limit {
        Some(text) => MemoryLimit::parse(text, "--memory-limit")?,
        None => MemoryLimit::from_env()?,
    };
    match &cli.command {
        Command::Info(args) => info::run(args, &memory_limit),
        Command::Extract(args) => extract::run(args, &memory_limit),
        Command::Convert(args) => convert::run(args, &memory_limit),
        Command::Bench(args) => bench::run(args, &memory_limit, freed_memory),
        Command::Train(args) => train::run(args, &memory_limit),
        Command::Evaluate(args) => evaluate::run(args),
        Command::ExportShapes(args) => train::export_shapes::run(args),
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
