//! COCO's metrics as text: pycocotools' twelve summary lines, then each category's AP.

use std::fmt;

use super::annotations::CocoCategory;
use super::evaluation::CocoMetrics;

/// The summary of [`CocoMetrics`], with category names.
pub struct Summary<'a> {
    /// The metrics.
    pub metrics: &'a CocoMetrics,
    /// The ground truth's categories (names for [`CocoMetrics::per_category`]).
    pub categories: &'a [CocoCategory],
}

/// What each of the twelve figures averages, as pycocotools' `summarize()` labels it.
const LINES: [(&str, &str, &str, u32); 12] = [
    ("Average Precision  (AP)", "0.50:0.95", "all", 100),
    ("Average Precision  (AP)", "0.50", "all", 100),
    ("Average Precision  (AP)", "0.75", "all", 100),
    ("Average Precision  (AP)", "0.50:0.95", "small", 100),
    ("Average Precision  (AP)", "0.50:0.95", "medium", 100),
    ("Average Precision  (AP)", "0.50:0.95", "large", 100),
    ("Average Recall     (AR)", "0.50:0.95", "all", 1),
    ("Average Recall     (AR)", "0.50:0.95", "all", 10),
    ("Average Recall     (AR)", "0.50:0.95", "all", 100),
    ("Average Recall     (AR)", "0.50:0.95", "small", 100),
    ("Average Recall     (AR)", "0.50:0.95", "medium", 100),
    ("Average Recall     (AR)", "0.50:0.95", "large", 100),
];

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for ((what, iou, area, detections), value) in LINES.iter().zip(&self.metrics.stats) {
            // pycocotools prints -1.000 for an undefined figure.
            let value = value.map_or("-1.000 (no annotations)".to_string(), |v| format!("{v:.3}"));
            writeln!(
                f,
                " {what} @[ IoU={iou:<9} | area={area:>6} | maxDets={detections:>3} ] = {value}"
            )?;
        }
        for (id, ap) in &self.metrics.per_category {
            let name = self
                .categories
                .iter()
                .find(|c| c.id == *id)
                .map_or("", |c| c.name.as_str());
            let ap = ap.map_or("- (no annotations)".to_string(), |v| format!("{v:.3}"));
            writeln!(f, " AP @[ IoU=0.50:0.95 ] of category {id} ({name}) = {ap}")?;
        }
        Ok(())
    }
}
