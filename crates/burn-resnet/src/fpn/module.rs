//! The FPN modules and their forward pass.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::{ExtraSource, FpnSpec};
use crate::error::{ResNetError, Result};

/// mmcv's `ConvModule` without norm and activation: a conv with a bias (checkpoint names
/// `….conv.weight`, `….conv.bias`).
#[derive(Module, Debug)]
pub struct ConvModule {
    /// The conv.
    pub conv: Conv2d,
}

impl ConvModule {
    pub(super) fn init(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        device: &Device,
    ) -> Self {
        let fans = ((in_channels + out_channels) * kernel * kernel) as f64;
        let bound = (6.0 / fans).sqrt();
        let padding = kernel / 2;
        let mut conv = Conv2dConfig::new([in_channels, out_channels], [kernel, kernel])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(
                padding, padding, padding, padding,
            ))
            .with_initializer(Initializer::Uniform {
                min: -bound,
                max: bound,
            })
            .init(device);
        conv.bias = Some(Param::from_tensor(Tensor::zeros([out_channels], device)));
        Self { conv }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        crate::ops::conv2d(&self.conv, x)
    }
}

/// mmdet's `FPN`, with its parameter names (`lateral_convs.i.conv.*`, `fpn_convs.i.conv.*`).
#[derive(Module, Debug)]
pub struct Fpn {
    /// 1x1 convs on the used input levels.
    pub lateral_convs: Vec<ConvModule>,
    /// 3x3 convs on the merged levels, then the stride-2 extra convs.
    pub fpn_convs: Vec<ConvModule>,
    /// The validated settings.
    #[module(skip)]
    pub spec: FpnSpec,
}

impl Fpn {
    /// The pyramid, finest first: `num_outs` maps of `out_channels`. `inputs` are the backbone's
    /// outputs in order.
    ///
    /// # Shapes
    /// - inputs: `[batch, in_channels[i], h_i, w_i]`, each level half the size of the one before
    ///   (as a backbone's are)
    /// - outputs: `num_outs` maps `[batch, out_channels, h_j, w_j]`, the first at the size of
    ///   input `start_level`, each extra level half the size of the one before
    ///
    /// # Panics
    /// When `inputs` do not have the configured count and channels; [`Fpn::try_forward`] checks.
    pub fn forward(&self, inputs: &[Tensor<4>]) -> Vec<Tensor<4>> {
        let spec = &self.spec;
        let mut laterals: Vec<Tensor<4>> = self
            .lateral_convs
            .iter()
            .zip(&inputs[spec.start_level..spec.end])
            .map(|(conv, x)| conv.forward(x.clone()))
            .collect();
        for i in (1..laterals.len()).rev() {
            let [_, _, h, w] = laterals[i - 1].dims();
            laterals[i - 1] =
                laterals[i - 1].clone() + upsample_nearest(laterals[i].clone(), [h, w]);
        }
        let used = laterals.len();
        let mut outs: Vec<Tensor<4>> = self
            .fpn_convs
            .iter()
            .zip(&laterals)
            .map(|(conv, x)| conv.forward(x.clone()))
            .collect();
        match spec.extra {
            None => {
                while outs.len() < spec.num_outs {
                    let last = outs.last().expect("at least one level").clone();
                    outs.push(subsample(last));
                }
            }
            Some(source) if outs.len() < spec.num_outs => {
                let first = match source {
                    ExtraSource::OnInput => inputs[spec.end - 1].clone(),
                    ExtraSource::OnLateral => laterals[used - 1].clone(),
                    ExtraSource::OnOutput => outs[used - 1].clone(),
                };
                outs.push(self.fpn_convs[used].forward(first));
                for conv in &self.fpn_convs[used + 1..] {
                    let last = outs.last().expect("just pushed").clone();
                    outs.push(conv.forward(if spec.relu_before_extra_convs {
                        relu(last)
                    } else {
                        last
                    }));
                }
            }
            Some(_) => {}
        }
        outs
    }

    /// [`Fpn::forward`] after checking the inputs' count and channels.
    ///
    /// # Errors
    /// [`ResNetError::Incompatible`] (`neck inputs`) when the inputs' count or channels differ
    /// from the configured ones.
    pub fn try_forward(&self, inputs: &[Tensor<4>]) -> Result<Vec<Tensor<4>>> {
        let got: Vec<usize> = inputs.iter().map(|x| x.dims()[1]).collect();
        if got != self.spec.in_channels {
            return Err(ResNetError::Incompatible {
                field: "neck inputs".into(),
                reason: format!("channels {got:?}, expected {:?}", self.spec.in_channels),
            });
        }
        Ok(self.forward(inputs))
    }
}

/// PyTorch's `interpolate(mode="nearest")` to `[height, width]`: output `o` takes input
/// `min(⌊o · (in / out)⌋, in − 1)`, the scale in float32 as PyTorch computes it.
fn upsample_nearest(x: Tensor<4>, [height, width]: [usize; 2]) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    let device = x.device();
    let indices = |input: usize, output: usize| {
        let scale = input as f32 / output as f32;
        let values: Vec<i64> = (0..output)
            .map(|o| ((o as f32 * scale).floor() as usize).min(input - 1) as i64)
            .collect();
        Tensor::<1, Int>::from_data(TensorData::new(values, [output]), &device)
    };
    x.select(2, indices(h, height)).select(3, indices(w, width))
}

/// `max_pool2d(x, 1, stride=2)`: every other row and column, starting with the first.
fn subsample(x: Tensor<4>) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    let device = x.device();
    let every_other = |size: usize| {
        let values: Vec<i64> = (0..size).step_by(2).map(|i| i as i64).collect();
        Tensor::<1, Int>::from_data(TensorData::new(values.clone(), [values.len()]), &device)
    };
    x.select(2, every_other(h)).select(3, every_other(w))
}
