//! The deformable conv of mmcv's DCN / DCNv2.

use burn::tensor::Tensor;
use burn::tensor::module;
use burn::tensor::ops::DeformConvOptions;

use crate::conv::ConvSpec;

/// The deformable conv `spec` with `deform_groups` offset groups: `offset` (and DCNv2's `mask`)
/// from the offset conv, `bias` a folded norm's shift.
pub(crate) fn deform_conv2d(
    x: Tensor<4>,
    offset: Tensor<4>,
    mask: Option<Tensor<4>>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    spec: &ConvSpec,
    deform_groups: usize,
) -> Tensor<4> {
    #[cfg(feature = "flex")]
    {
        use crate::flex_kernels::conv::ConvGeometry;
        use crate::flex_kernels::deform::{DeformGeometry, try_deform_conv2d};
        let geometry = DeformGeometry {
            conv: ConvGeometry {
                input: x.dims(),
                out_channels: spec.out_channels,
                kernel: [spec.kernel; 2],
                stride: [spec.stride; 2],
                padding: [spec.padding; 2],
                dilation: [spec.dilation; 2],
                groups: spec.groups,
            },
            deform_groups,
        };
        if let Some(out) = try_deform_conv2d(
            &x,
            &offset,
            mask.as_ref(),
            &weight,
            bias.as_ref(),
            &geometry,
        ) {
            return out;
        }
    }
    let options = DeformConvOptions::new(
        [spec.stride; 2],
        [spec.padding; 2],
        [spec.dilation; 2],
        spec.groups,
        deform_groups,
    );
    module::deform_conv2d(x, offset, weight, mask, bias, options)
}
