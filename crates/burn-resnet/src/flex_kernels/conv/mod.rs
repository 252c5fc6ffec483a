//! The convolution: the inference kernel with its epilogue ([`forward`], or the micro-kernels
//! of [`tiled`] when a caller forces one), its gradients
//! ([`backward`]) and their registration with flex's autodiff ([`autodiff`]); the entries below
//! take Burn tensors and say `None` where the kernels do not apply.

mod autodiff;
pub(crate) mod backward;
mod fixed_map;
pub(crate) mod forward;
mod im2col;
pub(crate) mod norm_eval;
pub(crate) mod tiled;

use burn::nn::BatchNorm;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use burn_flex::Flex;

pub(crate) use forward::{ConvGeometry, Epilogue, conv2d};

use super::blocked::single::{winograd_conv, winograd_input_grad};
use super::{batch_norm_affine, flex_f32, flex_f32_contiguous, float_slice, into_primitive};

/// The geometry of `conv` applied to `x`, if the project's conv supports it (symmetric
/// explicit padding, matching channels, a kernel that fits).
pub(crate) fn conv_geometry(conv: &Conv2d, input: [usize; 4]) -> Option<ConvGeometry> {
    let [top, left, bottom, right] = match conv.padding {
        PaddingConfig2d::Explicit(top, left, bottom, right) => [top, left, bottom, right],
        PaddingConfig2d::Valid => [0; 4],
        PaddingConfig2d::Same => return None,
    };
    if top != bottom || left != right {
        return None;
    }
    let [out_channels, in_channels, kernel_h, kernel_w] = conv.weight.shape().dims();
    let geometry = ConvGeometry {
        input,
        out_channels,
        kernel: [kernel_h, kernel_w],
        stride: conv.stride,
        padding: [top, left],
        dilation: conv.dilation,
        groups: conv.groups,
    };
    let channels_match = conv.groups > 0
        && geometry.input[1] == in_channels * conv.groups
        && out_channels.is_multiple_of(conv.groups);
    (channels_match && geometry.output().is_some()).then_some(geometry)
}

/// `relu?(conv(x) + residual?)` on plain flex through [`forward::conv2d`], or `None` when the
/// fast path does not apply; the caller then runs Burn's ops. The conv's own bias (a folded
/// norm's shift) is part of it.
pub fn try_conv2d(
    conv: &Conv2d,
    x: &Tensor<4>,
    residual: Option<&Tensor<4>>,
    relu: bool,
) -> Option<Tensor<4>> {
    conv2d_with_affine(conv, x, residual, relu, None)
}

/// `relu?(norm(conv(x)) + residual?)` on plain flex for an eval-mode BatchNorm `norm` (its
/// running statistics), in the conv's epilogue: what [`try_conv2d`] does for a folded norm,
/// without folding. `None` when the fast path does not apply.
pub fn try_conv2d_batch_norm(
    conv: &Conv2d,
    norm: &BatchNorm,
    x: &Tensor<4>,
    residual: Option<&Tensor<4>>,
    relu: bool,
) -> Option<Tensor<4>> {
    let (scale, shift) = running_affine(norm)?;
    conv2d_with_affine(conv, x, residual, relu, Some((&scale, &shift)))
}

/// An eval-mode BatchNorm's `(scale, shift)` from its running statistics, if its tensors are
/// flex f32 (on the plain device, or on flex's autodiff device: their values, not tracked).
pub(crate) fn running_affine(norm: &BatchNorm) -> Option<(Vec<f32>, Vec<f32>)> {
    let gamma = flex_values(norm.gamma.val())?;
    let beta = flex_values(norm.beta.val())?;
    let (mean, variance) = running_statistics(norm)?;
    Some(batch_norm_affine(
        &gamma,
        &beta,
        &mean,
        &variance,
        norm.epsilon,
    ))
}

/// A BatchNorm's running `(mean, variance)`, if they are flex f32.
fn running_statistics(norm: &BatchNorm) -> Option<(Vec<f32>, Vec<f32>)> {
    let mean = flex_values(norm.running_mean.value_sync())?;
    Some((mean, flex_values(norm.running_var.value_sync())?))
}

/// The values of a flex f32 vector (on the plain device, or on flex's autodiff device: its
/// values, not tracked).
fn flex_values(t: Tensor<1>) -> Option<Vec<f32>> {
    let t = if t.device().is_autodiff() {
        t.inner()
    } else {
        t
    };
    flex_f32(&t).and_then(|t| float_slice(&t).map(<[f32]>::to_vec))
}

