//! The projection shortcut of a residual block (mmdet `ResLayer`'s `downsample`).

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::module::avg_pool2d;
use burn::tensor::ops::AvgPoolOptions;
use burn::tensor::{Device, Tensor};

use crate::conv::ConvSpec;
use crate::fold::FoldNorm;
use crate::norm::{Norm, NormConfig, StageMode};
use crate::unit::conv_norm_act;

/// Shape of a shortcut projection: a 1x1 conv + norm, optionally after an average pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownsampleSpec {
    /// The 1x1 conv (stride 1 when `avg_pool` carries the stride).
    pub conv: ConvSpec,
    /// mmdet `avg_down`: `AvgPool2d(kernel=stride, stride=stride, ceil_mode=True,
    /// count_include_pad=False)` before the conv; `Some(stride)`.
    pub avg_pool: Option<usize>,
}

impl DownsampleSpec {
    /// The shortcut mmdet builds for a block from `in_channels` to `out_channels` with `stride`.
    pub fn new(in_channels: usize, out_channels: usize, stride: usize, avg_down: bool) -> Self {
        let conv = ConvSpec::new(in_channels, out_channels, 1);
        if avg_down {
            Self {
                conv,
                avg_pool: Some(stride),
            }
        } else {
            Self {
                conv: conv.stride(stride),
                avg_pool: None,
            }
        }
    }

    /// Side length the 1x1 conv sees for a block input side length: after `avg_down`'s pool
    /// (kernel = stride, no padding, ceil_mode: `ceil(input / stride)`), or the input's.
    pub fn conv_input_size(&self, input: usize) -> usize {
        match self.avg_pool {
            Some(stride) => input.div_ceil(stride),
            None => input,
        }
    }
}

/// The shortcut projection module.
#[derive(Module, Debug)]
pub struct Downsample {
    /// `avg_down` pool size (kernel = stride); `None` without `avg_down`. With stride 1 the
    /// pool is the identity, as in mmdet, and is skipped.
    pub avg_pool: Option<usize>,
    /// The 1x1 conv.
    pub conv: Conv2d,
    /// Its norm.
    pub norm: Norm,
}

impl Downsample {
    /// Build from its spec.
    pub fn init(spec: &DownsampleSpec, norm: &NormConfig, device: &Device) -> Self {
        Self {
            avg_pool: spec.avg_pool,
            conv: spec.conv.init(device),
            norm: norm.init(spec.conv.out_channels, 1.0, device),
        }
    }

    /// Project the block input onto the block output's shape.
    pub fn forward(&self, mut x: Tensor<4>, mode: StageMode) -> Tensor<4> {
        if let Some(stride) = self.avg_pool.filter(|&stride| stride > 1) {
            let options = AvgPoolOptions::new([stride; 2])
                .with_count_include_pad(false)
                .with_ceil_mode(true);
            x = avg_pool2d(x, options);
        }
        conv_norm_act(&self.conv, &self.norm, x, None, false, mode)
    }

    /// Its conv → norm unit.
    pub(crate) fn unit_mut(&mut self) -> (&mut dyn FoldNorm, &mut Norm) {
        (&mut self.conv, &mut self.norm)
    }
}

/// The shortcut of a block: `downsample(x)`, or `x` itself without one.
pub(crate) fn shortcut(
    downsample: Option<&Downsample>,
    x: &Tensor<4>,
    mode: StageMode,
) -> Tensor<4> {
    match downsample {
        Some(downsample) => downsample.forward(x.clone(), mode),
        None => x.clone(),
    }
}
