//! The training config (`configs/train/*.toml`): what to train ([`Task`]), on how much data,
//! for how long and how fast; read and checked before anything is allocated, with the memory
//! estimate of training it.

use std::path::{Path, PathBuf};

use burn_resnet::fpn::FpnConfig;
use burn_resnet::weights::WeightSource;
use burn_resnet::{MemoryEstimate, ModelSummary, ResNetConfig, Workload};
use serde::Deserialize;

use crate::error::CliError;

/// What `resnet train` trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Backbone + pooled linear classifier; one shape per image.
    #[default]
    Classify,
    /// Backbone + FPN (`[neck]`) + CenterNet-style head; one to three shapes per image, scored
    /// by mAP@0.5.
    Detect,
}

/// A training config (`configs/train/*.toml`). Unknown keys are errors.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// `"classify"` (default) or `"detect"`.
    #[serde(default)]
    pub task: Task,
    /// Seed of the generated data (the validation split uses `seed + 1`, wrapping).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Image side in pixels.
    pub image_size: usize,
    /// Images in the generated training split (not with `[data]`, whose folders say).
    #[serde(default)]
    pub train_images: usize,
    /// Images in the generated validation split (not with `[data]`).
    #[serde(default)]
    pub valid_images: usize,
    /// Data from disk instead of the generated shapes.
    #[serde(default)]
    pub data: Option<DataConfig>,
    /// Images per step.
    pub batch_size: usize,
    /// Epochs (passes over the training split).
    pub epochs: usize,
    /// Peak learning rate of the cosine schedule (head; the backbone's is scaled by
    /// `backbone_lr_factor`).
    pub learning_rate: f64,
    /// Backbone learning rate as a fraction of `learning_rate` (detection habit: 0.1). Default 1.
    #[serde(default = "default_factor")]
    pub backbone_lr_factor: f64,
    /// SGD momentum (no dampening). Default 0.9.
    #[serde(default = "default_momentum")]
    pub momentum: f64,
    /// L2 weight decay. Default 1e-4.
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f32,
    /// The backbone, as in `configs/*.toml` (`frozen_stages`, `norm_eval`, `norm_cfg` apply).
    pub backbone: ResNetConfig,
    /// A checkpoint to start the backbone from (fine-tuning): torchvision, timm or mmdet, `.pth`
    /// or `.safetensors`, as `resnet extract --weights` reads them (the file must hold the whole
    /// backbone). A resumed run takes its weights from its own checkpoint.
    #[serde(default)]
    pub weights: Option<PathBuf>,
    /// The checkpoint's key names: `"mmdet"`, `"torchvision"` or `"timm"`; default: detected.
    #[serde(default, deserialize_with = "weight_source")]
    pub weights_source: Option<WeightSource>,
    /// The FPN of the detection task (mmdet's `FPN` arguments; `in_channels` from the
    /// backbone). Required with `task = "detect"`.
    #[serde(default)]
    pub neck: Option<FpnConfig>,
    /// The config file's text, saved with the run (not a key).
    #[serde(skip)]
    pub source: String,
}

/// `[data]`: a dataset on disk. Classification reads image folders (`ROOT/<class>/*.png`);
/// detection reads COCO sets (an annotation file and the folder its `file_name`s are in).
/// Relative paths are relative to the directory `resnet train` runs in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// The training images: the image folder, or the COCO set's image folder.
    pub train: PathBuf,
    /// The validation images, the same way.
    pub valid: PathBuf,
    /// The training set's COCO annotation file (detection only).
    #[serde(default)]
    pub train_annotations: Option<PathBuf>,
    /// The validation set's COCO annotation file (detection only).
    #[serde(default)]
    pub valid_annotations: Option<PathBuf>,
    /// Mirror training images at random (half of them, a fresh choice each epoch). Default
    /// true.
    #[serde(default = "default_flip")]
    pub flip: bool,
    /// Threads that decode and prepare each batch's images (in the batch's order, so runs stay
    /// reproducible). Default 2.
    #[serde(default = "default_threads")]
    pub threads: usize,
}

fn default_flip() -> bool {
    true
}
fn default_threads() -> usize {
    2
}

fn weight_source<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<WeightSource>, D::Error> {
    let name = String::deserialize(deserializer)?;
    name.parse().map(Some).map_err(serde::de::Error::custom)
}

