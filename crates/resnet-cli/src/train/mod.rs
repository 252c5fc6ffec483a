//! `resnet train`: train a backbone with a small classification head on the program's own
//! shapes dataset ([`shapes`]), or (`task = "detect"`) under an FPN with a CenterNet-style
//! detection head ([`detect`]), through burn-train (progress display, validation split, loss
//! and accuracy metrics, cosine learning-rate schedule, a checkpoint every epoch, `--resume`).

mod classifier;
mod detect;
pub mod detection_data;
pub mod detector;
mod guard;
mod renderer;
pub(crate) mod run_dir;
pub mod shapes;

use std::path::{Path, PathBuf};

use burn::data::dataloader::DataLoaderBuilder;
use burn::lr_scheduler::cosine::CosineAnnealingLrSchedulerConfig;
use burn::lr_scheduler::module_lr_scheduler::ModuleLrSchedulerConfig;
use burn::module::Module;
use burn::optim::SgdConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::tensor::Device;
use burn::train::metric::{AccuracyMetric, LearningRateMetric, LossMetric};
use burn::train::{Interrupter, Learner, SupervisedTraining};
use burn_resnet::fpn::FpnConfig;
use burn_resnet::{BackendKind, MemoryEstimate, MemoryLimit, ModelSummary, ResNetConfig, Workload};
use serde::Deserialize;

use crate::error::CliError;
use crate::options;
use classifier::ShapeClassifier;
use guard::NonFiniteGuard;
use shapes::{CLASSES, ShapeBatcher, ShapesDataset};

/// What `resnet train` trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Backbone + pooled linear classifier; one shape per image.
    #[default]
    Classify,
    /// Backbone + FPN (`[neck]`) + CenterNet-style head; one to three shapes per image, scored
    /// by mAP@0.5.
    Detect,
}

/// A training config (`configs/train/*.toml`). Unknown keys are errors.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// `"classify"` (default) or `"detect"`.
    #[serde(default)]
    pub task: Task,
    /// Seed of the generated data (the validation split uses `seed + 1`, wrapping).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Image side in pixels.
    pub image_size: usize,
    /// Images in the training split.
    pub train_images: usize,
    /// Images in the validation split.
    pub valid_images: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Epochs (passes over the training split).
    pub epochs: usize,
    /// Peak learning rate of the cosine schedule (head; the backbone's is scaled by
    /// `backbone_lr_factor`).
    pub learning_rate: f64,
    /// Backbone learning rate as a fraction of `learning_rate` (detection habit: 0.1). Default 1.
    #[serde(default = "default_factor")]
    pub backbone_lr_factor: f64,
    /// SGD momentum (no dampening). Default 0.9.
    #[serde(default = "default_momentum")]
    pub momentum: f64,
    /// L2 weight decay. Default 1e-4.
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f32,
    /// The backbone, as in `configs/*.toml` (`frozen_stages`, `norm_eval`, `norm_cfg` apply).
    pub backbone: ResNetConfig,
    /// The FPN of the detection task (mmdet's `FPN` arguments; `in_channels` from the
    /// backbone). Required with `task = "detect"`.
    #[serde(default)]
    pub neck: Option<FpnConfig>,
    /// The config file's text, saved with the run (not a key).
    #[serde(skip)]
    pub source: String,
}

fn default_seed() -> u64 {
    2026
}
fn default_factor() -> f64 {
    1.0
}
fn default_momentum() -> f64 {
    0.9
}
fn default_weight_decay() -> f32 {
    1e-4
}

