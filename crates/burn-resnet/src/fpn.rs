//! mmdet's `FPN` neck: 1x1 lateral convs on the backbone's levels, a top-down path (nearest
//! upsampling, added), a 3x3 conv per level, and extra coarser levels (max-pool, or stride-2
//! convs on the last input, lateral or output).
//!
//! Built from a [`FpnConfig`] and the backbone's [`FeatureInfo`], it embeds
//! next to the backbone in a model of your own:
//!
//! ```
//! use burn::module::Module;
//! use burn::tensor::{Device, Tensor};
//! use burn_resnet::fpn::{Fpn, FpnConfig};
//! use burn_resnet::{ResNet, ResNetConfig};
//!
//! #[derive(Module, Debug)]
//! struct Detector {
//!     backbone: ResNet,
//!     neck: Fpn,
//! }
//!
//! let device = Device::flex();
//! let backbone = ResNetConfig::from_toml_str("depth = 50\nbase_channels = 8\nfrozen_stages = 1", "inline")?
//!     .init(&device)?;
//! let neck = FpnConfig::new(16, 5).init(&backbone.feature_info(), &device)?;
//! let model = Detector { backbone, neck };
//! // What the backbone returns, for sizing what comes after it.
//! let info = model.backbone.feature_info();
//! assert_eq!(info.iter().map(|f| (f.channels, f.reduction)).collect::<Vec<_>>(), [(32, 4), (64, 8), (128, 16), (256, 32)]);
//! let images = Tensor::random([1, 3, 64, 64], burn::tensor::Distribution::Default, &device);
//! let levels = model.neck.forward(&model.backbone.forward(images.clone()));
//! assert_eq!(levels.iter().map(|l| l.dims()[2]).collect::<Vec<_>>(), [16, 8, 4, 2, 1]);
//!
//! // Saved and loaded as one module (Burn's burnpack format), backbone and neck together.
//! use burn::store::{BurnpackStore, ModuleSnapshot};
//! let path = std::env::temp_dir().join(format!("detector-{}.bpk", std::process::id()));
//! model.save_into(&mut BurnpackStore::from_file(&path).overwrite(true)).expect("saved");
//! let mut fresh = Detector {
//!     backbone: model.backbone.spec().init(&device),
//!     neck: model.neck.spec.init(&device),
//! };
//! let result = fresh.load_from(&mut BurnpackStore::from_file(&path)).expect("loaded");
//! assert!(result.missing.is_empty());
//! let again = fresh.neck.forward(&fresh.backbone.forward(images));
//! assert_eq!(again[0].clone().into_data(), levels[0].clone().into_data());
//! # std::fs::remove_file(&path).ok();
//! # Ok::<(), burn_resnet::ResNetError>(())
//! ```
//!
//! `frozen_stages` in the backbone's config freezes its first stages inside such a model (no
//! gradients, norms on running statistics); `ResNet::param_group()` gives the backbone its own
//! learning rate.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::{ResNetError, Result};
use crate::features::FeatureInfo;
use crate::memory::{MemoryEstimate, MemoryLimit};

/// Where mmdet's extra convs start (`add_extra_convs` as a string).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExtraSource {
    /// The last backbone level used (RetinaNet).
    OnInput,
    /// The last lateral conv's output.
    OnLateral,
    /// The last FPN output (FCOS).
    OnOutput,
}

/// mmdet's `add_extra_convs`: `false` (extra levels by max-pooling), `true` (= `"on_input"`) or
/// a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ExtraConvs {
    /// `false`: extra levels are the last output max-pooled (kernel 1, stride 2); `true`: convs
    /// on the input.
    Flag(bool),
    /// Stride-2 3x3 convs starting from this map.
    Source(ExtraSource),
}

impl Default for ExtraConvs {
    fn default() -> Self {
        ExtraConvs::Flag(false)
    }
}

impl ExtraConvs {
    /// The source of the extra convs, if there are any.
    pub fn source(self) -> Option<ExtraSource> {
        match self {
            ExtraConvs::Flag(false) => None,
            ExtraConvs::Flag(true) => Some(ExtraSource::OnInput),
            ExtraConvs::Source(source) => Some(source),
        }
    }
}

