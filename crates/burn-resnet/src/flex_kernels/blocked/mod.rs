//! ResNet inference in a blocked channel layout (NCHWc: 16 channels per vector), kept from the
//! stem to each returned output, as ONNX Runtime's CPU convs run (docs/performance.md).
//!
//! The NCHW path ([`super::conv::tiled`]) computes each conv on 16-position vectors: a 14x14 map
//! rounds up, every padded conv first copies its input with a zero border, and the output is
//! compacted. Here a vector holds 16 output channels of one position instead, so positions are
//! never rounded; every activation is written once, by the conv that makes it, with the zero
//! border its readers' padding needs (no copies between convs); the stem's max-pool and
//! `avg_down`'s pool run on the same layout, and the image is converted once at the start (or
//! read in place, for up to 16 channels) and each returned output once at the end.
//!
//! [`try_forward`] runs a whole backbone this way when every unit is supported: plain-flex f32
//! tensors, BasicBlocks and Bottlenecks without plugins, regular convs without groups, folded
//! or running-statistics BatchNorms. Anything else returns `None` and the caller runs the NCHW
//! path, convolution by convolution. The kernel follows [`ConvKernel`]: AVX-512, AVX2 + FMA or
//! portable Rust, none for [`ConvKernel::Im2colGemm`]; [`InferenceLayout::force`] turns the
//! blocked layout off to compare.

mod activation;
mod buffers;
mod conv;
mod lanes;
mod plan;
mod pool;
#[cfg(test)]
mod profile;
pub(crate) mod single;
#[cfg(test)]
mod tests;
mod tile;
mod transpose;
pub(crate) mod winograd;
mod winograd_transform;

use std::cell::Cell;
use std::fmt;
use std::str::FromStr;

use burn::tensor::Tensor;
use burn_flex::Flex;

use super::conv::tiled::{ConvKernel, chosen_kernel};
use super::{flex_f32_contiguous, float_slice, into_primitive};
use crate::layer::ResLayer;
use crate::stem::Stem;
pub(crate) use buffers::{clear as clear_buffers, without_keeping};
use plan::Plan;
use tile::Isa;

/// The activation layout of the flex inference path: blocked (NCHWc) through the whole
/// backbone, or NCHW conv by conv. In training on flex it also decides the frozen stem and
/// stages (`frozen_stages`), which run as inference. Other backends are unaffected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InferenceLayout {
    /// 16-channel blocks kept from the stem to each output, where the backbone supports it
    /// (the default).
    Nchwc,
    /// NCHW between every op.
    Nchw,
}

thread_local! {
    /// The layout [`InferenceLayout::force`] put on this thread.
    static FORCED: Cell<Option<InferenceLayout>> = const { Cell::new(None) };
}

impl InferenceLayout {
    /// Both layouts.
    pub const ALL: [InferenceLayout; 2] = [Self::Nchwc, Self::Nchw];

    /// Run `f` with this layout for the forward passes the calling thread starts.
    pub fn force<R>(self, f: impl FnOnce() -> R) -> R {
        super::with_thread_value(&FORCED, Some(self), f)
    }

    /// The layout a forward pass started on this thread uses.
    pub fn current() -> InferenceLayout {
        FORCED.get().unwrap_or(Self::Nchwc)
    }
}

impl fmt::Display for InferenceLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Nchwc => "nchwc",
            Self::Nchw => "nchw",
        })
    }
}

/// A name that is not an [`InferenceLayout`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown inference layout `{0}` (expected nchwc or nchw)")]
pub struct UnknownInferenceLayout(pub String);

impl FromStr for InferenceLayout {
    type Err = UnknownInferenceLayout;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|l| l.to_string() == s)
            .ok_or_else(|| UnknownInferenceLayout(s.to_string()))
    }
}

/// The blocked kernel of a conv kernel choice (`None` for `im2col` + `gemm`).
fn isa(kernel: ConvKernel) -> Option<Isa> {
    match kernel {
        ConvKernel::Im2colGemm => None,
        #[cfg(target_arch = "x86_64")]
        ConvKernel::Avx512 => Some(Isa::Avx512),
        #[cfg(target_arch = "x86_64")]
        ConvKernel::Avx2 => Some(Isa::Avx2),
        _ => Some(Isa::Portable),
    }
}

/// The backbone's outputs (the stem's activation first when `stem_output`, then stages
/// `out_indices`) computed in the blocked layout, or `None` where it does not apply.
pub(crate) fn try_forward(
    stem: &Stem,
    layers: &[ResLayer],
    out_indices: &[usize],
    stem_output: bool,
    images: &Tensor<4>,
) -> Option<Vec<Tensor<4>>> {
    if InferenceLayout::current() != InferenceLayout::Nchwc {
        return None;
    }
    let isa = isa(chosen_kernel())?;
    let dims = images.dims();
    let image = flex_f32_contiguous(images)?;
    let stages = out_indices.last().map_or(0, |last| last + 1);
    // Shapes first: nothing is packed for a backbone or an input it does not run.
    if !Plan::new(stem, layers, stages, false)?.fits(dims) {
        return None;
    }
    let plan = Plan::new(stem, layers, stages, true)?;
    let mut outputs = Vec::with_capacity(out_indices.len() + 1);
    plan.run(float_slice(&image)?, dims, isa, |stage, x| {
        let wanted = match stage {
            None => stem_output,
            Some(stage) => out_indices.contains(&stage),
        };
        if wanted {
            let shape = [x.batch, x.channels, x.height, x.width];
            outputs.push(Tensor::from_primitive::<Flex>(into_primitive(
                x.to_nchw(isa),
                shape,
            )));
        }
    });
    Some(outputs)
}
