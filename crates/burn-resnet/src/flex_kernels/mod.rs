//! The project's own CPU kernels, on the `flex` backend only, where Burn's stock ops are the
//! limit (docs/performance.md): the convolution with its bias, residual add and ReLU fused, and
//! its gradients ([`conv`]); the deformable conv ([`deform`]); BatchNorm's training step and its
//! running-statistics form with their ReLU ([`batch_norm`]); the stem's max-pool
//! ([`max_pool`]); and a whole residual block recomputed in the backward pass for `with_cp`
//! ([`recompute`]). Each op has its forward pass, its gradients and their registration with
//! flex's autodiff (`forward.rs`, `backward.rs`, `autodiff.rs`), and `try_*` entries that take
//! Burn tensors and return `None` where the kernels do not apply.
//!
//! Model code never calls these: it calls [`crate::ops`], which tries them and falls back to
//! Burn's ops. The tensors are borrowed from flex without copying, through Burn 0.22's primitive
//! access (`Tensor::try_into_primitive`, the `extension` feature). Inference kernels run on
//! plain flex; the differentiable ones on flex's autodiff device. Everything else — other
//! backends, `Same` padding, non-f32 tensors, autodiff with a checkpointing strategy — takes
//! Burn's stock ops. Parity between the two paths is tested (`tests.rs`).

pub(crate) mod batch_norm;
pub(crate) mod blocked;
pub(crate) mod conv;
pub(crate) mod deform;
pub(crate) mod max_pool;
pub(crate) mod recompute;
pub(crate) mod spin_pool;
#[cfg(test)]
mod tests;

use burn::tensor::{DType, Tensor, TensorData};
use burn_flex::{Flex, FlexTensor};

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

/// `len` floats for a kernel that writes every one of them before anything reads them: no
/// zeroing pass first. `vec![0.0; len]` on memory the allocator reuses (freed memory is kept,
/// see [`crate::allocator`]) costs a full pass of stores that the kernel then overwrites.
///
/// Clippy's `uninit_vec` is allowed here on purpose: the elements are plain floats that the
/// kernels store through slices or raw pointers (the GEMM's `dst`), none is read first, and the
/// tests run every kernel that uses this on memory the allocator hands out again with stale
/// values in it (a missed element fails the mmdet parity tests: checked by leaving im2col's
/// right padding unwritten).
///
/// # Safety
/// The caller writes every element before it reads one or hands the vector on.
#[allow(clippy::uninit_vec)]
unsafe fn unwritten(len: usize) -> Vec<f32> {
    let mut values = Vec::with_capacity(len);
    // SAFETY: the capacity is `len`; f32 has no invalid bit patterns, and the caller's
    // contract is that nothing reads an element before it is written.
    unsafe { values.set_len(len) };
    values
}

/// `f` with the thread-local `key` set to `value`, the previous value put back afterwards (also
/// when `f` panics): the scoped switches of this module ([`conv::tiled::ConvKernel::force`],
/// [`blocked::InferenceLayout::force`], [`blocked::without_keeping`], [`spin_pool::on_rayon`]).
pub(crate) fn with_thread_value<T: Copy + 'static, R>(
    key: &'static std::thread::LocalKey<std::cell::Cell<T>>,
    value: T,
    f: impl FnOnce() -> R,
) -> R {
    struct Restore<T: Copy + 'static>(&'static std::thread::LocalKey<std::cell::Cell<T>>, T);
    impl<T: Copy + 'static> Drop for Restore<T> {
        fn drop(&mut self) {
            self.0.set(self.1);
        }
    }
    let _restore = Restore(key, key.replace(value));
    f()
}

/// `output` as the result of `op` in flex's autodiff graph, with its `N` parents, and the state
/// `saved` builds for its backward step (called only when some parent is tracked).
fn record_op<O: burn_autodiff::ops::Backward<Flex, N>, const N: usize>(
    op: O,
    parents: [burn_autodiff::ops::NodeGuard; N],
    saved: impl FnOnce(&FlexTensor) -> O::State,
    output: FlexTensor,
) -> Tensor<4> {
    use burn_autodiff::ops::OpsKind;
    let output = match op
        .prepare::<burn_autodiff::checkpoint::strategy::NoCheckpointing>(parents)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let state = saved(&output);
            prep.finish(state, output)
        }
        OpsKind::UnTracked(prep) => prep.finish(output),
    };
    Tensor::from_primitive::<FlexAutodiff>(output)
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