/// mmdet's `FPN(...)` arguments (without norm and activation, which mmdet's FPN configs leave
/// off). TOML: `out_channels`, `num_outs`, and optionally the rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FpnConfig {
    /// mmdet `in_channels`: channels of each input level. Default: the backbone's outputs
    /// ([`FeatureInfo`]); when given, it must match them.
    #[serde(default)]
    pub in_channels: Option<Vec<usize>>,
    /// mmdet `out_channels` of every level.
    pub out_channels: usize,
    /// mmdet `num_outs`: levels returned.
    pub num_outs: usize,
    /// mmdet `start_level`: first input level used. Default 0.
    #[serde(default)]
    pub start_level: usize,
    /// mmdet `end_level`: last input level used (inclusive); -1 for the last. Default -1.
    #[serde(default = "minus_one")]
    pub end_level: i64,
    /// mmdet `add_extra_convs`. Default false.
    #[serde(default)]
    pub add_extra_convs: ExtraConvs,
    /// mmdet `relu_before_extra_convs`: ReLU before every extra conv after the first. Default
    /// false.
    #[serde(default)]
    pub relu_before_extra_convs: bool,
}

fn minus_one() -> i64 {
    -1
}

/// A validated [`FpnConfig`] for given input channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FpnSpec {
    /// Channels of every input level.
    pub in_channels: Vec<usize>,
    /// Channels of every output level.
    pub out_channels: usize,
    /// Levels returned.
    pub num_outs: usize,
    /// First input level used.
    pub start_level: usize,
    /// One past the last input level used (mmdet's `backbone_end_level`).
    pub end: usize,
    /// Source of the extra convs, if any.
    pub extra: Option<ExtraSource>,
    /// ReLU before the extra convs after the first.
    pub relu_before_extra_convs: bool,
}

impl FpnConfig {
    /// `out_channels` and `num_outs`, everything else mmdet's default.
    pub fn new(out_channels: usize, num_outs: usize) -> Self {
        Self {
            in_channels: None,
            out_channels,
            num_outs,
            start_level: 0,
            end_level: -1,
            add_extra_convs: ExtraConvs::default(),
            relu_before_extra_convs: false,
        }
    }

    /// Check the config against the backbone's outputs.
    pub fn validate(&self, features: &[FeatureInfo]) -> Result<FpnSpec> {
        self.validate_channels(&features.iter().map(|f| f.channels).collect::<Vec<_>>())
    }

    /// Check the config against input levels of these channels.
    pub fn validate_channels(&self, in_channels: &[usize]) -> Result<FpnSpec> {
        let in_channels = in_channels.to_vec();
        let incompatible = |field: &str, reason: String| {
            Err(ResNetError::Incompatible {
                field: format!("neck.{field}"),
                reason,
            })
        };
        if let Some(given) = self
            .in_channels
            .as_ref()
            .filter(|given| **given != in_channels)
        {
            return incompatible(
                "in_channels",
                format!("{given:?} differ from the backbone's outputs {in_channels:?}"),
            );
        }
        let inputs = in_channels.len();
        if inputs == 0 {
            return incompatible("in_channels", "the backbone has no outputs".into());
        }
        for (field, value) in [
            ("out_channels", self.out_channels),
            ("num_outs", self.num_outs),
        ] {
            if value == 0 {
                return Err(ResNetError::TooSmall {
                    field: format!("neck.{field}"),
                    value,
                    min: 1,
                });
            }
        }
        if self.start_level >= inputs {
            return incompatible(
                "start_level",
                format!(
                    "{} is not one of the {inputs} input levels",
                    self.start_level
                ),
            );
        }
        let end = if self.end_level == -1 || self.end_level == inputs as i64 - 1 {
            if self.num_outs < inputs - self.start_level {
                return incompatible(
                    "num_outs",
                    format!(
                        "{} is fewer than the {} levels used",
                        self.num_outs,
                        inputs - self.start_level
                    ),
                );
            }
            inputs
        } else {
            if !(self.start_level as i64..inputs as i64 - 1).contains(&self.end_level) {
                return incompatible(
                    "end_level",
                    format!(
                        "{} must be -1 or in {}..{}",
                        self.end_level,
                        self.start_level,
                        inputs - 1
                    ),
                );
            }
            let used = self.end_level as usize - self.start_level + 1;
            if self.num_outs != used {
                return incompatible(
                    "num_outs",
                    format!(
                        "{} must equal the {used} levels start_level..=end_level",
                        self.num_outs
                    ),
                );
            }
            self.end_level as usize + 1
        };
        let spec = FpnSpec {
            in_channels,
            out_channels: self.out_channels,
            num_outs: self.num_outs,
            start_level: self.start_level,
            end,
            extra: self.add_extra_convs.source(),
            relu_before_extra_convs: self.relu_before_extra_convs,
        };
        // Each extra level halves the last map: past 32 of them every level is 1x1 (a stride
        // of 2^37 and more), so more is a typo, not a pyramid.
        let extra_levels = spec.extra_levels();
        if extra_levels > MAX_EXTRA_LEVELS {
            return incompatible(
                "num_outs",
                format!(
                    "{} asks for {extra_levels} extra levels; at most {MAX_EXTRA_LEVELS}",
                    self.num_outs
                ),
            );
        }
        if spec.params().is_none() {
            return Err(ResNetError::Overflow {
                field: "neck.out_channels".into(),
                what: "the FPN's parameter count".into(),
            });
        }
        Ok(spec)
    }

