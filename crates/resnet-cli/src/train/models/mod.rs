//! The models `resnet train` trains around the backbone, each with burn-train's training and
//! validation steps: a pooled linear classifier ([`classifier`]) and an FPN with a
//! CenterNet-style detection head ([`detector`]).

pub mod classifier;
pub mod detector;

use burn::tensor::{Gradients, Tensor};

/// The gradients of one device's share of a training step whose batch is split over `devices`
/// devices: those of `loss` (the share's mean) divided by `devices`. burn-train's multi-device
/// strategy adds the shares' gradients up, so the sum is the gradient of the mean over the
/// whole batch, as on one device (PyTorch's DDP averages the same way).
pub fn share_gradients(loss: &Tensor<1>, devices: usize) -> Gradients {
    match devices {
        0 | 1 => loss.backward(),
        n => loss.clone().div_scalar(n as f64).backward(),
    }
}
