//! `resnet train` with `task = "detect"`: the backbone under an FPN with a CenterNet-style head
//! ([`super::detector`]) on the detection shapes ([`super::detection_data`]), trained with
//! burn-train; mAP@0.5 on the validation split before and after, and a few validation images
//! with their boxes drawn, as PNG files in `OUT/detections/`.

use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataloader::batcher::Batcher;
use burn::module::Module;
use burn::tensor::Device;
use burn::train::metric::{LearningRateMetric, LossMetric};
use burn::train::{Learner, SupervisedTraining};

use super::detection_data::{DetectionBatcher, DetectionDataset, Object};
use super::detector::{Detection, ShapeDetector, decode, mean_average_precision};
use super::shapes::CLASSES;
use super::{Session, epochs, guard, optimizer, presented, scheduler, stopped};
use crate::error::CliError;

/// Detections scored below this are dropped; at most this many per image.
const SCORE_THRESHOLD: f32 = 0.05;
const TOP: usize = 20;
/// Validation images drawn to PNG after training.
const PICTURES: usize = 6;

pub fn run(session: &Session) -> Result<(), CliError> {
    let (args, config) = (session.args, &session.config);
    let neck_config = config
        .neck
        .as_ref()
        .ok_or_else(|| CliError::Train("task = \"detect\" needs [neck]".into()))?;
    let device = session.backend.device()?.autodiff();
    let (last_epoch, checkpoint) = epochs(session)?;

    device.seed(config.seed);
    // Validated (image_size a multiple of the head's stride) and memory-checked by the caller.
    let backbone = config.backbone.validate()?.init(&device);
    let features = backbone.feature_info();
    let neck = neck_config.validate(&features)?.init(&device);
    let stride = features[neck.spec.start_level].reduction;
    let guard = guard(session, checkpoint);
    let model = ShapeDetector {
        guard: Some(guard.clone()),
        ..ShapeDetector::new(backbone, neck, CLASSES.len(), &device)
    };
    if let Some(epoch) = checkpoint {
        super::run_dir::check_checkpoint(&args.out, epoch, &model)?;
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
        scheduler(config, model.backbone.param_group())?,
        optimizer(config),
    );
    let training = SupervisedTraining::new(&args.out, loader_train, loader_valid)
        .metrics((LossMetric::new(),))
        .metric_train_numeric(LearningRateMetric::new())
        .with_default_checkpointers()
        .num_epochs(last_epoch)
        .summary();
    let result = presented(training, session, checkpoint, &guard)
        .launch(Learner::new(model, optimizer, scheduler));
    stopped(&guard, session)?;

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

/// Colours of the classes' boxes.
const COLOURS: [[u8; 3]; 4] = [[255, 80, 80], [80, 200, 255], [255, 220, 0], [200, 90, 255]];

/// Image `index` of `dataset`, 4x enlarged, with its true boxes (white) and `detections`
/// (by class colour, scores ≥ 0.3), as a PNG.
fn draw(
    dataset: &DetectionDataset,
    index: usize,
    detections: &[Detection],
    path: &std::path::Path,
) -> Result<(), CliError> {
    const SCALE: usize = 4;
    let item = dataset.item(index);
    let (size, plane) = (dataset.size, dataset.size * dataset.size);
    let side = size * SCALE;
    let mut image = image::RgbImage::new(side as u32, side as u32);
    for (x, y, pixel) in image.enumerate_pixels_mut() {
        let at = (y as usize / SCALE) * size + x as usize / SCALE;
        let value = |channel: usize| {
            ((item.pixels[channel * plane + at] * 0.25 + 0.5).clamp(0.0, 1.0) * 255.0) as u8
        };
        *pixel = image::Rgb([value(0), value(1), value(2)]);
    }
    let mut rectangle = |bbox: &[f32; 4], colour: [u8; 3]| {
        let [x0, y0, x1, y1] =
            bbox.map(|v| ((v * SCALE as f32).round().max(0.0) as usize).min(side - 1));
        for x in x0..=x1 {
            for y in [y0, y1] {
                image.put_pixel(x as u32, y as u32, image::Rgb(colour));
            }
        }
        for y in y0..=y1 {
            for x in [x0, x1] {
                image.put_pixel(x as u32, y as u32, image::Rgb(colour));
            }
        }
    };
    for object in &item.objects {
        rectangle(&object.bbox, [255, 255, 255]);
    }
    for detection in detections.iter().filter(|d| d.score >= 0.3) {
        rectangle(&detection.bbox, COLOURS[detection.label % COLOURS.len()]);
    }
    image
        .save(path)
        .map_err(|e| CliError::Train(format!("{}: {e}", path.display())))
}
