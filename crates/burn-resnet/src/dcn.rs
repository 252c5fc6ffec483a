//! Deformable convolution for the Bottleneck's 3x3 conv (mmdet `dcn` / `stage_with_dcn`):
//! mmcv's `DCN` (`DeformConv2dPack`) and `DCNv2` (`ModulatedDeformConv2dPack`) — run by
//! the deformable conv of `ops` (the project's kernels on flex, Burn's elsewhere) — and
//! [`SpatialConv`], the regular-or-deformable `conv2` of a Bottleneck.

use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Distribution, Tensor};
use serde::{Deserialize, Serialize};

use crate::arch::{BlockKind, StageSpec};
use crate::conv::ConvSpec;
use crate::error::{ResNetError, Result};

/// Which of mmcv's deformable convs (mmdet's `dcn.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DcnKind {
    /// mmcv `DCN` (DCNv1): learned offsets, no modulation.
    #[serde(rename = "DCN")]
    Deformable,
    /// mmcv `DCNv2`: learned offsets and a sigmoid mask per sample.
    #[serde(rename = "DCNv2")]
    Modulated,
}

impl DcnKind {
    /// Channels `conv_offset` gives per deform group and kernel position: `(dy, dx)`, plus the
    /// mask logit for DCNv2.
    pub fn parts(self) -> usize {
        match self {
            DcnKind::Deformable => 2,
            DcnKind::Modulated => 3,
        }
    }
}

/// mmdet's `dcn` dict: `dcn = { type = "DCNv2", deform_groups = 1, fallback_on_stride = false }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DcnConfig {
    /// mmdet `type`: `"DCN"` or `"DCNv2"`. Required.
    #[serde(rename = "type")]
    pub kind: DcnKind,
    /// mmcv `deform_groups`: channel groups with offsets of their own; must divide the conv's
    /// input channels. Default 1.
    #[serde(default = "one")]
    pub deform_groups: usize,
    /// mmdet `fallback_on_stride`: blocks whose 3x3 conv is strided keep a regular conv.
    /// Default false. (mmdet pops this key out of the dict shared by all blocks, so there only
    /// the first DCN block falls back, strided or not; here it means what it says.)
    #[serde(default)]
    pub fallback_on_stride: bool,
}

fn one() -> usize {
    1
}

/// Check `dcn` and `stage_with_dcn` against the stages: lengths, block kind, deform groups.
pub(crate) fn validate_dcn(
    dcn: Option<&DcnConfig>,
    stage_with_dcn: Option<&[bool]>,
    block: BlockKind,
    stages: &[StageSpec],
) -> Result<()> {
    if let Some(mask) = stage_with_dcn.filter(|mask| mask.len() != stages.len()) {
        return Err(ResNetError::WrongLength {
            field: "stage_with_dcn".into(),
            expected: stages.len(),
            got: mask.len(),
        });
    }
    let selected = stage_with_dcn.unwrap_or_default();
    let Some(dcn) = dcn else {
        if selected.contains(&true) {
            return Err(ResNetError::Incompatible {
                field: "stage_with_dcn".into(),
                reason: "selects stages for deformable convs, but `dcn` is not set; add e.g. \
                         dcn = { type = \"DCNv2\" }"
                    .into(),
            });
        }
        return Ok(());
    };
    if !selected.contains(&true) {
        return Err(ResNetError::Incompatible {
            field: "dcn".into(),
            reason: "is set, but stage_with_dcn selects no stage (mmdet's default is all false); \
                     e.g. stage_with_dcn = [false, true, true, true] for c3-c5"
                .into(),
        });
    }
    if !block.has_inner_conv() {
        return Err(ResNetError::Incompatible {
            field: "dcn".into(),
            reason: "deformable convs replace a Bottleneck's 3x3 conv2 (depth 50, 101, 152); \
                     BasicBlock (depth 18, 34) has none (mmdet does not implement it either)"
                .into(),
        });
    }
    if dcn.deform_groups == 0 {
        return Err(ResNetError::TooSmall {
            field: "dcn.deform_groups".into(),
            value: 0,
            min: 1,
        });
    }
    for (index, stage) in stages
        .iter()
        .enumerate()
        .filter(|(index, _)| selected[*index])
    {
        if !stage.width.is_multiple_of(dcn.deform_groups) {
            return Err(ResNetError::Incompatible {
                field: "dcn.deform_groups".into(),
                reason: format!(
                    "{} does not divide the {} input channels of stage {index}'s 3x3 conv",
                    dcn.deform_groups, stage.width
                ),
            });
        }
    }
    Ok(())
}

