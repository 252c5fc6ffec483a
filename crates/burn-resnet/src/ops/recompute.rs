//! A residual block as one op that keeps only its input for the backward pass (`with_cp`), on
//! flex's autodiff device; `None` everywhere else, where the block runs op by op.

use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;

/// One conv → BatchNorm (batch statistics) unit of a recomputed block. Only the flex kernels
/// read its fields (without `flex` the op always returns `None`).
#[cfg_attr(not(feature = "flex"), allow(dead_code))]
pub(crate) struct RecomputedUnit<'a> {
    /// The conv (no bias).
    pub conv: &'a Conv2d,
    /// The norm's weight and bias (detached unless they train).
    pub gamma: Tensor<1>,
    /// See `gamma`.
    pub beta: Tensor<1>,
    /// The norm's epsilon.
    pub epsilon: f64,
}

/// A recomputed block's output and each unit's batch statistics (main units, then the
/// shortcut's): per-channel mean and biased variance, and the shape they were measured on.
pub(crate) struct RecomputedOutput {
    /// `relu(main(x) + shortcut(x))`.
    pub output: Tensor<4>,
    /// `(mean, variance, dims)` per unit.
    pub statistics: Vec<(Tensor<1>, Tensor<1>, [usize; 4])>,
}

/// `relu(main(x) + shortcut(x))` with `main` a chain of units (ReLU after all but the last) and
/// `shortcut` a projection unit or the identity, as one recomputed op; `None` where it does not
/// apply.
pub(crate) fn try_recomputed_block(
    x: &Tensor<4>,
    main: &[RecomputedUnit<'_>],
    shortcut: Option<&RecomputedUnit<'_>>,
) -> Option<RecomputedOutput> {
    #[cfg(feature = "flex")]
    {
        on_flex::try_recomputed_block(x, main, shortcut)
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = (x, main, shortcut);
        None
    }
}

/// The op on flex's autodiff device.
#[cfg(feature = "flex")]
mod on_flex {
    use burn::tensor::{Tensor, TensorData};

    use super::{RecomputedOutput, RecomputedUnit};
    use crate::flex_kernels::conv::conv_geometry;
    use crate::flex_kernels::recompute::{UnitSpec, try_recomputed_block as kernel};

    pub(super) fn try_recomputed_block(
        x: &Tensor<4>,
        main: &[RecomputedUnit<'_>],
        shortcut: Option<&RecomputedUnit<'_>>,
    ) -> Option<RecomputedOutput> {
        if !x.device().is_autodiff() {
            return None;
        }
        let weights: Vec<Tensor<4>> = main
            .iter()
            .chain(shortcut)
            .map(|unit| unit.conv.weight.val())
            .collect();
        let mut units = Vec::with_capacity(main.len());
        let mut input = x.dims();
        for (index, unit) in main.iter().enumerate() {
            let geometry = conv_geometry(unit.conv, input)?;
            if unit.conv.bias.is_some() {
                return None;
            }
            input = geometry.output()?;
            units.push(UnitSpec {
                weight: &weights[index],
                gamma: &unit.gamma,
                beta: &unit.beta,
                epsilon: unit.epsilon,
                geometry,
                relu: index + 1 < main.len(),
            });
        }
        let shortcut_unit = match shortcut {
            Some(unit) => {
                let geometry = conv_geometry(unit.conv, x.dims())?;
                if unit.conv.bias.is_some() || geometry.output()? != input {
                    return None;
                }
                Some(UnitSpec {
                    weight: &weights[main.len()],
                    gamma: &unit.gamma,
                    beta: &unit.beta,
                    epsilon: unit.epsilon,
                    geometry,
                    relu: false,
                })
            }
            None if input != x.dims() => return None,
            None => None,
        };

        let block = kernel(x, &units, shortcut_unit.as_ref())?;
        let device = x.device();
        let all_units = units.iter().chain(shortcut_unit.iter());
        let statistics = all_units
            .zip(block.statistics)
            .map(|(unit, (mean, variance))| {
                let channels = [mean.len()];
                let mean = Tensor::from_data(TensorData::new(mean, channels), &device);
                let variance = Tensor::from_data(TensorData::new(variance, channels), &device);
                Some((mean, variance, unit.geometry.output()?))
            })
            .collect::<Option<_>>()?;
        Some(RecomputedOutput {
            output: block.output,
            statistics,
        })
    }
}
