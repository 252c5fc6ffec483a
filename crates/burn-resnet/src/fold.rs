//! Inference-time folding of every BatchNorm into the conv before it.

use burn::nn::conv::Conv2d;

use crate::backbone::ResNet;
use crate::block::Block;
use crate::dcn::{DeformConv, SpatialConv};
use crate::norm::Norm;

/// Fold `norm` into a deformable conv's weight and bias (its offset conv is unchanged).
fn fold_deformable(conv: &mut DeformConv, norm: &mut Norm) {
    if let Some((weight, bias)) = norm.fold_weights(&conv.weight, conv.bias.as_ref()) {
        conv.weight = weight;
        conv.bias = Some(bias);
        *norm = Norm::Folded(burn::nn::Identity);
    }
}

/// Replace `conv` and `norm` by the folded conv and [`Norm::Folded`].
fn fold(conv: &mut Conv2d, norm: &mut Norm) {
    // Module clones share their tensors: this copies no weights.
    let (folded_conv, folded_norm) = norm.clone().fold_into(conv.clone());
    *conv = folded_conv;
    *norm = folded_norm;
}

impl ResNet {
    /// Fold every BatchNorm, with its running statistics, into the conv before it, for
    /// inference: each `conv → norm` pair becomes one conv with a bias, which saves the norm's
    /// passes over every activation. Outputs equal the eval-mode outputs of the original up to
    /// float rounding (checked against the mmdet fixtures in the tests).
    ///
    /// The result is for inference: it has no running statistics, so it neither trains its
    /// norms nor loads mmdet checkpoints. Keep the original for those.
    pub fn fold_batch_norms(mut self) -> Self {
        for layer in &mut self.stem.layers {
            fold(&mut layer.conv, &mut layer.norm);
        }
        for layer in &mut self.layers {
            for block in &mut layer.blocks {
                let downsample = match block {
                    Block::Basic(b) => {
                        fold(&mut b.conv1, &mut b.norm1);
                        fold(&mut b.conv2, &mut b.norm2);
                        b.downsample.as_mut()
                    }
                    Block::Bottleneck(b) => {
                        fold(&mut b.conv1, &mut b.norm1);
                        match &mut b.conv2 {
                            SpatialConv::Regular(conv2) => fold(conv2, &mut b.norm2),
                            SpatialConv::Deformable(conv2) => fold_deformable(conv2, &mut b.norm2),
                        }
                        fold(&mut b.conv3, &mut b.norm3);
                        b.downsample.as_mut()
                    }
                };
                if let Some(d) = downsample {
                    fold(&mut d.conv, &mut d.norm);
                }
            }
        }
        self
    }
}
