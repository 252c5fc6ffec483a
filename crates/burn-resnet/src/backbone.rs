//! `ResNet`: the backbone module, its forward pass over the selected outputs, and its metadata.

use burn::module::{Module, ParamGroup};
use burn::tensor::{Device, GradientCheckpointingStrategy, Tensor};

use crate::block::Block;
use crate::config::{ResNetConfig, ResNetSpec};
use crate::error::{ResNetError, Result};
use crate::features::{FeatureInfo, feature_info};
use crate::fold::FoldNorm;
use crate::layer::{ResLayer, stage_block_specs};
use crate::memory::{MemoryEstimate, MemoryLimit};
use crate::norm::Norm;
use crate::plugin::{Plugin, PluginPosition};
use crate::stem::Stem;
use crate::summary::ModelSummary;

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

/// `x`, computed on the plain device, back on the autodiff device with `strategy` (that of the
/// tensor it came from) as a constant: no gradient flows into what computed it. Without a
/// strategy (a plain input) `x` as it is.
fn on_autodiff_device(x: Tensor<4>, strategy: Option<GradientCheckpointingStrategy>) -> Tensor<4> {
    match strategy {
        Some(strategy) => x.autodiff().with_gradient_checkpointing_strategy(strategy),
        None => x,
    }
}

impl ResNet {
    /// A copy that shares nothing the copy can change with `self`: `clone()` with running
    /// statistics of its own (a plain clone shares them: Burn's `RunningState` is a shared cell).
    pub fn independent_clone(&self) -> Self {
        let mut copy = self.clone();
        for norm in copy.norms_mut() {
            norm.own_running_statistics();
        }
        copy
    }

    /// Every conv → norm unit of the backbone (stem, blocks, shortcuts), in module order.
    pub(crate) fn units_mut(&mut self) -> Vec<(&mut dyn FoldNorm, &mut Norm)> {
        let mut units: Vec<(&mut dyn FoldNorm, &mut Norm)> = self
            .stem
            .layers
            .iter_mut()
            .map(|layer| (&mut layer.conv as &mut dyn FoldNorm, &mut layer.norm))
            .collect();
        for block in self
            .layers
            .iter_mut()
            .flat_map(|layer| layer.blocks.iter_mut())
        {
            units.extend(block.units_mut());
        }
        units
    }

    /// Every norm of the backbone, in module order.
    fn norms_mut(&mut self) -> Vec<&mut Norm> {
        self.units_mut().into_iter().map(|(_, norm)| norm).collect()
    }
}

impl ResNetConfig {
    /// Validate the config, check that its weights fit in memory ([`MemoryLimit::from_env`]),
    /// then build the backbone on `device` with mmdet's initialisation.
    pub fn init(&self, device: &Device) -> Result<ResNet> {
        let spec = self.validate()?;
        spec.check_weights_memory(&MemoryLimit::from_env()?)?;
        Ok(spec.init(device))
    }
}

impl ResNetSpec {
    /// Err when the backbone's weights alone exceed `limit` (what [`ResNetConfig::init`]
    /// checks; [`ModelSummary::memory`] estimates a whole workload).
    pub fn check_weights_memory(&self, limit: &MemoryLimit) -> Result<()> {
        let params = ModelSummary::new(self, 1, 1)?.total_params();
        let estimate =
            MemoryEstimate::weights_only(params).ok_or_else(|| ResNetError::Overflow {
                field: "config".into(),
                what: "the weights' bytes".into(),
            })?;
        estimate.check(
            &format!("building the backbone ({params} parameters)"),
            limit,
        )
    }
}