impl TrainConfig {
    /// Read and check a config file.
    pub fn from_file(path: &Path) -> Result<Self, CliError> {
        let invalid = |message: String| CliError::Train(format!("{}: {message}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| invalid(e.to_string()))?;
        let mut config: TrainConfig =
            toml::from_str(&text).map_err(|e| invalid(e.to_string().trim_end().to_string()))?;
        config.source = text;
        let backbone = config.backbone.validate()?;
        match (config.task, &config.neck) {
            (Task::Detect, None) => {
                return Err(invalid(
                    "task = \"detect\" needs a [neck] table (an FPN: out_channels, num_outs)"
                        .into(),
                ));
            }
            (Task::Classify, Some(_)) => {
                return Err(invalid("[neck] is only used by task = \"detect\"".into()));
            }
            (Task::Detect, Some(neck)) => {
                let features = burn_resnet::features::feature_info(&backbone);
                let neck = neck.validate(&features)?;
                let stride = features[neck.start_level].reduction;
                if !config.image_size.is_multiple_of(stride) {
                    return Err(invalid(format!(
                        "image_size: {} must be a multiple of the head's stride {stride}",
                        config.image_size
                    )));
                }
            }
            (Task::Classify, None) => {}
        }
        for (field, value) in [
            ("image_size", config.image_size),
            ("train_images", config.train_images),
            ("valid_images", config.valid_images),
            ("batch_size", config.batch_size),
            ("epochs", config.epochs),
        ] {
            if value == 0 {
                return Err(invalid(format!("{field} must be at least 1")));
            }
        }
        if config
            .epochs
            .checked_mul(config.train_images.div_ceil(config.batch_size.max(1)))
            .is_none()
        {
            return Err(invalid(format!(
                "epochs × steps per epoch ({} × ⌈{} / {}⌉) overflows",
                config.epochs, config.train_images, config.batch_size
            )));
        }
        if !(config.learning_rate > 0.0 && config.learning_rate <= 1.0) {
            return Err(invalid(format!(
                "learning_rate: {} must lie in (0, 1]",
                config.learning_rate
            )));
        }
        if !(config.backbone_lr_factor > 0.0 && config.backbone_lr_factor <= 1.0) {
            return Err(invalid(format!(
                "backbone_lr_factor: {} must lie in (0, 1]",
                config.backbone_lr_factor
            )));
        }
        // SGD's momentum must stay below 1 (at 1 or above the velocity never decays), and the
        // weight decay is an L2 factor: NaN, Inf or negative values would train to NaN.
        if !(config.momentum >= 0.0 && config.momentum < 1.0) {
            return Err(invalid(format!(
                "momentum: {} must lie in [0, 1)",
                config.momentum
            )));
        }
        if !(config.weight_decay >= 0.0 && config.weight_decay < 1.0) {
            return Err(invalid(format!(
                "weight_decay: {} must lie in [0, 1)",
                config.weight_decay
            )));
        }
        Ok(config)
    }

    /// The estimated memory of training this config (backbone, neck, one batch; the heads are
    /// small), for checking before anything is allocated.
    pub fn memory(&self) -> Result<MemoryEstimate, CliError> {
        let spec = self.backbone.validate()?;
        let size = self.image_size;
        let summary = ModelSummary::new(&spec, size, size)?;
        let mut estimate = summary.memory(self.batch_size, Workload::Training)?;
        if let Some(neck) = &self.neck {
            let features = burn_resnet::features::feature_info(&spec);
            let neck = neck.validate(&features)?;
            let sizes: Vec<[usize; 2]> = features
                .iter()
                .map(|f| f.spatial_size(size, size))
                .collect();
            let overflow = || {
                CliError::Train(format!(
                    "image_size {size} and batch_size {} overflow the neck's memory estimate",
                    self.batch_size
                ))
            };
            // Values kept for backward (×3, as the backbone's), float32, per batch; weights ×4
            // with gradients and optimizer state.
            let activations = neck
                .activations(&sizes)
                .and_then(|v| v.checked_mul(12)?.checked_mul(self.batch_size as u64))
                .ok_or_else(overflow)?;
            let weights = neck
                .params()
                .and_then(|p| p.checked_mul(16))
                .ok_or_else(overflow)?;
            estimate.activations = estimate
                .activations
                .checked_add(activations)
                .ok_or_else(overflow)?;
            estimate.training_state = estimate
                .training_state
                .checked_add(weights)
                .ok_or_else(overflow)?;
        }
        Ok(estimate)
    }
}

/// The options of `resnet train`.
#[derive(clap::Args)]
pub struct TrainArgs {
    /// A training config (TOML), e.g. configs/train/shapes_r18.toml or shapes_detect_r18.toml.
    #[arg(long)]
    config: PathBuf,
    /// flex, ndarray or wgpu; default: the fastest CPU backend compiled in (flex).
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
}

/// One `resnet train` run: its options, the training config they name, and the backend.
pub struct Session<'a> {
    pub args: &'a TrainArgs,
    pub config: TrainConfig,
    pub backend: BackendKind,
}

/// Train, then print the validation accuracy (or mAP) of the final model. The estimated
/// memory of the run must fit in `memory_limit`.
pub fn run(args: &TrainArgs, memory_limit: &MemoryLimit) -> Result<(), CliError> {
    let session = Session {
        config: TrainConfig::from_file(&args.config)?,
        backend: options::backend_or_default(args.backend)?,
        args,
    };
    let config = &session.config;
    let what = format!(
        "training at batch {} on {}x{} images",
        config.batch_size, config.image_size, config.image_size
    );
    config.memory()?.check(&what, memory_limit)?;
    run_dir::prepare(&args.out, &config.source, args.resume, args.force)?;
    if config.task == Task::Detect {
        return detect::run(&session);
    }
    let device = session.backend.device()?.autodiff();
    let (last_epoch, checkpoint) = epochs(&session)?;

    let train = ShapesDataset {
        len: config.train_images,
        size: config.image_size,
        seed: config.seed,
    };
    let valid = ShapesDataset {
        len: config.valid_images,
        size: config.image_size,
        seed: config.seed.wrapping_add(1),
    };
    let batcher = ShapeBatcher {
        size: config.image_size,
    };
    // No shuffling: the images are random draws already, and a fixed order makes a resumed
    // run see exactly what an uninterrupted one does.
    let loader_train = DataLoaderBuilder::new(batcher.clone())
        .batch_size(config.batch_size)
        .set_device(device.clone())
        .build(train);
    let loader_valid = DataLoaderBuilder::new(batcher)
        .batch_size(config.batch_size)
        .set_device(device.clone())
        .build(valid.clone());

    // Seeded initialisation: the same config gives the same run (and `--resume` continues it).
    device.seed(config.seed);
    // Memory checked above, against the run's limit.
    let backbone = config.backbone.validate()?.init(&device);
    let guard = guard(&session, checkpoint);
    let model = ShapeClassifier {
        guard: Some(guard.clone()),
        ..ShapeClassifier::new(backbone, CLASSES.len(), &device)
    };
    if let Some(epoch) = checkpoint {
        run_dir::check_checkpoint(&args.out, epoch, &model)?;
    }
    let plain = session.backend.device()?;
    if checkpoint.is_none() {
        report(
            "before training",
            evaluate(&model, &valid, config.batch_size, &plain),
            &valid,
        );
    }
    let (scheduler, optimizer) = (
        scheduler(config, model.backbone.param_group())?,
        optimizer(config),
    );

    let training = SupervisedTraining::new(&args.out, loader_train, loader_valid)
        .metrics((AccuracyMetric::new(), LossMetric::new()))
        .metric_train_numeric(LearningRateMetric::new())
        .with_default_checkpointers()
        .num_epochs(last_epoch)
        .summary();
    let result = presented(training, &session, checkpoint, &guard)
        .launch(Learner::new(model, optimizer, scheduler));
    stopped(&guard, &session)?;

    report(
        "after training",
        evaluate(&result.model, &valid, config.batch_size, &plain),
        &valid,
    );
    Ok(())
}

/// The last epoch to train and the checkpoint to resume from, checked.
fn epochs(session: &Session) -> Result<(usize, Option<usize>), CliError> {
    let (args, config) = (session.args, &session.config);
    let last_epoch = args.stop_after.unwrap_or(config.epochs);
    if last_epoch == 0 || last_epoch > config.epochs {
        return Err(CliError::Train(format!(
            "--stop-after: {last_epoch} is not an epoch of 1..={}",
            config.epochs
        )));
    }
    let checkpoint = match args.resume {
        false => None,
        true => Some(last_checkpoint(&args.out)?),
    };
    if checkpoint.is_some_and(|epoch| epoch >= last_epoch) {
        return Err(CliError::Train(format!(
            "{}: already trained for {last_epoch} epochs; a later --stop-after (up to the config's epochs) trains on, --force starts over",
            args.out.display(),
        )));
    }
    Ok((last_epoch, checkpoint))
}

/// The guard of a run that starts after `checkpoint` (the epoch resumed from, if any).
fn guard(session: &Session, checkpoint: Option<usize>) -> NonFiniteGuard {
    let steps_per_epoch = session
        .config
        .train_images
        .div_ceil(session.config.batch_size);
    NonFiniteGuard::new(
        Interrupter::new(),
        checkpoint.map_or(1, |epoch| epoch + 1),
        steps_per_epoch,
    )
}

/// The error of a run the guard stopped: which epoch and step, and what is left on disk.
fn stopped(guard: &NonFiniteGuard, session: &Session) -> Result<(), CliError> {
    let out = &session.args.out;
    match guard.failure() {
        None => Ok(()),
        Some(failure) => Err(CliError::Train(match last_checkpoint(out) {
            Ok(epoch) => format!(
                "{failure}; the last checkpoint is epoch {epoch} in {}",
                out.join("checkpoint").display()
            ),
            Err(_) => format!("{failure}; {} holds no checkpoint", out.display()),
        })),
    }
}

/// burn-train's full-screen display in a terminal, progress lines otherwise; resumed from
/// `checkpoint` when there is one; stopped by `guard`.
fn presented<M: burn::train::LearnerModel>(
    mut training: SupervisedTraining<M>,
    session: &Session,
    checkpoint: Option<usize>,
    guard: &NonFiniteGuard,
) -> SupervisedTraining<M> {
    training = training.with_interrupter(guard.interrupter());
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        training = training.renderer(Box::new(renderer::LineRenderer::default()));
    }
    if let Some(epoch) = checkpoint {
        println!(
            "resuming from the checkpoint of epoch {epoch} in {}",
            session.args.out.display()
        );
        training = training.checkpoint(epoch);
    }
    training
}

