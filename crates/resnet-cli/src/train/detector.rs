//! The detector `resnet train` trains with `task = "detect"`: the backbone, mmdet's FPN, and a
//! CenterNet-style head on the finest pyramid level (a class heatmap, box sizes and sub-cell
//! offsets), with the penalty-reduced focal loss and L1 box losses; and decoding into boxes.

use burn::module::{Module, Param};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::{Device, Tensor};
use burn::train::{InferenceStep, RegressionOutput, TrainOutput, TrainStep};
use burn_resnet::ResNet;
use burn_resnet::fpn::Fpn;

use super::detection_data::{DetectionBatch, Object};
use super::guard::{NonFiniteGuard, checked_gradients};

/// Weight of the size loss (CenterNet's 0.1); the offset loss has weight 1.
const SIZE_WEIGHT: f32 = 0.1;

/// A 3x3 conv + ReLU, then a 1x1 conv to `outputs` channels.
#[derive(Module, Debug)]
pub struct HeadBranch {
    pub hidden: Conv2d,
    pub out: Conv2d,
}

impl HeadBranch {
    fn new(channels: usize, outputs: usize, bias: f32, device: &Device) -> Self {
        let hidden = Conv2dConfig::new([channels, channels], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(device);
        let mut out = Conv2dConfig::new([channels, outputs], [1, 1]).init(device);
        out.bias = Some(Param::from_tensor(Tensor::full([outputs], bias, device)));
        Self { hidden, out }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.out.forward(relu(self.hidden.forward(x)))
    }
}

/// Backbone + FPN + CenterNet head.
#[derive(Module, Debug)]
pub struct ShapeDetector {
    pub backbone: ResNet,
    pub neck: Fpn,
    /// Class heatmap logits (bias −2.19: a prior of 0.1, as CenterNet).
    pub heatmap: HeadBranch,
    /// Box width, height (cells) and centre offsets.
    pub boxes: HeadBranch,
    /// Stops training at a non-finite loss or gradient (none: every step applies).
    #[module(skip)]
    pub guard: Option<NonFiniteGuard>,
}

/// What the head predicts for a batch.
pub struct Prediction {
    /// `[batch, classes, h, w]` logits.
    pub heatmap: Tensor<4>,
    /// `[batch, 4, h, w]`: width, height, x offset, y offset.
    pub boxes: Tensor<4>,
}

impl ShapeDetector {
    pub fn new(backbone: ResNet, neck: Fpn, classes: usize, device: &Device) -> Self {
        let channels = neck.spec.out_channels;
        Self {
            backbone,
            neck,
            heatmap: HeadBranch::new(channels, classes, -2.19, device),
            boxes: HeadBranch::new(channels, 4, 0.0, device),
            guard: None,
        }
    }

    pub fn predict(&self, images: Tensor<4>) -> Prediction {
        let features = self.backbone.forward(images);
        let finest = self.neck.forward(&features).swap_remove(0);
        Prediction {
            heatmap: self.heatmap.forward(finest.clone()),
            boxes: self.boxes.forward(finest),
        }
    }

    /// Focal loss on the heatmap plus the box losses at the object centres, each divided by the
    /// number of objects. Returns the total and its parts `[1, 2]` (heatmap, boxes).
    pub fn loss(&self, batch: &DetectionBatch) -> (Tensor<1>, Tensor<2>) {
        let prediction = self.predict(batch.images.clone());
        let objects = batch.mask.clone().sum().clamp_min(1.0);
        // CenterNet's penalty-reduced focal loss: at the peaks −(1 − p)² log p; elsewhere
        // −(1 − y)⁴ p² log(1 − p).
        // The probabilities are clamped to [1e-4, 1 − 1e-4] (as CenterNet does), so both logs
        // stay finite where their weight is zero.
        let p = sigmoid(prediction.heatmap).clamp(1e-4, 1.0 - 1e-4);
        let peaks = batch.heatmap.clone().greater_equal_elem(1.0).float();
        let positive = (p.clone().neg() + 1.0).powf_scalar(2.0) * p.clone().log() * peaks.clone();
        let negative = (batch.heatmap.clone().neg() + 1.0).powf_scalar(4.0)
            * p.clone().powf_scalar(2.0)
            * (p.neg() + 1.0).log()
            * (peaks.neg() + 1.0);
        let heatmap_loss = (positive + negative).sum().neg() / objects.clone();
        let [width_height, offsets] = [
            prediction.boxes.clone().narrow(1, 0, 2),
            prediction.boxes.narrow(1, 2, 2),
        ];
        let l1 = |predicted: Tensor<4>, target: Tensor<4>| {
            ((predicted - target).abs() * batch.mask.clone()).sum() / objects.clone()
        };
        let box_loss = l1(width_height, batch.sizes.clone()) * SIZE_WEIGHT
            + l1(offsets, batch.offsets.clone());
        let parts = Tensor::cat(vec![heatmap_loss.clone(), box_loss.clone()], 0).reshape([1, 2]);
        (heatmap_loss + box_loss, parts)
    }