impl ResNetSpec {
    /// Build the backbone on `device` with mmdet's initialisation: Kaiming normal (fan-out,
    /// ReLU) convs, norms with weight 1 and bias 0, and the blocks' last norm at weight 0 under
    /// `zero_init_residual`. Allocates without checking memory: see
    /// [`ResNetSpec::check_weights_memory`] (which [`ResNetConfig::init`] calls).
    pub fn init(&self, device: &Device) -> ResNet {
        let zero_init_residual = self.config.zero_init_residual;
        let layers = stage_block_specs(self)
            .iter()
            .map(|blocks| ResLayer::init(blocks, zero_init_residual, &self.config.norm_cfg, device))
            .collect();
        let mut backbone = ResNet {
            stem: Stem::init(self, device),
            layers,
            spec: self.clone(),
        };
        // The config's plugins (validated with the config), in the order given.
        for entry in &self.config.plugins {
            for (index, layer) in backbone.layers.iter_mut().enumerate() {
                if !entry.applies_to(index) {
                    continue;
                }
                for block in &mut layer.blocks {
                    if let Some((stack, channels)) = block.plugin_stack_mut(entry.position) {
                        stack.plugins.push(entry.cfg.init(channels, device));
                    }
                }
            }
        }
        backbone
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
    /// # Shapes
    /// - input: `[batch, in_channels, height, width]`
    /// - output `i`: `[batch, channels_i, ⌈height / reduction_i⌉, ⌈width / reduction_i⌉]` as
    ///   [`ResNet::feature_info`]`()[i]` gives them (reduction 2 for C1, 4 · the stage strides'
    ///   product for a stage; sizes rounded as each conv's output size rounds)
    ///
    /// # Panics
    /// When the input's channels differ from `in_channels` or a side is 0; use
    /// [`ResNet::try_forward`] to get an error instead.
    pub fn forward(&self, images: Tensor<4>) -> Vec<Tensor<4>> {
        // Inference on plain flex: the whole backbone in the blocked layout where it applies.
        #[cfg(feature = "flex")]
        if let Some(outputs) = crate::flex_kernels::blocked::try_forward(
            &self.stem,
            &self.layers,
            &self.spec.out_indices,
            self.spec.config.stem_output,
            &images,
        ) {
            return outputs;
        }
        let mut outputs = Vec::with_capacity(self.spec.out_indices.len() + 1);
        // Frozen parts (`frozen_stages`) run on the plain device, as for inference (their
        // modules through `Module::valid`, which shares the parameters' storage): no autodiff
        // graph is recorded for them (nor memory kept), their BatchNorms ride in the convs'
        // epilogue, and their output comes back on the input's device as a constant, so no
        // gradient reaches their parameters.
        let strategy = images.gradient_checkpointing_strategy();
        let on_input_device = |x: Tensor<4>| on_autodiff_device(x, strategy);
        let frozen = |stage: Option<usize>| self.spec.is_frozen(stage);
        let last = self.spec.out_indices.last().map(|last| last + 1);
        #[cfg(feature = "flex")]
        if let Some((mut prefix, first)) = self.try_blocked_frozen_prefix(&images, last) {
            let wanted = |index: usize| self.spec.out_indices.contains(&index);
            if self.spec.config.stem_output {
                outputs.push(on_input_device(prefix.remove(0)));
            }
            let mut x = None;
            for (index, output) in (0..first)
                .filter(|&i| wanted(i) || i + 1 == first)
                .zip(prefix)
            {
                let output = on_input_device(output);
                if wanted(index) {
                    outputs.push(output.clone());
                }
                x = Some(output);
            }
            let x = x.expect("the prefix returns its last stage's output");
            return self.forward_stages(x, first, outputs);
        }
        let stem_mode = self.spec.stage_mode(None);
        let c1 = match frozen(None) {
            true => self.stem.valid().forward(images.inner(), stem_mode),
            false => self.stem.forward(images, stem_mode),
        };
        if self.spec.config.stem_output {
            outputs.push(on_input_device(c1.clone()));
        }
        if last.is_none() {
            return outputs; // only the stem was asked for
        }
        let x = on_input_device(Stem::pool(c1));
        self.forward_stages(x, 0, outputs)
    }

    /// The stages from `first` on, from their input `x`, each selected output appended to
    /// `outputs` (frozen stages as in [`ResNet::forward`]).
    fn forward_stages(
        &self,
        mut x: Tensor<4>,
        first: usize,
        mut outputs: Vec<Tensor<4>>,
    ) -> Vec<Tensor<4>> {
        let last = self.spec.out_indices.last().map_or(0, |last| last + 1);
        let strategy = x.gradient_checkpointing_strategy();
        for (index, layer) in self.layers.iter().enumerate().take(last).skip(first) {
            let mode = self.spec.stage_mode(Some(index));
            x = match self.spec.is_frozen(Some(index)) {
                true => on_autodiff_device(layer.valid().forward(x.inner(), mode), strategy),
                false => layer.forward(x, mode),
            };
            if self.spec.out_indices.contains(&index) {
                outputs.push(x.clone());
            }
        }
        outputs
    }

    /// On flex's autodiff device, a frozen stem and the frozen stages after it (at least one,
    /// up to the last stage asked for) run as inference in the blocked layout, as
    /// [`ResNet::forward`] runs a whole backbone on the plain device: the stem's output when
    /// `stem_output`, then the frozen stages that are outputs or the last frozen one, in order,
    /// on the plain device, and the first stage left to run. `None` where that does not apply.
    #[cfg(feature = "flex")]
    fn try_blocked_frozen_prefix(
        &self,
        images: &Tensor<4>,
        last: Option<usize>,
    ) -> Option<(Vec<Tensor<4>>, usize)> {
        let first = (0..last?)
            .take_while(|&i| self.spec.is_frozen(Some(i)))
            .count();
        if !self.spec.is_frozen(None) || first == 0 {
            return None;
        }
        let wanted: Vec<usize> = (0..first)
            .filter(|&i| self.spec.out_indices.contains(&i) || i + 1 == first)
            .collect();
        let layers: Vec<_> = self.layers[..first].iter().map(Module::valid).collect();
        // Its activations go back to the allocator, for the rest of the step to use.
        let outputs = crate::flex_kernels::blocked::without_keeping(|| {
            crate::flex_kernels::blocked::try_forward(
                &self.stem.valid(),
                &layers,
                &wanted,
                self.spec.config.stem_output,
                &images.clone().inner(),
            )
        })?;
        Some((outputs, first))
    }

    /// Append a plugin at `position` of every block of the stages selected by `stages` (one
    /// flag per built stage, like mmdet's `stages`; `None` selects every stage). `make` is
    /// called once per block with the plugin's input channels and must return a plugin for
    /// that many channels. Plugins added by successive calls at one position run in call order.
    ///
    /// Errors: a `stages` mask of the wrong length, or `AfterConv3` on BasicBlocks.
    pub fn add_plugins(
        mut self,
        position: PluginPosition,
        stages: Option<&[bool]>,
        mut make: impl FnMut(usize) -> Plugin,
    ) -> Result<Self> {
        let num_stages = self.layers.len();
        if let Some(mask) = stages.filter(|mask| mask.len() != num_stages) {
            return Err(ResNetError::WrongLength {
                field: "plugins.stages".into(),
                expected: num_stages,
                got: mask.len(),
            });
        }
        for (index, layer) in self.layers.iter_mut().enumerate() {
            if !stages.is_none_or(|mask| mask[index]) {
                continue;
            }
            for block in &mut layer.blocks {
                let Some((stack, channels)) = block.plugin_stack_mut(position) else {
                    return Err(ResNetError::Incompatible {
                        field: "plugins.position".into(),
                        reason: format!(
                            "{} needs a Bottleneck block (conv3); depth {} uses BasicBlock, whose \
                             last conv is conv2: use after_conv2",
                            position.name(),
                            self.spec.config.depth
                        ),
                    });
                };
                stack.plugins.push(make(channels));
            }
        }
        Ok(self)
    }

    /// Every parameter of this backbone as a Burn [`ParamGroup`], for a model that embeds it:
    /// give the backbone its own learning rate (`ModuleLrScheduler::with_group`, e.g. the
    /// detection habit of backbone lr × 0.1) or its own optimizer
    /// (`ModuleOptimizer::with_group`). To freeze it entirely, set `frozen_stages` to
    /// `num_stages` in its config.
    pub fn param_group(&self) -> ParamGroup {
        ParamGroup::ids_from_module(self.clone())
    }

    /// [`ResNet::forward`] after checking the input's shape.
    ///
    /// # Errors
    /// [`ResNetError::InputShape`] when the channels differ from `in_channels` or a side is 0;
    /// [`ResNetError::InputTooSmall`] when a side is below the smallest input the stages accept
    /// ([`ResNet::check_input`]); [`ResNetError::Incompatible`] for a ResNeSt trained on one
    /// image ([`ResNet::check_training_batch`]).
    pub fn try_forward(&self, images: Tensor<4>) -> Result<Vec<Tensor<4>>> {
        self.check_input(images.dims())?;
        self.check_training_batch(images.dims()[0], images.device().is_autodiff())?;
        Ok(self.forward(images))
    }

    /// Err where a forward pass of `batch` images on an autodiff device (`autodiff`) would
    /// train a BatchNorm on one value per channel: a ResNeSt's split attention normalises a
    /// 1x1 map, so its batch statistics need at least 2 images (PyTorch refuses one too;
    /// Burn would normalise every value to the norm's bias).
    pub fn check_training_batch(&self, batch: usize, autodiff: bool) -> Result<()> {
        if batch > 1 || !autodiff {
            return Ok(());
        }
        let Some(index) = self.spec.first_batch_statistics_attention() else {
            return Ok(());
        };
        let mode = self.spec.stage_mode(Some(index));
        if let Some(Block::ResNeSt(block)) = self.layers[index].blocks.first()
            && block.conv2.norm1.training_batch_norm(mode, true).is_some()
        {
            return Err(ResNetError::Incompatible {
                field: "input batch".into(),
                reason: format!(
                    "1 image: layer{}'s split attention normalises a 1x1 map with batch \
                     statistics in training, which needs at least 2 images (or norm_eval, or \
                     frozen_stages)",
                    index + 1
                ),
            });
        }
        Ok(())
    }

    /// Check that an input of shape `dims` fits the backbone.
    pub fn check_input(&self, dims: [usize; 4]) -> Result<()> {
        let [_, channels, height, width] = dims;
        let expected_channels = self.spec.config.in_channels;
        if channels != expected_channels || height == 0 || width == 0 {
            return Err(ResNetError::InputShape {
                expected_channels,
                got: dims,
            });
        }
        if let Some((min, reason)) = self
            .spec
            .min_input_size()
            .filter(|(min, _)| height < *min || width < *min)
        {
            return Err(ResNetError::InputTooSmall {
                min,
                got_height: height,
                got_width: width,
                reason,
            });
        }
        Ok(())
    }
}
