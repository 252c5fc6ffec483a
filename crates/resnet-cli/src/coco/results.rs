//! COCO's results format: the detections of a model as a JSON list of
//! `{image_id, category_id, bbox: [x, y, width, height], score}`, which pycocotools' `loadRes`
//! (and any COCO tool) reads.

use std::collections::HashSet;
use std::path::Path;

use serde::Serialize;

use super::annotations::CocoAnnotations;
use super::error::CocoError;
use super::json::{self, Entry};

/// One detection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CocoDetection {
    /// `image_id`: an image of the ground truth.
    pub image_id: u64,
    /// `category_id`: a category of the ground truth (COCO's id, not a contiguous label).
    pub category_id: u64,
    /// `bbox`: `[x, y, width, height]` in the image's pixels.
    pub bbox: [f64; 4],
    /// `score`: higher ranks first.
    pub score: f64,
}

/// Read a results file and check it against the ground truth it will be scored on: every
/// detection on a known image and category, with a finite score and a box of non-negative
/// size.
pub fn read_results(path: &Path, truth: &CocoAnnotations) -> Result<Vec<CocoDetection>, CocoError> {
    let root = json::read(path)?;
    let list = root.as_array().ok_or_else(|| CocoError::File {
        path: path.to_path_buf(),
        message: format!(
            "expected a list of detections (COCO's results format), got {}",
            json::kind(&root)
        ),
    })?;
    let images: HashSet<u64> = truth.images.iter().map(|i| i.id).collect();
    let categories: HashSet<u64> = truth.categories.iter().map(|c| c.id).collect();
    list.iter()
        .enumerate()
        .map(|(index, value)| {
            let entry = Entry::new(path, "results", index, value)?;
            let detection = CocoDetection {
                image_id: entry.id("image_id")?,
                category_id: entry.id("category_id")?,
                bbox: entry.bbox("bbox")?,
                score: entry.number("score")?,
            };
            check(&entry, &detection, &images, &categories)?;
            Ok(detection)
        })
        .collect()
}

fn check(
    entry: &Entry,
    detection: &CocoDetection,
    images: &HashSet<u64>,
    categories: &HashSet<u64>,
) -> Result<(), CocoError> {
    if !images.contains(&detection.image_id) {
        let id = detection.image_id;
        return Err(entry.error(
            "image_id",
            format!("no image of the ground truth has id {id}"),
        ));
    }
    if !categories.contains(&detection.category_id) {
        let id = detection.category_id;
        return Err(entry.error(
            "category_id",
            format!("no category of the ground truth has id {id}"),
        ));
    }
    let [_, _, w, h] = detection.bbox;
    if w < 0.0 || h < 0.0 {
        return Err(entry.error(
            "bbox",
            format!("width and height must not be negative, got {w} x {h}"),
        ));
    }
    Ok(())
}
/// Write detections as a COCO results file, replacing `path` only once the whole file is
/// written (a temporary file beside it, then renamed).
pub fn write_results(path: &Path, detections: &[CocoDetection]) -> Result<(), CocoError> {
    let file_error = |message: String| CocoError::File {
        path: path.to_path_buf(),
        message,
    };
    let text = serde_json::to_string(detections).map_err(|e| file_error(e.to_string()))?;
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = Path::new(&partial);
    std::fs::write(partial, text).map_err(|e| file_error(e.to_string()))?;
    std::fs::rename(partial, path).map_err(|e| file_error(e.to_string()))
}
