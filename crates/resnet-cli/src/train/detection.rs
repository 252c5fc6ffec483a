//! The detection task of `resnet train` (`task = "detect"`): the backbone under an FPN with a
//! CenterNet-style head ([`ShapeDetector`]) on the detection shapes ([`DetectionDataset`]),
//! trained with burn-train; mAP@0.5 on the validation split before and after
//! ([`super::average_precision`]), and a few validation images with their boxes drawn, as PNG
//! files in `OUT/detections/` ([`super::pictures`]).

use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataloader::batcher::Batcher;
use burn::module::Module;
use burn::tensor::Device;
use burn::train::metric::{LearningRateMetric, LossMetric};
use burn::train::{Learner, SupervisedTraining};

use super::average_precision::mean_average_precision;
use super::data::detection::{DetectionBatcher, DetectionDataset, Object};
use super::data::shapes::CLASSES;
use super::models::detector::{Detection, ShapeDetector, decode};
use super::pictures::draw;
use super::session::Session;
use super::{optimizer, run_dir};
use crate::error::CliError;

/// Detections scored below this are dropped; at most this many per image.
const SCORE_THRESHOLD: f32 = 0.05;
const TOP: usize = 20;
/// Validation images drawn to PNG after training.
const PICTURES: usize = 6;

/// Train the detector, then print its validation mAP and draw its boxes on a few validation
/// images.
pub fn run(session: &Session) -> Result<(), CliError> {
    let (args, config) = (session.args, &session.config);
    let neck_config = config
        .neck
        .as_ref()
        .ok_or_else(|| CliError::Train("task = \"detect\" needs [neck]".into()))?;
    let device = session.backend.device()?.autodiff();
    let (last_epoch, checkpoint) = session.epochs()?;

    device.seed(config.seed);
    // Validated (image_size a multiple of the head's stride) and memory-checked by the caller.
    let backbone = config.backbone.validate()?.init(&device);
    let features = backbone.feature_info();
    let neck = neck_config.validate(&features)?.init(&device);
    let stride = features[neck.spec.start_level].reduction;
    let guard = session.guard(checkpoint);
    let model = ShapeDetector {
        guard: Some(guard.clone()),
        ..ShapeDetector::new(backbone, neck, CLASSES.len(), &device)
    };
    if let Some(epoch) = checkpoint {
        run_dir::check_checkpoint(&args.out, epoch, &model)?;
    }

    let train = DetectionDataset {
        len: config.train_images,
        size: config.image_size,
        seed: config.seed,
    };
    let valid = DetectionDataset {
        len: config.valid_images,
        size: config.image_size,
        seed: config.seed.wrapping_add(1),
    };
    let batcher = DetectionBatcher {
        size: config.image_size,
        stride,
    };
    let loader_train = DataLoaderBuilder::new(batcher.clone())
        .batch_size(config.batch_size)
        .set_device(device.clone())
        .build(train);
    let loader_valid = DataLoaderBuilder::new(batcher.clone())
        .batch_size(config.batch_size)
        .set_device(device.clone())
        .build(valid.clone());

    let plain = session.backend.device()?;
    if checkpoint.is_none() {
        report(
            "before training",
            &evaluate(&model, &valid, &batcher, config.batch_size, &plain),
        );
    }
    let (scheduler, optimizer) = (
        optimizer::scheduler(config, model.backbone.param_group())?,
        optimizer::optimizer(config),
    );
    let training = SupervisedTraining::new(&args.out, loader_train, loader_valid)
        .metrics((LossMetric::new(),))
        .metric_train_numeric(LearningRateMetric::new())
        .with_default_checkpointers()
        .num_epochs(last_epoch)
        .summary();
    let result = session
        .presented(training, checkpoint, &guard)
        .launch(Learner::new(model, optimizer, scheduler));
    session.stopped(&guard)?;

    let evaluation = evaluate(&result.model, &valid, &batcher, config.batch_size, &plain);
    report("after training", &evaluation);
    let pictures = args.out.join("detections");
    std::fs::create_dir_all(&pictures)
        .map_err(|e| CliError::Train(format!("{}: {e}", pictures.display())))?;
    for index in 0..PICTURES.min(valid.len) {
        let path = pictures.join(format!("valid_{index}.png"));
        draw(&valid, index, &evaluation.detections[index], &path)?;
    }
    println!(
        "boxes drawn on {} validation images in {} (white: truth; coloured: detections by class)",
        PICTURES.min(valid.len),
        pictures.display()
    );
    Ok(())
}

/// Detections and mAP of a model on a split.
pub struct Evaluation {
    pub detections: Vec<Vec<Detection>>,
    pub map: f64,
    pub per_class: Vec<Option<f64>>,
    pub images: usize,
    pub objects: usize,
}

/// Run `model` over `dataset` on a plain device and score it.
pub fn evaluate(
    model: &ShapeDetector,
    dataset: &DetectionDataset,
    batcher: &DetectionBatcher,
    batch_size: usize,
    device: &Device,
) -> Evaluation {
    let model = model.valid().fork(device);
    let (mut detections, mut objects): (Vec<Vec<Detection>>, Vec<Vec<Object>>) =
        (Vec::new(), Vec::new());
    for start in (0..dataset.len).step_by(batch_size) {
        let items = (start..(start + batch_size).min(dataset.len))
            .map(|i| dataset.item(i))
            .collect::<Vec<_>>();
        let batch = batcher.batch(items, device);
        detections.extend(decode(
            &model.predict(batch.images),
            batcher.stride,
            SCORE_THRESHOLD,
            TOP,
        ));
        objects.extend(batch.objects);
    }
    let (map, per_class) = mean_average_precision(&detections, &objects, CLASSES.len(), 0.5);
    Evaluation {
        detections,
        map,
        per_class,
        images: dataset.len,
        objects: objects.iter().map(Vec::len).sum(),
    }
}

fn report(when: &str, evaluation: &Evaluation) {
    let classes: Vec<String> = CLASSES
        .iter()
        .zip(&evaluation.per_class)
        .map(|(name, ap)| {
            format!(
                "{name} {}",
                ap.map_or("-".into(), |ap| format!("{:.1}", ap * 100.0))
            )
        })
        .collect();
    println!(
        "validation {when}: mAP@0.5 {:.1}% ({}) over {} images, {} objects",
        evaluation.map * 100.0,
        classes.join(", "),
        evaluation.images,
        evaluation.objects
    );
}
