//! The classification task of `resnet train` (`task = "classify"`, the default): the backbone
//! with a pooled linear classifier ([`ShapeClassifier`]) learns the one shape in each image of
//! the shapes dataset ([`ShapesDataset`]), through burn-train; validation accuracy and loss
//! before and after.

use burn::data::dataloader::DataLoaderBuilder;
use burn::module::Module;
use burn::tensor::Device;
use burn::train::metric::{AccuracyMetric, LearningRateMetric, LossMetric};
use burn::train::{Learner, SupervisedTraining};

use super::data::classification::{ShapeBatcher, ShapesDataset};
use super::data::shapes::CLASSES;
use super::models::classifier::ShapeClassifier;
use super::session::Session;
use super::{optimizer, run_dir};
use crate::error::CliError;

/// Train the classifier, then print its validation accuracy and loss.
pub fn run(session: &Session) -> Result<(), CliError> {
    let (args, config) = (session.args, &session.config);
    let device = session.backend.device()?.autodiff();
    let (last_epoch, checkpoint) = session.epochs()?;

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
    // Memory checked by the caller, against the run's limit.
    let backbone = config.backbone.validate()?.init(&device);
    let guard = session.guard(checkpoint);
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
        optimizer::scheduler(config, model.backbone.param_group())?,
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
    session.stopped(&guard)?;

    report(
        "after training",
        evaluate(&result.model, &valid, config.batch_size, &plain),
        &valid,
    );
    Ok(())
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
