//! The classification task of `resnet train` (`task = "classify"`, the default): the backbone
//! with a pooled linear classifier ([`ShapeClassifier`]) learns the one shape in each image of
//! the shapes dataset ([`ShapesDataset`]), or the class of each image of an image folder on disk
//! (`[data]`, [`ImageFolderDataset`]), through burn-train; validation accuracy and loss before
//! and after.

use std::sync::Arc;

use burn::data::dataset::Dataset;
use burn::module::Module;
use burn::tensor::Device;
use burn::train::metric::{AccuracyMetric, LearningRateMetric, LossMetric};
use burn::train::{Learner, SupervisedTraining};

use super::data::classification::{ShapeBatcher, ShapeItem, ShapesDataset};
use super::data::epoch_order::EpochOrder;
use super::data::image_folder::{ImageFolder, ImageFolderDataset};
use super::data::shapes::CLASSES;
use super::models::classifier::ShapeClassifier;
use super::session::{LoaderRole, Session};
use super::{optimizer, run_dir};
use crate::error::CliError;
use crate::image_input::Preprocessing;

/// A split of images and labels, generated or from disk.
type Split = Arc<dyn Dataset<ShapeItem>>;

/// The training and validation splits and the class names.
struct Data {
    train: Split,
    valid: Split,
    classes: Vec<String>,
}

/// The config's data: the generated shapes, or `[data]`'s image folders (their class lists must
/// agree). Training images are ordered and flipped from `first_epoch` on (0-based), so that a
/// resumed run sees them as an uninterrupted one.
fn data(session: &Session, first_epoch: usize) -> Result<Data, CliError> {
    let config = &session.config;
    let Some(disk) = &config.data else {
        let split = |len, seed| -> Split {
            Arc::new(ShapesDataset {
                len,
                size: config.image_size,
                seed,
            })
        };
        return Ok(Data {
            train: split(config.train_images, config.seed),
            valid: split(config.valid_images, config.valid_seed()),
            classes: CLASSES.iter().map(|c| c.to_string()).collect(),
        });
    };
    let (train, valid) = (
        ImageFolder::scan(&disk.train)?,
        ImageFolder::scan(&disk.valid)?,
    );
    if train.classes != valid.classes {
        return Err(CliError::Train(format!(
            "{} has classes {:?}, {} has {:?}: both splits need the same class folders",
            disk.train.display(),
            train.classes,
            disk.valid.display(),
            valid.classes
        )));
    }
    config.check_train_split(train.items.len(), &disk.train)?;
    for (name, folder) in [("train", &train), ("valid", &valid)] {
        println!(
            "{name}: {} images of {} classes from {}{}",
            folder.items.len(),
            folder.classes.len(),
            folder.root.display(),
            match folder.skipped {
                0 => String::new(),
                n => format!(" ({n} other files left out)"),
            }
        );
    }
    let preprocessing = Preprocessing::for_style(config.backbone.style);
    let classes = train.classes.clone();
    let order = EpochOrder::new(config.seed, disk.flip, train.items.len(), first_epoch);
    let dataset = |folder, order| ImageFolderDataset {
        folder,
        size: config.image_size,
        preprocessing,
        order,
        threads: disk.threads,
    };
    Ok(Data {
        train: Arc::new(dataset(train, Some(Arc::new(order)))),
        valid: Arc::new(dataset(valid, None)),
        classes,
    })
}

/// Train the classifier, then print its validation accuracy and loss.
pub fn run(session: &Session) -> Result<(), CliError> {
    let (args, config) = (session.args, &session.config);
    let device = session.main_device().autodiff();
    let (last_epoch, checkpoint) = session.epochs()?;

    let data = data(session, checkpoint.unwrap_or(0))?;
    let batcher = ShapeBatcher {
        size: config.image_size,
    };
    let train = session.train_split(data.train.clone())?;
    let loader =
        |split: &Split, role| session.loader(batcher.clone(), split.clone(), &device, role);
    let (loader_train, loader_valid) = (
        loader(&train, LoaderRole::Train),
        loader(&data.valid, LoaderRole::Valid),
    );

    // Seeded initialisation: the same config gives the same run (and `--resume` continues it).
    device.seed(config.seed);
    // Memory checked by the caller, against the run's limit.
    let backbone = session.backbone(&device, checkpoint)?;
    let guard = session.guard(checkpoint, train.len());
    let model = ShapeClassifier {
        guard: Some(guard.clone()),
        devices: session.devices.len(),
        ..ShapeClassifier::new(backbone, data.classes.len(), &device)
    };
    if let Some(epoch) = checkpoint {
        run_dir::check_checkpoint(&args.out, epoch, &model)?;
    }
    let plain = session.main_device();
    if checkpoint.is_none() {
        report(
            "before training",
            evaluate(&model, &data.valid, &batcher, config.batch_size, &plain)?,
            &data,
        );
    }
    let (scheduler, optimizer) = (
        optimizer::scheduler(config, train.len(), model.backbone.param_group())?,
        optimizer::optimizer(config),
    );

    let training = SupervisedTraining::new(&args.out, loader_train, loader_valid)
        .metrics((AccuracyMetric::new(), LossMetric::new()))
        .metric_train_numeric(LearningRateMetric::new())
        .with_default_checkpointers()
        .num_epochs(last_epoch)
        .summary();
    let result = session
        .presented(training, checkpoint, &guard)
        .launch(Learner::new(model, optimizer, scheduler));
    session.stopped(&guard, result.error)?;

    report(
        "after training",
        evaluate(
            &result.model,
            &data.valid,
            &batcher,
            config.batch_size,
            &plain,
        )?,
        &data,
    );
    Ok(())
}

fn report(when: &str, (accuracy, loss): (f64, f64), data: &Data) {
    println!(
        "validation {when}: accuracy {:.1}% (chance {:.1}%), loss {loss:.6}, over {} images of {} classes",
        accuracy * 100.0,
        100.0 / data.classes.len() as f64,
        data.valid.len(),
        data.classes.len()
    );
}

/// Accuracy and mean loss of `model` on `dataset`, on a plain (inference) device.
fn evaluate(
    model: &ShapeClassifier,
    dataset: &Split,
    batcher: &ShapeBatcher,
    batch_size: usize,
    device: &Device,
) -> Result<(f64, f64), CliError> {
    use burn::data::dataloader::batcher::Batcher;
    let model = model.valid().fork(device);
    let (mut correct, mut loss_sum) = (0usize, 0f64);
    let len = dataset.len();
    for start in (0..len).step_by(batch_size) {
        let items = dataset
            .get_many((start..(start + batch_size).min(len)).collect())
            .map_err(|e| CliError::Train(e.to_string()))?;
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
    Ok((correct as f64 / len as f64, loss_sum / len as f64))
}
