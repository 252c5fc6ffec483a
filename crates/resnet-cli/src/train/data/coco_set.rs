//! A detection set on disk in COCO's format (an `instances_*.json` and its image folder), read
//! as training or validation data: category ids mapped to contiguous labels in id order (names
//! kept), crowd regions kept out of the training targets (mmdet keeps them as ignored boxes),
//! and, for training, images without any other annotation left out, as mmdet's
//! `filter_empty_gt` does (counted and reported).
//!
//! burn-dataset's COCO reader (`ImageFolderDataset::new_coco_detection`) keeps the category ids
//! as labels, reads crowd regions as objects, drops the image ids that results files need, and
//! reports a bad annotation without naming it; this one reads the file with
//! [`crate::coco::CocoAnnotations`], which names the file, the entry and the field.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::data::dataset::{Dataset, DatasetError};

use super::detection::{DetectionItem, Object};
use super::epoch_order::EpochOrder;
use super::letterbox::letterbox;
use super::parallel::load_in_order;
use crate::coco::{CocoAnnotations, CocoImage};
use crate::error::CliError;
use crate::image_input::{Preprocessing, decode};

/// A COCO annotation file with its images.
#[derive(Debug, Clone)]
pub struct CocoSet {
    /// The annotation file (for messages).
    pub annotations_path: PathBuf,
    /// The folder the images' `file_name`s are relative to.
    pub images_dir: PathBuf,
    /// The file, checked.
    pub truth: CocoAnnotations,
    /// The images used, in the file's order.
    pub images: Vec<CocoImage>,
    /// Each used image's objects (crowd regions left out), boxes `[x0, y0, x1, y1]`.
    pub objects: Vec<Vec<Object>>,
    /// Category names in label order (categories sorted by id).
    pub names: Vec<String>,
    /// Category id of each label.
    pub category_ids: Vec<u64>,
    /// Images left out because they hold no annotation but crowd regions (training only).
    pub left_out: usize,
}

impl CocoSet {
    /// Read `annotations` and check that every image it lists is a file in `images_dir`;
    /// `skip_empty` leaves out images without non-crowd annotations (for training).
    pub fn open(annotations: &Path, images_dir: &Path, skip_empty: bool) -> Result<Self, CliError> {
        let truth = CocoAnnotations::from_file(annotations)?;
        let mut categories: Vec<(u64, String)> = truth
            .categories
            .iter()
            .map(|c| (c.id, c.name.clone()))
            .collect();
        categories.sort_by_key(|(id, _)| *id);
        let label_of: HashMap<u64, usize> = categories
            .iter()
            .enumerate()
            .map(|(label, (id, _))| (*id, label))
            .collect();
        let mut by_image: HashMap<u64, Vec<Object>> = HashMap::new();
        for annotation in truth.annotations.iter().filter(|a| !a.crowd) {
            let [x, y, w, h] = annotation.bbox.map(|v| v as f32);
            by_image
                .entry(annotation.image_id)
                .or_default()
                .push(Object {
                    label: label_of[&annotation.category_id],
                    bbox: [x, y, x + w, y + h],
                });
        }
        let (mut images, mut objects, mut left_out) = (Vec::new(), Vec::new(), 0);
        for image in &truth.images {
            let found = by_image.remove(&image.id).unwrap_or_default();
            if skip_empty && found.is_empty() {
                left_out += 1;
                continue;
            }
            let path = images_dir.join(&image.file_name);
            if !path.is_file() {
                return Err(CliError::Image {
                    path,
                    message: format!(
                        "image {} of {} is not a file",
                        image.id,
                        annotations.display()
                    ),
                });
            }
            images.push(image.clone());
            objects.push(found);
        }
        if images.is_empty() {
            return Err(CliError::Train(format!(
                "{}: no image to {} (of {} listed, {left_out} without annotations)",
                annotations.display(),
                if skip_empty { "train on" } else { "evaluate" },
                truth.images.len()
            )));
        }
        Ok(CocoSet {
            annotations_path: annotations.to_path_buf(),
            images_dir: images_dir.to_path_buf(),
            images,
            objects,
            names: categories.iter().map(|(_, name)| name.clone()).collect(),
            category_ids: categories.iter().map(|(id, _)| *id).collect(),
            truth,
            left_out,
        })
    }

    /// Decode image `index`, check its size against the annotation file, and fit it onto the
    /// canvas with its objects.
    pub fn load(
        &self,
        index: usize,
        size: usize,
        preprocessing: Preprocessing,
        flip: bool,
    ) -> Result<DetectionItem, CliError> {
        let image = &self.images[index];
        let path = self.images_dir.join(&image.file_name);
        let decoded = decode(&path)?;
        if [decoded.width() as u64, decoded.height() as u64] != [image.width, image.height] {
            return Err(CliError::Image {
                path,
                message: format!(
                    "is {} x {} pixels; {} says image {} is {} x {}",
                    decoded.width(),
                    decoded.height(),
                    self.annotations_path.display(),
                    image.id,
                    image.width,
                    image.height
                ),
            });
        }
        let (pixels, placement) = letterbox(&decoded, size, preprocessing, flip);
        let objects = self.objects[index]
            .iter()
            .map(|o| Object {
                label: o.label,
                bbox: placement.to_canvas(o.bbox),
            })
            .collect();
        Ok(DetectionItem {
            pixels,
            objects,
            index,
        })
    }
}

/// A COCO set as training or validation data for the detector.
#[derive(Debug, Clone)]
pub struct CocoDataset {
    pub set: Arc<CocoSet>,
    pub size: usize,
    pub preprocessing: Preprocessing,
    /// Training: each epoch's order and mirroring; validation: none (the file's order).
    pub order: Option<Arc<EpochOrder>>,
    /// Threads that decode a batch's images.
    pub threads: usize,
}

impl Dataset<DetectionItem> for CocoDataset {
    fn get(&self, index: usize) -> Result<DetectionItem, DatasetError> {
        if index >= self.len() {
            return Err(DatasetError::new(std::io::Error::other(format!(
                "no image {index}"
            ))));
        }
        let (image, flip) = self
            .order
            .as_ref()
            .map_or((index, false), |o| o.pick(index));
        self.set
            .load(image, self.size, self.preprocessing, flip)
            .map_err(|e| DatasetError::new(std::io::Error::other(e.to_string())))
    }

    fn get_many(&self, indexes: Vec<usize>) -> Result<Vec<DetectionItem>, DatasetError> {
        load_in_order(&indexes, self.threads, |index| self.get(index))
    }

    fn len(&self) -> usize {
        self.set.images.len()
    }
}
