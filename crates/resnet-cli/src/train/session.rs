//! One `resnet train` run and what both tasks' training loops take from it: the epochs to train
//! and the checkpoint to resume from, the guard that stops a run at a non-finite step, the
//! error of a stopped run, and burn-train's display.

use std::sync::Arc;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::data::dataset::Dataset;
use burn::tensor::Device;
use burn::train::{Interrupter, SupervisedTraining};
use burn_resnet::BackendKind;

use super::config::TrainConfig;
use super::guard::NonFiniteGuard;
use super::{TrainArgs, renderer, run_dir};
use crate::error::CliError;

/// One `resnet train` run: its options, the training config they name, and the backend.
pub struct Session<'a> {
    /// The command line: `--config`, `--out`, `--resume`, `--stop-after`, `--force`.
    pub args: &'a TrainArgs,
    /// The training config `--config` names, read and checked.
    pub config: TrainConfig,
    /// `--backend`, or the default one.
    pub backend: BackendKind,
}

impl Session<'_> {
    /// The last epoch to train and the checkpoint to resume from, checked.
    pub fn epochs(&self) -> Result<(usize, Option<usize>), CliError> {
        let (args, config) = (self.args, &self.config);
        let last_epoch = args.stop_after.unwrap_or(config.epochs);
        if last_epoch == 0 || last_epoch > config.epochs {
            return Err(CliError::Train(format!(
                "--stop-after: {last_epoch} is not an epoch of 1..={}",
                config.epochs
            )));
        }
        let checkpoint = match args.resume {
            false => None,
            true => Some(run_dir::last_checkpoint(&args.out)?),
        };
        if checkpoint.is_some_and(|epoch| epoch >= last_epoch) {
            return Err(CliError::Train(format!(
                "{}: already trained for {last_epoch} epochs; a later --stop-after (up to the config's epochs) trains on, --force starts over",
                args.out.display(),
            )));
        }
        Ok((last_epoch, checkpoint))
    }

    /// The backbone a run starts from on `device`: mmdet's initialisation from the seed (set
    /// by the caller), then, unless the run resumes from `checkpoint`, the config's `weights`.
    pub fn backbone(
        &self,
        device: &burn::tensor::Device,
        checkpoint: Option<usize>,
    ) -> Result<burn_resnet::ResNet, CliError> {
        let backbone = self.config.backbone.validate()?.init(device);
        match (&self.config.weights, checkpoint) {
            (Some(weights), None) => {
                let (loaded, report) =
                    backbone.load_weights(weights, self.config.weights_source)?;
                for line in crate::weights_report::describe(weights, &report) {
                    println!("{line}");
                }
                Ok(loaded)
            }
            _ => Ok(backbone),
        }
    }

    /// A loader of `split` in batches of the config's size, in order (generated data is drawn
    /// at random already; data from disk comes in each epoch's order, `EpochOrder`), so that a
    /// resumed run sees what an uninterrupted one does.
    pub fn loader<I, O>(
        &self,
        batcher: impl Batcher<I, O> + 'static,
        split: Arc<dyn Dataset<I>>,
        device: &Device,
    ) -> Arc<dyn DataLoader<O>>
    where
        I: Send + Sync + Clone + std::fmt::Debug + 'static,
        O: Send + Clone + std::fmt::Debug + 'static,
    {
        DataLoaderBuilder::new(batcher)
            .batch_size(self.config.batch_size)
            .set_device(device.clone())
            .build(split)
    }

    /// The guard of a run that starts after `checkpoint` (the epoch resumed from, if any) on
    /// `train_images` images per epoch.
    pub fn guard(&self, checkpoint: Option<usize>, train_images: usize) -> NonFiniteGuard {
        let steps_per_epoch = train_images.div_ceil(self.config.batch_size);
        NonFiniteGuard::new(
            Interrupter::new(),
            checkpoint.map_or(1, |epoch| epoch + 1),
            steps_per_epoch,
        )
    }

    /// The error of a run the guard stopped (which epoch and step, and what is left on disk),
    /// or of one burn-train stopped with `error` (an image that failed to load, a checkpoint
    /// that could not be written).
    pub fn stopped(
        &self,
        guard: &NonFiniteGuard,
        error: Option<std::sync::Arc<burn::train::TrainingError>>,
    ) -> Result<(), CliError> {
        let out = &self.args.out;
        match guard.failure() {
            None => match error {
                None => Ok(()),
                Some(error) => Err(CliError::Train(format!("training stopped: {error}"))),
            },
            Some(failure) => Err(CliError::Train(match run_dir::last_checkpoint(out) {
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
    pub fn presented<M: burn::train::LearnerModel>(
        &self,
        mut training: SupervisedTraining<M>,
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
                self.args.out.display()
            );
            training = training.checkpoint(epoch);
        }
        training
    }
}
