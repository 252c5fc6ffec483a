//! On an autodiff device every trainable parameter receives a finite, non-zero gradient.

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use burn_resnet::ResNet;

use crate::common::{FloatTensor, config, devices, float_tensors};

/// The trainable tensors of `backbone` (BatchNorm running statistics are state, not
/// parameters) with their gradients after one backward pass of the sum of its outputs' means,
/// on two random `size`x`size` images on `device`.
fn trainable_after_backward(backbone: &ResNet, size: usize, device: &Device) -> Vec<FloatTensor> {
    let images = Tensor::<4>::random(
        [2, 3, size, size],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        device,
    );
    let loss = backbone
        .forward(images)
        .into_iter()
        .map(|f| f.mean())
        .reduce(|a, b| a + b)
        .unwrap();
    let grads = loss.backward();
    float_tensors(backbone, Some(&grads))
        .into_iter()
        .filter(|t| t.trainable)
        .collect()
}

fn check_gradients(toml: &str, expected_params: usize) {
    for (backend, device) in devices() {
        let training = device.clone().autodiff();
        let backbone = config(toml).init(&device).unwrap().fork(&training).train();
        let trainable = trainable_after_backward(&backbone, 40, &training);
        assert_eq!(
            trainable.len(),
            expected_params,
            "{backend}: trainable tensors visited"
        );
        let problems: Vec<_> = trainable
            .iter()
            .filter_map(|t| match &t.grad {
                None => Some(format!("{}: no gradient", t.path)),
                Some(g) if g.iter().any(|v| !v.is_finite()) => {
                    Some(format!("{}: non-finite gradient", t.path))
                }
                Some(g) if g.iter().all(|v| *v == 0.0) => {
                    Some(format!("{}: all-zero gradient", t.path))
                }
                Some(_) => None,
            })
            .collect();
        assert!(problems.is_empty(), "{backend}: {problems:#?}");
    }
}

// zero_init_residual = false: with it, each block's last norm starts at 0 and the convs
// before it get an exactly-zero gradient on the first step (as in mmdet).

#[test]
fn every_parameter_of_a_basic_block_resnet_gets_a_gradient() {
    // Stem conv + 2 norm tensors; 8 blocks x (2 convs + 2 norms x 2); 3 downsamples x 3.
    check_gradients(
        "depth = 18\nbase_channels = 4\nzero_init_residual = false",
        3 + 8 * 6 + 3 * 3,
    );
}

#[test]
fn every_parameter_of_a_v1d_resnext_gets_a_gradient() {
    // Deep stem 3 x 3; 16 blocks x (3 convs + 3 norms x 2); 4 downsamples x 3.
    check_gradients(
        "depth = 50\nbase_channels = 4\ngroups = 2\nbase_width = 2\ndeep_stem = true\navg_down = true\n\
         stem_output = true\nzero_init_residual = false",
        9 + 16 * 9 + 4 * 3,
    );
}

/// Built directly on an autodiff device (as `resnet train` and most Burn code build a model),
/// the parameters whose initial value the init derives from another (norm weights zeroed by
/// `zero_init_residual`, the plugins' zeroed biases) are trainable leaves like the rest: each
/// gets a gradient, as when the backbone is built on a plain device and moved over, and
/// `train()` accepts the module (it panicked on the derived ones).
#[test]
fn a_backbone_built_on_an_autodiff_device_trains_its_zero_initialised_parameters() {
    let plugins = "[[plugins]]\nposition = \"after_conv3\"\nstages = [false, false, true, true]\n\
                   cfg = { type = \"ContextBlock\", ratio = 0.25 }\n\
                   [[plugins]]\nposition = \"after_conv2\"\nstages = [false, false, false, true]\n\
                   cfg = { type = \"GeneralizedAttention\", num_heads = 2, attention_type = \"1111\", kv_stride = 2 }\n\
                   [[plugins]]\nposition = \"after_conv2\"\nstages = [false, false, true, false]\n\
                   cfg = { type = \"NonLocal2d\", sub_sample = true }\n";
    let tomls = [
        "depth = 18\nbase_channels = 4\n".to_string(),
        format!("depth = 50\nbase_channels = 8\n{plugins}"),
        "depth = 50\nbase_channels = 8\nnorm_cfg = { type = \"GN\", num_groups = 4 }\n".to_string(),
        "depth = 50\nbase_channels = 8\nstage_with_dcn = [false, true, true, true]\n\
         dcn = { type = \"DCNv2\", deform_groups = 1, fallback_on_stride = false }\n"
            .to_string(),
        "type = \"Res2Net\"\ndepth = 50\nbase_channels = 8\nstem_channels = 8\nbase_width = 4\n\
         deep_stem = true\navg_down = true\n"
            .to_string(),
        "type = \"ResNeSt\"\ndepth = 50\nbase_channels = 8\nstem_channels = 16\nradix = 2\n\
         avg_down_stride = true\ndeep_stem = true\navg_down = true\n"
            .to_string(),
    ];
    let device = devices()[0].1.clone();
    let training = device.clone().autodiff();
    for toml in &tomls {
        let config = config(toml);
        let gradients = |backbone: ResNet| {
            trainable_after_backward(&backbone, 64, &training)
                .into_iter()
                .map(|t| (t.path, t.grad.is_some()))
                .collect::<Vec<_>>()
        };
        let moved = gradients(config.init(&device).unwrap().fork(&training).train());
        assert!(moved.iter().all(|(_, has)| *has), "{toml}");
        let built_there = config.init(&training).unwrap();
        let there = gradients(built_there.clone());
        let missing: Vec<_> = moved.iter().filter(|t| !there.contains(t)).collect();
        assert!(missing.is_empty(), "{toml}: no gradient for {missing:#?}");
        assert_eq!(there, moved, "{toml}");
        assert_eq!(gradients(built_there.train()), moved, "{toml}");
    }
}
