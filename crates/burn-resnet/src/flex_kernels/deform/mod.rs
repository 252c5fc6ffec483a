//! Deformable convolution (mmcv's DCN / DCNv2, torchvision's `deform_conv2d` convention):
//! the forward pass ([`forward`]), its gradients for the input, the offsets, the masks and the
//! weight ([`backward`]: `dW = dY · colᵀ`, `dcol = Wᵀ · dY` per channel, scattered back through
//! the sampling) and their registration with flex's autodiff ([`autodiff`]).
//!
//! Burn 0.22's flex runs its backward pass as a scalar loop over every output, input channel
//! and kernel position (ResNet-50 with DCNv2 on c3–c5: 81 s for a training step at batch 2,
//! 224²).
//!
//! Offsets: `[batch, deform_groups · 2 · k, out_h, out_w]`, channel `g·2k + 2·i + {0: dy, 1: dx}`
//! for kernel position `i`; masks `[batch, deform_groups · k, out_h, out_w]`. A sample outside
//! `(-1, size)` is zero; inside, corners outside the image count as zero.

mod autodiff;
pub(crate) mod backward;
pub(crate) mod forward;

use burn::tensor::Tensor;
use burn_flex::Flex;

use super::conv::ConvGeometry;
use super::{flex_f32_contiguous, float_slice, into_primitive};

/// A deformable conv's shape: the conv's, plus its offset groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeformGeometry {
    /// The convolution (input, output channels, kernel, stride, padding, dilation, groups).
    pub conv: ConvGeometry,
    /// Channel groups with offsets (and masks) of their own.
    pub deform_groups: usize,
}

impl DeformGeometry {
    /// `[out_h, out_w]`, kernel positions `k`, positions `p = out_h · out_w`.
    pub(super) fn sizes(&self) -> ([usize; 2], usize, usize) {
        let [_, _, out_h, out_w] = self.conv.output().expect("checked by the caller");
        (
            [out_h, out_w],
            self.conv.kernel[0] * self.conv.kernel[1],
            out_h * out_w,
        )
    }

    /// Offsets shape `[batch, deform_groups · 2k, out_h, out_w]`.
    pub fn offset_shape(&self) -> [usize; 4] {
        let ([out_h, out_w], k, _) = self.sizes();
        [self.conv.input[0], self.deform_groups * 2 * k, out_h, out_w]
    }

    /// Masks shape `[batch, deform_groups · k, out_h, out_w]`.
    pub fn mask_shape(&self) -> [usize; 4] {
        let ([out_h, out_w], k, _) = self.sizes();
        [self.conv.input[0], self.deform_groups * k, out_h, out_w]
    }
}

/// The deformable conv: on plain flex with `bias` (a folded norm's) in the epilogue, or
/// differentiable on flex's autodiff device (no bias); `None` where it does not apply (other
/// backends, shapes that do not fit `geometry`).
pub(crate) fn try_deform_conv2d(
    x: &Tensor<4>,
    offset: &Tensor<4>,
    mask: Option<&Tensor<4>>,
    weight: &Tensor<4>,
    bias: Option<&Tensor<1>>,
    geometry: &DeformGeometry,
) -> Option<Tensor<4>> {
    let conv = &geometry.conv;
    let weight_shape = [
        conv.out_channels,
        conv.input[1] / conv.groups,
        conv.kernel[0],
        conv.kernel[1],
    ];
    let shapes_fit = x.dims() == conv.input
        && offset.dims() == geometry.offset_shape()
        && mask.is_none_or(|m| m.dims() == geometry.mask_shape())
        && weight.dims() == weight_shape
        && bias.is_none_or(|b| b.dims() == [conv.out_channels]);
    if !shapes_fit
        || conv.output().is_none()
        || !conv.input[1].is_multiple_of(geometry.deform_groups)
    {
        return None;
    }
    if x.device().is_autodiff() {
        return bias
            .is_none()
            .then(|| autodiff::try_deform_conv2d(x, offset, mask, weight, geometry))
            .flatten();
    }
    // The offsets and masks are channel slices of the offset conv's output: read as
    // contiguous copies.
    let contiguous = |t: &Tensor<4>| flex_f32_contiguous(t);
    let (input, offset, weight) = (contiguous(x)?, contiguous(offset)?, contiguous(weight)?);
    let mask = match mask {
        Some(mask) => Some(contiguous(mask)?),
        None => None,
    };
    let bias = match bias {
        Some(bias) => Some(flex_f32_contiguous(bias)?),
        None => None,
    };
    let values = forward::deform_conv2d(
        float_slice(&input)?,
        float_slice(&offset)?,
        mask.as_ref().and_then(float_slice),
        float_slice(&weight)?,
        geometry,
        bias.as_ref().and_then(float_slice),
    );
    Some(Tensor::from_primitive::<Flex>(into_primitive(
        values,
        conv.output()?,
    )))
}
