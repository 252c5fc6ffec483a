//! A conv, then a BatchNorm on its running statistics (`norm_eval`, frozen stages, `FrozenBN`),
//! then `+ residual` and a ReLU, as one differentiable op on flex's autodiff device.
//!
//! The norm is then a per-channel map `y = scale · conv(x, W) + shift`, applied in the conv's
//! epilogue (the Winograd conv's, or after the GEMM, while the output is in cache): the same
//! products and sums as the conv op followed by the norm op, so the same numbers to the bit.
//! With `g` the gradient the ReLU lets through and `h = scale · g`, the conv's output gradient,
//! the input and weight gradients are the conv's of `h`, and the residual's is `g`.
//!
//! - A norm whose weight and bias do not train (`FrozenBN`; mmdet's `requires_grad = False`):
//!   the conv's output before the norm is never stored, and the backward step needs only what
//!   the graph keeps anyway, the conv's input and the op's output (the ReLU's mask).
//! - A norm whose weight and bias train (mmdet's default with `norm_eval`): `dγ = Σ g · x̂` needs
//!   the normalised conv output, so the conv's output is written beside the op's (from the same
//!   values in cache) and kept, as the separate norm op would keep its input. The backward step
//!   is the norm op's (`batch_norm::backward`) and then the conv op's, so the gradients are
//!   theirs to the bit too; the op saves the norm's forward pass over memory and a graph node.

use burn::tensor::Tensor;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, NodeGuard, Ops};
use burn_flex::{Flex, FlexTensor};

use super::backward::weight_grad;
use super::fixed_map::{Passed, add_relu, passed_gradient};
use super::forward::{ConvGeometry, Epilogue, conv2d, conv2d_keeping_product};
use super::training_input_grad;
use crate::flex_kernels::batch_norm::ChannelStats;
use crate::flex_kernels::batch_norm::backward::{NormGradients, Tail, backward};
use crate::flex_kernels::blocked::single::{
    WinogradEpilogue, winograd_conv_keeping_product, winograd_conv_with,
};
use crate::flex_kernels::{
    FlexAutodiff, batch_norm_affine, float_slice, into_primitive, record_op,
};

/// The BatchNorm after the conv, as [`try_conv2d_norm_eval`] takes it.
#[derive(Clone, Copy)]
pub enum EvalNorm<'a> {
    /// Weight and bias that do not train, folded with the running statistics into the map
    /// `· scale + shift` ([`super::running_affine`]).
    Fixed {
        /// `γ / √(var + ε)` per channel.
        scale: &'a [f32],
        /// `β − mean · scale` per channel.
        shift: &'a [f32],
    },
    /// Weight `gamma` and bias `beta` that train (tensors on flex's autodiff device), with the
    /// running statistics `mean` and `variance`.
    Trainable {
        /// The norm's weight, `[channels]`.
        gamma: &'a Tensor<1>,
        /// The norm's bias, `[channels]`.
        beta: &'a Tensor<1>,
        /// The running mean.
        mean: &'a [f32],
        /// The running variance.
        variance: &'a [f32],
        /// The norm's `eps`.
        epsilon: f64,
    },
}

/// A trainable norm's weight and bias as the op's parents, and its map.
struct TrainableAffine {
    /// γ's and β's nodes in the graph.
    nodes: [NodeGuard; 2],
    /// The running statistics and the map `· scale + shift` they give with γ and β.
    stats: ChannelStats,
    epsilon: f64,
}

impl TrainableAffine {
    /// `None` unless γ and β are f32 on flex's autodiff device, of the statistics' length.
    fn new(
        gamma: &Tensor<1>,
        beta: &Tensor<1>,
        (mean, variance): (&[f32], &[f32]),
        epsilon: f64,
    ) -> Option<Self> {
        let gamma = gamma.clone().try_into_primitive::<FlexAutodiff>().ok()?;
        let beta = beta.clone().try_into_primitive::<FlexAutodiff>().ok()?;
        let (gamma_values, beta_values) = (
            float_slice(gamma.primitive())?,
            float_slice(beta.primitive())?,
        );
        let lengths = [beta_values.len(), mean.len(), variance.len()];
        if lengths.iter().any(|&len| len != gamma_values.len()) {
            return None;
        }
        let (scale, shift) = batch_norm_affine(gamma_values, beta_values, mean, variance, epsilon);
        let stats = ChannelStats {
            mean: mean.to_vec(),
            variance: variance.to_vec(),
            scale,
            shift,
        };
        Some(Self {
            nodes: [gamma.node(), beta.node()],
            stats,
            epsilon,
        })
    }
}

/// The norm's map as the forward pass applies it: borrowed where it is fixed, computed (with
/// γ's and β's nodes) where it trains.
enum NormMap<'a> {
    Fixed { scale: &'a [f32], shift: &'a [f32] },
    Trainable(TrainableAffine),
}

