//! [`super::forward::deform_conv2d`] as a differentiable op on flex's autodiff device (gradients
//! for the input, the offsets, the masks and the weight from [`super::backward`]), registered
//! like the conv in `conv/autodiff.rs`.

use burn::tensor::Tensor;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops};
use burn_flex::{Flex, FlexTensor};

use super::DeformGeometry;
use super::backward::deform_conv2d_backward;
use super::forward::deform_conv2d;
use crate::flex_kernels::{FlexAutodiff, float_slice, into_primitive, record_op};

/// The forward pass's tensors (shared with the graph, not copied).
#[derive(Clone)]
struct Saved {
    input: FlexTensor,
    offset: FlexTensor,
    mask: Option<FlexTensor>,
    weight: FlexTensor,
    geometry: DeformGeometry,
}

impl std::fmt::Debug for Saved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Saved")
            .field("geometry", &self.geometry)
            .finish()
    }
}

#[derive(Debug)]
struct DeformBackward;

impl Backward<Flex, 4> for DeformBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 4>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_input, node_offset, node_mask, node_weight] = ops.parents;
        let grad_out = grads.consume::<Flex>(&ops.node).to_contiguous();
        let Saved {
            input,
            offset,
            mask,
            weight,
            geometry,
        } = ops.state;
        let (Some(dy), Some(x), Some(o), Some(w)) = (
            float_slice(&grad_out),
            float_slice(&input),
            float_slice(&offset),
            float_slice(&weight),
        ) else {
            unreachable!("the forward pass checked that these are contiguous f32")
        };
        let m = mask
            .as_ref()
            .map(|m| float_slice(m).expect("checked in the forward pass"));
        let result = deform_conv2d_backward(x, o, m, w, dy, &geometry);
        let conv = &geometry.conv;
        let weight_shape = [
            conv.out_channels,
            conv.input[1] / conv.groups,
            conv.kernel[0],
            conv.kernel[1],
        ];
        if let Some(node) = node_input {
            grads.register::<Flex>(node.id, into_primitive(result.input, geometry.conv.input));
        }
        if let Some(node) = node_offset {
            grads.register::<Flex>(
                node.id,
                into_primitive(result.offset, geometry.offset_shape()),
            );
        }
        if let (Some(node), Some(mask_grad)) = (node_mask, result.mask) {
            grads.register::<Flex>(node.id, into_primitive(mask_grad, geometry.mask_shape()));
        }
        if let Some(node) = node_weight {
            grads.register::<Flex>(node.id, into_primitive(result.weight, weight_shape));
        }
    }
}

/// The deformable conv (no bias) on flex's autodiff device with the project's kernels, when
/// every tensor is a contiguous f32 there; `None` otherwise.
pub fn try_deform_conv2d(
    x: &Tensor<4>,
    offset: &Tensor<4>,
    mask: Option<&Tensor<4>>,
    weight: &Tensor<4>,
    geometry: &DeformGeometry,
) -> Option<Tensor<4>> {
    let device = x.device();
    let primitive = |t: &Tensor<4>| t.clone().try_into_primitive::<FlexAutodiff>().ok();
    let (x, offset, weight) = (primitive(x)?, primitive(offset)?, primitive(weight)?);
    let mask = match mask {
        Some(mask) => Some(primitive(mask)?),
        None => None,
    };
    // The offsets and masks are channel slices of the offset conv's output: the kernels read
    // contiguous copies (the graph keeps the nodes; gradients come back in logical layout).
    let contiguous = |t: &FlexTensor| {
        let values = t.to_contiguous();
        float_slice(&values).is_some().then_some(values)
    };
    let (x_values, offset_values, weight_values) = (
        contiguous(x.primitive())?,
        contiguous(offset.primitive())?,
        contiguous(weight.primitive())?,
    );
    let mask_values = match &mask {
        Some(mask) => Some(contiguous(mask.primitive())?),
        None => None,
    };
    let output_shape = geometry.conv.output()?;
    let forward =
        |x: &FlexTensor, offset: &FlexTensor, mask: Option<&FlexTensor>, weight: &FlexTensor| {
            fn slice(t: &FlexTensor) -> &[f32] {
                float_slice(t).expect("checked above")
            }
            let values = deform_conv2d(
                slice(x),
                slice(offset),
                mask.map(slice),
                slice(weight),
                geometry,
                None,
            );
            into_primitive(values, output_shape)
        };
    // A DCN (v1) has no mask: its slot holds an untracked tensor's node, which gets no gradient.
    let untracked = Tensor::<1>::zeros([1], &device)
        .try_into_primitive::<FlexAutodiff>()
        .ok()?;
    let mask_node = mask.as_ref().unwrap_or(&untracked).node();
    let output = forward(
        &x_values,
        &offset_values,
        mask_values.as_ref(),
        &weight_values,
    );
    let parents = [x.node(), offset.node(), mask_node, weight.node()];
    let saved = |_: &FlexTensor| Saved {
        input: x_values,
        offset: offset_values,
        mask: mask_values,
        weight: weight_values,
        geometry: *geometry,
    };
    Some(record_op(DeformBackward, parents, saved, output))
}
