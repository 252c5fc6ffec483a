//! ResNeSt beyond the fixtures: the one-image training batch its split attention cannot
//! normalise, and mmdet's init of the attention's convs.

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use burn_resnet::ResNetError;

use burn_resnet::block::Block;
use burn_resnet::norm::Norm;

use crate::common::{config, values};

const RESNEST: &str = "type = \"ResNeSt\"\ndepth = 50\nbase_channels = 8\ndeep_stem = true\n\
                       avg_down = true\nnum_stages = 2\nstrides = [1, 2]\ndilations = [1, 1]";

/// Training on one image would normalise the attention's 1x1 map over one value per channel
/// (PyTorch raises): `try_forward` says so; two images, eval mode, `norm_eval` and frozen
/// stages are fine.
#[test]
fn training_a_resnest_on_one_image_is_an_error() {
    let device = Device::default();
    let training = device.clone().autodiff();
    let image = |batch: usize, device: &Device| Tensor::<4>::zeros([batch, 3, 32, 32], device);
    let backbone = config(RESNEST).init(&device).unwrap();
    let error = backbone
        .clone()
        .fork(&training)
        .train()
        .try_forward(image(1, &training))
        .expect_err("one image in training");
    assert!(
        matches!(&error, ResNetError::Incompatible { field, .. } if field == "input batch"),
        "{error:?}"
    );
    assert!(error.to_string().contains("layer1"), "{error}");
    assert!(
        backbone
            .clone()
            .fork(&training)
            .train()
            .try_forward(image(2, &training))
            .is_ok()
    );
    assert!(backbone.try_forward(image(1, &device)).is_ok(), "inference");
    for setting in ["norm_eval = true", "frozen_stages = 2"] {
        let backbone = config(&format!("{RESNEST}\n{setting}"))
            .init(&device)
            .unwrap()
            .fork(&training)
            .train();
        assert!(
            backbone.try_forward(image(1, &training)).is_ok(),
            "{setting}"
        );
    }
    // Only the stages that run count: with layer1 frozen, layer2 is named.
    let error = config(&format!("{RESNEST}\nfrozen_stages = 1"))
        .init(&device)
        .unwrap()
        .fork(&training)
        .train()
        .try_forward(image(1, &training))
        .expect_err("layer2 trains");
    assert!(error.to_string().contains("layer2"), "{error}");
}

/// mmdet's init (Kaiming normal, fan-out, on every conv; biases 0): the attention's fc1/fc2
/// start with weights of variance 2 / out_channels and zero biases, `bn3` at 0.
#[test]
fn the_attention_convs_start_as_mmdets_do() {
    let backbone = config(RESNEST).init(&Device::default()).unwrap();
    let mut convs = 0;
    for layer in &backbone.layers {
        for block in &layer.blocks {
            let Block::ResNeSt(block) = block else {
                panic!("a ResNeSt has ResNeSt blocks");
            };
            for fc in [&block.conv2.fc1, &block.conv2.fc2] {
                let [out_channels, ..] = fc.weight.dims();
                let weights = values(fc.weight.val());
                let variance =
                    weights.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / weights.len() as f64;
                let expected = 2.0 / out_channels as f64;
                assert!(
                    (variance / expected - 1.0).abs() < 0.3,
                    "variance {variance} vs {expected} ({} weights)",
                    weights.len()
                );
                let bias = values(fc.bias.as_ref().expect("a bias").val());
                assert!(bias.iter().all(|v| *v == 0.0));
                convs += 1;
            }
            // `zero_init_residual` (the default) starts every block as the identity; mmdet's
            // own init skips ResNeSt here (docs/differences.md).
            let Norm::Batch(norm3) = &block.norm3 else {
                panic!("BatchNorm by default");
            };
            assert!(values(norm3.gamma.val()).iter().all(|v| *v == 0.0));
        }
    }
    assert_eq!(convs, 2 * 7, "fc1 and fc2 of 7 blocks");
}
