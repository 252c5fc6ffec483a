//! A ResNet's inference as blocked convs: each conv → norm unit becomes a [`BlockedConv`] (packed
//! weights from the cache, the norm in its epilogue), every shape is checked before anything
//! runs, and each activation gets the border its readers' padding needs.

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;

use super::activation::Activation;
use super::conv::{BlockedConv, pack_blocked, padded};
use super::pool::{avg_pool, max_pool};
use super::tile::Isa;
use super::winograd::{self, pack_winograd};
use crate::block::{Block, Downsample};
use crate::dcn::SpatialConv;
use crate::flex_kernels::conv::running_affine;
use crate::flex_kernels::conv::tiled::{Packing, cached_packing};
use crate::flex_kernels::{flex_f32, float_slice};
use crate::layer::ResLayer;
use crate::norm::Norm;
use crate::stem::{STEM_POOL, Stem};

/// The blocked form of a conv → norm unit; `None` where the blocked conv does not apply (groups,
/// asymmetric or `Same` padding, GroupNorm, tensors not on plain flex). Without `with_weights`
/// only its shape (no packing, no epilogue values): what checking a backbone needs.
fn blocked_conv(
    conv: &Conv2d,
    norm: &Norm,
    with_weights: bool,
    reads_image: bool,
) -> Option<BlockedConv> {
    let padding = match conv.padding {
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => {
            [top, left]
        }
        PaddingConfig2d::Valid => [0, 0],
        _ => return None,
    };
    if conv.groups != 1 {
        return None;
    }
    let [out_channels, in_channels, kh, kw] = conv.weight.dims();
    let shape = BlockedConv {
        weights: Default::default(),
        scale: None,
        bias: Vec::new(),
        in_channels,
        out_channels,
        kernel: [kh, kw],
        stride: conv.stride,
        padding,
        dilation: conv.dilation,
        // The image is read in place (planar); every other input is blocked.
        winograd: !reads_image && winograd::applies([kh, kw], conv.stride, padding, conv.dilation),
    };
    if matches!(norm, Norm::Group(_)) {
        return None;
    }
    if !with_weights {
        return Some(shape);
    }
    let weight = flex_f32(&conv.weight.val())?;
    let conv_bias = match &conv.bias {
        Some(bias) => Some(float_slice(&flex_f32(&bias.val())?)?.to_vec()),
        None => None,
    };
    let conv_bias = conv_bias.unwrap_or_else(|| vec![0.0; out_channels]);
    let (scale, bias) = match norm {
        Norm::Folded(_) => (None, conv_bias),
        // On a plain device a BatchNorm runs on its running statistics.
        Norm::Batch(bn) | Norm::Frozen(bn) => {
            let (scale, shift) = running_affine(bn)?;
            // `(conv + b) · scale + shift = conv · scale + (b · scale + shift)`.
            let bias = conv_bias
                .iter()
                .zip(&scale)
                .zip(&shift)
                .map(|((b, s), t)| b * s + t)
                .collect();
            (Some(padded(&scale)), bias)
        }
        Norm::Group(_) => return None,
    };
    if bias.len() != out_channels {
        return None;
    }
    let weights = if shape.winograd {
        cached_packing(&weight, (1, out_channels, Packing::Winograd), |values| {
            pack_winograd(values, out_channels, in_channels)
        })?
    } else {
        cached_packing(&weight, (1, out_channels, Packing::Blocked), |values| {
            pack_blocked(values, out_channels, in_channels, [kh, kw])
        })?
    };
    Some(BlockedConv {
        weights,
        scale,
        bias: padded(&bias),
        ..shape
    })
}

/// A residual block: its main convs in order, the last one taking the shortcut, and the
/// shortcut's projection (`avg_down`'s pool stride, the conv).
struct BlockPlan {
    main: Vec<BlockedConv>,
    downsample: Option<(Option<usize>, BlockedConv)>,
}

