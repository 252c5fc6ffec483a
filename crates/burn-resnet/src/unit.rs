//! One `conv → norm → (+ residual) → (ReLU)` unit, the step every stem layer and block is made
//! of: in one pass where the project's kernel applies (plain flex, folded or eval-mode
//! BatchNorms), else the conv and the norm with its ReLU as separate ops.

use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use burn::tensor::activation::relu;

use crate::norm::{Norm, StageMode};
use crate::ops;

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
        _ => None,
    };
    if let Some(out) = fused {
        return out;
    }
    let out = ops::conv2d(conv, x);
    match residual {
        None => norm.forward_relu(out, apply_relu, mode),
        Some(residual) => {
            let out = norm.forward(out, mode) + residual;
            if apply_relu { relu(out) } else { out }
        }
    }
}
