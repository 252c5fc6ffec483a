//! The detector `resnet train` trains with `task = "detect"`: the backbone, mmdet's FPN, and a
//! CenterNet-style head on the finest pyramid level (a class heatmap, box sizes and sub-cell
//! offsets), with the penalty-reduced focal loss and L1 box losses; and decoding into boxes
//! (scored by [`crate::train::average_precision`]).

use std::sync::Arc;

use burn::module::{Module, Param};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::ExecutionError;
use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::{Device, Tensor};
use burn::train::metric::{Adaptor, LossInput};
use burn::train::{InferenceStep, ItemLazy, RegressionOutput, TrainOutput, TrainStep};
use burn_resnet::ResNet;
use burn_resnet::fpn::Fpn;

use super::share_gradients;
use crate::train::data::detection::DetectionBatch;
use crate::train::guard::{NonFiniteGuard, checked_gradients};

/// Weight of the size loss (CenterNet's 0.1); the offset loss has weight 1.
const SIZE_WEIGHT: f32 = 0.1;
/// Detections scored below this are dropped; at most this many per image (COCO's metrics
/// count up to 100).
pub const SCORE_THRESHOLD: f32 = 0.05;
pub const TOP: usize = 100;

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
    /// Devices each training step's batch is split over (1: one device). Each device's loss
    /// is divided by its own share's object count, as mmdet's CenterNet head does per GPU.
    #[module(skip)]
    pub devices: usize,
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
            devices: 1,
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

    /// The head's output stride (of the finest pyramid level), in input pixels.
    pub fn stride(&self) -> usize {
        self.backbone.feature_info()[self.neck.spec.start_level].reduction
    }

    /// Focal loss on the heatmap plus the box losses at the object centres, each divided by the
    /// number of objects. Returns the total and its parts `[1, 2]` (heatmap, boxes).
    pub fn loss(&self, batch: &DetectionBatch) -> (Tensor<1>, Tensor<2>) {
        self.loss_of(self.predict(batch.images.clone()), batch)
    }

    fn loss_of(&self, prediction: Prediction, batch: &DetectionBatch) -> (Tensor<1>, Tensor<2>) {
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
        regression(self.loss(batch))
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
            share_gradients(&output.loss, self.devices),
        );
        TrainOutput {
            grads,
            item: output,
        }
    }
}

/// burn-train's loss metric reads `loss`; the parts ride along as the "output".
fn regression((loss, parts): (Tensor<1>, Tensor<2>)) -> RegressionOutput {
    let targets = parts.zeros_like();
    RegressionOutput::new(loss, parts, targets)
}

/// A validation step's output: the loss (for burn-train's loss metric) and the batch's
/// detections (for COCO's metrics, [`crate::train::coco_metric`]).
pub struct ValidationOutput {
    pub loss: RegressionOutput,
    pub detections: DetectionsInput,
}

/// Each image's detections on the model's canvas, by the image's position in its dataset;
/// shared, so that every COCO metric handed the batch ([`crate::train::coco_metric`]) keeps it
/// without a copy.
#[derive(Clone, Debug)]
pub struct DetectionsInput {
    pub images: Arc<[(usize, Vec<Detection>)]>,
}

impl ItemLazy for ValidationOutput {
    fn sync(self) -> Result<Self, ExecutionError> {
        Ok(ValidationOutput {
            loss: self.loss.sync()?,
            detections: self.detections,
        })
    }
}

impl Adaptor<LossInput> for ValidationOutput {
    fn adapt(&self) -> LossInput {
        self.loss.adapt()
    }
}

impl Adaptor<DetectionsInput> for ValidationOutput {
    fn adapt(&self) -> DetectionsInput {
        self.detections.clone()
    }
}

impl InferenceStep for ShapeDetector {
    type Input = DetectionBatch;
    type Output = ValidationOutput;

    fn step(&self, batch: DetectionBatch) -> ValidationOutput {
        let prediction = self.predict(batch.images.clone());
        let found = decode(&prediction, self.stride(), SCORE_THRESHOLD, TOP);
        ValidationOutput {
            loss: regression(self.loss_of(prediction, &batch)),
            detections: DetectionsInput {
                images: batch.indices.iter().copied().zip(found).collect(),
            },
        }
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
