//! `with_cp`: a whole residual block as one differentiable op on flex's autodiff device that
//! keeps only the block's input for the backward pass and recomputes the rest there, as
//! mmdet's `with_cp` (`torch.utils.checkpoint` around a block) does.
//!
//! The block is a chain of conv → BatchNorm (training statistics) → optional ReLU units, plus an
//! optional projection unit on the shortcut, then `relu(main + shortcut)`. The backward pass
//! re-runs the forward with the project's kernels (bit-identical values, the statistics of the
//! forward pass reused) and then walks the chain back with the kernels' gradients.

use burn::tensor::Tensor;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops};
use burn_flex::{Flex, FlexTensor};

use super::batch_norm::{ChannelStats, batch_norm_backward, batch_norm_forward};
use super::conv::backward::weight_grad;
use super::conv::{ConvGeometry, training_conv, training_input_grad};
use super::{FlexAutodiff, float_slice, into_primitive, record_op};

/// The most units a block has: three convs on the main path and the projection.
const MAX_UNITS: usize = 4;
/// Parents of the op: the input, then (weight, gamma, beta) per unit, padded.
const PARENTS: usize = 1 + 3 * MAX_UNITS;

/// One conv → BatchNorm → (ReLU) unit, as the caller describes it.
pub struct UnitSpec<'a> {
    /// The conv's weight (no bias).
    pub weight: &'a Tensor<4>,
    /// BatchNorm weight.
    pub gamma: &'a Tensor<1>,
    /// BatchNorm bias.
    pub beta: &'a Tensor<1>,
    /// BatchNorm epsilon.
    pub epsilon: f64,
    /// The conv's geometry for this block's input.
    pub geometry: ConvGeometry,
    /// ReLU after the norm (all main-path units but the last).
    pub relu: bool,
}

/// A unit's tensors as the op keeps them.
#[derive(Clone)]
struct Unit {
    weight: FlexTensor,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    epsilon: f64,
    geometry: ConvGeometry,
    relu: bool,
    /// The statistics of the forward pass (the backward pass normalises with the same ones).
    stats: Option<ChannelStats>,
}

/// Everything the backward pass needs: the block input and the units (parameters and batch
/// statistics) — no activation.
#[derive(Clone)]
struct Saved {
    input: FlexTensor,
    main: Vec<Unit>,
    shortcut: Option<Unit>,
}

impl std::fmt::Debug for Saved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Saved")
            .field("units", &self.main.len())
            .field("shortcut", &self.shortcut.is_some())
            .finish()
    }
}

/// The activations of one forward pass.
struct Activations {
    /// Per main unit: its input and its conv output.
    main: Vec<(Vec<f32>, Vec<f32>)>,
    /// The shortcut's conv output (with a projection) or nothing (identity).
    shortcut_conv: Option<Vec<f32>>,
    /// `main + shortcut` before the final ReLU.
    sum: Vec<f32>,
}

/// Run the block; fills in the units' statistics when they are `None`.
fn run(input: &[f32], main: &mut [Unit], shortcut: Option<&mut Unit>) -> Activations {
    let apply = |unit: &mut Unit, x: &[f32]| {
        let weight = float_slice(&unit.weight).expect("checked when the op was built");
        let conv = training_conv(x, weight, &unit.geometry);
        let shape = unit
            .geometry
            .output()
            .expect("checked when the op was built");
        let (normalised, stats) = batch_norm_forward(
            &conv,
            (&unit.gamma, &unit.beta),
            shape,
            unit.epsilon,
            (None, unit.relu),
            unit.stats.as_ref().map(|s| (&s.mean[..], &s.variance[..])),
        );
        unit.stats = Some(stats);
        (conv, normalised)
    };
    let mut activations = Vec::with_capacity(main.len());
    let mut x = input.to_vec();
    for unit in main.iter_mut() {
        let (conv, normalised) = apply(unit, &x);
        activations.push((std::mem::replace(&mut x, normalised), conv));
    }
    let (shortcut_conv, shortcut_out) = match shortcut {
        Some(unit) => {
            let (conv, normalised) = apply(unit, input);
            (Some(conv), normalised)
        }
        None => (None, input.to_vec()),
    };
    let sum = x.iter().zip(&shortcut_out).map(|(a, b)| a + b).collect();
    Activations {
        main: activations,
        shortcut_conv,
        sum,
    }
}

#[derive(Debug)]
struct BlockBackward;

impl Backward<Flex, PARENTS> for BlockBackward {
    type State = Saved;

