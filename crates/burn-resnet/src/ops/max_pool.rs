//! The stem's max-pool.

use burn::tensor::Tensor;
use burn::tensor::module;
use burn::tensor::ops::MaxPoolOptions;

/// Square max-pool (padding counts as −∞, no ceil mode), NaN in any window giving NaN as in
/// PyTorch.
pub(crate) fn max_pool2d(x: Tensor<4>, kernel: usize, stride: usize, padding: usize) -> Tensor<4> {
    #[cfg(feature = "flex")]
    if let Some(pooled) = crate::flex_kernels::max_pool::try_max_pool2d(&x, kernel, stride, padding)
    {
        return pooled;
    }
    let options = MaxPoolOptions::new([kernel; 2])
        .with_stride([stride; 2])
        .with_padding([padding; 2]);
    if crate::backend::propagates_nan_in_max_pool(&x.device()) {
        return module::max_pool2d(x, options);
    }
    // PyTorch's max-pool gives NaN for a window holding a NaN; Burn 0.22's ndarray max-pool
    // drops it (and wgpu's is not relied on). Windows with a NaN are found by pooling the
    // NaN mask, and set to NaN.
    let nan_windows =
        module::max_pool2d(x.clone().is_nan().float(), options.clone()).greater_elem(0.0);
    module::max_pool2d(x, options).mask_fill(nan_windows, f32::NAN)
}
