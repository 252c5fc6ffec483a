//! BatchNorm (+ ReLU) as one differentiable op on flex's autodiff device: the forward pass of
//! [`super::forward`], the gradients of [`super::backward`], registered with Burn's autodiff
//! graph like the conv in `conv/autodiff.rs`.

use burn::tensor::Tensor;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_flex::{Flex, FlexTensor};

use super::backward::{batch_norm_backward, batch_norm_eval_backward};
use super::forward::batch_norm_forward;
use super::{BatchNormTrainOutput, ChannelStats};
use crate::flex_kernels::{FlexAutodiff, float_slice, into_primitive};

/// What the backward pass needs.
#[derive(Clone)]
struct Saved {
    input: FlexTensor,
    gamma: Vec<f32>,
    stats: ChannelStats,
    shape: [usize; 4],
    epsilon: f64,
    relu: bool,
    /// Normalised with the batch's statistics (training) or fixed ones (running statistics).
    batch_statistics: bool,
}

impl std::fmt::Debug for Saved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Saved")
            .field("shape", &self.shape)
            .field("relu", &self.relu)
            .finish()
    }
}

#[derive(Debug)]
struct BatchNormBackward;

impl Backward<Flex, 3> for BatchNormBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_input, node_gamma, node_beta] = ops.parents;
        let grad_out = grads.consume::<Flex>(&ops.node).to_contiguous();
        let saved = ops.state;
        let (Some(dy), Some(x)) = (float_slice(&grad_out), float_slice(&saved.input)) else {
            unreachable!("the forward pass checked that these are contiguous f32")
        };
        let (dx, dgamma, dbeta) = match saved.batch_statistics {
            true => batch_norm_backward(
                x,
                &saved.gamma,
                &saved.stats,
                dy,
                saved.shape,
                saved.epsilon,
                saved.relu,
            ),
            false => batch_norm_eval_backward(
                x,
                &saved.stats,
                dy,
                saved.shape,
                saved.epsilon,
                saved.relu,
            ),
        };
        let channels = [saved.shape[1]];
        for (node, grad) in [
            (node_input, into_primitive(dx, saved.shape)),
            (node_gamma, into_primitive(dgamma, channels)),
            (node_beta, into_primitive(dbeta, channels)),
        ] {
            if let Some(node) = node {
                grads.register::<Flex>(node.id, grad);
            }
        }
    }
}

/// The op behind [`try_batch_norm_train`] (`known = None`: batch statistics) and
/// [`try_batch_norm_eval`] (`known`: running statistics).
pub(super) fn batch_norm_op(
    x: &Tensor<4>,
    gamma: &Tensor<1>,
    beta: &Tensor<1>,
    epsilon: f64,
    relu: bool,
    known: Option<(&[f32], &[f32])>,
) -> Option<BatchNormTrainOutput> {
    let shape = x.dims();
    if gamma.dims() != [shape[1]]
        || beta.dims() != [shape[1]]
        || shape[0] * shape[2] * shape[3] == 0
    {
        return None;
    }
    let x = x.clone().try_into_primitive::<FlexAutodiff>().ok()?;
    let gamma = gamma.clone().try_into_primitive::<FlexAutodiff>().ok()?;
    let beta = beta.clone().try_into_primitive::<FlexAutodiff>().ok()?;
    let gamma_values = float_slice(gamma.primitive())?.to_vec();
    let batch_statistics = known.is_none();
    let (output, stats) = batch_norm_forward(
        float_slice(x.primitive())?,
        &gamma_values,
        float_slice(beta.primitive())?,
        shape,
        epsilon,
        relu,
        known,
    );
    let (mean, variance) = (stats.mean.clone(), stats.variance.clone());
    let output = into_primitive(output, shape);
    let output = match BatchNormBackward
        .prepare::<NoCheckpointing>([x.node(), gamma.node(), beta.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let saved = Saved {
                input: x.into_primitive(),
                gamma: gamma_values,
                stats,
                shape,
                epsilon,
                relu,
                batch_statistics,
            };
            prep.finish(saved, output)
        }
        OpsKind::UnTracked(prep) => prep.finish(output),
    };
    Some(BatchNormTrainOutput {
        output: Tensor::from_primitive::<FlexAutodiff>(output),
        mean,
        variance,
    })
}
