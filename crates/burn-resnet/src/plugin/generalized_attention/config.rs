//! The plugin's arguments (mmcv's `GeneralizedAttention(...)`), their defaults and checks.

use serde::{Deserialize, Serialize};

/// mmcv's `attention_type`: four `0`/`1` flags, at least one set, for the terms content·content,
/// content·position, bias·content and bias·position (`"1111"` is every term).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AttentionType(pub [bool; 4]);

impl TryFrom<String> for AttentionType {
    type Error = String;

    fn try_from(text: String) -> std::result::Result<Self, String> {
        let flags: Vec<bool> = text
            .chars()
            .filter_map(|c| match c {
                '0' => Some(false),
                '1' => Some(true),
                _ => None,
            })
            .collect();
        match <[bool; 4]>::try_from(flags) {
            Ok(flags) if text.len() == 4 && flags.contains(&true) => Ok(AttentionType(flags)),
            _ => Err(format!(
                "attention_type \"{text}\": expected four 0/1 flags with at least one 1, e.g. \"1111\" or \"0010\""
            )),
        }
    }
}

impl From<AttentionType> for String {
    fn from(kind: AttentionType) -> String {
        kind.0
            .iter()
            .map(|&on| if on { '1' } else { '0' })
            .collect()
    }
}

/// mmcv's `GeneralizedAttention` arguments as a plugin's `cfg` (TOML keys, defaults mmcv's):
/// `num_heads` (9), `attention_type` (`"1111"`), `kv_stride` (2), `q_stride` (1),
/// `spatial_range` (-1: unlimited), `position_embedding_dim` (-1: the input channels),
/// `position_magnitude` (1), and mmdet's `postfix`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneralizedAttentionArgs {
    /// mmcv `spatial_range`.
    #[serde(default = "minus_one")]
    pub spatial_range: i64,
    /// mmcv `num_heads`.
    #[serde(default = "default_heads")]
    pub num_heads: usize,
    /// mmcv `position_embedding_dim`.
    #[serde(default = "minus_one")]
    pub position_embedding_dim: i64,
    /// mmcv `position_magnitude`.
    #[serde(default = "one")]
    pub position_magnitude: usize,
    /// mmcv `kv_stride`.
    #[serde(default = "two")]
    pub kv_stride: usize,
    /// mmcv `q_stride`.
    #[serde(default = "one")]
    pub q_stride: usize,
    /// mmcv `attention_type`.
    #[serde(default = "every_term")]
    pub attention_type: AttentionType,
    /// mmdet `postfix`.
    #[serde(default)]
    pub postfix: String,
}

fn minus_one() -> i64 {
    -1
}
fn one() -> usize {
    1
}
fn two() -> usize {
    2
}
fn default_heads() -> usize {
    9
}
fn every_term() -> AttentionType {
    AttentionType([true; 4])
}

impl Default for GeneralizedAttentionArgs {
    fn default() -> Self {
        Self {
            spatial_range: -1,
            num_heads: default_heads(),
            position_embedding_dim: -1,
            position_magnitude: 1,
            kv_stride: 2,
            q_stride: 1,
            attention_type: every_term(),
            postfix: String::new(),
        }
    }
}

impl GeneralizedAttentionArgs {
    /// The settings these arguments give on `channels` input channels;
    /// [`GeneralizedAttentionConfig::check`] says whether they can be built.
    pub fn config(&self, channels: usize) -> GeneralizedAttentionConfig {
        let position_embedding_dim = if self.position_embedding_dim > 0 {
            self.position_embedding_dim as usize
        } else {
            channels
        };
        GeneralizedAttentionConfig {
            channels,
            spatial_range: self.spatial_range,
            num_heads: self.num_heads,
            position_embedding_dim,
            position_magnitude: self.position_magnitude,
            kv_stride: self.kv_stride,
            q_stride: self.q_stride,
            terms: self.attention_type.0,
        }
    }
}

/// Settings of a [`GeneralizedAttention`](super::GeneralizedAttention) on a given number of
/// channels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeneralizedAttentionConfig {
    /// Input (and output) channels.
    pub channels: usize,
    /// mmcv `spatial_range`: a query attends only to keys within this many (query-grid) pixels
    /// per axis; -1 for no limit.
    pub spatial_range: i64,
    /// mmcv `num_heads`.
    pub num_heads: usize,
    /// mmcv `position_embedding_dim` (`channels` when -1): sinusoid features per axis offset.
    pub position_embedding_dim: usize,
    /// mmcv `position_magnitude`: multiplies the offsets before the embedding.
    pub position_magnitude: usize,
    /// mmcv `kv_stride`: keys and values from every `kv_stride`-th position.
    pub kv_stride: usize,
    /// mmcv `q_stride`: queries from every `q_stride`-th position, the output upsampled
    /// bilinearly.
    pub q_stride: usize,
    /// mmcv `attention_type` as four flags: content·content, content·position, bias·content,
    /// bias·position.
    pub terms: [bool; 4],
}

impl GeneralizedAttentionConfig {
    /// Why these settings cannot be built, if they cannot.
    pub fn check(&self) -> Option<String> {
        let Self {
            channels,
            spatial_range,
            num_heads,
            position_embedding_dim,
            kv_stride,
            q_stride,
            terms,
            ..
        } = *self;
        if num_heads == 0 || num_heads > channels {
            return Some(format!(
                "num_heads {num_heads} must be 1..={channels} (the input channels)"
            ));
        }
        if kv_stride == 0 || q_stride == 0 {
            return Some(format!(
                "kv_stride {kv_stride} and q_stride {q_stride} must be at least 1"
            ));
        }
        if spatial_range < -1 {
            return Some(format!(
                "spatial_range {spatial_range} must be -1 (unlimited) or at least 0"
            ));
        }
        if (terms[1] || terms[3]) && !position_embedding_dim.is_multiple_of(4) {
            return Some(format!(
                "the position embedding has sines and cosines of two axes: its dimension \
                 {position_embedding_dim} (position_embedding_dim, or the input channels) must be a multiple of 4"
            ));
        }
        None
    }
}
