//! The detection task of `resnet train` (`task = "detect"`): the backbone under an FPN with a
//! CenterNet-style head ([`ShapeDetector`]) on the detection shapes, or on a COCO set from disk
//! (`[data]`, [`DetectionData`]), trained with burn-train. The validation split is scored
//! before and after: mAP@0.5 on the shapes ([`super::average_precision`]); COCO's metrics on a
//! COCO set, as pycocotools computes them, with the detections written as a COCO results file
//! (`OUT/detections_valid.json`); on a COCO set also after every epoch (AP, AP50, AP75 and AP
//! by object size, [`super::coco_metric`]). A few validation images are drawn with their
//! boxes, as PNG files in `OUT/detections/` ([`super::pictures`]).

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::module::Module;
use burn::tensor::Device;
use burn::train::metric::{LearningRateMetric, LossMetric};
use burn::train::{Learner, SupervisedTraining};

use super::average_precision::mean_average_precision;
use super::coco_metric::CocoApMetric;
use super::data::detection::{DetectionBatcher, Object};
use super::detection_data::{DetectionData, Split};
use super::models::detector::{Detection, SCORE_THRESHOLD, ShapeDetector, TOP, decode};
use super::pictures::draw;
use super::session::{LoaderRole, Session};
use super::{coco_results, optimizer, run_dir};
use crate::error::CliError;

/// Validation images drawn to PNG after training.
const PICTURES: usize = 6;

/// Train the detector, then print its validation scores and draw its boxes on a few validation
/// images.
pub fn run(session: &Session) -> Result<(), CliError> {
    let (args, config) = (session.args, &session.config);
    let neck_config = config
        .neck
        .as_ref()
        .ok_or_else(|| CliError::Train("task = \"detect\" needs [neck]".into()))?;
    let device = session.main_device().autodiff();
    let (last_epoch, checkpoint) = session.epochs()?;
    let data = DetectionData::new(session, checkpoint.unwrap_or(0))?;
    let train = session.train_split(data.train.clone())?;

    device.seed(config.seed);
    // Validated (image_size a multiple of the head's stride) and memory-checked by the caller.
    let backbone = session.backbone(&device, checkpoint)?;
    let features = backbone.feature_info();
    let neck = neck_config.validate(&features)?.init(&device);
    let stride = features[neck.spec.start_level].reduction;
    let guard = session.guard(checkpoint, train.len());
    let model = ShapeDetector {
        guard: Some(guard.clone()),
        devices: session.devices.len(),
        ..ShapeDetector::new(backbone, neck, data.classes.len(), &device)
    };
    if let Some(epoch) = checkpoint {
        run_dir::check_checkpoint(&args.out, epoch, &model)?;
    }

    let batcher = DetectionBatcher {
        size: config.image_size,
        classes: data.classes.len(),
        stride,
    };
    let loader =
        |split: &Split, role| session.loader(batcher.clone(), split.clone(), &device, role);
    let (loader_train, loader_valid) = (
        loader(&train, LoaderRole::Train),
        loader(&data.valid, LoaderRole::Valid),
    );

    let plain = session.main_device();
    if checkpoint.is_none() {
        let evaluation = evaluate(&model, &data.valid, &batcher, config.batch_size, &plain)?;
        report(
            "before training",
            &evaluation,
            &data,
            config.image_size,
            None,
        )?;
    }
    let (scheduler, optimizer) = (
        optimizer::scheduler(config, train.len(), model.backbone.param_group())?,
        optimizer::optimizer(config),
    );
    let mut training = SupervisedTraining::new(&args.out, loader_train, loader_valid)
        .metrics((LossMetric::new(),))
        .metric_train_numeric(LearningRateMetric::new())
        .with_default_checkpointers()
        .num_epochs(last_epoch)
        .summary();
    if let Some(set) = &data.coco_valid {
        for metric in CocoApMetric::figures(set.clone(), config.image_size) {
            training = training.metric_valid_numeric(metric);
        }
    }
    let result = session
        .presented(training, checkpoint, &guard)
        .launch(Learner::new(model, optimizer, scheduler));
    session.stopped(&guard, result.error)?;

    let evaluation = evaluate(
        &result.model,
        &data.valid,
        &batcher,
        config.batch_size,
        &plain,
    )?;
    let results = args.out.join("detections_valid.json");
    report(
        "after training",
        &evaluation,
        &data,
        config.image_size,
        Some(&results),
    )?;
    let pictures = args.out.join("detections");
    std::fs::create_dir_all(&pictures)
        .map_err(|e| CliError::Train(format!("{}: {e}", pictures.display())))?;
    let drawn = PICTURES.min(data.valid.len());
    for index in 0..drawn {
        let path = pictures.join(format!("valid_{index}.png"));
        let picture = data.valid_picture(index, config.image_size)?;
        draw(
            &picture,
            &evaluation.objects[index],
            &evaluation.detections[index],
            &path,
        )?;
    }
    println!(
        "boxes drawn on {drawn} validation images in {} (white: truth; coloured: detections by class)",
        pictures.display()
    );
    Ok(())
}

/// A model's detections on a split, and the split's objects, on the model's input canvas.
pub struct Evaluation {
    pub detections: Vec<Vec<Detection>>,
    pub objects: Vec<Vec<Object>>,
}

/// Run `model` over `dataset` on a plain device.
pub fn evaluate(
    model: &ShapeDetector,
    dataset: &Split,
    batcher: &DetectionBatcher,
    batch_size: usize,
    device: &Device,
) -> Result<Evaluation, CliError> {
    let model = model.valid().fork(device);
    let (mut detections, mut objects) = (Vec::new(), Vec::new());
    let len = dataset.len();
    for start in (0..len).step_by(batch_size) {
        let items = dataset
            .get_many((start..(start + batch_size).min(len)).collect())
            .map_err(|e| CliError::Train(e.to_string()))?;
        let batch = batcher.batch(items, device);
        detections.extend(decode(
            &model.predict(batch.images),
            batcher.stride,
            SCORE_THRESHOLD,
            TOP,
        ));
        objects.extend(batch.objects);
    }
    Ok(Evaluation {
        detections,
        objects,
    })
}

/// Print the scores: mAP@0.5 per class on the shapes; COCO's metrics on a COCO set (and, with
/// `results`, the detections written there as a COCO results file).
fn report(
    when: &str,
    evaluation: &Evaluation,
    data: &DetectionData,
    size: usize,
    results: Option<&std::path::Path>,
) -> Result<(), CliError> {
    if let Some(set) = &data.coco_valid {
        return coco_results::report(when, &evaluation.detections, set, size, results);
    }
    let (map, per_class) = mean_average_precision(
        &evaluation.detections,
        &evaluation.objects,
        data.classes.len(),
        0.5,
    );
    let classes: Vec<String> = data
        .classes
        .iter()
        .zip(&per_class)
        .map(|(name, ap)| {
            format!(
                "{name} {}",
                ap.map_or("-".into(), |ap| format!("{:.1}", ap * 100.0))
            )
        })
        .collect();
    println!(
        "validation {when}: mAP@0.5 {:.1}% ({}) over {} images, {} objects",
        map * 100.0,
        classes.join(", "),
        evaluation.objects.len(),
        evaluation.objects.iter().map(Vec::len).sum::<usize>()
    );
    Ok(())
}