    fn output(&self, batch: &DetectionBatch) -> RegressionOutput {
        let (loss, parts) = self.loss(batch);
        // burn-train's loss metric reads `loss`; the parts ride along as the "output".
        let targets = parts.zeros_like();
        RegressionOutput::new(loss, parts, targets)
    }
}

impl TrainStep for ShapeDetector {
    type Input = DetectionBatch;
    type Output = RegressionOutput;

    fn step(&self, batch: DetectionBatch) -> TrainOutput<RegressionOutput> {
        let output = self.output(&batch);
        let grads = checked_gradients(
            self.guard.as_ref(),
            self,
            &output.loss,
            output.loss.backward(),
        );
        TrainOutput {
            grads,
            item: output,
        }
    }
}

impl InferenceStep for ShapeDetector {
    type Input = DetectionBatch;
    type Output = RegressionOutput;

    fn step(&self, batch: DetectionBatch) -> RegressionOutput {
        self.output(&batch)
    }
}

/// A detected object: class, score, box in pixels.
#[derive(Clone, Debug)]
pub struct Detection {
    pub label: usize,
    pub score: f32,
    pub bbox: [f32; 4],
}

/// Boxes from a prediction: heatmap peaks (3x3 local maxima) above `threshold`, the `top` best
/// per image, sizes and offsets read at the peak; `stride` maps cells to pixels.
pub fn decode(
    prediction: &Prediction,
    stride: usize,
    threshold: f32,
    top: usize,
) -> Vec<Vec<Detection>> {
    let scores = sigmoid(prediction.heatmap.clone());
    let maxima = max_pool2d(
        scores.clone(),
        MaxPoolOptions::new([3, 3])
            .with_stride([1, 1])
            .with_padding([1, 1]),
    );
    let [batch, classes, h, w] = scores.dims();
    let scores: Vec<f32> = scores.into_data().try_to_vec::<f32>().expect("f32 scores");
    let maxima: Vec<f32> = maxima.into_data().try_to_vec::<f32>().expect("f32 maxima");
    let boxes: Vec<f32> = prediction
        .boxes
        .clone()
        .into_data()
        .try_to_vec::<f32>()
        .expect("f32 boxes");
    let plane = h * w;
    (0..batch)
        .map(|b| {
            let mut found: Vec<Detection> = Vec::new();
            for class in 0..classes {
                for at in 0..plane {
                    let index = (b * classes + class) * plane + at;
                    let score = scores[index];
                    if score < threshold || score < maxima[index] {
                        continue;
                    }
                    let value = |channel: usize| boxes[(b * 4 + channel) * plane + at];
                    let (cx, cy) = ((at % w) as f32 + value(2), (at / w) as f32 + value(3));
                    let (half_w, half_h) = (value(0).max(0.0) / 2.0, value(1).max(0.0) / 2.0);
                    let bbox = [cx - half_w, cy - half_h, cx + half_w, cy + half_h]
                        .map(|v| v * stride as f32);
                    found.push(Detection {
                        label: class,
                        score,
                        bbox,
                    });
                }
            }
            found.sort_by(|a, b| b.score.total_cmp(&a.score));
            found.truncate(top);
            found
        })
        .collect()
}

/// Intersection over union of two boxes.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let overlap =
        (a[2].min(b[2]) - a[0].max(b[0])).max(0.0) * (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    overlap / (area(a) + area(b) - overlap).max(1e-9)
}

/// Mean average precision at IoU `threshold` over the classes that have objects (VOC's
/// all-point interpolated AP): per class, detections by descending score are true positives
/// when they match a not-yet-matched object of that class with IoU ≥ `threshold`.
pub fn mean_average_precision(
    detections: &[Vec<Detection>],
    objects: &[Vec<Object>],
    classes: usize,
    threshold: f32,
) -> (f64, Vec<Option<f64>>) {
    let per_class: Vec<Option<f64>> = (0..classes)
        .map(|class| {
            let total = objects
                .iter()
                .flatten()
                .filter(|o| o.label == class)
                .count();
            if total == 0 {
                return None;
            }
            let mut ranked: Vec<(usize, &Detection)> = detections
                .iter()
                .enumerate()
                .flat_map(|(image, ds)| {
                    ds.iter()
                        .filter(|d| d.label == class)
                        .map(move |d| (image, d))
                })
                .collect();
            ranked.sort_by(|a, b| b.1.score.total_cmp(&a.1.score));
            let mut matched: Vec<Vec<bool>> =
                objects.iter().map(|os| vec![false; os.len()]).collect();
            let (mut true_positives, mut precision_recall) =
                (0usize, Vec::with_capacity(ranked.len()));
            for (rank, (image, detection)) in ranked.iter().enumerate() {
                let best = objects[*image]
                    .iter()
                    .enumerate()
                    .filter(|(i, o)| o.label == class && !matched[*image][*i])
                    .map(|(i, o)| (i, iou(&o.bbox, &detection.bbox)))
                    .max_by(|a, b| a.1.total_cmp(&b.1));
                if let Some((i, _)) = best.filter(|(_, overlap)| *overlap >= threshold) {
                    matched[*image][i] = true;
                    true_positives += 1;
                }
                precision_recall.push((
                    true_positives as f64 / (rank + 1) as f64,
                    true_positives as f64 / total as f64,
                ));
            }
            // Area under the precision envelope (precision made non-increasing from the right).
            let (mut ap, mut previous_recall, mut envelope) = (0.0, 0.0, 0.0f64);
            let envelopes: Vec<f64> = precision_recall
                .iter()
                .rev()
                .map(|(p, _)| {
                    envelope = envelope.max(*p);
                    envelope
                })
                .collect();
            for ((_, recall), precision) in precision_recall.iter().zip(envelopes.iter().rev()) {
                ap += (recall - previous_recall) * precision;
                previous_recall = *recall;
            }
            Some(ap)
        })
        .collect();
    let present: Vec<f64> = per_class.iter().flatten().copied().collect();
    (
        present.iter().sum::<f64>() / present.len().max(1) as f64,
        per_class,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(label: usize, bbox: [f32; 4]) -> Object {
        Object { label, bbox }
    }

    fn detection(label: usize, score: f32, bbox: [f32; 4]) -> Detection {
        Detection { label, score, bbox }
    }

    #[test]
    fn iou_of_boxes() {
        assert_eq!(iou(&[0.0, 0.0, 2.0, 2.0], &[0.0, 0.0, 2.0, 2.0]), 1.0);
        assert_eq!(iou(&[0.0, 0.0, 2.0, 2.0], &[1.0, 0.0, 3.0, 2.0]), 2.0 / 6.0);
        assert_eq!(iou(&[0.0, 0.0, 1.0, 1.0], &[2.0, 2.0, 3.0, 3.0]), 0.0);
    }

    #[test]
    fn average_precision_ranks_detections_and_counts_each_object_once() {
        let a = [0.0, 0.0, 10.0, 10.0];
        let b = [20.0, 20.0, 30.0, 30.0];
        let objects = vec![vec![object(0, a)], vec![object(0, b), object(1, a)]];
        // Perfect: every object found, nothing else.
        let perfect = vec![
            vec![detection(0, 0.9, a)],
            vec![detection(0, 0.8, b), detection(1, 0.7, a)],
        ];
        let (map, per_class) = mean_average_precision(&perfect, &objects, 3, 0.5);
        assert_eq!((map, per_class), (1.0, vec![Some(1.0), Some(1.0), None]));
        // Class 0: a false positive ranked first, then both objects: precision 1/2 then 2/3 at
        // recall 1/2 and 1 → the envelope is 2/3 everywhere: AP 2/3. Class 1: a duplicate
        // detection of its one object is a false positive after the true one: AP 1.
        let ranked = vec![
            vec![detection(0, 0.95, b), detection(0, 0.9, a)],
            vec![
                detection(0, 0.8, b),
                detection(1, 0.7, a),
                detection(1, 0.6, a),
            ],
        ];
        let (map, per_class) = mean_average_precision(&ranked, &objects, 3, 0.5);
        assert!(
            (per_class[0].unwrap() - 2.0 / 3.0).abs() < 1e-12,
            "{per_class:?}"
        );
        assert_eq!(per_class[1], Some(1.0));
        assert!((map - (2.0 / 3.0 + 1.0) / 2.0).abs() < 1e-12);
        // A box that overlaps too little does not count: recall 0.
        let shifted = vec![vec![detection(0, 0.9, [6.0, 6.0, 16.0, 16.0])], vec![]];
        let (_, per_class) = mean_average_precision(&shifted, &objects, 2, 0.5);
        assert_eq!(per_class[0], Some(0.0));
    }

    #[test]
    fn targets_peak_at_each_centre_with_its_size_and_offset() {
        use super::super::detection_data::{DetectionBatcher, DetectionDataset};
        use burn::data::dataloader::batcher::Batcher;
        let device = Device::flex();
        let dataset = DetectionDataset {
            len: 4,
            size: 64,
            seed: 7,
        };
        let items: Vec<_> = (0..4).map(|i| dataset.item(i)).collect();
        let batch = DetectionBatcher {
            size: 64,
            stride: 4,
        }
        .batch(items.clone(), &device);
        let values = |t: Tensor<4>| t.into_data().try_to_vec::<f32>().unwrap();
        let (heatmap, sizes, mask) = (
            values(batch.heatmap),
            values(batch.sizes),
            values(batch.mask),
        );
        let objects: usize = items.iter().map(|item| item.objects.len()).sum();
        assert_eq!(mask.iter().filter(|m| **m == 1.0).count(), objects);
        let plane = 16 * 16;
        for (b, item) in items.iter().enumerate() {
            for object in &item.objects {
                let [x0, y0, x1, y1] = object.bbox.map(|v| v / 4.0);
                let at = ((y0 + y1) / 2.0) as usize * 16 + ((x0 + x1) / 2.0) as usize;
                assert_eq!(heatmap[(b * 4 + object.label) * plane + at], 1.0);
                assert!((sizes[b * 2 * plane + at] - (x1 - x0)).abs() < 1e-6);
            }
        }
    }
}
