//! Progress lines for `resnet train` when stdout is not a terminal (logs, CI, pipes): one line
//! per quarter of each split instead of burn-train's line per batch, and each validation
//! metric's value for the epoch (the loss, COCO's AP figures). In a terminal burn-train's own
//! full-screen display is used.

use std::collections::HashMap;

use burn::train::logger::{EvaluationProgressLogger, TrainingProgressLogger};
use burn::train::metric::{MetricDefinition, MetricId, NumericEntry};
use burn::train::renderer::{
    EvaluationName, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining,
};

/// Prints `epoch 1/3 train: 50% of 2048 images` and `epoch 1/3 valid: COCO AP 12.3400 %` lines
/// (one per validation metric: the loss, COCO's AP, AP50, AP75 and AP small / medium / large).
#[derive(Default)]
pub struct LineRenderer {
    /// Registered metrics' names.
    names: HashMap<MetricId, String>,
    epoch: usize,
    epochs: usize,
    split: String,
    total: usize,
    /// Quarters of the current split already reported.
    reported: usize,
}

impl TrainingProgressLogger for LineRenderer {
    fn start(
        &mut self,
        total_epochs: usize,
        starting_epoch: usize,
        _total_items: Option<usize>,
        _label: Option<&str>,
    ) {
        self.epochs = total_epochs;
        self.epoch = starting_epoch.max(1);
    }

    fn update_epoch(&mut self, epoch: usize) {
        self.epoch = epoch + 1;
    }

    fn start_split(&mut self, split: &str, total_items: usize) {
        (self.split, self.total, self.reported) = (split.to_string(), total_items, 0);
    }

    fn update_split(&mut self, items_processed: usize) {
        let quarters = (items_processed * 4).checked_div(self.total).unwrap_or(4);
        if quarters > self.reported {
            self.reported = quarters;
            println!(
                "epoch {}/{} {}: {}% of {} images",
                self.epoch,
                self.epochs,
                self.split,
                quarters * 25,
                self.total
            );
        }
    }

    fn end_split(&mut self) {}

    fn end(&mut self) {}

    fn log_event_training(&mut self, _event: String) {}
}

impl MetricsRendererTraining for LineRenderer {
    fn update_train(&mut self, _state: MetricState) {}

    fn update_valid(&mut self, state: MetricState) {
        // The epoch's own value arrives once, at the end of the split (batches' entries are
        // running aggregates or none).
        if let MetricState::Numeric(
            entry,
            Some(NumericEntry::Final(value) | NumericEntry::Value(value)),
        ) = state
        {
            let name = self
                .names
                .get(&entry.metric_id)
                .map_or("metric", String::as_str);
            // COCO's figures ("COCO AP", "COCO AP50", ..., "COCO AP large") are in %.
            let unit = if name.starts_with("COCO AP") {
                " %"
            } else {
                ""
            };
            println!(
                "epoch {}/{} valid: {name} {value:.4}{unit}",
                self.epoch, self.epochs
            );
        }
    }
}

impl EvaluationProgressLogger for LineRenderer {
    fn start_global_progress(&mut self, _total_tests: usize) {}

    fn start_test(&mut self, _name: &str, _total_items: usize) {}

    fn update_test_progress(&mut self, _items_processed: usize) {}

    fn end_test(&mut self) {}

    fn end_global_progress(&mut self) {}

    fn log_event_evaluation(&mut self, _event: String) {}
}

impl MetricsRendererEvaluation for LineRenderer {
    fn update_test(&mut self, _name: EvaluationName, _state: MetricState) {}
}

impl MetricsRenderer for LineRenderer {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: MetricDefinition) {
        self.names
            .insert(definition.metric_id, definition.name.to_string());
    }
}
