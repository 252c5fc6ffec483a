//! The ops the model runs, on tensors and Burn's own modules only, one function per op: each
//! tries the project's kernel on flex ([`crate::flex_kernels`], when the `flex` feature is on and
//! the tensors qualify) and falls back to Burn's op, with the same results either way
//! (PyTorch's NaN conventions included). The two composites the kernels fuse — a conv with its
//! epilogue, a whole recomputed block — are `try_*`: `None` tells the model code to run its
//! parts. Model files call these and never name a kernel or a feature.

mod batch_norm;
mod conv;
mod deform;
mod max_pool;
mod recompute;

pub(crate) use batch_norm::{batch_norm_eval, batch_norm_train, residual_relu};
pub(crate) use conv::{conv2d, try_conv2d_norm_eval, try_fused_conv2d};
pub(crate) use deform::deform_conv2d;
pub(crate) use max_pool::max_pool2d;
pub(crate) use recompute::{RecomputedUnit, try_recomputed_block};
