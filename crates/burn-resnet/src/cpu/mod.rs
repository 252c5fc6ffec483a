//! The project's own CPU kernels for inference on the `flex` backend, where Burn's stock ops
//! are the limit (README "Speed"): a convolution with its bias, residual add and ReLU fused
//! ([`conv`]) and the stem's max-pool ([`pool`]).
//!
//! They run when the tensors live on plain `flex` (not autodiff) as contiguous `f32`, and
//! the conv's BatchNorm has been folded into it ([`crate::ResNet::fold_batch_norms`]); the
//! tensors are borrowed from flex without copying, through Burn 0.22's primitive access
//! (`Tensor::try_into_primitive`, the `extension` feature). Everything else — autodiff devices,
//! other backends, grouped convs, unfolded norms — takes Burn's stock ops. Parity between the
//! two paths is tested (`tests/kernels.rs`).

pub mod conv;
pub mod pool;

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::{DType, Tensor, TensorData};
use burn_flex::{Flex, FlexTensor};

use conv::{ConvGeometry, Epilogue};
use pool::PoolGeometry;

/// The flex primitive behind `tensor`, if it is a plain-flex `f32` tensor (shares its buffer).
fn flex_f32<const D: usize>(tensor: &Tensor<D>) -> Option<FlexTensor> {
    if tensor.device().is_autodiff() || tensor.is_require_grad() || tensor.is_tracked() {
        return None;
    }
    let primitive = tensor.clone().try_into_primitive::<Flex>().ok()?;
    (primitive.dtype() == DType::F32).then_some(primitive)
}

/// Wrap a kernel's output as a flex tensor (moves the vector, no copy).
fn into_tensor<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> Tensor<D> {
    Tensor::from_primitive::<Flex>(FlexTensor::from_data(TensorData::new(values, shape)))
}

/// `relu?(conv(x) + residual?)` through [`conv::conv2d`], or `None` when the fast path does
/// not apply (not plain flex f32, grouped conv, asymmetric padding, shape mismatch); the
/// caller then runs Burn's ops. The conv's own bias (a folded norm's shift) is part of it.
pub fn try_conv2d(conv: &Conv2d, x: &Tensor<4>, residual: Option<&Tensor<4>>, relu: bool) -> Option<Tensor<4>> {
    if conv.groups != 1 {
        return None;
    }
    let [top, left, bottom, right] = match conv.padding {
        PaddingConfig2d::Explicit(top, left, bottom, right) => [top, left, bottom, right],
        PaddingConfig2d::Valid => [0; 4],
        PaddingConfig2d::Same => return None,
    };
    if top != bottom || left != right {
        return None;
    }
    let weight = conv.weight.val();
    let [out_channels, in_channels, kernel_h, kernel_w] = weight.dims();
    let geometry = ConvGeometry {
        input: x.dims(),
        out_channels,
        kernel: [kernel_h, kernel_w],
        stride: conv.stride,
        padding: [top, left],
        dilation: conv.dilation,
    };
    let output = geometry.output()?;
    if geometry.input[1] != in_channels || residual.is_some_and(|r| r.dims() != output) {
        return None;
    }

    let input = flex_f32(x)?;
    let weight = flex_f32(&weight)?;
    let bias = match &conv.bias {
        Some(bias) => Some(flex_f32(&bias.val())?),
        None => None,
    };
    let residual = match residual {
        Some(r) => Some(flex_f32(r)?),
        None => None,
    };
    let epilogue = Epilogue {
        bias: match &bias {
            Some(b) => Some(b.as_slice()?),
            None => None,
        },
        residual: match &residual {
            Some(r) => Some(r.as_slice()?),
            None => None,
        },
        relu,
    };
    let values = conv::conv2d(input.as_slice()?, weight.as_slice()?, &geometry, epilogue);
    Some(into_tensor(values, output))
}

/// Square max-pool through [`pool::max_pool2d`], or `None` when the fast path does not apply.
pub fn try_max_pool2d(x: &Tensor<4>, kernel: usize, stride: usize, padding: usize) -> Option<Tensor<4>> {
    let geometry = PoolGeometry { input: x.dims(), kernel, stride, padding };
    let output = geometry.output()?;
    let input = flex_f32(x)?;
    let values = pool::max_pool2d(input.as_slice()?, &geometry);
    Some(into_tensor(values, output))
}