fn default_seed() -> u64 {
    2026
}
fn default_factor() -> f64 {
    1.0
}
fn default_momentum() -> f64 {
    0.9
}
fn default_weight_decay() -> f32 {
    1e-4
}

impl TrainConfig {
    /// Read and check a config file.
    pub fn from_file(path: &Path) -> Result<Self, CliError> {
        let invalid = |message: String| CliError::Train(format!("{}: {message}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| invalid(e.to_string()))?;
        let mut config: TrainConfig =
            toml::from_str(&text).map_err(|e| invalid(e.to_string().trim_end().to_string()))?;
        config.source = text;
        let backbone = config.backbone.validate()?;
        match (config.task, &config.neck) {
            (Task::Detect, None) => {
                return Err(invalid(
                    "task = \"detect\" needs a [neck] table (an FPN: out_channels, num_outs)"
                        .into(),
                ));
            }
            (Task::Classify, Some(_)) => {
                return Err(invalid("[neck] is only used by task = \"detect\"".into()));
            }
            (Task::Detect, Some(neck)) => {
                let features = burn_resnet::features::feature_info(&backbone);
                let neck = neck.validate(&features)?;
                let stride = features[neck.start_level].reduction;
                if !config.image_size.is_multiple_of(stride) {
                    return Err(invalid(format!(
                        "image_size: {} must be a multiple of the head's stride {stride}",
                        config.image_size
                    )));
                }
            }
            (Task::Classify, None) => {}
        }
        for (field, value) in [
            ("image_size", config.image_size),
            ("batch_size", config.batch_size),
            ("epochs", config.epochs),
        ] {
            if value == 0 {
                return Err(invalid(format!("{field} must be at least 1")));
            }
        }
        config.check_data().map_err(invalid)?;
        if let Some(weights) = &config.weights
            && !weights.is_file()
        {
            return Err(invalid(format!(
                "weights: {} is not a file",
                weights.display()
            )));
        }
        if config.weights_source.is_some() && config.weights.is_none() {
            return Err(invalid(
                "weights_source names the key names of `weights`, which is not given".into(),
            ));
        }
        // A ResNeSt's split attention normalises a 1x1 map over the batch: a batch of one
        // image (a whole one, or the last of an epoch) has no batch statistics there. (With
        // data from disk, the split's size is checked once the folder is read.)
        if let Some(stage) = backbone.first_batch_statistics_attention()
            && (config.batch_size == 1
                || (config.data.is_none() && config.train_images % config.batch_size == 1))
        {
            return Err(invalid(format!(
                "batch_size: {} with train_images {} leaves a batch of 1 image, on which \
                 layer{}'s split attention (ResNeSt) cannot train its BatchNorm; make every \
                 batch at least 2 images",
                config.batch_size,
                config.train_images,
                stage + 1
            )));
        }
        if config
            .epochs
            .checked_mul(config.train_images.div_ceil(config.batch_size.max(1)))
            .is_none()
        {
            return Err(invalid(format!(
                "epochs × steps per epoch ({} × ⌈{} / {}⌉) overflows",
                config.epochs, config.train_images, config.batch_size
            )));
        }
        if !(config.learning_rate > 0.0 && config.learning_rate <= 1.0) {
            return Err(invalid(format!(
                "learning_rate: {} must lie in (0, 1]",
                config.learning_rate
            )));
        }
        if !(config.backbone_lr_factor > 0.0 && config.backbone_lr_factor <= 1.0) {
            return Err(invalid(format!(
                "backbone_lr_factor: {} must lie in (0, 1]",
                config.backbone_lr_factor
            )));
        }
        // SGD's momentum must stay below 1 (at 1 or above the velocity never decays), and the
        // weight decay is an L2 factor: NaN, Inf or negative values would train to NaN.
        if !(config.momentum >= 0.0 && config.momentum < 1.0) {
            return Err(invalid(format!(
                "momentum: {} must lie in [0, 1)",
                config.momentum
            )));
        }
        if !(config.weight_decay >= 0.0 && config.weight_decay < 1.0) {
            return Err(invalid(format!(
                "weight_decay: {} must lie in [0, 1)",
                config.weight_decay
            )));
        }
        Ok(config)
    }

    /// The generated splits' sizes, or `[data]` alone, as the task needs.
    fn check_data(&self) -> Result<(), String> {
        let Some(data) = &self.data else {
            for (field, value) in [
                ("train_images", self.train_images),
                ("valid_images", self.valid_images),
            ] {
                if value == 0 {
                    return Err(format!(
                        "{field} must be at least 1 (or read data from disk with a [data] table)"
                    ));
                }
            }
            return Ok(());
        };
        for (field, value) in [
            ("train_images", self.train_images),
            ("valid_images", self.valid_images),
        ] {
            if value != 0 {
                return Err(format!(
                    "{field} sizes the generated data; with [data] the folders give the images"
                ));
            }
        }
        if data.threads == 0 {
            return Err("data.threads must be at least 1".into());
        }
        let annotations = [
            ("data.train_annotations", &data.train_annotations),
            ("data.valid_annotations", &data.valid_annotations),
        ];
        for (field, value) in annotations {
            match (self.task, value) {
                (Task::Detect, None) => {
                    return Err(format!(
                        "{field} is missing: detection reads COCO annotation files"
                    ));
                }
                (Task::Classify, Some(_)) => {
                    return Err(format!(
                        "{field}: classification reads image folders (ROOT/<class>/*.png), not COCO files"
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The seed of the generated validation split (the training split's `seed` plus one,
    /// wrapping), so that the two splits never share an image.
    pub fn valid_seed(&self) -> u64 {
        self.seed.wrapping_add(1)
    }

    /// A training split of `images` read from `source` (disk data): an error when a ResNeSt
    /// would meet a last batch of one image (its split attention normalises over the batch).
    pub fn check_train_split(&self, images: usize, source: &Path) -> Result<(), CliError> {
        if self
            .backbone
            .validate()?
            .first_batch_statistics_attention()
            .is_some()
            && images % self.batch_size == 1
        {
            return Err(CliError::Train(format!(
                "{}: {images} images at batch_size {} leave a last batch of 1 image, on which a ResNeSt's split attention cannot train its BatchNorm",
                source.display(),
                self.batch_size
            )));
        }
        Ok(())
    }

    /// Whether a step's batch splits over `devices` devices: evenly (`batch_size` is the whole
    /// step's batch; each device takes `batch_size / devices`), and, for a ResNeSt, into shares
    /// of more than one image (its split attention normalises over the batch).
    pub fn check_devices(&self, devices: usize) -> Result<(), CliError> {
        let fault = if !self.batch_size.is_multiple_of(devices) {
            "does not split evenly over them"
        } else if self.batch_size / devices == 1
            && devices > 1
            && self
                .backbone
                .validate()?
                .first_batch_statistics_attention()
                .is_some()
        {
            "leaves one image per device, on which a ResNeSt's split attention cannot train its BatchNorm"
        } else {
            return Ok(());
        };
        Err(CliError::Train(format!(
            "--devices {devices}: batch_size {} {fault} (batch_size is the whole step's batch; each device takes batch_size / devices)",
            self.batch_size
        )))
    }

    /// The estimated memory of training this config (backbone, neck, one batch; the heads are
    /// small), for checking before anything is allocated.
    pub fn memory(&self) -> Result<MemoryEstimate, CliError> {
        let spec = self.backbone.validate()?;
        let size = self.image_size;
        let summary = ModelSummary::new(&spec, size, size)?;
        let mut estimate = summary.memory(self.batch_size, Workload::Training)?;
        if let Some(neck) = &self.neck {
            let features = burn_resnet::features::feature_info(&spec);
            let neck = neck.validate(&features)?;
            let sizes: Vec<[usize; 2]> = features
                .iter()
                .map(|f| f.spatial_size(size, size))
                .collect();
            let overflow = || {
                CliError::Train(format!(
                    "image_size {size} and batch_size {} overflow the neck's memory estimate",
                    self.batch_size
                ))
            };
            // Values kept for backward (×3, as the backbone's), float32, per batch; weights ×4
            // with gradients and optimizer state.
            let activations = neck
                .activations(&sizes)
                .and_then(|v| v.checked_mul(12)?.checked_mul(self.batch_size as u64))
                .ok_or_else(overflow)?;
            let weights = neck
                .params()
                .and_then(|p| p.checked_mul(16))
                .ok_or_else(overflow)?;
            estimate.activations = estimate
                .activations
                .checked_add(activations)
                .ok_or_else(overflow)?;
            estimate.training_state = estimate
                .training_state
                .checked_add(weights)
                .ok_or_else(overflow)?;
        }
        Ok(estimate)
    }
}
