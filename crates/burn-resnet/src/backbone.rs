//! `ResNet`: the backbone module, its forward pass over the selected outputs, and its metadata.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::config::{ResNetConfig, ResNetSpec};
use crate::error::{ResNetError, Result};
use crate::features::{FeatureInfo, feature_info};
use crate::layer::{ResLayer, stage_block_specs};
use crate::stem::Stem;

/// A ResNet / ResNeXt backbone returning multi-scale features (mmdet's `ResNet`).
///
/// Build it with [`ResNetConfig::init`]; [`ResNet::forward`] returns one tensor per entry of
/// [`ResNet::feature_info`].
#[derive(Module, Debug)]
pub struct ResNet {
    /// The stem (7x7 or deep 3x3 convs); its max-pool has no parameters.
    pub stem: Stem,
    /// The stages, mmdet's `layer1` … `layerN`.
    pub layers: Vec<ResLayer>,
    /// The validated config the module was built from.
    #[module(skip)]
    spec: ResNetSpec,
}

impl ResNetConfig {
    /// Validate the config, then build the backbone on `device` with mmdet's initialisation.
    pub fn init(&self, device: &Device) -> Result<ResNet> {
        Ok(self.validate()?.init(device))
    }
}

impl ResNetSpec {
    /// Build the backbone on `device` with mmdet's initialisation: Kaiming normal (fan-out,
    /// ReLU) convs, norms with weight 1 and bias 0, and the blocks' last norm at weight 0 under
    /// `zero_init_residual`.
    pub fn init(&self, device: &Device) -> ResNet {
        let zero_init_residual = self.config.zero_init_residual;
        let layers = stage_block_specs(self)
            .iter()
            .map(|blocks| ResLayer::init(blocks, zero_init_residual, device))
            .collect();
        ResNet {
            stem: Stem::init(self, device),
            layers,
            spec: self.clone(),
        }
    }
}

impl ResNet {
    /// The validated config this backbone was built from.
    pub fn spec(&self) -> &ResNetSpec {
        &self.spec
    }

    /// Channels, level and stride of each output, in the order `forward` returns them.
    pub fn feature_info(&self) -> Vec<FeatureInfo> {
        feature_info(&self.spec)
    }

    /// Run the backbone on `[batch, in_channels, height, width]` images and return the
    /// selected outputs: the stem's (C1) first when `stem_output`, then each stage of
    /// `out_indices` in stage order.
    ///
    /// Stages after the last selected one are not run (mmdet runs and discards them).
    ///
    /// # Panics
    /// When the input's channels differ from `in_channels` or a side is 0; use
    /// [`ResNet::try_forward`] to get an error instead.
    pub fn forward(&self, images: Tensor<4>) -> Vec<Tensor<4>> {
        let mut outputs = Vec::with_capacity(self.spec.out_indices.len() + 1);
        let c1 = self.stem.forward(images);
        if self.spec.config.stem_output {
            outputs.push(c1.clone());
        }
        let last = self.spec.out_indices.last().map_or(0, |last| last + 1);
        let mut x = Stem::pool(c1);
        for (index, layer) in self.layers.iter().enumerate().take(last) {
            x = layer.forward(x);
            if self.spec.out_indices.contains(&index) {
                outputs.push(x.clone());
            }
        }
        outputs
    }

    /// [`ResNet::forward`] after checking the input's shape.
    pub fn try_forward(&self, images: Tensor<4>) -> Result<Vec<Tensor<4>>> {
        self.check_input(images.dims())?;
        Ok(self.forward(images))
    }

    /// Check that an input of shape `dims` fits the backbone.
    pub fn check_input(&self, dims: [usize; 4]) -> Result<()> {
        let [_, channels, height, width] = dims;
        let expected_channels = self.spec.config.in_channels;
        if channels != expected_channels || height == 0 || width == 0 {
            return Err(ResNetError::InputShape { expected_channels, got: dims });
        }
        Ok(())
    }
}
