//! `with_cp`: a residual block run as one op that keeps only its input for the backward pass,
//! where that op applies: flex's autodiff device, BatchNorms training on batch statistics, no
//! plugins, no `avg_down` pool on the shortcut. Elsewhere the block runs as usual (and
//! `with_cp` saves nothing).

use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;

use super::Downsample;
use crate::norm::{Norm, StageMode, affine_values, update_running_statistics};
use crate::ops::{RecomputedUnit, try_recomputed_block};

thread_local! {
    /// Blocks run by the recomputing op on this thread.
    static RECOMPUTED_BLOCKS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// How many blocks the calling thread has run through the recomputing op.
pub(crate) fn recomputed_blocks_on_this_thread() -> usize {
    RECOMPUTED_BLOCKS.with(std::cell::Cell::get)
}

/// `relu(main(x) + shortcut(x))` as one recomputed op, or `None` where it does not apply.
/// `main` lists the block's conv → norm units in order (ReLU after all but the last).
pub(crate) fn recomputed_block(
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
    let main_units: Vec<RecomputedUnit<'_>> = main
        .iter()
        .zip(&norms)
        .map(|((conv, _), bn)| unit(conv, bn, mode))
        .collect();
    let shortcut_unit = shortcut.map(|(conv, bn)| unit(conv, bn, mode));

    let block = try_recomputed_block(x, &main_units, shortcut_unit.as_ref())?;
    RECOMPUTED_BLOCKS.with(|count| count.set(count.get() + 1));
    let all_norms = norms.iter().copied().chain(shortcut.map(|(_, bn)| bn));
    for (bn, (mean, variance, dims)) in all_norms.zip(block.statistics) {
        update_running_statistics(bn, mean, variance, dims);
    }
    Some(block.output)
}

/// A conv and its training BatchNorm as a unit of the recomputed op.
fn unit<'a>(conv: &'a Conv2d, bn: &BatchNorm, mode: StageMode) -> RecomputedUnit<'a> {
    let (gamma, beta) = affine_values(bn, mode.train_affine);
    RecomputedUnit {
        conv,
        gamma,
        beta,
        epsilon: bn.epsilon,
    }
}
