//! The ops the model runs, one function per op: each tries the project's kernel on flex
//! ([`crate::flex_kernels`], when the `flex` feature is on and the tensors qualify) and falls
//! back to Burn's op, with the same results either way (PyTorch's NaN and running-variance
//! conventions included). Model files call these and never name a kernel or a feature.

mod batch_norm;
mod conv;
mod deform;
mod max_pool;
mod recompute;

pub(crate) use batch_norm::{batch_norm_eval, batch_norm_train};
pub(crate) use conv::{conv_norm_act, conv2d};
pub(crate) use deform::deform_conv2d;
pub(crate) use max_pool::max_pool2d;
pub(crate) use recompute::{recomputed_block, recomputed_blocks_on_this_thread};