impl NormMap<'_> {
    /// The lengths of the map's scale and shift.
    fn lengths(&self) -> [usize; 2] {
        match self {
            Self::Fixed { scale, shift } => [scale.len(), shift.len()],
            Self::Trainable(affine) => [affine.stats.scale.len(), affine.stats.shift.len()],
        }
    }
}

/// What the backward step needs of the norm.
#[derive(Clone)]
enum SavedNorm {
    /// The fixed map's scale.
    Fixed(Vec<f32>),
    /// The conv's output before the norm, and what the norm op's backward pass reads.
    Trainable {
        product: FlexTensor,
        stats: ChannelStats,
        epsilon: f64,
    },
}

/// What the backward step needs; the tensors are shared with the graph, not copied.
#[derive(Clone)]
struct Saved {
    input: FlexTensor,
    weight: FlexTensor,
    norm: SavedNorm,
    /// The op's output, where the ReLU's mask is read (with a fixed map and a ReLU, or after a
    /// residual); `None`: no residual, and no ReLU or the mask recomputed from the product.
    output: Option<FlexTensor>,
    relu: bool,
    residual: bool,
    geometry: ConvGeometry,
}

impl std::fmt::Debug for Saved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Saved")
            .field("geometry", &self.geometry)
            .field("relu", &self.relu)
            .finish()
    }
}

/// The backward step of the op with `N` parents: the input, the weight, then the norm's weight
/// and bias when they train, then the residual when one was added.
#[derive(Debug)]
struct ConvNormBackward<const N: usize>;

impl<const N: usize> Backward<Flex, N> for ConvNormBackward<N> {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, N>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad_out = grads.consume::<Flex>(&ops.node).to_contiguous();
        let saved = ops.state;
        let (Some(dy), Some(x), Some(w)) = (
            float_slice(&grad_out),
            float_slice(&saved.input),
            float_slice(&saved.weight),
        ) else {
            unreachable!("the forward pass checked that these are contiguous f32")
        };
        let geometry = saved.geometry;
        let output_shape = geometry.output().expect("checked by the forward pass");
        let mut parents = ops.parents.iter().map(|p| p.as_ref().map(|node| node.id));
        let (node_input, node_weight) = (parents.next().flatten(), parents.next().flatten());
        let output = saved.output.as_ref().and_then(float_slice);
        let passed = match &saved.norm {
            SavedNorm::Fixed(scale) => {
                let relu = saved.relu.then_some(output).flatten();
                passed_gradient(dy, relu, output_shape, scale, saved.residual)
            }
            SavedNorm::Trainable {
                product,
                stats,
                epsilon,
            } => {
                let product = float_slice(product).expect("saved contiguous f32");
                // The norm's backward pass returns a residual's gradient only when given the
                // output it was added to: taken from the residual flag, so that a residual
                // can never go without its gradient.
                let tail = Tail {
                    relu: saved.relu,
                    residual_output: saved
                        .residual
                        .then(|| output.expect("the output is kept after a residual")),
                };
                let NormGradients {
                    input,
                    gamma,
                    beta,
                    residual,
                } = backward(product, None, stats, dy, output_shape, *epsilon, tail);
                let channels = [output_shape[1]];
                for grad in [gamma, beta] {
                    if let Some(id) = parents.next().flatten() {
                        grads.register::<Flex>(id, into_primitive(grad, channels));
                    }
                }
                Passed {
                    scaled: input,
                    unscaled: residual,
                }
            }
        };
        let node_residual = parents.next().flatten();
        if let Some(id) = node_input {
            let dx = training_input_grad(w, &passed.scaled, &geometry);
            grads.register::<Flex>(id, into_primitive(dx, geometry.input));
        }
        if let Some(id) = node_weight {
            let shape = [
                geometry.out_channels,
                geometry.input[1] / geometry.groups,
                geometry.kernel[0],
                geometry.kernel[1],
            ];
            let dw = weight_grad(x, &passed.scaled, &geometry);
            grads.register::<Flex>(id, into_primitive(dw, shape));
        }
        if let (Some(id), Some(g)) = (node_residual, passed.unscaled) {
            grads.register::<Flex>(id, into_primitive(g, output_shape));
        }
    }
}

