//! The check that every figure a validated config implies fits in 64 bits, and which field to
//! blame when one does not: what lets the summary, the modules' sizes and the strides be
//! computed without wrapping.

use crate::config::{ResNetConfig, ResNetSpec};
use crate::error::{ResNetError, Result};
use crate::summary::ModelSummary;

/// Sets one field of a config to its default.
type Reset = fn(&mut ResNetConfig, &ResNetConfig);

/// Check that every figure of the spec fits in 64 bits (so that the summary, the modules' sizes
/// and the strides never wrap): the total stride, then the parameter counts at a 1x1 input.
pub(crate) fn check_figures(spec: &ResNetSpec) -> Result<()> {
    let stem_stride = crate::stem::stem_convs(spec)
        .iter()
        .map(|conv| conv.stride)
        .product::<usize>()
        * crate::stem::STEM_POOL.1;
    let mut strides = [stem_stride]
        .into_iter()
        .chain(spec.stages.iter().map(|s| s.stride));
    if strides
        .try_fold(1usize, |product, stride| product.checked_mul(stride))
        .is_none()
    {
        return Err(ResNetError::Overflow {
            field: "strides".into(),
            what: "the total stride (4 × the strides' product)".into(),
        });
    }
    let Err(stage) = ModelSummary::count(spec, 1, 1) else {
        return Ok(());
    };
    // The field at fault: the first whose default makes the figures fit.
    let defaults = ResNetConfig::new(spec.config.depth);
    let candidates: [(&str, Reset); 9] = [
        ("plugins", |c, _| c.plugins.clear()),
        ("in_channels", |c, d| c.in_channels = d.in_channels),
        ("stem_channels", |c, d| c.stem_channels = d.stem_channels),
        ("base_channels", |c, d| c.base_channels = d.base_channels),
        ("groups", |c, d| c.groups = d.groups),
        ("base_width", |c, d| c.base_width = d.base_width),
        ("scales", |c, d| c.scales = d.scales),
        ("radix", |c, d| c.radix = d.radix),
        ("dilations", |c, d| c.dilations = d.dilations.clone()),
    ];
    let fits = |reset: Reset| {
        let mut config = spec.config.clone();
        reset(&mut config, &defaults);
        config
            .resolve()
            .is_ok_and(|spec| ModelSummary::count(&spec, 1, 1).is_ok())
    };
    let field = candidates.iter().find(|(_, reset)| fits(*reset)).map_or(
        "in_channels, stem_channels, base_channels, groups, base_width, scales, radix, dilations or \
         plugins",
        |(field, _)| field,
    );
    Err(ResNetError::Overflow {
        field: field.into(),
        what: format!("{stage}'s parameter count"),
    })
}
