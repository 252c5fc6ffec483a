//! Parameter and multiply-add counts agree with the published figures and with the modules.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn_resnet::{ModelSummary, ResNetConfig};

use crate::common::{devices, repo_path};

fn summary(name: &str, side: usize) -> ModelSummary {
    let config = ResNetConfig::from_toml_file(repo_path(&format!("configs/{name}.toml"))).unwrap();
    ModelSummary::new(&config.validate().unwrap(), side, side)
}

/// torchvision's parameter counts without the classifier (`fc`: 512 or 2048 x 1000 + 1000).
#[test]
fn parameter_counts_match_torchvision_without_the_classifier() {
    for (name, total_with_fc, fc_in) in [
        ("resnet18", 11_689_512, 512),
        ("resnet34", 21_797_672, 512),
        ("resnet50", 25_557_032, 2048),
        ("resnet101", 44_549_160, 2048),
        ("resnet152", 60_192_808, 2048),
    ] {
        assert_eq!(summary(name, 224).total_params(), total_with_fc - (fc_in * 1000 + 1000), "{name}");
    }
}

#[test]
fn resnet50_costs_4_1_giga_multiply_adds_at_224() {
    let summary = summary("resnet50", 224);
    let gmacs = summary.total_macs() as f64 / 1e9;
    // torchvision's 4.09 GMACs include the 2 M of the classifier.
    assert!((4.07..4.10).contains(&gmacs), "{gmacs}");
    let outputs: Vec<_> = summary.stages.iter().map(|s| (s.name, s.output_size, s.out_channels)).collect();
    assert_eq!(
        outputs,
        [
            ("stem", [112, 112], 64),
            ("layer1", [56, 56], 256),
            ("layer2", [28, 28], 512),
            ("layer3", [14, 14], 1024),
            ("layer4", [7, 7], 2048)
        ]
    );
}

struct TrainableCount(usize);

impl ModuleVisitor for TrainableCount {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let tensor = param.val();
        if tensor.is_require_grad() {
            self.0 += tensor.shape().num_elements();
        }
    }
}

#[test]
fn the_summary_counts_exactly_the_modules_trainable_parameters() {
    let (_, device) = devices().remove(0);
    let training = device.clone().autodiff();
    for name in ["resnet18", "resnet50_v1d", "resnext101_32x4d", "resnet50_dilated", "resnet50_dcnv2_c3-c5"] {
        let config = ResNetConfig::from_toml_file(repo_path(&format!("configs/{name}.toml"))).unwrap();
        let backbone = config.init(&device).unwrap().fork(&training).train();
        let mut count = TrainableCount(0);
        backbone.visit(&mut count);
        assert_eq!(count.0, summary(name, 224).total_params(), "{name}");
    }
}
