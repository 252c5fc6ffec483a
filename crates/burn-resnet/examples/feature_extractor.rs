//! The backbone and mmdet's FPN as the feature extractor of a model of your own: a
//! `#[derive(Module)]` struct holds them as fields next to its head, and the backbone's
//! `feature_info()` sizes the neck, so no channel count is written by hand.
//!
//! ```sh
//! cargo run --release -p burn-resnet --example feature_extractor -- configs/resnet50_detector.toml
//! ```
//!
//! Without an argument it uses a ResNet-50 of width 8, so that it runs in a moment (`cargo test`
//! runs it that way).

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::{Device, Distribution, Tensor};
use burn_resnet::fpn::{Fpn, FpnConfig};
use burn_resnet::{ResNet, ResNetConfig, ResNetError};

/// A one-stage detector's body: backbone → FPN → one 3x3 conv per level (class scores).
#[derive(Module, Debug)]
struct Detector {
    backbone: ResNet,
    neck: Fpn,
    head: Conv2d,
}

impl Detector {
    fn new(backbone: &ResNetConfig, classes: usize, device: &Device) -> Result<Self, ResNetError> {
        let backbone = backbone.init(device)?;
        // RetinaNet's neck: 5 levels from C3 up, the extra ones by stride-2 convs on C5.
        let neck_config = FpnConfig {
            start_level: 1,
            add_extra_convs: burn_resnet::fpn::ExtraConvs::Flag(true),
            ..FpnConfig::new(64, 5)
        };
        let neck = neck_config.init(&backbone.feature_info(), device)?;
        let head = Conv2dConfig::new([64, classes], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(device);
        Ok(Self {
            backbone,
            neck,
            head,
        })
    }

    /// Class scores per pyramid level, finest first.
    fn forward(&self, images: Tensor<4>) -> Vec<Tensor<4>> {
        let features = self.backbone.forward(images);
        let levels = self.neck.forward(&features);
        levels
            .into_iter()
            .map(|level| self.head.forward(level))
            .collect()
    }
}

fn run(config_path: Option<&str>) -> Result<Vec<[usize; 4]>, Box<dyn std::error::Error>> {
    let config = match config_path {
        Some(path) => ResNetConfig::from_toml_file(path)?,
        None => ResNetConfig::from_toml_str(
            "depth = 50\nbase_channels = 8\nfrozen_stages = 1",
            "example",
        )?,
    };
    let device = Device::default();
    let model = Detector::new(&config, 3, &device)?;
    for info in model.backbone.feature_info() {
        println!(
            "backbone {} ({}): {} channels at stride {}",
            info.level_name(),
            info.module,
            info.channels,
            info.reduction
        );
    }
    let images = Tensor::<4>::random([2, 3, 128, 128], Distribution::Normal(0.0, 1.0), &device);
    let scores: Vec<[usize; 4]> = model.forward(images).iter().map(|s| s.dims()).collect();
    for (level, dims) in scores.iter().enumerate() {
        println!("P{}: class scores {dims:?}", level + 3);
    }
    println!("{} parameters in all", model.num_params());
    Ok(scores)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    run(std::env::args().nth(1).as_deref()).map(|_| ())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_detector_gives_scores_at_strides_8_to_128() {
        let scores = super::run(None).unwrap();
        let sides: Vec<usize> = scores.iter().map(|dims| dims[2]).collect();
        assert_eq!(sides, [16, 8, 4, 2, 1]);
        assert!(scores.iter().all(|dims| dims[0] == 2 && dims[1] == 3));
    }
}
