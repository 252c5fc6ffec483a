//! ResNeSt's split-attention conv (mmdet `SplitAttentionConv2d` with its `RSoftmax`): a grouped
//! 3x3 conv makes `radix` parts of `width` channels each; their sum, averaged over the map,
//! goes through `fc1` → norm → ReLU → `fc2` to one logit per part and channel; a softmax over
//! the parts (a sigmoid when `radix = 1`) weighs them, and the weighted parts are summed.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::activation::{sigmoid, softmax};
use burn::tensor::{Device, Tensor};

use super::ResNeStConvs;
use crate::dcn::{DcnConfig, SpatialConv};
use crate::fold::FoldNorm;
use crate::norm::{Norm, NormConfig, StageMode};
use crate::ops;
use crate::unit::{conv_norm_act, spatial_conv_norm_relu};

/// `conv` → `norm0` → ReLU, then the attention over its `radix` parts. Checkpoint names are
/// mmdet's and timm's: `conv`, `bn0`, `fc1`, `bn1`, `fc2`.
#[derive(Module, Debug)]
pub struct SplitAttentionConv {
    /// The 3x3 conv, `width` to `width · radix` channels in `groups · radix` groups;
    /// deformable in the stages of `stage_with_dcn`.
    pub conv: SpatialConv,
    /// Norm after `conv` (mmdet `norm0`).
    pub norm0: Norm,
    /// 1x1 squeeze of the averaged parts' sum, `width` to `inter_channels`, `groups` groups,
    /// with a bias.
    pub fc1: Conv2d,
    /// Norm after `fc1` (mmdet `norm1`), on a 1x1 map: in training its batch statistics are
    /// over the batch alone.
    pub norm1: Norm,
    /// 1x1 expand to one logit per part and channel, `groups` groups, with a bias.
    pub fc2: Conv2d,
    /// mmdet `radix`.
    pub radix: usize,
    /// mmdet `groups`: the cardinality the logits are laid out by.
    pub groups: usize,
}

impl SplitAttentionConv {
    /// Build from a ResNeSt block's convs.
    pub fn init(
        convs: &ResNeStConvs,
        dcn: Option<&DcnConfig>,
        norm: &NormConfig,
        device: &Device,
    ) -> Self {
        Self {
            conv: SpatialConv::init(convs.split, dcn, device),
            norm0: norm.init(convs.split.out_channels, 1.0, device),
            fc1: convs.fc1.init_with_bias(device),
            norm1: norm.init(convs.fc1.out_channels, 1.0, device),
            fc2: convs.fc2.init_with_bias(device),
            radix: convs.radix,
            groups: convs.fc1.groups,
        }
    }

    /// Channels of the output (`width`).
    pub fn out_channels(&self) -> usize {
        self.fc1.weight.dims()[1] * self.groups
    }

    /// `[batch, width, h, w]` → `[batch, width, h', w']` (`h'`, `w'` as the conv's stride
    /// gives them).
    pub fn forward(&self, x: Tensor<4>, mode: StageMode) -> Tensor<4> {
        let x = spatial_conv_norm_relu(&self.conv, &self.norm0, x, mode);
        let [batch, channels, height, width] = x.dims();
        let part_channels = channels / self.radix;
        let part = |r: usize| x.clone().narrow(1, r * part_channels, part_channels);
        let sum = (1..self.radix).fold(part(0), |sum, r| sum + part(r));
        let pooled = sum
            .reshape([batch, part_channels, height * width])
            .mean_dim(2)
            .reshape([batch, part_channels, 1, 1]);
        let squeezed = conv_norm_act(&self.fc1, &self.norm1, pooled, None, true, mode);
        let logits = ops::conv2d(&self.fc2, squeezed);
        if self.radix == 1 {
            return x * sigmoid(logits);
        }
        // fc2's channels are laid out [groups, radix, width / groups]: the softmax runs over
        // the parts within each group, and the weights come back laid out [radix, width].
        let per_group = part_channels / self.groups;
        let weights = softmax(
            logits.reshape([batch, self.groups, self.radix, per_group]),
            2,
        )
        .swap_dims(1, 2)
        .reshape([batch, channels, 1, 1]);
        let weight = |r: usize| weights.clone().narrow(1, r * part_channels, part_channels);
        (1..self.radix).fold(part(0) * weight(0), |out, r| out + part(r) * weight(r))
    }

    /// The conv → norm units: `conv` → `norm0`, `fc1` → `norm1`.
    pub(crate) fn units_mut(&mut self) -> [(&mut dyn FoldNorm, &mut Norm); 2] {
        [
            (&mut self.conv, &mut self.norm0),
            (&mut self.fc1, &mut self.norm1),
        ]
    }
}
