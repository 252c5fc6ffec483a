//! The project's own CPU kernels on the `flex` backend, where Burn's stock ops are the limit
//! (docs/performance.md): a convolution with its bias, residual add and ReLU fused ([`conv`]), its
//! gradients ([`conv_backward`], wired into autodiff by `autodiff.rs`), BatchNorm's training
//! step with its ReLU ([`try_batch_norm_train`]) and the stem's max-pool ([`pool`]).
//!
//! The tensors are borrowed from flex without copying, through Burn 0.22's primitive access
//! (`Tensor::try_into_primitive`, the `extension` feature). Inference kernels run on plain flex;
//! the differentiable conv and BatchNorm on flex's autodiff device. Everything else — other backends,
//! `Same` padding, non-f32 tensors, autodiff with a checkpointing strategy — takes Burn's
//! stock ops. Parity between the two paths is tested (`tests/kernels.rs`).

mod autodiff;
mod batch_norm;
pub mod conv;
pub mod conv_backward;
pub mod deform;
mod deform_autodiff;
pub mod pool;
pub mod recompute;

use burn::nn::BatchNorm;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::{DType, Tensor, TensorData};
use burn_flex::{Flex, FlexTensor};

pub use batch_norm::{BatchNormTrainOutput, try_batch_norm_eval, try_batch_norm_train};
use conv::{ConvGeometry, Epilogue};
use pool::PoolGeometry;

/// The autodiff backend of `Device::flex().autodiff()`.
type FlexAutodiff =
    burn_autodiff::Autodiff<Flex, burn_autodiff::checkpoint::strategy::NoCheckpointing>;

/// PyTorch's ReLU: 0 for negative inputs, the input otherwise, so NaN stays NaN (`f32::max`
/// would return 0 for a NaN and hide it). Branch-free after optimisation (a compare and a blend).
#[inline(always)]
fn relu(v: f32) -> f32 {
    if v < 0.0 { 0.0 } else { v }
}

/// PyTorch's ReLU backward (`threshold_backward`): the gradient `g` passes unless the ReLU's
/// output `y` is `<= 0`, so a NaN output passes it, and a blocked position gives exactly 0 even
/// for an infinite or NaN `g` (a select, not a multiply by a 0/1 mask).
#[inline(always)]
fn relu_backward(y: f32, g: f32) -> f32 {
    if y <= 0.0 { 0.0 } else { g }
}

/// A raw pointer that may cross threads, for kernels whose tasks write disjoint, interleaved
/// parts of one output (each use states why its writes are disjoint).
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: a plain address; every dereference is justified where it happens.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// A strided view of an `f32` matrix: element `(i, j)` at `ptr + i·row_stride + j·col_stride`.
#[derive(Clone, Copy)]
struct Matrix<P> {
    ptr: P,
    row_stride: isize,
    col_stride: isize,
}

impl<P> Matrix<P> {
    /// A row-major matrix whose rows are `row_stride` apart.
    fn rows(ptr: P, row_stride: usize) -> Self {
        Self {
            ptr,
            row_stride: row_stride as isize,
            col_stride: 1,
        }
    }

    /// The transpose of a row-major matrix whose rows are `row_stride` apart.
    fn transposed(ptr: P, row_stride: usize) -> Self {
        Self {
            ptr,
            row_stride: 1,
            col_stride: row_stride as isize,
        }
    }
}

/// `dst = lhs · rhs` (`accumulate`: `dst += lhs · rhs`) for an `m × k` lhs and a `k × n` rhs,
/// on the calling thread, through the `gemm` crate.
///
/// # Safety
/// Every view must be valid for reads (and `dst` for writes) over its whole shape.
unsafe fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: Matrix<*mut f32>,
    accumulate: bool,
    lhs: Matrix<*const f32>,
    rhs: Matrix<*const f32>,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.ptr,
            dst.col_stride,
            dst.row_stride,
            accumulate,
            lhs.ptr,
            lhs.col_stride,
            lhs.row_stride,
            rhs.ptr,
            rhs.col_stride,
            rhs.row_stride,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// The flex primitive behind `tensor`, if it is a plain-flex `f32` tensor (shares its buffer).