/// [`try_conv2d`] with an optional per-channel `(scale, shift)` applied after the conv (and
/// its own bias).
fn conv2d_with_affine(
    conv: &Conv2d,
    x: &Tensor<4>,
    residual: Option<&Tensor<4>>,
    relu: bool,
    affine: Option<(&[f32], &[f32])>,
) -> Option<Tensor<4>> {
    let geometry = conv_geometry(conv, x.dims())?;
    let output = geometry.output()?;
    if residual.is_some_and(|r| r.dims() != output) {
        return None;
    }
    // A channel slice (Res2Net's splits) is copied contiguous; anything else is borrowed.
    let input = flex_f32_contiguous(x)?;
    let weight = flex_f32(&conv.weight.val())?;
    // An optional tensor must be plain flex f32 when it is there.
    let bias = match &conv.bias {
        Some(bias) => Some(flex_f32(&bias.val())?),
        None => None,
    };
    let residual = match residual {
        Some(residual) => Some(flex_f32(residual)?),
        None => None,
    };
    let conv_bias = bias.as_ref().and_then(float_slice);
    if conv_bias.is_some_and(|b| b.len() != geometry.out_channels)
        || affine.is_some_and(|(scale, shift)| {
            scale.len() != geometry.out_channels || shift.len() != geometry.out_channels
        })
    {
        return None;
    }
    // A conv bias under a norm: `(conv + b) · scale + shift = conv · scale + (b · scale + shift)`.
    let combined_shift: Option<Vec<f32>> = affine.map(|(scale, shift)| match conv_bias {
        Some(b) => b
            .iter()
            .zip(scale)
            .zip(shift)
            .map(|((b, s), t)| b * s + t)
            .collect(),
        None => shift.to_vec(),
    });
    let epilogue = Epilogue {
        scale: affine.map(|(scale, _)| scale),
        bias: combined_shift.as_deref().or(conv_bias),
        residual: residual.as_ref().and_then(float_slice),
        relu,
    };
    let values = match tiled::chosen_kernel().micro_kernel() {
        None => conv2d(
            float_slice(&input)?,
            float_slice(&weight)?,
            &geometry,
            epilogue,
        ),
        Some(micro) => {
            let packed = tiled::packed_weights(&weight, &geometry)?;
            tiled::conv2d(float_slice(&input)?, &packed, &geometry, epilogue, micro)
        }
    };
    Some(Tensor::from_primitive::<Flex>(into_primitive(
        values, output,
    )))
}

/// The training graph's conv, without an epilogue (NCHW in and out): Winograd in the blocked
/// layout for a stride-1 3x3 conv while a blocked kernel is chosen
/// ([`super::blocked::single`]), `im2col` + GEMM otherwise. Every training path (the autodiff
/// op, `with_cp`'s recomputing blocks) goes through here and [`training_input_grad`], so they
/// compute the same numbers.
pub(crate) fn training_conv(input: &[f32], weight: &[f32], geometry: &ConvGeometry) -> Vec<f32> {
    winograd_conv(input, weight, geometry)
        .unwrap_or_else(|| conv2d(input, weight, geometry, Epilogue::default()))
}

/// The gradient of [`training_conv`] with respect to its input, the same way.
pub(crate) fn training_input_grad(
    weight: &[f32],
    grad_out: &[f32],
    geometry: &ConvGeometry,
) -> Vec<f32> {
    winograd_input_grad(weight, grad_out, geometry)
        .unwrap_or_else(|| backward::input_grad(weight, grad_out, geometry))
}

/// `relu?(norm(conv(x)) + residual?)` for a bias-free conv and a BatchNorm on its running
/// statistics, on flex's autodiff device (training with `norm_eval`, or a `FrozenBN`), as one
/// differentiable op ([`norm_eval`]); the norm's weight and bias train when `train_affine`.
/// `None` when the fast path does not apply.
pub fn try_conv2d_norm_eval(
    conv: &Conv2d,
    norm: &BatchNorm,
    train_affine: bool,
    x: &Tensor<4>,
    tail: (Option<&Tensor<4>>, bool),
) -> Option<Tensor<4>> {
    if conv.bias.is_some() || !x.device().is_autodiff() {
        return None;
    }
    let geometry = conv_geometry(conv, x.dims())?;
    let weight = conv.weight.val();
    if train_affine {
        let (mean, variance) = running_statistics(norm)?;
        let (gamma, beta) = (norm.gamma.val(), norm.beta.val());
        let norm = norm_eval::EvalNorm::Trainable {
            gamma: &gamma,
            beta: &beta,
            mean: &mean,
            variance: &variance,
            epsilon: norm.epsilon,
        };
        return norm_eval::try_conv2d_norm_eval(x, &weight, &geometry, norm, tail);
    }
    let (scale, shift) = running_affine(norm)?;
    let norm = norm_eval::EvalNorm::Fixed {
        scale: &scale,
        shift: &shift,
    };
    norm_eval::try_conv2d_norm_eval(x, &weight, &geometry, norm, tail)
}

/// `conv(x)` for a bias-free conv on flex's autodiff device (training), differentiable, or
/// `None` when the fast path does not apply.
pub fn try_conv2d_autodiff(conv: &Conv2d, x: &Tensor<4>) -> Option<Tensor<4>> {
    if conv.bias.is_some() || !x.device().is_autodiff() {
        return None;
    }
    let geometry = conv_geometry(conv, x.dims())?;
    autodiff::try_conv2d(x, &conv.weight.val(), &geometry)
}
