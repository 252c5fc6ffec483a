//! COCO's AP on the validation split after every epoch, as a burn-train metric: the validation
//! steps hand over each image's detections ([`DetectionsInput`]), and at the epoch's end the
//! metric maps them to the images' pixels and category ids and scores them against the COCO
//! file ([`super::coco_results`]), as pycocotools would. It shows in burn-train's display and
//! its logs (`OUT/valid/epoch-N/COCO AP.log`) beside the loss.

use std::sync::Arc;

use burn::tensor::TensorReadError;
use burn::train::metric::{
    Metric, MetricMetadata, MetricName, Numeric, NumericEntry, SerializedEntry,
};

use super::coco_results::to_coco;
use super::data::coco_set::CocoSet;
use super::models::detector::{Detection, DetectionsInput};
use crate::coco::evaluate;

/// COCO's AP@[.50:.95] (in %) over one validation pass.
#[derive(Clone)]
pub struct CocoApMetric {
    set: Arc<CocoSet>,
    size: usize,
    name: MetricName,
    /// Each image's detections so far this epoch, by position.
    found: Vec<Option<Vec<Detection>>>,
    value: Option<f64>,
}

impl CocoApMetric {
    /// Scores detections on a `size × size` canvas against `set`.
    pub fn new(set: Arc<CocoSet>, size: usize) -> Self {
        let images = set.images.len();
        CocoApMetric {
            set,
            size,
            name: Arc::new("COCO AP".to_string()),
            found: vec![None; images],
            value: None,
        }
    }

    /// AP@[.50:.95] in % of the detections seen (images not seen count as having none); -1
    /// when no image of the set has an annotation.
    fn score(&self) -> f64 {
        let detections: Vec<Vec<Detection>> = self
            .found
            .iter()
            .map(|d| d.clone().unwrap_or_default())
            .collect();
        let metrics = evaluate(&self.set.truth, &to_coco(&detections, &self.set, self.size));
        metrics.stats[0].map_or(-1.0, |ap| ap * 100.0)
    }
}

impl Metric for CocoApMetric {
    type Input = DetectionsInput;

    fn update(
        &mut self,
        input: &DetectionsInput,
        _metadata: &MetricMetadata,
    ) -> Result<SerializedEntry, TensorReadError> {
        for (index, detections) in &input.images {
            if let Some(slot) = self.found.get_mut(*index) {
                *slot = Some(detections.clone());
            }
        }
        // AP is defined over the whole split only.
        Ok(SerializedEntry::not_available(Some("%")))
    }

    fn compute(&mut self) -> Result<SerializedEntry, TensorReadError> {
        let ap = self.score();
        self.value = Some(ap);
        Ok(SerializedEntry::new(
            format!("epoch {ap:.2} % - batch N/A %"),
            NumericEntry::Value(ap).serialize(),
        ))
    }

    fn clear(&mut self) {
        self.found.iter_mut().for_each(|d| *d = None);
        self.value = None;
    }

    fn name(&self) -> MetricName {
        self.name.clone()
    }
}

impl Numeric for CocoApMetric {
    fn value(&self) -> Option<NumericEntry> {
        None
    }

    fn running_value(&self) -> Option<NumericEntry> {
        None
    }

    fn final_value(&self) -> NumericEntry {
        NumericEntry::Value(self.value.unwrap_or(f64::NAN))
    }
}
