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

mod module;
mod spec;

pub use module::{ConvModule, Fpn};
pub use spec::{FpnSpec, MAX_EXTRA_LEVELS};

use burn::tensor::Device;
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
    /// mmdet `end_level`: last input level used (inclusive); -1 for the last, the default.
    #[serde(default = "last_level")]
    pub end_level: i64,
    /// mmdet `add_extra_convs`. Default false.
    #[serde(default)]
    pub add_extra_convs: ExtraConvs,
    /// mmdet `relu_before_extra_convs`: ReLU before every extra conv after the first. Default
    /// false.
    #[serde(default)]
    pub relu_before_extra_convs: bool,
}

/// `end_level`'s default: the last level.
fn last_level() -> i64 {
    -1
}

impl FpnConfig {
    /// `out_channels` and `num_outs`, everything else mmdet's default.
    pub fn new(out_channels: usize, num_outs: usize) -> Self {
        // The same defaults as serde's, from the same functions.
        Self {
            in_channels: None,
            out_channels,
            num_outs,
            start_level: Default::default(),
            end_level: last_level(),
            add_extra_convs: ExtraConvs::default(),
            relu_before_extra_convs: Default::default(),
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
