//! The convolution every ResNet layer is built from, with mmdet's default initialisation.

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, PaddingConfig2d};
use burn::tensor::{Device, Tensor};

/// Shape of a bias-free 2-D convolution, as mmdet's `build_conv_layer(..., bias=False)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvSpec {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Square kernel size.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Symmetric zero padding.
    pub padding: usize,
    /// Dilation.
    pub dilation: usize,
    /// Groups.
    pub groups: usize,
}

impl ConvSpec {
    /// A `kernel`x`kernel` conv with stride 1, no padding, dilation 1 and one group.
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize) -> Self {
        Self {
            in_channels,
            out_channels,
            kernel,
            stride: 1,
            padding: 0,
            dilation: 1,
            groups: 1,
        }
    }

    /// Set the stride.
    pub fn stride(self, stride: usize) -> Self {
        Self { stride, ..self }
    }

    /// Set the padding.
    pub fn padding(self, padding: usize) -> Self {
        Self { padding, ..self }
    }

    /// Set the dilation.
    pub fn dilation(self, dilation: usize) -> Self {
        Self { dilation, ..self }
    }

    /// Set the groups.
    pub fn groups(self, groups: usize) -> Self {
        Self { groups, ..self }
    }

    /// Number of weights.
    pub fn params(&self) -> usize {
        self.out_channels * self.in_channels / self.groups * self.kernel * self.kernel
    }

    /// Values of the packed copy flex's inference kernels keep of the weights, the larger of
    /// the two packings (`None` on overflow): the NCHW micro-kernels' panels (each group's
    /// output channels rounded up to 8) and the blocked layout's (both channel counts rounded
    /// up to 16).
    pub fn checked_packed_values(&self) -> Option<u64> {
        let taps = (self.kernel as u64).checked_mul(self.kernel as u64)?;
        let per_group_out = (self.out_channels / self.groups).next_multiple_of(8) as u64;
        let panels = [
            self.groups as u64,
            per_group_out,
            (self.in_channels / self.groups) as u64,
            taps,
        ]
        .iter()
        .try_fold(1u64, |n, &v| n.checked_mul(v))?;
        let blocked = [
            self.out_channels.checked_next_multiple_of(16)? as u64,
            self.in_channels.checked_next_multiple_of(16)? as u64,
            taps,
        ]
        .iter()
        .try_fold(1u64, |n, &v| n.checked_mul(v))?;
        Some(panels.max(blocked))
    }

    /// Number of weights, if it fits in 64 bits.
    pub fn checked_params(&self) -> Option<u64> {
        let per_output = (self.in_channels / self.groups) as u64;
        [
            self.out_channels as u64,
            self.kernel as u64,
            self.kernel as u64,
        ]
        .iter()
        .try_fold(per_output, |n, &v| n.checked_mul(v))
    }

    /// Output side length for an input side length (PyTorch's floor formula).
    pub fn output_size(&self, input: usize) -> usize {
        output_size(input, self.kernel, self.stride, self.padding, self.dilation)
    }

    /// [`ConvSpec::output_size`], `None` when the arithmetic overflows or the window does not
    /// fit the padded input.
    pub fn checked_output_size(&self, input: usize) -> Option<usize> {
        checked_output_size(input, self.kernel, self.stride, self.padding, self.dilation)
    }

    /// Build the conv with mmdet's default init: Kaiming normal, `mode='fan_out'`, ReLU gain,
    /// where PyTorch's fan-out is `out_channels * k * k` (not divided by groups, unlike Burn's
    /// own Kaiming initializer).
    pub fn init(&self, device: &Device) -> Conv2d {
        let fan_out = self.out_channels * self.kernel * self.kernel;
        let std = (2.0 / fan_out as f64).sqrt();
        let p = self.padding;
        Conv2dConfig::new(
            [self.in_channels, self.out_channels],
            [self.kernel, self.kernel],
        )
        .with_stride([self.stride, self.stride])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_dilation([self.dilation, self.dilation])
        .with_groups(self.groups)
        .with_bias(false)
        .with_initializer(Initializer::Normal { mean: 0.0, std })
        .init(device)
    }

    /// [`ConvSpec::init`] with a bias, zero-initialised as mmdet's Kaiming init leaves it
    /// (`build_conv_layer(None, ...)` with PyTorch's default `bias=True`: ResNeSt's attention
    /// `fc1`/`fc2`).
    pub fn init_with_bias(&self, device: &Device) -> Conv2d {
        let mut conv = self.init(device);
        conv.bias = Some(Param::from_tensor(Tensor::zeros(
            [self.out_channels],
            device,
        )));
        conv
    }
}

/// Output side length of a conv or pool window (PyTorch's floor formula, `ceil_mode=False`).
///
/// # Panics
/// When the arithmetic overflows or the window does not fit the padded input (never for the
/// layers of a validated config at a size [`crate::ModelSummary::new`] accepts); see
/// [`checked_output_size`].
pub fn output_size(
    input: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
) -> usize {
    checked_output_size(input, kernel, stride, padding, dilation)
        .expect("the window fits the padded input")
}

/// [`output_size`], or `None` when it overflows or the window does not fit the padded input.
pub fn checked_output_size(
    input: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
) -> Option<usize> {
    let padded = input.checked_add(padding.checked_mul(2)?)?;
    let window = dilation
        .checked_mul(kernel.checked_sub(1)?)?
        .checked_add(1)?;
    Some(padded.checked_sub(window)? / stride + 1)
}
