//! Inference-time folding of every BatchNorm into the conv before it.

use burn::nn::conv::Conv2d;

use crate::backbone::ResNet;
use crate::dcn::{DeformConv, SpatialConv};
use crate::norm::Norm;

/// A conv that a following norm can be folded into.
pub(crate) trait FoldNorm {
    /// Fold `norm`, with its running statistics, into this conv's weight and bias, and leave
    /// [`Norm::Folded`] in its place; a norm that does not fold (GroupNorm) stays as it is.
    fn fold_norm(&mut self, norm: &mut Norm);
}

impl FoldNorm for Conv2d {
    fn fold_norm(&mut self, norm: &mut Norm) {
        // Module clones share their tensors: this copies no weights.
        let (folded_conv, folded_norm) = norm.clone().fold_into(self.clone());
        *self = folded_conv;
        *norm = folded_norm;
    }
}

/// The deformable conv's weight and bias take the norm; its offset conv is unchanged.
impl FoldNorm for DeformConv {
    fn fold_norm(&mut self, norm: &mut Norm) {
        if let Some((weight, bias)) = norm.fold_weights(&self.weight, self.bias.as_ref()) {
            self.weight = weight;
            self.bias = Some(bias);
            *norm = Norm::Folded(burn::nn::Identity);
        }
    }
}

impl FoldNorm for SpatialConv {
    fn fold_norm(&mut self, norm: &mut Norm) {
        match self {
            SpatialConv::Regular(conv) => conv.fold_norm(norm),
            SpatialConv::Deformable(conv) => conv.fold_norm(norm),
        }
    }
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
        for (conv, norm) in self.units_mut() {
            conv.fold_norm(norm);
        }
        self
    }
}
