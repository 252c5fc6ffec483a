//! The backends this build can run on: one list shared by the tests, the CLI and the benches.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;

use crate::error::{ResNetError, Result};

/// A Burn backend, selected at run time through its [`Device`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// Burn 0.22's recommended CPU backend (feature `flex`, the default).
    Flex,
    /// The ndarray CPU backend (feature `ndarray`).
    Ndarray,
    /// GPU through wgpu (feature `wgpu`): Vulkan, Metal or DX12; Mesa's lavapipe on a machine
    /// without a GPU.
    Wgpu,
    /// NVIDIA GPU through CUDA (feature `cuda`; a CUDA 12 driver at run time), the first GPU.
    Cuda,
}

impl BackendKind {
    /// Every backend the crate knows, compiled in or not.
    pub const ALL: [BackendKind; 4] = [
        BackendKind::Flex,
        BackendKind::Ndarray,
        BackendKind::Wgpu,
        BackendKind::Cuda,
    ];

    /// The name used on the command line and in messages.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Flex => "flex",
            BackendKind::Ndarray => "ndarray",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Cuda => "cuda",
        }
    }

    /// Whether the backend runs on the CPU (flex, ndarray) rather than a GPU API.
    pub fn is_cpu(self) -> bool {
        matches!(self, BackendKind::Flex | BackendKind::Ndarray)
    }

    /// Whether this build has the backend's cargo feature.
    pub fn is_enabled(self) -> bool {
        match self {
            BackendKind::Flex => cfg!(feature = "flex"),
            BackendKind::Ndarray => cfg!(feature = "ndarray"),
            BackendKind::Wgpu => cfg!(feature = "wgpu"),
            BackendKind::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// The backends compiled into this build, fastest CPU backend first.
    pub fn enabled() -> Vec<BackendKind> {
        Self::ALL.into_iter().filter(|b| b.is_enabled()).collect()
    }

    /// The default: the fastest CPU backend compiled in (flex, else ndarray, else wgpu, else
    /// cuda).
    pub fn default_enabled() -> Option<BackendKind> {
        Self::enabled().into_iter().next()
    }

    /// A (non-autodiff) device of this backend; call `.autodiff()` on it to train.
    pub fn device(self) -> Result<Device> {
        match self {
            #[cfg(feature = "flex")]
            BackendKind::Flex => Ok(Device::flex()),
            // Burn 0.22 deprecates burn-ndarray in favour of flex; it stays here because users
            // asked for it and it is a second, independent CPU implementation to test against.
            #[cfg(feature = "ndarray")]
            #[allow(deprecated)]
            BackendKind::Ndarray => Ok(Device::ndarray()),
            #[cfg(feature = "wgpu")]
            BackendKind::Wgpu => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
            #[cfg(feature = "cuda")]
            BackendKind::Cuda => Ok(Device::cuda(0usize)),
            #[allow(unreachable_patterns)]
            other => Err(ResNetError::BackendNotEnabled {
                backend: other.name(),
                enabled: Self::enabled()
                    .iter()
                    .map(|b| b.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }
}

impl BackendKind {
    /// `count` devices of this backend for data-parallel training (burn-train's
    /// `ExecutionStrategy::multi`), plain (call `.autodiff()` on each to train): the GPUs
    /// `0..count` for cuda, the discrete GPUs `0..count` for wgpu (its default adapter when
    /// `count` is 1; an error naming the first one missing), and for the CPU backends, which
    /// have one device, that device `count` times: burn-train then runs `count` workers on it,
    /// each on its share of the batch.
    pub fn devices(self, count: std::num::NonZeroUsize) -> Result<Vec<Device>> {
        let (first, count) = (self.device()?, count.get());
        Ok(match self {
            _ if count == 1 => vec![first],
            #[cfg(feature = "cuda")]
            BackendKind::Cuda => (0..count).map(Device::cuda).collect(),
            // Acquired here, so that a GPU the machine lacks is an error rather than a panic
            // at the first tensor.
            #[cfg(feature = "wgpu")]
            BackendKind::Wgpu => (0..count)
                .map(|index| {
                    Device::wgpu_options()
                        .device_kind(burn::tensor::DeviceKind::DiscreteGpu(index))
                        .init()
                        .map_err(|e| ResNetError::DeviceUnavailable {
                            backend: "wgpu",
                            index,
                            count,
                            reason: e.to_string(),
                        })
                })
                .collect::<Result<_>>()?,
            _ => vec![first; count],
        })
    }
}

/// Whether Burn's own max-pool on `device` gives NaN for a window holding a NaN, as PyTorch's
/// does: flex's does (plain and autodiff); ndarray's drops it (`tests/backbone/non_finite.rs` fails
/// without the mask), and wgpu's is not relied on (shader `max` leaves NaN unspecified).
pub(crate) fn propagates_nan_in_max_pool(device: &Device) -> bool {
    #[cfg(feature = "flex")]
    {
        *device == Device::flex() || *device == Device::flex().autodiff()
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = device;
        false
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = ResNetError;

    fn from_str(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|b| b.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| ResNetError::UnknownBackend {
                name: name.to_string(),
                known: Self::ALL.map(|b| b.name()).join(", "),
            })
    }
}
