//! The detection task's scores on a COCO validation set: the detections mapped back to each
//! image's own pixels and category ids, scored with COCO's metrics ([`crate::coco`]), and
//! written as a COCO results file that pycocotools (or `resnet evaluate`) re-scores.

use std::path::Path;

use super::data::coco_set::CocoSet;
use super::data::letterbox::Placement;
use super::models::detector::Detection;
use crate::coco::{CocoDetection, Summary, evaluate, write_results};
use crate::error::CliError;

/// The detections of each validation image (on the model's canvas) in COCO's results format:
/// boxes in the image's pixels, clipped to it, `[x, y, width, height]`.
pub fn to_coco(detections: &[Vec<Detection>], set: &CocoSet, size: usize) -> Vec<CocoDetection> {
    detections
        .iter()
        .zip(&set.images)
        .flat_map(|(found, image)| {
            let (width, height) = (image.width as f32, image.height as f32);
            let placement = Placement::new([image.width as u32, image.height as u32], size, false);
            found.iter().map(move |d| {
                let [x0, y0, x1, y1] = placement.to_image(d.bbox);
                let (x0, x1) = (x0.clamp(0.0, width), x1.clamp(0.0, width));
                let (y0, y1) = (y0.clamp(0.0, height), y1.clamp(0.0, height));
                CocoDetection {
                    image_id: image.id,
                    category_id: set.category_ids[d.label],
                    bbox: [x0, y0, x1 - x0, y1 - y0].map(f64::from),
                    score: f64::from(d.score),
                }
            })
        })
        .collect()
}

/// Score `detections` against the validation set, print the figures, and write them to
/// `results` when given.
pub fn report(
    when: &str,
    detections: &[Vec<Detection>],
    set: &CocoSet,
    size: usize,
    results: Option<&Path>,
) -> Result<(), CliError> {
    let found = to_coco(detections, set, size);
    let metrics = evaluate(&set.truth, &found);
    let figure =
        |i: usize| metrics.stats[i].map_or("-".to_string(), |v| format!("{:.1}", v * 100.0));
    println!(
        "validation {when}: COCO AP {} (AP50 {}, AP75 {}, small {}, medium {}, large {}; AR@100 {}) over {} images, {} annotations",
        figure(0),
        figure(1),
        figure(2),
        figure(3),
        figure(4),
        figure(5),
        figure(8),
        set.images.len(),
        set.truth.annotations.len()
    );
    if let Some(path) = results {
        print!(
            "{}",
            Summary {
                metrics: &metrics,
                categories: &set.truth.categories,
            }
        );
        write_results(path, &found)?;
        println!(
            "{} detections written to {} (COCO's results format)",
            found.len(),
            path.display()
        );
    }
    Ok(())
}