/// Cosine schedules over the whole run: `learning_rate` for the head, times
/// `backbone_lr_factor` for the backbone's parameter group.
fn scheduler(
    config: &TrainConfig,
    backbone: burn::module::ParamGroup,
) -> Result<burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler, CliError> {
    let steps = config.epochs * config.train_images.div_ceil(config.batch_size);
    let schedule = |lr: f64| CosineAnnealingLrSchedulerConfig::new(lr, steps);
    ModuleLrSchedulerConfig::new(schedule(config.learning_rate).into())
        .with_group(
            backbone,
            schedule(config.learning_rate * config.backbone_lr_factor),
        )
        .init()
        .map_err(CliError::Train)
}

/// SGD with momentum (no dampening) and weight decay.
fn optimizer(config: &TrainConfig) -> burn::optim::ModuleOptimizer {
    let momentum = MomentumConfig {
        momentum: config.momentum,
        dampening: 0.0,
        nesterov: false,
    };
    SgdConfig::new()
        .with_momentum(Some(momentum))
        .with_weight_decay(Some(WeightDecayConfig::new(config.weight_decay)))
        .init()
}

fn report(when: &str, (accuracy, loss): (f64, f64), valid: &ShapesDataset) {
    println!(
        "validation {when}: accuracy {:.1}% (chance {:.1}%), loss {loss:.6}, over {} images of {} classes",
        accuracy * 100.0,
        100.0 / CLASSES.len() as f64,
        valid.len,
        CLASSES.len()
    );
}

