//! mmcv's `GeneralizedAttention` (Zhu et al. 2019, "An Empirical Study of Spatial Attention
//! Mechanisms in Deep Networks"): multi-head attention from every (optionally strided) query
//! position to every (strided) key position, whose logits sum up to four terms chosen by
//! `attention_type`: query·key content, query·relative position, a learned bias·key content, and
//! a learned bias·relative position. Relative positions are sinusoidal embeddings of the `x` and
//! `y` offsets, projected per axis. The result, projected back and scaled by a zero-initialised
//! `gamma`, is added to the input.

mod config;

pub use config::{AttentionType, GeneralizedAttentionArgs, GeneralizedAttentionConfig};

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::activation::softmax;
use burn::tensor::module::avg_pool2d;
use burn::tensor::ops::AvgPoolOptions;
use burn::tensor::{Bool, Device, Distribution, Tensor, TensorData};

/// mmcv's `GeneralizedAttention`, with its parameter names (checkpoint key segment
/// `gen_attention_block`).
#[derive(Module, Debug)]
pub struct GeneralizedAttention {
    /// Query projection (terms 1 and 2).
    pub query_conv: Option<Conv2d>,
    /// Key projection (terms 1 and 3).
    pub key_conv: Option<Conv2d>,
    /// Value projection.
    pub value_conv: Conv2d,
    /// Projection of the `x`-offset embeddings (terms 2 and 4).
    pub appr_geom_fc_x: Option<Linear>,
    /// Projection of the `y`-offset embeddings (terms 2 and 4).
    pub appr_geom_fc_y: Option<Linear>,
    /// The learned query of term 3, `[heads · d]`.
    pub appr_bias: Option<Param<Tensor<1>>>,
    /// The learned query of term 4, `[heads · d]`.
    pub geom_bias: Option<Param<Tensor<1>>>,
    /// Output projection (with bias).
    pub proj_conv: Conv2d,
    /// Residual scale, `[1]`, zero-initialised: a new block is the identity.
    pub gamma: Param<Tensor<1>>,
    /// The block's settings.
    #[module(skip)]
    pub config: GeneralizedAttentionConfig,
}

impl GeneralizedAttentionConfig {
    /// Channels per head of queries, keys and values: `channels / num_heads`.
    pub fn head_dim(&self) -> usize {
        self.channels / self.num_heads
    }

    /// Build with mmcv's init: convs and linears Kaiming-uniform with gain 1 on fan-in
    /// (`±√(3 / fan_in)`), biases zero; `appr_bias`/`geom_bias` uniform in `±1/√(2d)`; `gamma` 0.
    pub fn init(&self, device: &Device) -> GeneralizedAttention {
        let [content_query, position_query, content_bias, position_bias] = self.terms;
        let width = self.head_dim() * self.num_heads;
        let uniform = |fan_in: usize| Initializer::Uniform {
            min: -(3.0 / fan_in as f64).sqrt(),
            max: (3.0 / fan_in as f64).sqrt(),
        };
        let conv = |inputs: usize, outputs: usize, bias: bool| {
            let mut conv = Conv2dConfig::new([inputs, outputs], [1, 1])
                .with_bias(bias)
                .with_initializer(uniform(inputs))
                .init(device);
            conv.bias = conv.bias.take().map(crate::param_init::zeroed);
            conv
        };
        let linear = || {
            let inputs = self.position_embedding_dim / 2;
            LinearConfig::new(inputs, width)
                .with_bias(false)
                .with_initializer(uniform(inputs))
                .init(device)
        };
        let bound = 1.0 / ((self.head_dim() * 2) as f64).sqrt();
        let bias = || {
            Param::from_tensor(Tensor::random(
                [width],
                Distribution::Uniform(-bound, bound),
                device,
            ))
        };
        let positions = position_query || position_bias;
        GeneralizedAttention {
            query_conv: (content_query || position_query)
                .then(|| conv(self.channels, width, false)),
            key_conv: (content_query || content_bias).then(|| conv(self.channels, width, false)),
            value_conv: conv(self.channels, width, false),
            appr_geom_fc_x: positions.then(linear),
            appr_geom_fc_y: positions.then(linear),
            appr_bias: content_bias.then(bias),
            geom_bias: position_bias.then(bias),
            proj_conv: conv(width, self.channels, true),
            gamma: Param::from_tensor(Tensor::zeros([1], device)),
            config: *self,
        }
    }
}

