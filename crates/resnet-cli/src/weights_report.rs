//! What loading a checkpoint into the backbone did, as the lines `extract` and `train` print.

use std::path::Path;

use burn_resnet::weights::LoadReport;

/// The lines describing `report` of loading `path`.
pub fn describe(path: &Path, report: &LoadReport) -> Vec<String> {
    let mut lines = vec![format!(
        "weights: {} ({} names{}; {} non-backbone tensors skipped{})",
        path.display(),
        report.source,
        if report.detected { ", detected" } else { "" },
        report.skipped.len(),
        if report.skipped.is_empty() {
            String::new()
        } else {
            format!(": {}", report.skipped.join(", "))
        }
    )];
    if !report.zero_offsets.is_empty() {
        lines.push(format!(
            "weights: the file has no DCN offset convs; {} offset tensors keep their zero init (each DCN starts as a regular conv)",
            report.zero_offsets.len()
        ));
    }
    if !report.not_loaded.is_empty() {
        lines.push(format!(
            "--partial: {} tensors keep their initial values:\n  {}",
            report.not_loaded.len(),
            report.not_loaded.join("\n  ")
        ));
    }
    lines
}