/// Accuracy and mean loss of `model` on `dataset`, on a plain (inference) device.
fn evaluate(
    model: &ShapeClassifier,
    dataset: &ShapesDataset,
    batch_size: usize,
    device: &Device,
) -> (f64, f64) {
    use burn::data::dataloader::batcher::Batcher;
    let model = model.valid().fork(device);
    let batcher = ShapeBatcher { size: dataset.size };
    let (mut correct, mut loss_sum) = (0usize, 0f64);
    for start in (0..dataset.len).step_by(batch_size) {
        let items = (start..(start + batch_size).min(dataset.len))
            .map(|i| dataset.item(i))
            .collect::<Vec<_>>();
        let count = items.len();
        let batch = batcher.batch(items, device);
        let output = model.classify(batch.images, batch.labels.clone());
        let predicted = output.output.argmax(1).reshape([count]);
        correct += predicted
            .equal(batch.labels)
            .int()
            .sum()
            .into_scalar::<i64>() as usize;
        loss_sum += output.loss.into_scalar::<f32>() as f64 * count as f64;
    }
    (
        correct as f64 / dataset.len as f64,
        loss_sum / dataset.len as f64,
    )
}

/// The newest epoch with a saved model in `out/checkpoint/`.
fn last_checkpoint(out: &Path) -> Result<usize, CliError> {
    let directory = out.join("checkpoint");
    let entries = std::fs::read_dir(&directory).map_err(|e| {
        CliError::Train(format!(
            "--resume: no checkpoints in {}: {e}",
            directory.display()
        ))
    })?;
    entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter_map(|name| {
            name.strip_prefix("model-")?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()
        .ok_or_else(|| {
            CliError::Train(format!(
                "--resume: no model checkpoint in {}",
                directory.display()
            ))
        })
}
