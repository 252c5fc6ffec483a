//! Parameter, multiply-add and activation counts of a plugin, from its config alone (for
//! `ModelSummary`), in checked arithmetic: `None` when a figure does not fit in 64 bits.
//!
//! Parameters are every trainable tensor the built plugin has (what `Module::num_params`
//! counts). Multiply-adds are those of its convolutions, linear layers and attention matrix
//! products, per image; softmaxes, normalisations, pooling, interpolation and elementwise
//! scaling are not counted (as the backbone's figures leave out BatchNorm and ReLU).
//! Activations are the values per image of the tensors it makes (its projections, attention
//! matrices and output), for the memory estimate.

use super::{
    ContextBlockConfig, GeneralizedAttentionConfig, NonLocal2dConfig, NonLocalMode, PluginConfig,
    PluginSettings,
};
use crate::checked::mul;

/// A plugin's figures on one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PluginFigures {
    /// Trainable parameters.
    pub params: usize,
    /// Multiply-accumulates for one image.
    pub macs: u64,
    /// Values per image of the tensors the plugin makes.
    pub activations: u64,
    /// Values per image of the largest of them.
    pub largest_activation: u64,
}

/// The sum of `values`, if it fits.
fn add(values: &[u64]) -> Option<u64> {
    values.iter().try_fold(0u64, |sum, &v| sum.checked_add(v))
}

impl PluginFigures {
    /// Figures from `params`, `macs` and the sizes of the tensors made.
    fn new(params: u64, macs: u64, tensors: &[u64]) -> Option<Self> {
        Some(Self {
            params: usize::try_from(params).ok()?,
            macs,
            activations: add(tensors)?,
            largest_activation: tensors.iter().copied().max().unwrap_or(0),
        })
    }
}

impl PluginConfig {
    /// The figures of this plugin on `channels` input channels and a `height` x `width` input;
    /// `None` when one does not fit in 64 bits.
    pub fn figures(&self, channels: usize, [height, width]: [usize; 2]) -> Option<PluginFigures> {
        let positions = mul(&[height as u64, width as u64])?;
        let output = mul(&[channels as u64, positions])?;
        match self.settings(channels) {
            PluginSettings::SqueezeExcitation(config) => {
                let (c, reduced) = (channels as u64, config.reduced as u64);
                // Two 1x1 convs with biases on the pooled 1x1 map.
                let weights = mul(&[2, c, reduced])?;
                PluginFigures::new(add(&[weights, reduced, c])?, weights, &[output])
            }
            PluginSettings::ContextBlock(config) => context_block(&config, positions, output),
            PluginSettings::NonLocal2d(config) => non_local(&config, [height, width], output),
            PluginSettings::GeneralizedAttention(config) => {
                generalized_attention(&config, [height, width], output)
            }
        }
    }
}

fn context_block(
    config: &ContextBlockConfig,
    positions: u64,
    output: u64,
) -> Option<PluginFigures> {
    let (c, planes) = (config.channels as u64, config.planes() as u64);
    let (mut params, mut macs) = (0, 0);
    if config.pooling == super::Pooling::Attention {
        // conv_mask (channels → 1, with bias) at every position, then the weighted sum.
        params = c + 1;
        macs = mul(&[2, c, positions])?;
    }
    // Each transform: 1x1 conv (bias) → LayerNorm (weight, bias) → 1x1 conv (bias), on 1x1.
    let transform_params = add(&[mul(&[2, c, planes])?, mul(&[3, planes])?, c])?;
    let fusions = config.fusions.len() as u64;
    params = add(&[params, mul(&[fusions, transform_params])?])?;
    macs = add(&[macs, mul(&[fusions, 2, c, planes])?])?;
    PluginFigures::new(params, macs, &[positions, output])
}