    fn backward(
        self,
        ops: Ops<Saved, PARENTS>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let grad_out = grads.consume::<Flex>(&ops.node).to_contiguous();
        let Saved {
            input,
            mut main,
            mut shortcut,
        } = ops.state;
        let x = float_slice(&input).expect("checked when the op was built");
        let activations = run(x, &mut main, shortcut.as_mut());
        let dy = float_slice(&grad_out).expect("a contiguous f32 gradient");
        // Through the final ReLU.
        let d_sum: Vec<f32> = dy
            .iter()
            .zip(&activations.sum)
            .map(|(&g, &s)| super::relu_backward(s, g))
            .collect();

        // (weight, gamma, beta) gradients per unit, main units first, then the shortcut's.
        let mut unit_grads: Vec<[Vec<f32>; 3]> = Vec::new();
        let backward_unit = |unit: &Unit, unit_input: &[f32], conv: &[f32], d_out: &[f32]| {
            let shape = unit
                .geometry
                .output()
                .expect("checked when the op was built");
            let stats = unit.stats.as_ref().expect("filled by the forward pass");
            let (d_conv, d_gamma, d_beta) = batch_norm_backward(
                conv,
                &unit.gamma,
                stats,
                d_out,
                shape,
                unit.epsilon,
                unit.relu,
            );
            let weight = float_slice(&unit.weight).expect("checked when the op was built");
            let d_weight = weight_grad(unit_input, &d_conv, &unit.geometry);
            (
                training_input_grad(weight, &d_conv, &unit.geometry),
                [d_weight, d_gamma, d_beta],
            )
        };
        let mut d = d_sum.clone();
        for (unit, (unit_input, conv)) in main.iter().zip(&activations.main).rev() {
            let (d_in, grads) = backward_unit(unit, unit_input, conv, &d);
            unit_grads.push(grads);
            d = d_in;
        }
        unit_grads.reverse();
        let d_input: Vec<f32> = match (&shortcut, &activations.shortcut_conv) {
            (Some(unit), Some(conv)) => {
                let (d_shortcut, grads) = backward_unit(unit, x, conv, &d_sum);
                unit_grads.push(grads);
                d.iter().zip(&d_shortcut).map(|(a, b)| a + b).collect()
            }
            _ => d.iter().zip(&d_sum).map(|(a, b)| a + b).collect(),
        };

        let units = main.iter().chain(shortcut.iter());
        let mut parents = ops.parents.into_iter();
        if let Some(Some(node)) = parents.next() {
            grads.register::<Flex>(
                node.id,
                into_primitive(d_input, input.layout().shape().dims::<4>()),
            );
        }
        for (unit, [d_weight, d_gamma, d_beta]) in units.zip(unit_grads) {
            let weight_shape = unit.weight.layout().shape().dims::<4>();
            let channels = [unit.gamma.len()];
            for grad in [
                into_primitive(d_weight, weight_shape),
                into_primitive(d_gamma, channels),
                into_primitive(d_beta, channels),
            ] {
                if let Some(Some(node)) = parents.next() {
                    grads.register::<Flex>(node.id, grad);
                }
            }
        }
    }
}

/// The output of [`try_recomputed_block`] and each unit's batch statistics (main units,
/// then the shortcut's), for the caller's running-statistics update.
pub struct RecomputedBlock {
    /// The block's output.
    pub output: Tensor<4>,
    /// Each unit's batch mean and biased variance per channel.
    pub statistics: Vec<(Vec<f32>, Vec<f32>)>,
}

/// Run a block as one op that keeps only `x` for the backward pass, when `x` and every
/// parameter live on flex's autodiff device as contiguous f32; `None` otherwise.
pub fn try_recomputed_block(
    x: &Tensor<4>,
    main: &[UnitSpec],
    shortcut: Option<&UnitSpec>,
) -> Option<RecomputedBlock> {
    if main.is_empty() || main.len() + usize::from(shortcut.is_some()) > MAX_UNITS {
        return None;
    }
    let input = x.clone().try_into_primitive::<FlexAutodiff>().ok()?;
    let mut guards = vec![input.node()];
    let mut unit = |spec: &UnitSpec| -> Option<Unit> {
        let weight = spec
            .weight
            .clone()
            .try_into_primitive::<FlexAutodiff>()
            .ok()?;
        let gamma = spec
            .gamma
            .clone()
            .try_into_primitive::<FlexAutodiff>()
            .ok()?;
        let beta = spec
            .beta
            .clone()
            .try_into_primitive::<FlexAutodiff>()
            .ok()?;
        float_slice(weight.primitive())?;
        let gamma_values = float_slice(gamma.primitive())?.to_vec();
        let beta_values = float_slice(beta.primitive())?.to_vec();
        guards.extend([weight.node(), gamma.node(), beta.node()]);
        Some(Unit {
            weight: weight.into_primitive(),
            gamma: gamma_values,
            beta: beta_values,
            epsilon: spec.epsilon,
            geometry: spec.geometry,
            relu: spec.relu,
            stats: None,
        })
    };
    let mut main_units = main.iter().map(&mut unit).collect::<Option<Vec<_>>>()?;
    let mut shortcut_unit = match shortcut {
        Some(spec) => Some(unit(spec)?),
        None => None,
    };
    float_slice(input.primitive())?;
    // Pad the parents with an untracked tensor's node: those slots get no gradient.
    let padding = Tensor::<1>::zeros([1], &x.device())
        .try_into_primitive::<FlexAutodiff>()
        .ok()?;
    while guards.len() < PARENTS {
        guards.push(padding.node());
    }
    let guards: [_; PARENTS] = guards.try_into().ok()?;

    let activations = run(
        float_slice(input.primitive())?,
        &mut main_units,
        shortcut_unit.as_mut(),
    );
    let output_shape = main.last()?.geometry.output()?;
    let output = into_primitive(
        activations.sum.iter().map(|&v| super::relu(v)).collect(),
        output_shape,
    );
    let statistics = main_units
        .iter()
        .chain(shortcut_unit.iter())
        .map(|u| {
            u.stats
                .as_ref()
                .map(|s| (s.mean.clone(), s.variance.clone()))
        })
        .collect::<Option<Vec<_>>>()?;
    let saved = |_: &FlexTensor| Saved {
        input: input.into_primitive(),
        main: main_units,
        shortcut: shortcut_unit,
    };
    Some(RecomputedBlock {
        output: record_op(BlockBackward, guards, saved, output),
        statistics,
    })
}
