//! Parameter and multiply-add counts of a plugin, from its config alone (for `ModelSummary`).
//!
//! Parameters are every trainable tensor the built plugin has (what `Module::num_params`
//! counts). Multiply-adds are those of its convolutions, linear layers and attention matrix
//! products, per image; softmaxes, normalisations, pooling, interpolation and elementwise
//! scaling are not counted (as the backbone's figures leave out BatchNorm and ReLU).

use super::{ContextBlockConfig, GeneralizedAttentionConfig, NonLocal2dConfig, NonLocalMode, PluginConfig, make_divisible};

/// A plugin's figures on one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PluginFigures {
    /// Trainable parameters.
    pub params: usize,
    /// Multiply-accumulates for one image.
    pub macs: u64,
}

impl PluginConfig {
    /// The figures of this plugin on `channels` input channels and a `height` x `width` input.
    pub fn figures(&self, channels: usize, [height, width]: [usize; 2]) -> PluginFigures {
        let positions = (height * width) as u64;
        match self {
            PluginConfig::SqueezeExcitation { rd_ratio, .. } => {
                let reduced = make_divisible(channels as f64 * rd_ratio, 8);
                // Two 1x1 convs with biases on the pooled 1x1 map.
                let weights = 2 * channels * reduced;
                PluginFigures { params: weights + reduced + channels, macs: weights as u64 }
            }
            PluginConfig::ContextBlock { ratio, pooling_type, fusion_types, .. } => {
                let config = ContextBlockConfig { channels, ratio: *ratio, pooling: *pooling_type, fusions: fusion_types.clone() };
                context_block(&config, positions)
            }
            PluginConfig::NonLocal2d { reduction, use_scale, mode, sub_sample, .. } => {
                let config = NonLocal2dConfig { channels, reduction: *reduction, use_scale: *use_scale, mode: *mode, sub_sample: *sub_sample };
                non_local(&config, [height, width])
            }
            PluginConfig::GeneralizedAttention(args) => generalized_attention(&args.config(channels), [height, width]),
        }
    }
}

fn context_block(config: &ContextBlockConfig, positions: u64) -> PluginFigures {
    let (channels, planes) = (config.channels, config.planes());
    let mut figures = PluginFigures::default();
    if config.pooling == super::Pooling::Attention {
        // conv_mask (channels → 1, with bias) at every position, then the weighted sum.
        figures.params += channels + 1;
        figures.macs += 2 * channels as u64 * positions;
    }
    // Each transform: 1x1 conv (bias) → LayerNorm (weight, bias) → 1x1 conv (bias), on 1x1.
    let transform = PluginFigures { params: 2 * channels * planes + planes + 2 * planes + channels, macs: 2 * (channels * planes) as u64 };
    for _ in &config.fusions {
        figures.params += transform.params;
        figures.macs += transform.macs;
    }
    figures
}

fn non_local(config: &NonLocal2dConfig, [height, width]: [usize; 2]) -> PluginFigures {
    let (channels, inter) = (config.channels as u64, config.inter_channels() as u64);
    let positions = (height * width) as u64;
    // The attended positions: 2x2 max-pooled (floor) with sub_sample.
    let attended = if config.sub_sample { ((height / 2) * (width / 2)) as u64 } else { positions };
    let embeddings = match config.mode {
        NonLocalMode::Gaussian => 1,
        _ => 3,
    };
    // g (and theta, phi) and conv_out are 1x1 convs with biases.
    let params = embeddings * (channels * inter + inter) + inter * channels + channels;
    let pairwise_features = match config.mode {
        NonLocalMode::Gaussian => channels,
        _ => inter,
    };
    let macs = embeddings * channels * inter * positions + positions * attended * (pairwise_features + inter) + inter * channels * positions;
    PluginFigures { params: params as usize, macs }
}

fn generalized_attention(config: &GeneralizedAttentionConfig, [height, width]: [usize; 2]) -> PluginFigures {
    let [content_query, position_query, content_bias, position_bias] = config.terms;
    let channels = config.channels;
    let width_all = config.head_dim() * config.num_heads;
    let subsampled = |size: usize, stride: usize| (size - 1) / stride + 1;
    let (h, w) = (subsampled(height, config.q_stride), subsampled(width, config.q_stride));
    let (h_kv, w_kv) = (subsampled(height, config.kv_stride), subsampled(width, config.kv_stride));
    let (queries, keys) = ((h * w) as u64, (h_kv * w_kv) as u64);
    let (c, e, half) = (channels as u64, width_all as u64, (config.position_embedding_dim / 2) as u64);
    let positions = position_query || position_bias;

    let mut params = channels * width_all + width_all * channels + channels + 1; // value, proj (+bias), gamma
    let mut macs = c * e * keys + e * c * queries;
    if content_query || position_query {
        params += channels * width_all;
        macs += c * e * queries;
    }
    if content_query || content_bias {
        params += channels * width_all;
        macs += c * e * keys;
    }
    params += width_all * (content_bias as usize + position_bias as usize);
    // Content energy: (query [+ appr_bias]) · key per query, or appr_bias · key once.
    if content_query {
        macs += queries * keys * e;
    } else if content_bias {
        macs += keys * e;
    }
    if positions {
        params += 2 * (config.position_embedding_dim / 2) * width_all;
        macs += (w * w_kv + h * h_kv) as u64 * half * e + queries * (w_kv + h_kv) as u64 * e;
    }
    // Attention · value.
    macs += queries * keys * e;
    PluginFigures { params, macs }
}
