//! One `conv → norm → (+ residual) → (ReLU)` unit, the step every stem layer and block is made
//! of: in one pass where the project's kernel applies (plain flex, folded or eval-mode
//! BatchNorms; flex's autodiff device, BatchNorms on their running statistics, their weight and
//! bias training or not), else the conv, then the norm with its residual and ReLU (one op for a
//! BatchNorm on flex's autodiff device).

use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use burn::tensor::activation::relu;

use crate::dcn::SpatialConv;
use crate::norm::{Norm, StageMode};
use crate::ops;
use crate::plugin::PluginStack;

/// `relu?(norm(conv(x)) + residual?)`.
pub(crate) fn conv_norm_act(
    conv: &Conv2d,
    norm: &Norm,
    x: Tensor<4>,
    residual: Option<Tensor<4>>,
    apply_relu: bool,
    mode: StageMode,
) -> Tensor<4> {
    let fused = match norm {
        Norm::Folded(_) => ops::try_fused_conv2d(conv, None, &x, residual.as_ref(), apply_relu),
        // On a plain device a BatchNorm always runs on its running statistics.
        Norm::Batch(bn) | Norm::Frozen(bn) if !x.device().is_autodiff() => {
            ops::try_fused_conv2d(conv, Some(bn), &x, residual.as_ref(), apply_relu)
        }
        // On an autodiff device, one on its running statistics (`norm_eval`).
        Norm::Batch(bn) if norm.training_batch_norm(mode, true).is_none() => {
            ops::try_conv2d_norm_eval(
                conv,
                bn,
                mode.train_affine,
                &x,
                residual.as_ref(),
                apply_relu,
            )
        }
        Norm::Frozen(bn) => {
            ops::try_conv2d_norm_eval(conv, bn, false, &x, residual.as_ref(), apply_relu)
        }
        _ => None,
    };
    if let Some(out) = fused {
        return out;
    }
    norm.forward_add_relu(ops::conv2d(conv, x), residual, apply_relu, mode)
}

/// [`conv_norm_act`] with a ReLU for a regular-or-deformable 3x3 conv (a Bottleneck's `conv2`,
/// Res2Net's split convs).
pub(crate) fn spatial_conv_norm_relu(
    conv: &SpatialConv,
    norm: &Norm,
    x: Tensor<4>,
    mode: StageMode,
) -> Tensor<4> {
    match conv {
        SpatialConv::Regular(conv) => conv_norm_act(conv, norm, x, None, true, mode),
        SpatialConv::Deformable(conv) => norm.forward_relu(conv.forward(x), true, mode),
    }
}

/// A block's last unit: `relu(plugins(norm(conv(x))) + identity)`. Without plugins the residual
/// add and the ReLU ride along with the conv.
pub(crate) fn last_unit(
    conv: &Conv2d,
    norm: &Norm,
    plugins: &PluginStack,
    x: Tensor<4>,
    identity: Tensor<4>,
    mode: StageMode,
) -> Tensor<4> {
    if plugins.is_empty() {
        return conv_norm_act(conv, norm, x, Some(identity), true, mode);
    }
    let out = plugins.forward(conv_norm_act(conv, norm, x, None, false, mode));
    relu(out + identity)
}
