//! COCO's metrics on the validation split after every epoch, as burn-train metrics: AP@[.50:.95],
//! AP50, AP75 and AP for small, medium and large objects, one metric each ([`CocoApMetric`]).
//! The validation steps hand over each image's detections ([`DetectionsInput`]), and at the
//! epoch's end the detections are mapped to the images' pixels and category ids and scored
//! against the COCO file ([`super::coco_results`]), as pycocotools would: once per epoch, the
//! six metrics sharing the evaluation. They show in burn-train's display and its logs
//! (`OUT/valid/epoch-N/COCO_AP.log`, `COCO_AP50.log`, ..., `COCO_AP_small.log`) beside the loss.

use std::sync::{Arc, Mutex, PoisonError};

use burn::tensor::TensorReadError;
use burn::train::metric::{
    Metric, MetricMetadata, MetricName, Numeric, NumericEntry, SerializedEntry,
};

use super::coco_results::to_coco;
use super::data::coco_set::CocoSet;
use super::models::detector::{Detection, DetectionsInput};
use crate::coco::evaluate;

/// The figures shown after every epoch: their index in pycocotools' `stats` and their names.
pub const FIGURES: [(usize, &str); 6] = [
    (0, "COCO AP"),
    (1, "COCO AP50"),
    (2, "COCO AP75"),
    (3, "COCO AP small"),
    (4, "COCO AP medium"),
    (5, "COCO AP large"),
];

/// The last evaluation, shared by the metrics of one training run.
#[derive(Default)]
struct Cache {
    /// The epoch (counted from 0 by each metric's `clear()` calls) and its twelve figures.
    last: Option<(usize, [Option<f64>; 12])>,
    /// Evaluations run so far (the tests check there is one per epoch).
    evaluations: usize,
}

/// What the metrics of one run share: the set, the canvas and the last evaluation.
struct Shared {
    set: Arc<CocoSet>,
    size: usize,
    cache: Mutex<Cache>,
}

/// One of COCO's figures (in %) over one validation pass; the figures of a run share one
/// evaluation per epoch.
#[derive(Clone)]
pub struct CocoApMetric {
    shared: Arc<Shared>,
    /// Index in pycocotools' `stats`.
    stat: usize,
    name: MetricName,
    /// The batches handed over this epoch (their detections shared with the other figures'
    /// metrics, not copied).
    batches: Vec<DetectionsInput>,
    /// Epochs done: `clear()` calls so far. Every metric of a run sees the same calls, so the
    /// count names the epoch for all of them whatever order burn-train calls them in.
    epoch: usize,
    value: Option<f64>,
}

impl CocoApMetric {
    /// The [`FIGURES`]' metrics, scoring detections on a `size × size` canvas against `set`.
    pub fn figures(set: Arc<CocoSet>, size: usize) -> Vec<Self> {
        let shared = Arc::new(Shared {
            set,
            size,
            cache: Mutex::default(),
        });
        FIGURES
            .iter()
            .map(|&(stat, name)| CocoApMetric {
                shared: shared.clone(),
                stat,
                name: Arc::new(name.to_string()),
                batches: Vec::new(),
                epoch: 0,
                value: None,
            })
            .collect()
    }

    /// The twelve figures of this epoch's detections (images not seen count as having none),
    /// from the cache when another figure's metric has already scored the epoch.
    fn stats(&self) -> [Option<f64>; 12] {
        let shared = &self.shared;
        let mut cache = shared.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((epoch, stats)) = cache.last
            && epoch == self.epoch
        {
            return stats;
        }
        let mut detections: Vec<Vec<Detection>> = vec![Vec::new(); shared.set.images.len()];
        for (index, found) in self.batches.iter().flat_map(|batch| batch.images.iter()) {
            if let Some(slot) = detections.get_mut(*index) {
                slot.clone_from(found);
            }
        }
        let coco = to_coco(&detections, &shared.set, shared.size);
        let stats = evaluate(&shared.set.truth, &coco).stats;
        cache.last = Some((self.epoch, stats));
        cache.evaluations += 1;
        stats
    }

    /// This metric's figure in %; -1 where pycocotools gives -1 (no annotation in the area
    /// range, or none in the set).
    fn score(&self) -> f64 {
        self.stats()[self.stat].map_or(-1.0, |v| v * 100.0)
    }
}

impl Metric for CocoApMetric {
    type Input = DetectionsInput;

    fn update(
        &mut self,
        input: &DetectionsInput,
        _metadata: &MetricMetadata,
    ) -> Result<SerializedEntry, TensorReadError> {
        self.batches.push(input.clone());
        // COCO's figures are defined over the whole split only.
        Ok(SerializedEntry::not_available(Some("%")))
    }

    fn compute(&mut self) -> Result<SerializedEntry, TensorReadError> {
        let value = self.score();
        self.value = Some(value);
        Ok(SerializedEntry::new(
            format!("epoch {value:.2} % - batch N/A %"),
            NumericEntry::Value(value).serialize(),
        ))
    }

