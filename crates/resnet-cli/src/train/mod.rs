//! `resnet train`: train a backbone with a small classification head ([`classification`]), or
//! (`task = "detect"`) under an FPN with a CenterNet-style detection head ([`detection`]), on
//! the program's own shapes or on data from disk (`[data]`), through burn-train (progress
//! display, validation split, loss and accuracy metrics, cosine learning-rate schedule, a
//! checkpoint every epoch, `--resume`).
//!
//! - the tasks, each a training loop with its evaluation: [`classification`], [`detection`]
//!   (its data in [`detection_data`]; scored by [`average_precision`] on the shapes and by
//!   COCO's metrics on a COCO set, [`coco_results`]; drawn by [`pictures`]);
//! - their models around the backbone: [`models`];
//! - their data, generated or from disk: [`data`]; `resnet export-shapes` writes the generated
//!   data to disk ([`export_shapes`]);
//! - what both share: the config ([`config`]), the run and its resuming ([`session`],
//!   [`run_dir`]), the optimizer ([`optimizer`]), the guard against non-finite steps
//!   ([`guard`]) and the progress lines ([`renderer`]).

mod average_precision;
mod classification;
mod coco_metric;
mod coco_results;
mod config;
mod data;
mod detection;
mod detection_data;
pub mod export_shapes;
mod guard;
mod models;
mod optimizer;
mod pictures;
mod renderer;
mod run_dir;
mod session;

use std::path::PathBuf;

use burn_resnet::{BackendKind, MemoryLimit};

use crate::error::CliError;
use crate::options;
use config::{Task, TrainConfig};
use session::Session;

/// The options of `resnet train`.
#[derive(clap::Args)]
pub struct TrainArgs {
    /// A training config (TOML), e.g. configs/train/shapes_r18.toml or shapes_detect_r18.toml.
    #[arg(long)]
    config: PathBuf,
    /// flex, ndarray, wgpu or cuda; default: the fastest CPU backend compiled in (flex).
    #[arg(long, value_parser = options::backend())]
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
    /// Split each training step over this many devices of the backend (burn-train's
    /// multi-device strategy): GPUs 0..N for cuda and wgpu, N workers on the one CPU device
    /// for flex and ndarray. The config's batch_size stays the whole step's batch.
    #[arg(long, default_value = "1")]
    devices: std::num::NonZeroUsize,
}

/// Train, then print the validation accuracy (or mAP) of the final model. The estimated
/// memory of the run must fit in `memory_limit`.
pub fn run(args: &TrainArgs, memory_limit: &MemoryLimit) -> Result<(), CliError> {
    let backend = options::backend_or_default(args.backend)?;
    let config = TrainConfig::from_file(&args.config)?;
    // The config's check first: acquiring GPUs is the costlier step.
    config.check_devices(args.devices.get())?;
    let session = Session {
        config,
        devices: backend.devices(args.devices)?,
        args,
    };
    let config = &session.config;
    if config.backbone.with_cp && backend != BackendKind::Flex {
        println!(
            "with_cp: the blocks recompute their activations on flex only; on {backend} they run as usual and save no memory (docs/configs.md)"
        );
    }
    let what = format!(
        "training at batch {} on {}x{} images",
        config.batch_size, config.image_size, config.image_size
    );
    config.memory()?.check(&what, memory_limit)?;
    run_dir::prepare(&args.out, &config.source, args.resume, args.force)?;
    match config.task {
        Task::Classify => classification::run(&session),
        Task::Detect => detection::run(&session),
    }
}