fn non_local(
    config: &NonLocal2dConfig,
    [height, width]: [usize; 2],
    output: u64,
) -> Option<PluginFigures> {
    let (c, inter) = (config.channels as u64, config.inter_channels() as u64);
    let positions = mul(&[height as u64, width as u64])?;
    // The attended positions: 2x2 max-pooled (floor) with sub_sample.
    let attended = if config.sub_sample {
        mul(&[(height / 2) as u64, (width / 2) as u64])?
    } else {
        positions
    };
    let embeddings = match config.mode {
        NonLocalMode::Gaussian => 1,
        _ => 3,
    };
    // g (and theta, phi) and conv_out are 1x1 convs with biases.
    let params = add(&[
        mul(&[embeddings, add(&[mul(&[c, inter])?, inter])?])?,
        mul(&[inter, c])?,
        c,
    ])?;
    let pairwise_features = match config.mode {
        NonLocalMode::Gaussian => c,
        _ => inter,
    };
    let macs = add(&[
        mul(&[embeddings, c, inter, positions])?,
        mul(&[positions, attended, add(&[pairwise_features, inter])?])?,
        mul(&[inter, c, positions])?,
    ])?;
    let pairwise = mul(&[positions, attended])?;
    PluginFigures::new(
        params,
        macs,
        &[
            mul(&[embeddings, inter, positions])?,
            pairwise,
            pairwise,
            output,
        ],
    )
}

fn generalized_attention(
    config: &GeneralizedAttentionConfig,
    [height, width]: [usize; 2],
    output: u64,
) -> Option<PluginFigures> {
    let [content_query, position_query, content_bias, position_bias] = config.terms;
    let c = config.channels as u64;
    let e = mul(&[config.head_dim() as u64, config.num_heads as u64])?;
    let subsampled = |size: usize, stride: usize| ((size - 1) / stride + 1) as u64;
    let (h, w) = (
        subsampled(height, config.q_stride),
        subsampled(width, config.q_stride),
    );
    let (h_kv, w_kv) = (
        subsampled(height, config.kv_stride),
        subsampled(width, config.kv_stride),
    );
    let (queries, keys) = (mul(&[h, w])?, mul(&[h_kv, w_kv])?);
    let half = (config.position_embedding_dim / 2) as u64;
    let positions = position_query || position_bias;

    // value, proj (+bias), gamma
    let mut params = add(&[mul(&[2, c, e])?, c, 1])?;
    let mut macs = add(&[mul(&[c, e, keys])?, mul(&[e, c, queries])?])?;
    if content_query || position_query {
        params = add(&[params, mul(&[c, e])?])?;
        macs = add(&[macs, mul(&[c, e, queries])?])?;
    }
    if content_query || content_bias {
        params = add(&[params, mul(&[c, e])?])?;
        macs = add(&[macs, mul(&[c, e, keys])?])?;
    }
    params = add(&[
        params,
        mul(&[e, content_bias as u64 + position_bias as u64])?,
    ])?;
    // Content energy: (query [+ appr_bias]) · key per query, or appr_bias · key once.
    if content_query {
        macs = add(&[macs, mul(&[queries, keys, e])?])?;
    } else if content_bias {
        macs = add(&[macs, mul(&[keys, e])?])?;
    }
    let mut embeddings = 0;
    if positions {
        params = add(&[params, mul(&[2, half, e])?])?;
        let offsets = add(&[mul(&[w, w_kv])?, mul(&[h, h_kv])?])?;
        macs = add(&[
            macs,
            mul(&[offsets, half, e])?,
            mul(&[queries, add(&[w_kv, h_kv])?, e])?,
        ])?;
        // The sinusoid tables of both axes and their projections.
        embeddings = mul(&[offsets, add(&[mul(&[2, half])?, e])?])?;
    }
    // Attention · value.
    macs = add(&[macs, mul(&[queries, keys, e])?])?;
    // Energy and its softmax: one value per head, query and key.
    let energy = mul(&[config.num_heads as u64, queries, keys])?;
    PluginFigures::new(
        params,
        macs,
        &[
            mul(&[3, e, queries.max(keys)])?,
            energy,
            energy,
            embeddings,
            output,
        ],
    )
}
