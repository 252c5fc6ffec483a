//! One `resnet train` run and what both tasks' training loops take from it: the epochs to train
//! and the checkpoint to resume from, the guard that stops a run at a non-finite step, the
//! error of a stopped run, and burn-train's display.

use std::sync::Arc;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::data::dataset::Dataset;
use burn::tensor::Device;
use burn::train::{ExecutionStrategy, Interrupter, MultiDeviceOptim, SupervisedTraining};

use super::config::TrainConfig;
use super::data::device_shards::DeviceShards;
use super::guard::NonFiniteGuard;
use super::{TrainArgs, renderer, run_dir};
use crate::error::CliError;

/// Which split a loader reads: training batches are split over the devices, validation runs
/// whole batches on the first.
pub enum LoaderRole {
    Train,
    Valid,
}

/// One `resnet train` run: its options, the training config they name, and the devices.
pub struct Session<'a> {
    /// The command line: `--config`, `--out`, `--resume`, `--stop-after`, `--force`,
    /// `--devices`.
    pub args: &'a TrainArgs,
    /// The training config `--config` names, read and checked.
    pub config: TrainConfig,
    /// The (plain) devices of `--backend` (or the default one) the training steps run on
    /// (`--devices`); the model, its initialisation and the validation are on the first.
    pub devices: Vec<Device>,
}

impl Session<'_> {
    /// The device the model lives on, plain: the first of `devices`.
    pub fn main_device(&self) -> Device {
        self.devices[0].clone()
    }

    /// The training split as this run's steps read it: on several devices, re-laid out so
    /// that each step's shares make up one batch of the split's order, a last batch that would
    /// not fill every device left out ([`DeviceShards`]). An error when no step is left.
    pub fn train_split<I: Send + Sync + 'static>(
        &self,
        split: Arc<dyn Dataset<I>>,
    ) -> Result<Arc<dyn Dataset<I>>, CliError> {
        let devices = self.devices.len();
        if devices == 1 {
            return Ok(split);
        }
        let batch = self.config.batch_size;
        let images = split.len();
        let shards = DeviceShards::new(split, devices, batch / devices);
        if shards.len() == 0 {
            return Err(CliError::Train(format!(
                "--devices {devices}: the training split's {images} images do not fill one step's batch of {batch}"
            )));
        }
        println!(
            "{devices} devices: each step's batch of {batch} split into {devices} shares of {}{}",
            batch / devices,
            match shards.dropped() {
                0 => String::new(),
                n => format!("; the last {n} images of each epoch's order are left out"),
            }
        );
        Ok(Arc::new(shards))
    }

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

    /// A loader of `split` in batches of the config's size (for training on several devices,
    /// one device's share of it: burn-train hands each device its part of the loader), in
    /// order (generated data is drawn at random already; data from disk comes in each epoch's
    /// order, `EpochOrder`), so that a resumed run sees what an uninterrupted one does.
    pub fn loader<I, O>(
        &self,
        batcher: impl Batcher<I, O> + 'static,
        split: Arc<dyn Dataset<I>>,
        device: &Device,
        role: LoaderRole,
    ) -> Arc<dyn DataLoader<O>>
    where
        I: Send + Sync + Clone + std::fmt::Debug + 'static,
        O: Send + Clone + std::fmt::Debug + 'static,
    {
        let batch_size = match role {
            LoaderRole::Train => self.config.batch_size / self.devices.len(),
            LoaderRole::Valid => self.config.batch_size,
        };
        DataLoaderBuilder::new(batcher)
            .batch_size(batch_size)
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
        .with_devices(self.devices.len())
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
        if self.devices.len() > 1 {
            // The shares' gradients are added up on the first device, which steps the
            // optimizer; BatchNorm normalises each share by its own statistics.
            training = training.with_training_strategy(
                ExecutionStrategy::multi(
                    self.devices.iter().cloned().map(Device::autodiff).collect(),
                    MultiDeviceOptim::OptimMainDevice,
                )
                .into(),
            );
        }
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
