//! [`FpnSpec`]: a validated FPN config for given input channels, and its figures.

use burn::tensor::Device;

use super::{ConvModule, ExtraSource, Fpn};

/// A validated [`FpnConfig`](super::FpnConfig) for given input channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FpnSpec {
    /// Channels of every input level.
    pub in_channels: Vec<usize>,
    /// Channels of every output level.
    pub out_channels: usize,
    /// Levels returned.
    pub num_outs: usize,
    /// First input level used.
    pub start_level: usize,
    /// One past the last input level used (mmdet's `backbone_end_level`).
    pub end: usize,
    /// Source of the extra convs, if any.
    pub extra: Option<ExtraSource>,
    /// ReLU before the extra convs after the first.
    pub relu_before_extra_convs: bool,
}

/// The most extra (coarser than the backbone's) levels an FPN may add.
pub const MAX_EXTRA_LEVELS: usize = 32;

impl FpnSpec {
    /// Extra levels past the last input level used.
    pub(super) fn extra_levels(&self) -> usize {
        self.num_outs
            .saturating_add(self.start_level)
            .saturating_sub(self.end)
    }

    /// Trainable parameters (conv weights and biases), `None` when they do not fit in 64 bits.
    pub fn params(&self) -> Option<u64> {
        let out = self.out_channels as u64;
        let conv = |inputs: usize, kernel: u64| {
            (inputs as u64)
                .checked_mul(out)?
                .checked_mul(kernel * kernel)?
                .checked_add(out)
        };
        let mut total = 0u64;
        for i in self.start_level..self.end {
            total = total
                .checked_add(conv(self.in_channels[i], 1)?)?
                .checked_add(conv(self.out_channels, 3)?)?;
        }
        if let Some(source) = self.extra {
            for i in 0..self.extra_levels() {
                let inputs = if i == 0 && source == ExtraSource::OnInput {
                    self.in_channels[self.end - 1]
                } else {
                    self.out_channels
                };
                total = total.checked_add(conv(inputs, 3)?)?;
            }
        }
        Some(total)
    }

    /// Values per image the neck makes for input levels of these `[height, width]` sizes (a
    /// lateral, a merged and an output map per used level, and each extra level), `None` when
    /// they do not fit in 64 bits: what training keeps for the backward pass.
    pub fn activations(&self, level_sizes: &[[usize; 2]]) -> Option<u64> {
        let out = self.out_channels as u64;
        let map = |[h, w]: [usize; 2]| out.checked_mul(h as u64)?.checked_mul(w as u64);
        let mut total = 0u64;
        for size in &level_sizes[self.start_level..self.end] {
            total = total.checked_add(map(*size)?.checked_mul(3)?)?;
        }
        let mut size = level_sizes[self.end - 1];
        for _ in 0..self.extra_levels() {
            size = size.map(|side| side.div_ceil(2));
            total = total.checked_add(map(size)?)?;
        }
        Some(total)
    }
}

impl FpnSpec {
    /// Build with mmdet's init: Xavier-uniform convs (gain 1), zero biases.
    pub fn init(&self, device: &Device) -> Fpn {
        let used = self.start_level..self.end;
        let lateral_convs = used
            .clone()
            .map(|i| ConvModule::init(self.in_channels[i], self.out_channels, 1, 1, device))
            .collect();
        let mut fpn_convs: Vec<ConvModule> = used
            .map(|_| ConvModule::init(self.out_channels, self.out_channels, 3, 1, device))
            .collect();
        if let Some(source) = self.extra {
            for i in 0..self.extra_levels() {
                let inputs = match (i, source) {
                    (0, ExtraSource::OnInput) => self.in_channels[self.end - 1],
                    _ => self.out_channels,
                };
                fpn_convs.push(ConvModule::init(inputs, self.out_channels, 3, 2, device));
            }
        }
        Fpn {
            lateral_convs,
            fpn_convs,
            spec: self.clone(),
        }
    }
}
