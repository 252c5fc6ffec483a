//! A conv, then a BatchNorm on its running statistics whose affine weight and bias do not train
//! (`FrozenBN`, or mmdet's `requires_grad = False` with `norm_eval`, as caffe-style detectors
//! train), then `+ residual` and a ReLU, as one differentiable op on flex's autodiff device.
//!
//! The norm is then a fixed per-channel map `y = scale · conv(x, W) + shift`, applied in the
//! conv's epilogue (the Winograd conv's, or after the GEMM, while the output is in cache): the
//! same products and sums as the conv op followed by the norm op, so the same numbers to the
//! bit. The conv's output before the norm is never stored, and the backward step needs only
//! what the graph keeps anyway: the conv's input, and the op's output for the ReLU's mask.
//! With `g` the gradient the ReLU lets through and `h = scale · g`, the conv's output gradient,
//! the input and weight gradients are the conv's of `h`, and the residual's is `g`.
//!
//! With a trainable affine weight, `dγ = Σ g · x̂` needs the normalised conv output, which this
//! op does not keep; those norms stay separate ops (docs/performance.md says why).

use burn::tensor::Tensor;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops};
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;

use super::backward::weight_grad;
use super::forward::{ConvGeometry, Epilogue, conv2d};
use super::training_input_grad;
use crate::flex_kernels::batch_norm::channel_planes;
use crate::flex_kernels::blocked::single::{WinogradEpilogue, winograd_conv_with};
use crate::flex_kernels::{
    FlexAutodiff, SendPtr, float_slice, into_primitive, record_op, relu_backward,
};