impl BlockPlan {
    fn new(block: &Block, with_weights: bool) -> Option<Self> {
        let main = match block {
            Block::Basic(b) if b.after_conv1.is_empty() && b.after_conv2.is_empty() => vec![
                blocked_conv(&b.conv1, &b.norm1, with_weights, false)?,
                blocked_conv(&b.conv2, &b.norm2, with_weights, false)?,
            ],
            Block::Bottleneck(b)
                if b.after_conv1.is_empty()
                    && b.after_conv2.is_empty()
                    && b.after_conv3.is_empty() =>
            {
                let SpatialConv::Regular(conv2) = &b.conv2 else {
                    return None;
                };
                vec![
                    blocked_conv(&b.conv1, &b.norm1, with_weights, false)?,
                    blocked_conv(conv2, &b.norm2, with_weights, false)?,
                    blocked_conv(&b.conv3, &b.norm3, with_weights, false)?,
                ]
            }
            _ => return None,
        };
        let downsample = match block {
            Block::Basic(b) => b.downsample.as_ref(),
            Block::Bottleneck(b) => b.downsample.as_ref(),
            _ => None,
        };
        let downsample = match downsample {
            Some(Downsample {
                avg_pool,
                conv,
                norm,
            }) => Some((
                avg_pool.filter(|&s| s > 1),
                blocked_conv(conv, norm, with_weights, false)?,
            )),
            None => None,
        };
        Some(Self { main, downsample })
    }

    /// The border the block's input needs (its first conv's padding).
    fn input_halo(&self) -> usize {
        self.main[0].halo()
    }

    /// The output `[channels, height, width]` for an input of that shape, `None` where a conv
    /// does not fit or the channels do not chain.
    fn output_shape(&self, [c, h, w]: [usize; 3]) -> Option<[usize; 3]> {
        let mut shape = [c, h, w];
        for conv in &self.main {
            shape = conv_shape(conv, shape)?;
        }
        let identity = match &self.downsample {
            Some((pool, conv)) => {
                let [h, w] = pool.map_or([h, w], |s| [h.div_ceil(s), w.div_ceil(s)]);
                conv_shape(conv, [c, h, w])?
            }
            None => [c, h, w],
        };
        (identity == shape).then_some(shape)
    }

    /// The block on `x`; the last conv adds the shortcut in place (into the projection's
    /// buffer or `x`'s), when it has the output's border.
    fn run(&self, x: Activation, out_halo: usize, isa: Isa) -> Activation {
        let projected = self.downsample.as_ref().map(|(pool, conv)| match pool {
            Some(stride) => conv.run(&avg_pool(&x, *stride), None, false, out_halo, isa),
            None => conv.run(&x, None, false, out_halo, isa),
        });
        let (last, first) = self.main.split_last().expect("a block has convs");
        let mut out: Option<Activation> = None;
        for (i, conv) in first.iter().enumerate() {
            let next = &self.main[i + 1];
            out = Some(conv.run(out.as_ref().unwrap_or(&x), None, true, next.halo(), isa));
        }
        let identity = projected.unwrap_or(x);
        match out {
            Some(input) if identity.halo == out_halo => {
                last.run_adding_in_place(&input, identity, true, isa)
            }
            Some(input) => last.run(&input, Some(&identity), true, out_halo, isa),
            None => last.run(&identity, Some(&identity), true, out_halo, isa),
        }
    }
}

/// The output shape of `conv` on `[channels, height, width]`.
fn conv_shape(conv: &BlockedConv, [c, h, w]: [usize; 3]) -> Option<[usize; 3]> {
    let [h, w] = conv.output_size([h, w])?;
    (c == conv.in_channels).then_some([conv.out_channels, h, w])
}

/// A whole backbone's blocked inference.
pub(super) struct Plan {
    stem: Vec<BlockedConv>,
    stages: Vec<Vec<BlockPlan>>,
}

