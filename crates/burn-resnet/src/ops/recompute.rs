//! `with_cp`: a residual block run as one op that keeps only its input for the backward pass
//! (`flex_kernels::recompute`), where that op applies: flex's autodiff device, BatchNorms
//! training on batch statistics, no plugins, no `avg_down` pool on the shortcut. Elsewhere the
//! block runs as usual (and `with_cp` saves nothing).

use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;

use crate::block::Downsample;
use crate::norm::{Norm, StageMode};

thread_local! {
    /// Blocks run by the recomputing op on this thread.
    static RECOMPUTED_BLOCKS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// How many blocks the calling thread has run through the recomputing op.
pub(crate) fn recomputed_blocks_on_this_thread() -> usize {
    RECOMPUTED_BLOCKS.with(std::cell::Cell::get)
}

/// `relu(main(x) + shortcut(x))` as one recomputed op, or `None` where it does not apply (the
/// caller then runs the block as usual). `main` lists the block's conv → norm units in order
/// (ReLU after all but the last).
pub(crate) fn recomputed_block(
    x: &Tensor<4>,
    main: &[(&Conv2d, &Norm)],
    downsample: Option<&Downsample>,
    mode: StageMode,
) -> Option<Tensor<4>> {
    #[cfg(feature = "flex")]
    {
        on_flex::recomputed_block(x, main, downsample, mode)
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = (x, main, downsample, mode);
        None
    }
}

/// The op on flex's autodiff device.
#[cfg(feature = "flex")]
mod on_flex {
    use burn::nn::BatchNorm;
    use burn::nn::conv::Conv2d;
    use burn::tensor::{Tensor, TensorData};

    use crate::block::Downsample;
    use crate::flex_kernels::conv::conv_geometry;
    use crate::flex_kernels::recompute::{UnitSpec, try_recomputed_block};
    use crate::norm::{Norm, StageMode, affine_values, update_running_statistics};

    use super::RECOMPUTED_BLOCKS;

    /// `relu(main(x) + shortcut(x))` as one recomputed op, or `None` where it does not apply.
    /// `main` lists the block's conv → norm units in order (ReLU after all but the last).
    pub(super) fn recomputed_block(
        x: &Tensor<4>,
        main: &[(&Conv2d, &Norm)],
        downsample: Option<&Downsample>,
        mode: StageMode,
    ) -> Option<Tensor<4>> {
        let autodiff = x.device().is_autodiff();
        if !mode.recompute || !autodiff {
            return None;
        }
        let shortcut = match downsample {
            Some(d) if d.avg_pool.is_some_and(|stride| stride > 1) => return None,
            Some(d) => Some((&d.conv, d.norm.training_batch_norm(mode, autodiff)?)),
            None => None,
        };
        let norms: Vec<&BatchNorm> = main
            .iter()
            .map(|(_, norm)| norm.training_batch_norm(mode, autodiff))
            .collect::<Option<_>>()?;
        let affine: Vec<(Tensor<1>, Tensor<1>)> = norms
            .iter()
            .chain(shortcut.iter().map(|(_, bn)| bn))
            .map(|bn| affine_values(bn, mode.train_affine))
            .collect();
        let weights: Vec<Tensor<4>> = main
            .iter()
            .map(|(conv, _)| conv.weight.val())
            .chain(shortcut.iter().map(|(conv, _)| conv.weight.val()))
            .collect();

        let mut units = Vec::with_capacity(main.len());
        let mut input = x.dims();
        for (index, ((conv, _), bn)) in main.iter().zip(&norms).enumerate() {
            let geometry = conv_geometry(conv, input)?;
            if conv.bias.is_some() {
                return None;
            }
            input = geometry.output()?;
            let (gamma, beta) = &affine[index];
            units.push(UnitSpec {
                weight: &weights[index],
                gamma,
                beta,
                epsilon: bn.epsilon,
                geometry,
                relu: index + 1 < main.len(),
            });
        }
        let shortcut_unit = match shortcut {
            Some((conv, bn)) => {
                let geometry = conv_geometry(conv, x.dims())?;
                if conv.bias.is_some() || geometry.output()? != input {
                    return None;
                }
                let (gamma, beta) = &affine[main.len()];
                Some(UnitSpec {
                    weight: &weights[main.len()],
                    gamma,
                    beta,
                    epsilon: bn.epsilon,
                    geometry,
                    relu: false,
                })
            }
            None if input != x.dims() => return None,
            None => None,
        };

        let block = try_recomputed_block(x, &units, shortcut_unit.as_ref())?;
        RECOMPUTED_BLOCKS.with(|count| count.set(count.get() + 1));
        let device = x.device();
        let all_norms = norms.iter().copied().chain(shortcut.map(|(_, bn)| bn));
        let all_units = units.iter().chain(shortcut_unit.iter());
        for ((bn, unit), (mean, variance)) in all_norms.zip(all_units).zip(block.statistics) {
            let channels = [mean.len()];
            let mean = Tensor::from_data(TensorData::new(mean, channels), &device);
            let variance = Tensor::from_data(TensorData::new(variance, channels), &device);
            update_running_statistics(bn, mean, variance, unit.geometry.output()?);
        }
        Some(block.output)
    }
}