impl GeneralizedAttention {
    /// `x + gamma · proj(attention(x))`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let config = &self.config;
        let [content_query, position_query, _, _] = config.terms;
        let [n, _, height, width] = x.dims();
        let (heads, d) = (config.num_heads, config.head_dim());
        let device = x.device();
        // mmcv's AvgPool2d(kernel_size=1, stride): every stride-th position.
        let subsample = |t: Tensor<4>, stride: usize| match stride {
            1 => t,
            _ => avg_pool2d(t, AvgPoolOptions::new([1, 1]).with_stride([stride, stride])),
        };
        let x_q = subsample(x.clone(), config.q_stride);
        let x_kv = subsample(x.clone(), config.kv_stride);
        let [_, _, h, w] = x_q.dims();
        let [_, _, h_kv, w_kv] = x_kv.dims();
        let (queries, keys) = (h * w, h_kv * w_kv);
        let heads_of = |t: Tensor<4>, positions: usize| t.reshape([n, heads, d, positions]);

        // [n, heads, queries, d]
        let query = self
            .query_conv
            .as_ref()
            .map(|conv| heads_of(conv.forward(x_q.clone()), queries).swap_dims(2, 3));
        let learned = |bias: &Option<Param<Tensor<1>>>| {
            bias.as_ref().map(|b| b.val().reshape([1, heads, 1, d]))
        };
        // Terms 1 and 3: (query + appr_bias) · key, as the terms present make it.
        let content = match (
            content_query.then_some(query.clone()).flatten(),
            learned(&self.appr_bias),
        ) {
            (Some(q), Some(b)) => Some(q + b),
            (Some(q), None) => Some(q),
            (None, Some(b)) => Some(b.expand([n, heads, 1, d])),
            (None, None) => None,
        };
        let mut energy: Tensor<4> = match (content, &self.key_conv) {
            (Some(a), Some(key_conv)) => a
                .matmul(heads_of(key_conv.forward(x_kv.clone()), keys))
                .expand([n, heads, queries, keys]),
            _ => Tensor::zeros([n, heads, queries, keys], &device),
        };
        // Terms 2 and 4: (query + geom_bias) · (position_x + position_y).
        let position_query = match (
            position_query.then_some(query).flatten(),
            learned(&self.geom_bias),
        ) {
            (Some(q), Some(g)) => Some(q + g),
            (Some(q), None) => Some(q),
            (None, Some(g)) => Some(g.expand([n, heads, queries, d])),
            (None, None) => None,
        };
        if let (Some(b), Some(fc_x), Some(fc_y)) =
            (position_query, &self.appr_geom_fc_x, &self.appr_geom_fc_y)
        {
            let project = |fc: &Linear, embedding: Tensor<3>, size: usize, size_kv: usize| {
                // [size, size_kv, heads · d] → [1, heads, size, d, size_kv], divided by √2.
                fc.forward(embedding)
                    .reshape([1, size, size_kv, heads, d])
                    .permute([0, 3, 1, 4, 2])
                    .div_scalar(2f64.sqrt())
            };
            let position_x = project(fc_x, self.embedding(w, w_kv, &device), w, w_kv);
            let position_y = project(fc_y, self.embedding(h, h_kv, &device), h, h_kv);
            let b = b.reshape([n, heads, h, w, d]);
            // x: per column, [n, heads, w, h, d] · [1, heads, w, d, w_kv] → [n, heads, h, w, 1, w_kv].
            let energy_x = b
                .clone()
                .swap_dims(2, 3)
                .matmul(position_x.expand([n, heads, w, d, w_kv]))
                .swap_dims(2, 3)
                .unsqueeze_dim::<6>(4);
            // y: per row, [n, heads, h, w, d] · [1, heads, h, d, h_kv] → [n, heads, h, w, h_kv, 1].
            let energy_y = b
                .matmul(position_y.expand([n, heads, h, d, h_kv]))
                .unsqueeze_dim::<6>(5);
            energy = energy + (energy_x + energy_y).reshape([n, heads, queries, keys]);
        }
        if config.spatial_range >= 0 {
            energy = energy.mask_fill(
                self.outside_range(h, w, h_kv, w_kv, &device)
                    .expand([n, heads, queries, keys]),
                f32::NEG_INFINITY,
            );
        }
        let attention = softmax(energy, 3);
        let value = heads_of(self.value_conv.forward(x_kv), keys).swap_dims(2, 3);
        let out = attention
            .matmul(value)
            .swap_dims(2, 3)
            .reshape([n, heads * d, h, w]);
        let mut out = self.proj_conv.forward(out);
        if config.q_stride > 1 {
            out = upsample_bilinear(out, [height, width]);
        }
        out * self.gamma.val().reshape([1, 1, 1, 1]) + x
    }

    /// Sinusoidal embeddings `[size, size_kv, dim / 2]` of the offsets `i · q_stride − j ·
    /// kv_stride` (times `position_magnitude`): `sin(offset / 1000^(4r/dim))` for `r < dim/4`,
    /// then the cosines.
    fn embedding(&self, size: usize, size_kv: usize, device: &Device) -> Tensor<3> {
        let config = &self.config;
        let dim = config.position_embedding_dim;
        let quarter = dim / 4;
        let mut values = Vec::with_capacity(size * size_kv * 2 * quarter);
        for i in 0..size {
            for j in 0..size_kv {
                let offset = ((i * config.q_stride) as f64 - (j * config.kv_stride) as f64)
                    * config.position_magnitude as f64;
                let angles: Vec<f64> = (0..quarter)
                    .map(|r| offset / 1000f64.powf(4.0 / dim as f64 * r as f64))
                    .collect();
                values.extend(angles.iter().map(|a| a.sin() as f32));
                values.extend(angles.iter().map(|a| a.cos() as f32));
            }
        }
        Tensor::from_data(
            TensorData::new(values, [size, size_kv, 2 * quarter]),
            device,
        )
    }

    /// `[1, 1, queries, keys]`, true where a key lies outside the query's `spatial_range`
    /// window, in mmcv's terms: key row `ky` is inside for query row `qy` when
    /// `⌊(qy − r) / kv_stride⌋ ≤ ky ≤ ⌊(qy + r + 1) / kv_stride⌋` (likewise for columns).
    fn outside_range(
        &self,
        h: usize,
        w: usize,
        h_kv: usize,
        w_kv: usize,
        device: &Device,
    ) -> Tensor<4, Bool> {
        let (range, stride) = (self.config.spatial_range, self.config.kv_stride as i64);
        let inside = |q: usize, k: usize| {
            let (q, k) = (q as i64, k as i64);
            (q - range).div_euclid(stride) <= k && k <= (q + range + 1).div_euclid(stride)
        };
        let mut mask = Vec::with_capacity(h * w * h_kv * w_kv);
        for qy in 0..h {
            for qx in 0..w {
                for ky in 0..h_kv {
                    for kx in 0..w_kv {
                        mask.push(!(inside(qy, ky) && inside(qx, kx)));
                    }
                }
            }
        }
        Tensor::from_data(TensorData::new(mask, [1, 1, h * w, h_kv * w_kv]), device)
    }
}

