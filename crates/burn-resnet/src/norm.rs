//! The normalisation layer that follows every convolution (mmdet `norm_cfg`).

use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig};
use burn::tensor::{Device, Tensor};

/// A normalisation layer. mmdet's default `norm_cfg = dict(type='BN')` is BatchNorm with
/// eps 1e-5 and momentum 0.1; it is initialised with weight 1, bias 0 (mmdet's init) or, for a
/// block's last norm under `zero_init_residual`, weight 0.
#[derive(Module, Debug)]
pub enum Norm {
    /// `nn.BatchNorm2d`.
    Batch(BatchNorm),
}

impl Norm {
    /// A BatchNorm over `channels`, its weight set to `gamma` (1, or 0 for zero-init residual).
    pub fn batch(channels: usize, gamma: f32, device: &Device) -> Self {
        let mut norm = BatchNormConfig::new(channels).init(device);
        if gamma != 1.0 {
            norm.gamma = norm.gamma.map(|g| g.mul_scalar(gamma));
        }
        Norm::Batch(norm)
    }

    /// Normalise `[batch, channels, height, width]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Norm::Batch(norm) => norm.forward(x),
        }
    }

    /// Number of channels normalised.
    pub fn channels(&self) -> usize {
        match self {
            Norm::Batch(norm) => norm.gamma.shape().dims::<1>()[0],
        }
    }
}