    /// Validate, check that the weights fit in memory ([`MemoryLimit::from_env`]), then build
    /// with mmdet's init (Xavier-uniform convs, zero biases).
    pub fn init(&self, features: &[FeatureInfo], device: &Device) -> Result<Fpn> {
        let spec = self.validate(features)?;
        let params = spec.params().unwrap_or(u64::MAX) as usize;
        let estimate =
            MemoryEstimate::weights_only(params).ok_or_else(|| ResNetError::Overflow {
                field: "neck.out_channels".into(),
                what: "the FPN's weight bytes".into(),
            })?;
        estimate.check(
            &format!("building the FPN ({params} parameters)"),
            &MemoryLimit::from_env()?,
        )?;
        Ok(spec.init(device))
    }
}

/// The most extra (coarser than the backbone's) levels an FPN may add.
pub const MAX_EXTRA_LEVELS: usize = 32;

impl FpnSpec {
    /// Extra levels past the last input level used.
    fn extra_levels(&self) -> usize {
        self.num_outs
            .saturating_add(self.start_level)
            .saturating_sub(self.end)
    }

    /// Trainable parameters (conv weights and biases), `None` when they do not fit in 64 bits.
    pub fn params(&self) -> Option<u64> {
        let out = self.out_channels as u64;
        let conv = |inputs: usize, kernel: u64| {
            (inputs as u64)
                .checked_mul(out)?
                .checked_mul(kernel * kernel)?
                .checked_add(out)
        };
        let mut total = 0u64;
        for i in self.start_level..self.end {
            total = total
                .checked_add(conv(self.in_channels[i], 1)?)?
                .checked_add(conv(self.out_channels, 3)?)?;
        }
        if let Some(source) = self.extra {
            for i in 0..self.extra_levels() {
                let inputs = if i == 0 && source == ExtraSource::OnInput {
                    self.in_channels[self.end - 1]
                } else {
                    self.out_channels
                };
                total = total.checked_add(conv(inputs, 3)?)?;
            }
        }
        Some(total)
    }

    /// Values per image the neck makes for input levels of these `[height, width]` sizes (a
    /// lateral, a merged and an output map per used level, and each extra level), `None` when
    /// they do not fit in 64 bits: what training keeps for the backward pass.
    pub fn activations(&self, level_sizes: &[[usize; 2]]) -> Option<u64> {
        let out = self.out_channels as u64;
        let map = |[h, w]: [usize; 2]| out.checked_mul(h as u64)?.checked_mul(w as u64);
        let mut total = 0u64;
        for size in &level_sizes[self.start_level..self.end] {
            total = total.checked_add(map(*size)?.checked_mul(3)?)?;
        }
        let mut size = level_sizes[self.end - 1];
        for _ in 0..self.extra_levels() {
            size = size.map(|side| side.div_ceil(2));
            total = total.checked_add(map(size)?)?;
        }
        Some(total)
    }
}

/// mmcv's `ConvModule` without norm and activation: a conv with a bias (checkpoint names
/// `….conv.weight`, `….conv.bias`).
#[derive(Module, Debug)]
pub struct ConvModule {
    /// The conv.
    pub conv: Conv2d,
}

impl ConvModule {
    fn init(
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

impl FpnSpec {
    /// Build with mmdet's init: Xavier-uniform convs (gain 1), zero biases.
    pub fn init(&self, device: &Device) -> Fpn {
        let used = self.start_level..self.end;
        let lateral_convs = used
            .clone()
            .map(|i| ConvModule::init(self.in_channels[i], self.out_channels, 1, 1, device))
            .collect();
        let mut fpn_convs: Vec<ConvModule> = used
            .map(|_| ConvModule::init(self.out_channels, self.out_channels, 3, 1, device))
            .collect();
        if let Some(source) = self.extra {
            for i in 0..self.extra_levels() {
                let inputs = match (i, source) {
                    (0, ExtraSource::OnInput) => self.in_channels[self.end - 1],
                    _ => self.out_channels,
                };
                fpn_convs.push(ConvModule::init(inputs, self.out_channels, 3, 2, device));
            }
        }
        Fpn {
            lateral_convs,
            fpn_convs,
            spec: self.clone(),
        }
    }
}

impl Fpn {
    /// The pyramid, finest first: `num_outs` maps of `out_channels`. `inputs` are the backbone's
    /// outputs in order.
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