/// PyTorch's `interpolate(mode="bilinear", align_corners=False)` to `[height, width]`, as two
/// matrix products with the interpolation weights (`rows · x · colsᵀ`): differentiable on every
/// backend (Burn's own bilinear interpolation has no backward pass on ndarray).
fn upsample_bilinear(x: Tensor<4>, [height, width]: [usize; 2]) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let device = x.device();
    let rows = interpolation_weights(h, height, &device).expand([n, c, height, h]);
    let columns = interpolation_weights(w, width, &device)
        .transpose()
        .expand([n, c, w, width]);
    rows.matmul(x).matmul(columns)
}

/// `[output, input]` weights of 1-D linear interpolation with half-pixel centres: output `o`
/// samples input `max((o + 0.5) · input / output − 0.5, 0)`, clamped at the last pixel.
fn interpolation_weights(input: usize, output: usize, device: &Device) -> Tensor<4> {
    let mut weights = vec![0f32; output * input];
    let scale = input as f64 / output as f64;
    for o in 0..output {
        let source = ((o as f64 + 0.5) * scale - 0.5).max(0.0);
        let low = (source.floor() as usize).min(input - 1);
        let high = (low + 1).min(input - 1);
        let fraction = (source - low as f64) as f32;
        weights[o * input + low] += 1.0 - fraction;
        weights[o * input + high] += fraction;
    }
    Tensor::from_data(TensorData::new(weights, [1, 1, output, input]), device)
}
