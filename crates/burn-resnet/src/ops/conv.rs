//! The convolution, and one `conv → norm → (+ residual) → (ReLU)` step: on plain flex the whole
//! step in one pass (folded or eval-mode BatchNorms), on flex's autodiff device the conv and the
//! norm with its ReLU as the project's ops, elsewhere Burn's ops.

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
        use crate::flex_kernels::conv::{try_conv2d, try_conv2d_batch_norm};
        let fused = match norm {
            Norm::Folded(_) => try_conv2d(conv, &x, residual.as_ref(), apply_relu),
            // On a plain device a BatchNorm always runs on its running statistics.
            Norm::Batch(bn) | Norm::Frozen(bn) if !x.device().is_autodiff() => {
                try_conv2d_batch_norm(conv, bn, &x, residual.as_ref(), apply_relu)
            }
            _ => None,
        };
        if let Some(out) = fused {
            return out;
        }
    }
    let out = conv2d(conv, x);
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
pub(crate) fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    #[cfg(feature = "flex")]
    if let Some(out) = crate::flex_kernels::conv::try_conv2d_autodiff(conv, &x)
        .or_else(|| crate::flex_kernels::conv::try_conv2d(conv, &x, None, false))
    {
        return out;
    }
    conv.forward(x)
}
