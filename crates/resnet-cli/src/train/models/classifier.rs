//! The classifier `resnet train` trains (`task = "classify"`, the default): the backbone, a
//! global average pool of its last output and a linear classifier, with burn-train's training
//! and validation steps.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor};
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};
use burn_resnet::ResNet;

use super::share_gradients;
use crate::train::data::classification::ShapeBatch;
use crate::train::guard::{NonFiniteGuard, checked_gradients};

/// Backbone + pooled linear head.
#[derive(Module, Debug)]
pub struct ShapeClassifier {
    /// The backbone being trained.
    pub backbone: ResNet,
    /// Linear classifier on the pooled last feature map.
    pub head: Linear,
    /// Stops training at a non-finite loss or gradient (none: every step applies).
    #[module(skip)]
    pub guard: Option<NonFiniteGuard>,
    /// Devices each training step's batch is split over (1: one device).
    #[module(skip)]
    pub devices: usize,
}

impl ShapeClassifier {
    /// A classifier over `classes` on top of `backbone`.
    pub fn new(backbone: ResNet, classes: usize, device: &Device) -> Self {
        let channels = backbone
            .feature_info()
            .last()
            .map_or(0, |info| info.channels);
        let head = LinearConfig::new(channels, classes).init(device);
        Self {
            backbone,
            head,
            guard: None,
            devices: 1,
        }
    }

    /// Class logits `[batch, classes]`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let last = self
            .backbone
            .forward(images)
            .pop()
            .expect("the backbone has at least one output");
        let [batch, channels, _, _] = last.dims();
        let pooled = last.mean_dim(3).mean_dim(2).reshape([batch, channels]);
        self.head.forward(pooled)
    }

    /// Logits, cross-entropy loss and targets, as burn-train's metrics expect them.
    pub fn classify(&self, images: Tensor<4>, labels: Tensor<1, Int>) -> ClassificationOutput {
        let logits = self.forward(images);
        let loss = CrossEntropyLossConfig::new()
            .init(&logits.device())
            .forward(logits.clone(), labels.clone());
        ClassificationOutput::new(loss, logits, labels)
    }
}

impl TrainStep for ShapeClassifier {
    type Input = ShapeBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: ShapeBatch) -> TrainOutput<ClassificationOutput> {
        let output = self.classify(batch.images, batch.labels);
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

impl InferenceStep for ShapeClassifier {
    type Input = ShapeBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: ShapeBatch) -> ClassificationOutput {
        self.classify(batch.images, batch.labels)
    }
}