fn flex_f32<const D: usize>(tensor: &Tensor<D>) -> Option<FlexTensor> {
    if tensor.device().is_autodiff() || tensor.is_require_grad() || tensor.is_tracked() {
        return None;
    }
    let primitive = tensor.clone().try_into_primitive::<Flex>().ok()?;
    float_slice(&primitive)?;
    Some(primitive)
}

/// [`flex_f32`] of a tensor in any layout, made contiguous (copied only if it is not).
fn flex_f32_contiguous<const D: usize>(tensor: &Tensor<D>) -> Option<FlexTensor> {
    if tensor.device().is_autodiff() || tensor.is_require_grad() || tensor.is_tracked() {
        return None;
    }
    let primitive = tensor
        .clone()
        .try_into_primitive::<Flex>()
        .ok()?
        .to_contiguous();
    float_slice(&primitive)?;
    Some(primitive)
}

/// The values of a contiguous `f32` flex tensor.
fn float_slice(tensor: &FlexTensor) -> Option<&[f32]> {
    (tensor.dtype() == DType::F32)
        .then(|| tensor.as_slice::<f32>())
        .flatten()
}

/// A BatchNorm's per-channel affine map from statistics: `scale = γ/√(var + ε)` and
/// `shift = β − mean · scale`, so that the norm is `x · scale + shift`.
fn batch_norm_affine(
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    variance: &[f32],
    epsilon: f64,
) -> (Vec<f32>, Vec<f32>) {
    (0..gamma.len())
        .map(|c| {
            let scale = (gamma[c] as f64 / (variance[c] as f64 + epsilon).sqrt()) as f32;
            (scale, beta[c] - mean[c] * scale)
        })
        .unzip()
}

/// A kernel's output as a flex primitive (moves the vector, no copy).
fn into_primitive<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

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

/// `relu?(conv(x) + residual?)` on plain flex through [`conv::conv2d`], or `None` when the
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
    let read = |t: Tensor<1>| flex_f32(&t).and_then(|t| float_slice(&t).map(<[f32]>::to_vec));
    let gamma = read(norm.gamma.val())?;
    let beta = read(norm.beta.val())?;
    let mean = read(norm.running_mean.value_sync())?;
    let variance = read(norm.running_var.value_sync())?;
    let (scale, shift) = batch_norm_affine(&gamma, &beta, &mean, &variance, norm.epsilon);
    conv2d_with_affine(conv, x, residual, relu, Some((&scale, &shift)))
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
    let input = flex_f32(x)?;
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
    let values = conv::conv2d(
        float_slice(&input)?,
        float_slice(&weight)?,
        &geometry,
        epilogue,
    );
    Some(Tensor::from_primitive::<Flex>(into_primitive(
        values, output,
    )))
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

/// The deformable conv of [`deform`]: on plain flex with `bias` (a folded norm's) in the
/// epilogue, or differentiable on flex's autodiff device (no bias); `None` where it does not
/// apply (other backends, shapes that do not fit `geometry`).
pub fn try_deform_conv2d(
    x: &Tensor<4>,
    offset: &Tensor<4>,
    mask: Option<&Tensor<4>>,
    weight: &Tensor<4>,
    bias: Option<&Tensor<1>>,
    geometry: &deform::DeformGeometry,
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
            .then(|| deform_autodiff::try_deform_conv2d(x, offset, mask, weight, geometry))
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
    let values = deform::deform_conv2d(
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

/// Square max-pool through [`pool::max_pool2d`] on plain flex, or `None` when the fast path
/// does not apply.
pub fn try_max_pool2d(
    x: &Tensor<4>,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Option<Tensor<4>> {
    let geometry = PoolGeometry {
        input: x.dims(),
        kernel,
        stride,
        padding,
    };
    let output = geometry.output()?;
    let input = flex_f32(x)?;
    let values = pool::max_pool2d(float_slice(&input)?, &geometry);
    Some(Tensor::from_primitive::<Flex>(into_primitive(
        values, output,
    )))
}
