//! The convolution, alone or with its epilogue (a BatchNorm on running statistics or a folded
//! one, the residual add, the ReLU) in one pass.

use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;

/// `conv(x)`: the project's differentiable conv on flex's autodiff device, its inference conv
/// on plain flex, Burn's conv otherwise.
pub(crate) fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    #[cfg(feature = "flex")]
    if let Some(out) = crate::flex_kernels::conv::try_conv2d_autodiff(conv, &x)
        .or_else(|| crate::flex_kernels::conv::try_conv2d(conv, &x, None, false))
    {
        return out;
    }
    conv.forward(x)
}

/// `relu?(norm(conv(x)) + residual?)` on flex's autodiff device for `norm` a BatchNorm on its
/// running statistics (`norm_eval`, `FrozenBN`), its weight and bias training when
/// `train_affine`, as one differentiable op; `None` where it does not apply, and the caller
/// composes the step from [`conv2d`] and the norm's own op.
pub(crate) fn try_conv2d_norm_eval(
    conv: &Conv2d,
    norm: &BatchNorm,
    train_affine: bool,
    x: &Tensor<4>,
    residual: Option<&Tensor<4>>,
    apply_relu: bool,
) -> Option<Tensor<4>> {
    #[cfg(feature = "flex")]
    {
        let tail = (residual, apply_relu);
        crate::flex_kernels::conv::try_conv2d_norm_eval(conv, norm, train_affine, x, tail)
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = (conv, norm, train_affine, x, residual, apply_relu);
        None
    }
}

/// `relu?(norm(conv(x)) + residual?)` in one pass on plain flex, with `norm` a BatchNorm on its
/// running statistics (or `None`: the conv's own bias, a folded norm's shift, is all there is);
/// `None` where that pass does not apply, and the caller composes the step from [`conv2d`] and
/// the norm's own ops.
pub(crate) fn try_fused_conv2d(
    conv: &Conv2d,
    norm: Option<&BatchNorm>,
    x: &Tensor<4>,
    residual: Option<&Tensor<4>>,
    apply_relu: bool,
) -> Option<Tensor<4>> {
    #[cfg(feature = "flex")]
    {
        use crate::flex_kernels::conv::{try_conv2d, try_conv2d_batch_norm};
        match norm {
            None => try_conv2d(conv, x, residual, apply_relu),
            Some(bn) => try_conv2d_batch_norm(conv, bn, x, residual, apply_relu),
        }
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = (conv, norm, x, residual, apply_relu);
        None
    }
}