/// What the backward step needs; the tensors are shared with the graph, not copied.
#[derive(Clone)]
struct Saved {
    input: FlexTensor,
    weight: FlexTensor,
    scale: Vec<f32>,
    /// The op's output: the ReLU's mask is read there.
    output: FlexTensor,
    relu: bool,
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

/// The backward step of the op with `N` parents: the input, the weight, and the residual when
/// one was added (`N = 3`).
#[derive(Debug)]
struct ConvNormBackward<const N: usize>;

impl<const N: usize> Backward<Flex, N> for ConvNormBackward<N> {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, N>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad_out = grads.consume::<Flex>(&ops.node).to_contiguous();
        let saved = ops.state;
        let (Some(dy), Some(x), Some(w), Some(y)) = (
            float_slice(&grad_out),
            float_slice(&saved.input),
            float_slice(&saved.weight),
            float_slice(&saved.output),
        ) else {
            unreachable!("the forward pass checked that these are contiguous f32")
        };
        let geometry = saved.geometry;
        let output_shape = geometry.output().expect("checked by the forward pass");
        let [node_input, node_weight, node_residual] =
            std::array::from_fn(|i| ops.parents.get(i).cloned().flatten().map(|node| node.id));
        let relu = saved.relu.then_some(y);
        let passed = passed_gradient(
            dy,
            relu,
            output_shape,
            &saved.scale,
            node_residual.is_some(),
        );
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

/// The output gradient `g` the ReLU lets through, as the backward step uses it.
struct Passed {
    /// `scale · g`: the conv's output gradient.
    scaled: Vec<f32>,
    /// `g` itself, when asked for (the residual's gradient).
    unscaled: Option<Vec<f32>>,
}

/// [`Passed`] from the output gradient `dy`, the ReLU's mask read from the op's output `relu`
/// (`None`: no ReLU), and the norm's `scale`.
fn passed_gradient(
    dy: &[f32],
    relu: Option<&[f32]>,
    shape: [usize; 4],
    scale: &[f32],
    keep_unscaled: bool,
) -> Passed {
    // SAFETY: every element is written below: each channel's task writes all its planes.
    let mut scaled = unsafe { crate::flex_kernels::unwritten(dy.len()) };
    // SAFETY: as `scaled`.
    let mut unscaled = keep_unscaled.then(|| unsafe { crate::flex_kernels::unwritten(dy.len()) });
    let (scaled_ptr, unscaled_ptr) = (
        SendPtr(scaled.as_mut_ptr()),
        unscaled.as_mut().map(|g| SendPtr(g.as_mut_ptr())),
    );
    (0..shape[1]).into_par_iter().for_each(|c| {
        // SAFETY: both buffers hold `shape`'s product of floats; one task per channel.
        for (range, h) in unsafe { channel_planes(scaled_ptr, shape, c) } {
            let (dy, y) = (&dy[range.clone()], relu.map(|y| &y[range.clone()]));
            pass_plane(dy, y, scale[c], h);
            if let Some(ptr) = unscaled_ptr {
                // SAFETY: this channel's plane of the second buffer, written by this task only.
                let g = unsafe {
                    std::slice::from_raw_parts_mut(ptr.get().add(range.start), range.len())
                };
                match y {
                    Some(y) => g
                        .iter_mut()
                        .zip(dy.iter().zip(y))
                        .for_each(|(g, (&d, &y))| *g = relu_backward(y, d)),
                    None => g.copy_from_slice(dy),
                }
            }
        }
    });
    Passed { scaled, unscaled }
}

/// One plane of [`passed_gradient`]: `h = scale · relu_backward(y, dy)` (`scale · dy` without
/// a ReLU).
fn pass_plane(dy: &[f32], y: Option<&[f32]>, scale: f32, h: &mut [f32]) {
    match y {
        Some(y) => h
            .iter_mut()
            .zip(dy.iter().zip(y))
            .for_each(|(h, (&d, &y))| *h = relu_backward(y, d) * scale),
        None => h.iter_mut().zip(dy).for_each(|(h, &d)| *h = d * scale),
    }
}

/// `values + residual`, then a ReLU if `relu`, in place.
fn add_relu(values: &mut [f32], residual: &[f32], relu: bool) {
    const CHUNK: usize = 1 << 14;
    values
        .par_chunks_mut(CHUNK)
        .zip(residual.par_chunks(CHUNK))
        .for_each(|(values, residual)| {
            for (v, &r) in values.iter_mut().zip(residual) {
                let sum = *v + r;
                *v = if relu {
                    crate::flex_kernels::relu(sum)
                } else {
                    sum
                };
            }
        });
}

/// `relu?(norm(conv(x)) + residual?)` for a bias-free conv with `weight` of `geometry` and a
/// BatchNorm that is the fixed per-channel map `· scale + shift` (its running statistics and
/// weight and bias folded: [`super::running_affine`]), differentiable in `x`, the weight and the
/// residual, on flex's autodiff device; `None` where it does not apply.
pub fn try_conv2d_norm_eval(
    x: &Tensor<4>,
    weight: &Tensor<4>,
    geometry: &ConvGeometry,
    (scale, shift): (&[f32], &[f32]),
    (residual, relu): (Option<&Tensor<4>>, bool),
) -> Option<Tensor<4>> {
    let output_shape = geometry.output()?;
    let channels = geometry.out_channels;
    let sizes_match = scale.len() == channels
        && shift.len() == channels
        && residual.is_none_or(|r| r.dims() == output_shape);
    if !sizes_match || geometry.groups == 0 {
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
    // The Winograd conv (where it applies) takes the norm (and without a residual, the ReLU)
    // in its epilogue, the residual and the ReLU then added in one pass; `im2col` + GEMM takes
    // them all. Either computes what the conv op followed by the norm's op would, to the bit.
    let winograd = WinogradEpilogue {
        scale: Some(scale),
        bias: Some(shift),
        relu: relu && residual_values.is_none(),
    };
    let output = winograd_conv_with(xs, ws, geometry, winograd).map(|mut values| {
        if let Some(residual) = residual_values {
            add_relu(&mut values, residual, relu);
        }
        values
    });
    let output = output.unwrap_or_else(|| {
        let epilogue = Epilogue {
            scale: Some(scale),
            bias: Some(shift),
            residual: residual_values,
            relu,
        };
        conv2d(xs, ws, geometry, epilogue)
    });
    let output = into_primitive(output, output_shape);
    let saved = |output: &FlexTensor| Saved {
        input,
        weight: weight.primitive().clone(),
        scale: scale.to_vec(),
        output: output.clone(),
        relu,
        geometry: *geometry,
    };
    Some(match residual {
        None => record_op(
            ConvNormBackward::<2>,
            [x.node(), weight.node()],
            saved,
            output,
        ),
        Some((r, _)) => {
            let parents = [x.node(), weight.node(), r.node()];
            record_op(ConvNormBackward::<3>, parents, saved, output)
        }
    })
}
