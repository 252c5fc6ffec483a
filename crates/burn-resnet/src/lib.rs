//! # burn-resnet
//!
//! mmdetection's ResNet family — ResNet-18/34/50/101/152, ResNetV1c/V1d (deep stem, average-pool
//! shortcuts), caffe style, dilated stages and ResNeXt — as [Burn](https://burn.dev) modules
//! that return multi-scale features for a neck such as an FPN.
//!
//! `Config → validate → init(&device) → forward`, like burn-nn:
//!
//! ```
//! use burn::tensor::{Device, Tensor};
//! use burn_resnet::ResNetConfig;
//!
//! # fn main() -> Result<(), burn_resnet::ResNetError> {
//! let device = Device::default();
//! let config = ResNetConfig::from_toml_str(
//!     "depth = 50\nbase_channels = 8\nout_indices = [1, 2, 3]",
//!     "inline",
//! )?;
//! let backbone = config.init(&device)?;
//!
//! let images = Tensor::<4>::zeros([1, 3, 64, 64], &device);
//! let features = backbone.try_forward(images)?;
//! for (feature, info) in features.iter().zip(backbone.feature_info()) {
//!     // C3: 64 channels at stride 8, C4: 128 at 16, C5: 256 at 32.
//!     assert_eq!(feature.dims()[1], info.channels);
//!     assert_eq!(feature.dims()[2], 64 / info.reduction);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Backends are cargo features (`flex`, the default; `ndarray`; `wgpu`): the module type is the
//! same on each, and the [`Device`](burn::tensor::Device) picks the backend at run time.

#![warn(missing_docs)]

pub mod allocator;
pub mod arch;
pub mod backend;
pub mod block;
mod checked;
pub mod config;
pub mod conv;
pub mod dcn;
pub mod error;
pub mod export;
pub mod features;
#[cfg(feature = "flex")]
mod flex_kernels;
mod fold;
pub mod fpn;
pub mod key_map;
pub mod layer;
pub mod memory;
pub mod norm;
mod ops;
mod param_init;
pub mod plugin;
pub mod stem;
pub mod summary;
mod unit;
pub mod weights;

mod backbone;

pub use allocator::{FreedMemory, keep_freed_memory, release_freed_memory};
pub use backbone::ResNet;
pub use backend::BackendKind;
pub use config::{ARCH_SETTINGS, BlockKind, ResNetConfig, ResNetSpec, StageSpec, Style};
pub use error::{ResNetError, Result};
pub use features::FeatureInfo;
#[cfg(feature = "flex")]
pub use flex_kernels::blocked::{InferenceLayout, UnknownInferenceLayout};
#[cfg(feature = "flex")]
pub use flex_kernels::conv::tiled::{ConvKernel, UnknownConvKernel, clear_packed_weights};
pub use memory::{MemoryEstimate, MemoryLimit, Workload};
pub use summary::{ModelSummary, StageSummary};

/// How many residual blocks the calling thread has run through the recomputing (`with_cp`)
/// op so far: what shows that `with_cp` took effect (it falls back to the plain block off flex's
/// autodiff device, with plugins or an `avg_down` shortcut; see `ResNetConfig::with_cp`).
pub fn recomputed_blocks_on_this_thread() -> usize {
    block::recomputed_blocks_on_this_thread()
}