    fn clear(&mut self) {
        self.batches.clear();
        self.value = None;
        self.epoch += 1;
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

#[cfg(test)]
mod tests {
    use burn::data::dataloader::Progress;

    use super::*;
    use crate::coco::annotations::{CocoAnnotation, CocoCategory};
    use crate::coco::{CocoAnnotations, CocoImage};

    /// Two 48² images with one box each, a small one (16², image 1) and a medium one (40²,
    /// image 2), in a category with id 7; `annotated: false` drops the boxes.
    fn set(annotated: bool) -> Arc<CocoSet> {
        let images: Vec<CocoImage> = (1..=2)
            .map(|id| CocoImage {
                id,
                file_name: format!("{id}.png"),
                width: 48,
                height: 48,
            })
            .collect();
        let annotation = |id: u64, side: f64| CocoAnnotation {
            id,
            image_id: id,
            category_id: 7,
            bbox: [2.0, 2.0, side, side],
            area: side * side,
            crowd: false,
        };
        let annotations = match annotated {
            true => vec![annotation(1, 16.0), annotation(2, 40.0)],
            false => Vec::new(),
        };
        Arc::new(CocoSet {
            annotations_path: "instances_valid.json".into(),
            images_dir: "valid".into(),
            truth: CocoAnnotations {
                images: images.clone(),
                categories: vec![CocoCategory {
                    id: 7,
                    name: "box".into(),
                }],
                annotations,
            },
            images,
            objects: vec![Vec::new(); 2],
            names: vec!["box".into()],
            category_ids: vec![7],
            left_out: 0,
        })
    }

    /// A batch of detections: `(image position, box)`, scored 0.9 on the first image, 0.8 on
    /// the second.
    fn batch(found: &[(usize, [f32; 4])]) -> DetectionsInput {
        DetectionsInput {
            images: found
                .iter()
                .map(|&(index, bbox)| {
                    let detection = Detection {
                        label: 0,
                        score: 0.9 - 0.1 * index as f32,
                        bbox,
                    };
                    (index, vec![detection])
                })
                .collect(),
        }
    }

    /// Hand `batches` to every metric, then compute and clear them in `order`, as burn-train
    /// ends an epoch; the figures by metric.
    fn epoch(
        metrics: &mut [CocoApMetric],
        batches: &[DetectionsInput],
        order: &[usize],
    ) -> Vec<f64> {
        let metadata = MetricMetadata {
            progress: Progress {
                items_processed: 1,
                items_total: 1,
                unit: None,
            },
            iteration: None,
            lr: None,
        };
        for input in batches {
            for metric in metrics.iter_mut() {
                metric.update(input, &metadata).unwrap();
            }
        }
        let mut values = vec![f64::NAN; metrics.len()];
        for &i in order {
            let entry = metrics[i].compute().unwrap();
            let NumericEntry::Value(value) = metrics[i].final_value() else {
                panic!("not a value")
            };
            let Ok(NumericEntry::Value(serialized)) = NumericEntry::deserialize(&entry.serialized)
            else {
                panic!("not a value: {}", entry.serialized)
            };
            assert_eq!(serialized, value);
            values[i] = value;
            metrics[i].clear();
        }
        values
    }

    /// Evaluations the metrics' shared cache has run.
    fn evaluations(metrics: &[CocoApMetric]) -> usize {
        metrics[0].shared.cache.lock().unwrap().evaluations
    }

    #[test]
    fn figures_share_one_evaluation_per_epoch() {
        let set = set(true);
        let mut metrics = CocoApMetric::figures(set.clone(), 48);
        let names: Vec<String> = metrics.iter().map(|m| m.name().to_string()).collect();
        assert_eq!(
            names,
            FIGURES.map(|(_, name)| name.to_string()),
            "one metric per figure"
        );
        // The small box found exactly; the medium one at IoU 29/40 (AP50 but not AP75).
        let found = [
            batch(&[(0, [2.0, 2.0, 18.0, 18.0])]),
            batch(&[(1, [2.0, 2.0, 42.0, 31.0])]),
        ];
        let values = epoch(&mut metrics, &found, &[0, 1, 2, 3, 4, 5]);
        assert_eq!(evaluations(&metrics), 1);
        let all: Vec<Vec<Detection>> = found.iter().map(|b| b.images[0].1.clone()).collect();
        let stats = evaluate(&set.truth, &to_coco(&all, &set, 48)).stats;
        let expected = FIGURES.map(|(stat, _)| stats[stat].map_or(-1.0, |v| v * 100.0));
        assert_close(&values, &expected);
        // At IoU .5 both found; at .75 the small one only, at 51 of the 101 recall points; no
        // large object: -1, as pycocotools.
        let half = 51.0 / 101.0 * 100.0;
        let ap = (100.0 + half) / 2.0;
        assert_close(&values, &[ap, 100.0, half, 100.0, 50.0, -1.0]);

        // Next epoch only the small box, the metrics called in another order: scored anew, once.
        let values = epoch(&mut metrics, &found[..1], &[5, 3, 1, 0, 4, 2]);
        assert_eq!(evaluations(&metrics), 2);
        assert_close(&values, &[half, half, half, 100.0, 0.0, -1.0]);

        // An epoch without a batch: nothing found.
        let values = epoch(&mut metrics, &[], &[2, 0, 1, 3, 4, 5]);
        assert_eq!(evaluations(&metrics), 3);
        assert_close(&values, &[0.0, 0.0, 0.0, 0.0, 0.0, -1.0]);
    }

    /// `values` are `expected`, to rounding.
    fn assert_close(values: &[f64], expected: &[f64]) {
        let close = values.len() == expected.len()
            && values
                .iter()
                .zip(expected)
                .all(|(v, e)| (v - e).abs() < 1e-9);
        assert!(close, "{values:?}\n{expected:?}");
    }

    #[test]
    fn figures_are_minus_one_without_annotations() {
        let mut metrics = CocoApMetric::figures(set(false), 48);
        let found = [batch(&[(0, [2.0, 2.0, 18.0, 18.0])])];
        let values = epoch(&mut metrics, &found, &[0, 1, 2, 3, 4, 5]);
        assert_close(&values, &[-1.0; 6]);
        assert_eq!(evaluations(&metrics), 1);
    }
}
