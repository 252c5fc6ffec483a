//! Which kernel the flex inference conv runs: the project's own AVX-512 or AVX2 micro-kernels
//! where the CPU has them, `im2col` + the `gemm` crate otherwise, or whatever a caller forces on
//! its thread (the tests run every path on one machine; `resnet bench --conv-kernel` compares
//! them).

use std::cell::Cell;
use std::fmt;
use std::str::FromStr;

use super::microkernel::MicroKernel;

/// A kernel of the flex inference convolution (inference on plain flex; the other backends are
/// unaffected). In training on flex it also decides the stride-1 3x3 convs: the blocked
/// kernels run them as Winograd F(2x2, 3x3) (forward and input gradient),
/// [`ConvKernel::Im2colGemm`] as `im2col` + GEMM like every other training conv.
///
/// [`ConvKernel::Avx512`], [`ConvKernel::Avx2`] and [`ConvKernel::Portable`] are the project's
/// own micro-kernels: tiles of 8 output channels by up to 48 positions, the columns read in
/// place from the input or from a padded, stride-phase-split copy of it (no `im2col` matrix),
/// weights packed once and cached, the epilogue in the same pass. [`ConvKernel::Im2colGemm`]
/// builds `im2col` blocks and multiplies them through the `gemm` crate (which picks its own
/// SIMD code at run time). [`ConvKernel::best`] is the default: the AVX-512 or AVX2 kernel where
/// the CPU has it (faster than the `gemm` path on ResNet-50, docs/performance.md), the `gemm`
/// path otherwise (faster than the portable kernel, which exists so that the shared code is
/// tested on any machine). Every kernel this CPU runs is tested against the same fixtures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvKernel {
    /// `im2col` blocks and the `gemm` crate.
    Im2colGemm,
    /// AVX-512F (x86-64-v4).
    Avx512,
    /// AVX2 and FMA (x86-64-v3), for CPUs without AVX-512.
    Avx2,
    /// Plain Rust, vectorised by the compiler for the build's target (SSE2 on x86-64).
    Portable,
}

impl ConvKernel {
    /// Every kernel.
    pub const ALL: [ConvKernel; 4] = [Self::Im2colGemm, Self::Avx512, Self::Avx2, Self::Portable];

    /// Whether this CPU can run the kernel.
    pub fn is_supported(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Self::Avx512 | Self::Avx2 => false,
            Self::Im2colGemm | Self::Portable => true,
        }
    }

    /// The default: the AVX-512 micro-kernel, else the AVX2 one, else the `gemm` path.
    pub fn best() -> ConvKernel {
        [Self::Avx512, Self::Avx2]
            .into_iter()
            .find(|k| k.is_supported())
            .unwrap_or(Self::Im2colGemm)
    }

    /// Run `f` with this kernel forced for the inference convs the calling thread starts, or
    /// `None` (without running `f`) when this CPU cannot run it.
    pub fn force<R>(self, f: impl FnOnce() -> R) -> Option<R> {
        if !self.is_supported() {
            return None;
        }
        Some(crate::flex_kernels::with_thread_value(
            &FORCED,
            Some(self),
            f,
        ))
    }

    /// The micro-kernel function, `None` for [`ConvKernel::Im2colGemm`]. Only called on a
    /// supported kernel ([`ConvKernel::force`] checks).
    pub(crate) fn micro_kernel(self) -> Option<MicroKernel> {
        match self {
            Self::Im2colGemm => None,
            #[cfg(target_arch = "x86_64")]
            Self::Avx512 => Some(super::avx512::tile),
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => Some(super::avx2::tile),
            _ => Some(super::portable::tile),
        }
    }
}

thread_local! {
    /// The kernel [`ConvKernel::force`] put on this thread.
    static FORCED: Cell<Option<ConvKernel>> = const { Cell::new(None) };
}

/// The kernel an inference conv started on this thread runs.
pub(crate) fn chosen_kernel() -> ConvKernel {
    FORCED.get().unwrap_or_else(ConvKernel::best)
}

impl fmt::Display for ConvKernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Im2colGemm => "im2col-gemm",
            Self::Avx512 => "avx512",
            Self::Avx2 => "avx2",
            Self::Portable => "portable",
        })
    }
}

/// A name that is not a [`ConvKernel`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown conv kernel `{0}` (expected im2col-gemm, avx512, avx2 or portable)")]
pub struct UnknownConvKernel(pub String);

impl FromStr for ConvKernel {
    type Err = UnknownConvKernel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.to_string() == s)
            .ok_or_else(|| UnknownConvKernel(s.to_string()))
    }
}
