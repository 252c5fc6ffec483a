//! The detection task's data: the generated shapes, or a COCO set on disk (`[data]`), with
//! what evaluation and the pictures need of each.

use std::sync::Arc;

use burn::data::dataset::Dataset;

use super::data::coco_set::{CocoDataset, CocoSet};
use super::data::detection::{DetectionDataset, DetectionItem};
use super::data::epoch_order::EpochOrder;
use super::data::letterbox::resized;
use super::data::shapes::{CLASSES, to_rgb8};
use super::session::Session;
use crate::error::CliError;
use crate::image_input::{Preprocessing, decode};

/// A split of images and boxes, generated or from disk.
pub type Split = Arc<dyn Dataset<DetectionItem>>;

/// The training and validation splits, the class names, and the validation set's COCO file
/// (disk data).
pub struct DetectionData {
    pub train: Split,
    pub valid: Split,
    pub classes: Vec<String>,
    /// The validation COCO set, which COCO's metrics score against.
    pub coco_valid: Option<Arc<CocoSet>>,
}

impl DetectionData {
    /// The config's data. Training images are ordered and flipped from `first_epoch` on
    /// (0-based), so that a resumed run sees them as an uninterrupted one.
    pub fn new(session: &Session, first_epoch: usize) -> Result<Self, CliError> {
        let config = &session.config;
        let Some(disk) = &config.data else {
            let split = |len, seed| -> Split {
                Arc::new(DetectionDataset {
                    len,
                    size: config.image_size,
                    seed,
                })
            };
            return Ok(DetectionData {
                train: split(config.train_images, config.seed),
                valid: split(config.valid_images, config.valid_seed()),
                classes: CLASSES.iter().map(|c| c.to_string()).collect(),
                coco_valid: None,
            });
        };
        let annotations = |path: &Option<std::path::PathBuf>| {
            path.clone()
                .ok_or_else(|| CliError::Train("detection reads COCO annotation files".into()))
        };
        let train = CocoSet::open(&annotations(&disk.train_annotations)?, &disk.train, true)?;
        let valid = CocoSet::open(&annotations(&disk.valid_annotations)?, &disk.valid, false)?;
        if train.category_ids != valid.category_ids {
            return Err(CliError::Train(format!(
                "{} has category ids {:?}, {} has {:?}: both splits need the same categories",
                train.annotations_path.display(),
                train.category_ids,
                valid.annotations_path.display(),
                valid.category_ids
            )));
        }
        config.check_train_split(train.images.len(), &train.annotations_path)?;
        for (name, set) in [("train", &train), ("valid", &valid)] {
            let objects: usize = set.objects.iter().map(Vec::len).sum();
            println!(
                "{name}: {} images, {objects} objects of {} categories from {}{}",
                set.images.len(),
                set.names.len(),
                set.annotations_path.display(),
                match set.left_out {
                    0 => String::new(),
                    n => format!(
                        " ({n} images without annotations left out, as mmdet's filter_empty_gt)"
                    ),
                }
            );
        }
        let preprocessing = Preprocessing::for_style(config.backbone.style);
        let classes = train.names.clone();
        let order = EpochOrder::new(config.seed, disk.flip, train.images.len(), first_epoch);
        let (train, valid) = (Arc::new(train), Arc::new(valid));
        let dataset = |set: &Arc<CocoSet>, order| CocoDataset {
            set: set.clone(),
            size: config.image_size,
            preprocessing,
            order,
            threads: disk.threads,
        };
        Ok(DetectionData {
            train: Arc::new(dataset(&train, Some(Arc::new(order)))),
            valid: Arc::new(dataset(&valid, None)),
            classes,
            coco_valid: Some(valid),
        })
    }

    /// Validation image `index` as the model saw it (`size × size`, unflipped), for pictures.
    pub fn valid_picture(&self, index: usize, size: usize) -> Result<image::RgbImage, CliError> {
        match &self.coco_valid {
            None => {
                let item = self
                    .valid
                    .get(index)
                    .map_err(|e| CliError::Train(e.to_string()))?;
                Ok(to_rgb8(&item.pixels, size))
            }
            Some(set) => {
                let image = &set.images[index];
                let decoded = decode(&set.images_dir.join(&image.file_name))?;
                let (rgb, _) = resized(&decoded, size, false);
                let mut canvas = image::RgbImage::new(size as u32, size as u32);
                image::imageops::replace(&mut canvas, &rgb, 0, 0);
                Ok(canvas)
            }
        }
    }
}
