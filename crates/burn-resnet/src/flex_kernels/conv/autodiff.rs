//! The project's conv as a differentiable op on flex's autodiff device: the forward pass is
//! [`super::training_conv`], the input gradient [`super::training_input_grad`] and the weight
//! gradient [`super::backward::weight_grad`], registered with
//! Burn's autodiff graph through its `Backward` trait (the handwritten-backward route of Burn
//! 0.22's backend extensions).

use burn::tensor::Tensor;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops};
use burn_flex::{Flex, FlexTensor};

use super::backward::weight_grad;
use super::forward::ConvGeometry;
use super::{training_conv, training_input_grad};
use crate::flex_kernels::{FlexAutodiff, float_slice, into_primitive, record_op};

/// What the backward pass needs: the input and the weight (shared with the graph, not copied).
#[derive(Clone)]
struct Saved {
    input: FlexTensor,
    weight: FlexTensor,
    geometry: ConvGeometry,
}

impl std::fmt::Debug for Saved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Saved")
            .field("geometry", &self.geometry)
            .finish()
    }
}

#[derive(Debug)]
struct ConvBackward;

impl Backward<Flex, 2> for ConvBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_input, node_weight] = ops.parents;
        let grad_out = grads.consume::<Flex>(&ops.node).to_contiguous();
        let Saved {
            input,
            weight,
            geometry,
        } = ops.state;
        let (Some(dy), Some(x), Some(w)) = (
            float_slice(&grad_out),
            float_slice(&input),
            float_slice(&weight),
        ) else {
            unreachable!("the forward pass checked that these are contiguous f32")
        };
        let [out_channels, in_channels, kernel_h, kernel_w] = [
            geometry.out_channels,
            geometry.input[1] / geometry.groups,
            geometry.kernel[0],
            geometry.kernel[1],
        ];
        if let Some(node) = node_input {
            let dx = training_input_grad(w, dy, &geometry);
            grads.register::<Flex>(node.id, into_primitive(dx, geometry.input));
        }
        if let Some(node) = node_weight {
            let shape = [out_channels, in_channels, kernel_h, kernel_w];
            grads.register::<Flex>(
                node.id,
                into_primitive(weight_grad(x, dy, &geometry), shape),
            );
        }
    }
}

/// `conv(x)` with the project's kernels when `x` and `weight` live on flex's autodiff device as
/// f32 (an input in another layout, such as a channel slice of a batch, is copied contiguous
/// first); `None` otherwise.
pub fn try_conv2d(x: &Tensor<4>, weight: &Tensor<4>, geometry: &ConvGeometry) -> Option<Tensor<4>> {
    let x = x.clone().try_into_primitive::<FlexAutodiff>().ok()?;
    let weight = weight.clone().try_into_primitive::<FlexAutodiff>().ok()?;
    let output_shape = geometry.output()?;
    let input = x.primitive().clone().to_contiguous();
    let values = training_conv(
        float_slice(&input)?,
        float_slice(weight.primitive())?,
        geometry,
    );
    let parents = [x.node(), weight.node()];
    let saved = |_: &FlexTensor| Saved {
        input,
        weight: weight.primitive().clone(),
        geometry: *geometry,
    };
    let output = into_primitive(values, output_shape);
    Some(record_op(ConvBackward, parents, saved, output))
}
