//! BatchNorm (+ ReLU) as one differentiable op on flex's autodiff device: the forward pass of
//! [`super::forward`], the gradients of [`super::backward`], registered with Burn's autodiff
//! graph like the conv in `conv/autodiff.rs`.

use burn::tensor::Tensor;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops};
use burn_flex::{Flex, FlexTensor};

use super::backward::{NormGradients, Tail, backward};
use super::forward::batch_norm_forward;
use super::{BatchNormTrainOutput, ChannelStats};
use crate::flex_kernels::{FlexAutodiff, float_slice, into_primitive, record_op};

/// What the backward pass needs.
#[derive(Clone)]
struct Saved {
    input: FlexTensor,
    gamma: Vec<f32>,
    stats: ChannelStats,
    shape: [usize; 4],
    epsilon: f64,
    relu: bool,
    /// The op's output, when a residual was added (the ReLU's mask is read there). The next
    /// op keeps the same tensor, so saving it costs no memory.
    residual_output: Option<FlexTensor>,
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

/// The backward step of the op with `N` parents: the input, γ, β, and the residual when one
/// was added (`N = 4`).
#[derive(Debug)]
struct BatchNormBackward<const N: usize>;

impl<const N: usize> Backward<Flex, N> for BatchNormBackward<N> {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, N>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad_out = grads.consume::<Flex>(&ops.node).to_contiguous();
        let saved = ops.state;
        let (Some(dy), Some(x)) = (float_slice(&grad_out), float_slice(&saved.input)) else {
            unreachable!("the forward pass checked that these are contiguous f32")
        };
        let tail = Tail {
            relu: saved.relu,
            residual_output: saved.residual_output.as_ref().and_then(float_slice),
        };
        let batch_gamma = saved.batch_statistics.then_some(&saved.gamma[..]);
        let NormGradients {
            input,
            gamma,
            beta,
            residual,
        } = backward(
            x,
            batch_gamma,
            &saved.stats,
            dy,
            saved.shape,
            saved.epsilon,
            tail,
        );
        let channels = [saved.shape[1]];
        let results = [
            Some(into_primitive(input, saved.shape)),
            Some(into_primitive(gamma, channels)),
            Some(into_primitive(beta, channels)),
            residual.map(|r| into_primitive(r, saved.shape)),
        ];
        for (node, grad) in ops.parents.into_iter().zip(results) {
            if let (Some(node), Some(grad)) = (node, grad) {
                grads.register::<Flex>(node.id, grad);
            }
        }
    }
}

/// The op behind [`try_batch_norm_train`](super::try_batch_norm_train) (`known = None`: batch
/// statistics) and [`try_batch_norm_eval`](super::try_batch_norm_eval) (`known`: running
/// statistics): `relu?(norm(x) + residual?)`.
pub(super) fn batch_norm_op(
    x: &Tensor<4>,
    (gamma, beta): (&Tensor<1>, &Tensor<1>),
    epsilon: f64,
    (residual, relu): (Option<&Tensor<4>>, bool),
    known: Option<(&[f32], &[f32])>,
) -> Option<BatchNormTrainOutput> {
    let shape = x.dims();
    if gamma.dims() != [shape[1]]
        || beta.dims() != [shape[1]]
        || residual.is_some_and(|r| r.dims() != shape)
        || shape[0] * shape[2] * shape[3] == 0
    {
        return None;
    }
    let x = x.clone().try_into_primitive::<FlexAutodiff>().ok()?;
    let gamma = gamma.clone().try_into_primitive::<FlexAutodiff>().ok()?;
    let beta = beta.clone().try_into_primitive::<FlexAutodiff>().ok()?;
    let residual = match residual {
        Some(r) => {
            let r = r.clone().try_into_primitive::<FlexAutodiff>().ok()?;
            let values = r.primitive().clone().to_contiguous();
            float_slice(&values)?;
            Some((r, values))
        }
        None => None,
    };
    let gamma_values = float_slice(gamma.primitive())?.to_vec();
    let (output, stats) = batch_norm_forward(
        float_slice(x.primitive())?,
        (&gamma_values, float_slice(beta.primitive())?),
        shape,
        epsilon,
        (residual.as_ref().and_then(|(_, v)| float_slice(v)), relu),
        known,
    );
    let (mean, variance) = (stats.mean.clone(), stats.variance.clone());
    let output = into_primitive(output, shape);
    let with_residual = residual.is_some();
    let saved = |output: &FlexTensor| Saved {
        input: x.primitive().clone(),
        gamma: gamma_values,
        stats,
        shape,
        epsilon,
        relu,
        residual_output: with_residual.then(|| output.clone()),
        batch_statistics: known.is_none(),
    };
    let output = match residual {
        None => record_op(
            BatchNormBackward::<3>,
            [x.node(), gamma.node(), beta.node()],
            saved,
            output,
        ),
        Some((r, _)) => record_op(
            BatchNormBackward::<4>,
            [x.node(), gamma.node(), beta.node(), r.node()],
            saved,
            output,
        ),
    };
    Some(BatchNormTrainOutput {
        output,
        mean,
        variance,
    })
}