/// `relu?(norm(conv(x)) + residual?)` for a bias-free conv with `weight` of `geometry` and a
/// BatchNorm on its running statistics ([`EvalNorm`]), differentiable in `x`, the weight, the
/// norm's weight and bias where they train, and the residual, on flex's autodiff device; `None`
/// where it does not apply.
pub fn try_conv2d_norm_eval(
    x: &Tensor<4>,
    weight: &Tensor<4>,
    geometry: &ConvGeometry,
    norm: EvalNorm,
    (residual, relu): (Option<&Tensor<4>>, bool),
) -> Option<Tensor<4>> {
    let output_shape = geometry.output()?;
    let norm = match norm {
        EvalNorm::Fixed { scale, shift } => NormMap::Fixed { scale, shift },
        EvalNorm::Trainable {
            gamma,
            beta,
            mean,
            variance,
            epsilon,
        } => NormMap::Trainable(TrainableAffine::new(
            gamma,
            beta,
            (mean, variance),
            epsilon,
        )?),
    };
    let channels = geometry.out_channels;
    if norm.lengths() != [channels; 2] {
        return None;
    }
    if residual.is_some_and(|r| r.dims() != output_shape) || geometry.groups == 0 {
        return None;
    }
    let x = x.clone().try_into_primitive::<FlexAutodiff>().ok()?;
    let weight = weight.clone().try_into_primitive::<FlexAutodiff>().ok()?;
    let residual = match residual {
        Some(r) => {
            let r = r.clone().try_into_primitive::<FlexAutodiff>().ok()?;
            let values = r.primitive().clone().to_contiguous();
            float_slice(&values)?;
            Some((r, values))
        }
        None => None,
    };
    let input = x.primitive().clone().to_contiguous();
    let (xs, ws) = (float_slice(&input)?, float_slice(weight.primitive())?);
    let residual_values = residual.as_ref().and_then(|(_, v)| float_slice(v));
    let (output, saved_norm, affine_nodes) = match norm {
        NormMap::Fixed { scale, shift } => {
            let epilogue = Epilogue {
                scale: Some(scale),
                bias: Some(shift),
                residual: residual_values,
                relu,
            };
            let output = fixed_forward(xs, ws, geometry, epilogue);
            (output, SavedNorm::Fixed(scale.to_vec()), None)
        }
        NormMap::Trainable(affine) => {
            let epilogue = Epilogue {
                scale: Some(&affine.stats.scale),
                bias: Some(&affine.stats.shift),
                residual: residual_values,
                relu,
            };
            let (product, output) = winograd_conv_keeping_product(xs, ws, geometry, &epilogue)
                .unwrap_or_else(|| conv2d_keeping_product(xs, ws, geometry, epilogue));
            let saved = SavedNorm::Trainable {
                product: into_primitive(product, output_shape),
                stats: affine.stats,
                epsilon: affine.epsilon,
            };
            (output, saved, Some(affine.nodes))
        }
    };
    let output = into_primitive(output, output_shape);
    let with_residual = residual.is_some();
    // The ReLU's mask: from the output after a residual, else recomputed from the product
    // (a trainable map) or read from the output (a fixed one, which keeps no product). After
    // a residual the norm op's backward pass needs the output, ReLU or not (it then returns
    // the residual's gradient).
    let keep_output = with_residual || (relu && affine_nodes.is_none());
    let saved = |output: &FlexTensor| Saved {
        input,
        weight: weight.primitive().clone(),
        norm: saved_norm,
        output: keep_output.then(|| output.clone()),
        relu,
        residual: with_residual,
        geometry: *geometry,
    };
    let [node_x, node_w] = [x.node(), weight.node()];
    Some(match (affine_nodes, residual) {
        (None, None) => record_op(ConvNormBackward::<2>, [node_x, node_w], saved, output),
        (None, Some((r, _))) => {
            let parents = [node_x, node_w, r.node()];
            record_op(ConvNormBackward::<3>, parents, saved, output)
        }
        (Some([gamma, beta]), None) => {
            let parents = [node_x, node_w, gamma, beta];
            record_op(ConvNormBackward::<4>, parents, saved, output)
        }
        (Some([gamma, beta]), Some((r, _))) => {
            let parents = [node_x, node_w, gamma, beta, r.node()];
            record_op(ConvNormBackward::<5>, parents, saved, output)
        }
    })
}

/// The forward pass with a fixed map: the Winograd conv (where it applies) takes the norm (and
/// without a residual, the ReLU) in its epilogue, the residual and the ReLU then added in one
/// pass; `im2col` + GEMM takes them all. Either computes what the conv op followed by the
/// norm's op would, to the bit.
fn fixed_forward(xs: &[f32], ws: &[f32], geometry: &ConvGeometry, epilogue: Epilogue) -> Vec<f32> {
    let winograd = WinogradEpilogue {
        scale: epilogue.scale,
        bias: epilogue.bias,
        relu: epilogue.relu && epilogue.residual.is_none(),
    };
    let output = winograd_conv_with(xs, ws, geometry, winograd).map(|mut values| {
        if let Some(residual) = epilogue.residual {
            add_relu(&mut values, residual, epilogue.relu);
        }
        values
    });
    output.unwrap_or_else(|| conv2d(xs, ws, geometry, epilogue))
}