/// A deformable 3x3 conv with its offset conv: mmcv's `DeformConv2dPack` / `ModulatedDeformConv2dPack`.
///
/// `conv_offset(x)` gives, per deform group and kernel position, a `(dy, dx)` offset of the
/// sample (torchvision's interleaved layout) and, for DCNv2, a mask logit; the conv then
/// samples `x` bilinearly at the shifted positions (zero outside), weighting each sample by
/// `sigmoid(mask)`.
#[derive(Module, Debug)]
pub struct DeformConv {
    /// mmcv `weight`: `[out_channels, in_channels / groups, k, k]`.
    pub weight: Param<Tensor<4>>,
    /// Bias: none in mmdet's ResNet; set when a BatchNorm is folded in.
    pub bias: Option<Param<Tensor<1>>>,
    /// mmcv `conv_offset`: a conv with the main conv's kernel, stride, padding and dilation, and
    /// a bias, giving `deform_groups · parts · k²` channels; zero-initialised, so a new
    /// deformable conv starts as the regular conv (times 0.5 for DCNv2's mask).
    pub conv_offset: Conv2d,
    /// Shape of the main conv.
    #[module(skip)]
    pub spec: ConvSpec,
    /// DCN or DCNv2.
    #[module(skip)]
    pub kind: DcnKind,
    /// mmcv `deform_groups`.
    #[module(skip)]
    pub deform_groups: usize,
}

impl DeformConv {
    /// Build with mmcv's initialisation: DCNv2's weight uniform in `±1/√(in · k²)`
    /// (`ModulatedDeformConv2d.init_weights`), DCN's Kaiming-uniform (ReLU gain, fan-in
    /// `in / groups · k²`); `conv_offset` zero.
    pub fn init(spec: ConvSpec, dcn: &DcnConfig, device: &Device) -> Self {
        let k2 = spec.kernel * spec.kernel;
        let bound = match dcn.kind {
            DcnKind::Modulated => 1.0 / ((spec.in_channels * k2) as f64).sqrt(),
            DcnKind::Deformable => (6.0 / ((spec.in_channels / spec.groups * k2) as f64)).sqrt(),
        };
        let shape = [
            spec.out_channels,
            spec.in_channels / spec.groups,
            spec.kernel,
            spec.kernel,
        ];
        let offset_spec = Self::offset_spec(spec, dcn);
        let mut conv_offset = offset_spec.init(device);
        conv_offset.weight = Param::from_tensor(Tensor::zeros(conv_offset.weight.dims(), device));
        conv_offset.bias = Some(Param::from_tensor(Tensor::zeros(
            [offset_spec.out_channels],
            device,
        )));
        Self {
            weight: Param::from_tensor(Tensor::random(
                shape,
                Distribution::Uniform(-bound, bound),
                device,
            )),
            bias: None,
            conv_offset,
            spec,
            kind: dcn.kind,
            deform_groups: dcn.deform_groups,
        }
    }

    /// Shape of the offset conv of a deformable conv shaped `spec` (ungrouped, as mmcv's).
    pub fn offset_spec(spec: ConvSpec, dcn: &DcnConfig) -> ConvSpec {
        ConvSpec {
            out_channels: dcn
                .deform_groups
                .saturating_mul(dcn.kind.parts() * spec.kernel * spec.kernel),
            groups: 1,
            ..spec
        }
    }

    /// The offsets (and DCNv2's masks) for `x`, then the deformable conv.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let out = crate::ops::conv2d(&self.conv_offset, x.clone());
        let samples = self.deform_groups * self.spec.kernel * self.spec.kernel;
        // mmcv's DCNv2 chunks the output in three and concatenates the first two as the
        // offsets: that is the first two thirds as they are.
        let (offset, mask) = match self.kind {
            DcnKind::Deformable => (out, None),
            DcnKind::Modulated => (
                out.clone().narrow(1, 0, 2 * samples),
                Some(sigmoid(out.narrow(1, 2 * samples, samples))),
            ),
        };
        crate::ops::deform_conv2d(
            x,
            offset,
            mask,
            self.weight.val(),
            self.bias.as_ref().map(Param::val),
            &self.spec,
            self.deform_groups,
        )
    }
}

/// A Bottleneck's 3x3 `conv2`: regular, or deformable where `dcn`/`stage_with_dcn` say so.
/// Either way its checkpoint names are mmdet's (`conv2.weight`, `conv2.conv_offset.*`).
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum SpatialConv {
    /// A plain conv.
    Regular(Conv2d),
    /// mmcv's DCN / DCNv2.
    Deformable(DeformConv),
}

impl SpatialConv {
    /// Build `spec` as a deformable conv when `dcn` is given, as a regular one otherwise.
    pub fn init(spec: ConvSpec, dcn: Option<&DcnConfig>, device: &Device) -> Self {
        match dcn {
            Some(dcn) => SpatialConv::Deformable(DeformConv::init(spec, dcn, device)),
            None => SpatialConv::Regular(spec.init(device)),
        }
    }

    /// The conv's weight, `[out, in / groups, k, k]`.
    pub fn weight(&self) -> &Param<Tensor<4>> {
        match self {
            SpatialConv::Regular(conv) => &conv.weight,
            SpatialConv::Deformable(conv) => &conv.weight,
        }
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        match self {
            SpatialConv::Regular(conv) => conv.weight.dims()[0],
            SpatialConv::Deformable(conv) => conv.spec.out_channels,
        }
    }
}
