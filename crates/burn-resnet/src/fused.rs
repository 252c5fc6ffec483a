//! One `conv → norm → (+ residual) → (ReLU)` step, run by the project's CPU kernels where they
//! apply ([`crate::cpu`]: the whole step in one pass on plain flex, with folded or eval-mode
//! BatchNorms; the conv, and the norm with its ReLU, on flex's autodiff device) and by Burn's
//! ops otherwise.

use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use burn::tensor::activation::relu;

use crate::norm::{Norm, StageMode};

/// `relu?(norm(conv(x)) + residual?)`.
pub(crate) fn conv_norm_act(
    conv: &Conv2d,
    norm: &Norm,
    x: Tensor<4>,
    residual: Option<Tensor<4>>,
    apply_relu: bool,
    mode: StageMode,
) -> Tensor<4> {
    #[cfg(feature = "flex")]
    {
        let fused = match norm {
            Norm::Folded(_) => crate::cpu::try_conv2d(conv, &x, residual.as_ref(), apply_relu),
            // On a plain device a BatchNorm always runs on its running statistics.
            Norm::Batch(bn) | Norm::Frozen(bn) if !x.device().is_autodiff() => {
                crate::cpu::try_conv2d_batch_norm(conv, bn, &x, residual.as_ref(), apply_relu)
            }
            _ => None,
        };
        if let Some(out) = fused {
            return out;
        }
    }
    let out = conv_forward(conv, x);
    match residual {
        None => norm.forward_relu(out, apply_relu, mode),
        Some(residual) => {
            let out = norm.forward(out, mode) + residual;
            if apply_relu { relu(out) } else { out }
        }
    }
}

/// `conv(x)`: the project's differentiable CPU conv on flex's autodiff device, its inference
/// conv on plain flex, Burn's conv otherwise.
pub(crate) fn conv_forward(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    #[cfg(feature = "flex")]
    if let Some(out) = crate::cpu::try_conv2d_autodiff(conv, &x)
        .or_else(|| crate::cpu::try_conv2d(conv, &x, None, false))
    {
        return out;
    }
    conv.forward(x)
}