impl Plan {
    /// The plan of `stem` and the first `stages` of `layers`; `None` where any unit is not
    /// supported (the caller then runs the regular path). Without `with_weights`, shapes only
    /// ([`Plan::fits`] before anything is packed).
    pub fn new(
        stem: &Stem,
        layers: &[ResLayer],
        stages: usize,
        with_weights: bool,
    ) -> Option<Self> {
        let stem = stem
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| blocked_conv(&l.conv, &l.norm, with_weights, i == 0))
            .collect::<Option<Vec<_>>>()?;
        let stages = layers
            .iter()
            .take(stages)
            .map(|layer| {
                layer
                    .blocks
                    .iter()
                    .map(|block| BlockPlan::new(block, with_weights))
                    .collect()
            })
            .collect::<Option<Vec<_>>>()?;
        (!stem.is_empty()).then_some(Self { stem, stages })
    }

    /// Whether an input `[batch, channels, height, width]` runs through every unit.
    pub fn fits(&self, [_, c, h, w]: [usize; 4]) -> bool {
        let mut shape = Some([c, h, w]);
        for conv in &self.stem {
            shape = shape.and_then(|s| conv_shape(conv, s));
        }
        let mut shape = shape.and_then(|[c, h, w]| Some([c, pooled(h)?, pooled(w)?]));
        for block in self.stages.iter().flatten() {
            shape = shape.and_then(|s| block.output_shape(s));
        }
        shape.is_some()
    }

    /// Run on `image` (NCHW); `emit(None, c1)` for the stem's activation and `emit(Some(i),
    /// x)` after stage `i`.
    pub fn run(
        &self,
        image: &[f32],
        dims: [usize; 4],
        isa: Isa,
        mut emit: impl FnMut(Option<usize>, &Activation),
    ) {
        let mut x = Activation::from_image(image, dims, self.stem[0].halo());
        steps::mark("plan, image in");
        for (i, conv) in self.stem.iter().enumerate() {
            let halo = self.stem.get(i + 1).map_or(0, BlockedConv::halo);
            x = conv.run(&x, None, true, halo, isa);
        }
        steps::mark("stem convs");
        emit(None, &x);
        let blocks: Vec<&BlockPlan> = self.stages.iter().flatten().collect();
        let Some(first) = blocks.first() else {
            return;
        };
        let (kernel, stride, padding) = STEM_POOL;
        let size = [pooled(x.height), pooled(x.width)].map(|s| s.expect("checked by `fits`"));
        x = max_pool(&x, [kernel, stride, padding], size, first.input_halo());
        steps::mark("max-pool");
        let mut next = 1;
        for (stage, plans) in self.stages.iter().enumerate() {
            for _ in plans {
                let halo = blocks.get(next).map_or(0, |b| b.input_halo());
                x = blocks[next - 1].run(x, halo, isa);
                next += 1;
            }
            steps::mark(steps::STAGES[stage.min(steps::STAGES.len() - 1)]);
            emit(Some(stage), &x);
            steps::mark(steps::OUTPUTS[stage.min(steps::OUTPUTS.len() - 1)]);
        }
    }
}

/// A side after the stem's max-pool.
fn pooled(side: usize) -> Option<usize> {
    crate::stem::stem_pool_output_size(side)
}

/// Where a pass's time goes, step by step, for `blocked_network_profile`: a recorder the
/// profile turns on for its thread; a no-op outside tests.
pub(super) mod steps {
    /// The stage steps' names (a ResNet has at most four stages).
    pub const STAGES: [&str; 4] = ["layer1", "layer2", "layer3", "layer4"];
    /// The output conversions' names.
    pub const OUTPUTS: [&str; 4] = [
        "layer1 out to NCHW",
        "layer2 out to NCHW",
        "layer3 out to NCHW",
        "layer4 out to NCHW",
    ];

    #[cfg(test)]
    thread_local! {
        static MARKS: std::cell::RefCell<Option<Vec<(&'static str, std::time::Instant)>>> =
            const { std::cell::RefCell::new(None) };
    }

    /// The end of step `name`.
    #[inline]
    pub fn mark(name: &'static str) {
        #[cfg(test)]
        MARKS.with(|marks| {
            if let Some(marks) = marks.borrow_mut().as_mut() {
                marks.push((name, std::time::Instant::now()));
            }
        });
        #[cfg(not(test))]
        let _ = name;
    }

    /// Record this thread's marks from now on, timing the first step from now.
    #[cfg(test)]
    pub fn start_recording() {
        MARKS.with(|marks| *marks.borrow_mut() = Some(vec![("", std::time::Instant::now())]));
    }

    /// Stop recording; each recorded step with its milliseconds.
    #[cfg(test)]
    pub fn recorded() -> Vec<(&'static str, f64)> {
        MARKS.with(|marks| {
            marks
                .borrow_mut()
                .take()
                .unwrap_or_default()
                .windows(2)
                .map(|w| (w[1].0, (w[1].1 - w[0].1).as_secs_f64() * 1e3))
                .collect()
        })
    }
}
