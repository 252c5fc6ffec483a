//! `resnet evaluate`: score detections (a COCO results file, as `resnet train` writes them or
//! any detector does) against a COCO ground-truth file with COCO's box metrics, computed as
//! pycocotools' `COCOeval` does.

use std::path::PathBuf;

use crate::coco::{CocoAnnotations, Summary, evaluate, read_results};
use crate::error::CliError;

/// The options of `resnet evaluate`.
#[derive(clap::Args)]
pub struct EvaluateArgs {
    /// The ground truth: a COCO annotation file (`instances_*.json`).
    #[arg(long)]
    annotations: PathBuf,
    /// The detections: a COCO results file (a list of `{image_id, category_id, bbox, score}`).
    #[arg(long)]
    results: PathBuf,
}

/// Read both files, score the detections, print pycocotools' summary and each category's AP.
pub fn run(args: &EvaluateArgs) -> Result<(), CliError> {
    let truth = CocoAnnotations::from_file(&args.annotations)?;
    let detections = read_results(&args.results, &truth)?;
    let metrics = evaluate(&truth, &detections);
    println!(
        "{} detections on {} images, {} annotations, {} categories",
        detections.len(),
        truth.images.len(),
        truth.annotations.len(),
        truth.categories.len()
    );
    print!(
        "{}",
        Summary {
            metrics: &metrics,
            categories: &truth.categories,
        }
    );
    Ok(())
}
