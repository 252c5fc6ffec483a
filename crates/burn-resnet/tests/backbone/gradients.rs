//! On an autodiff device every trainable parameter receives a finite, non-zero gradient.

use burn::module::Module;
use burn::tensor::Tensor;

use crate::common::{config, devices, float_tensors};

fn check_gradients(toml: &str, expected_params: usize) {
    for (backend, device) in devices() {
        let training = device.clone().autodiff();
        let backbone = config(toml).init(&device).unwrap().fork(&training).train();
        let images = Tensor::<4>::random(
            [2, 3, 40, 40],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &training,
        );
        let loss = backbone
            .forward(images)
            .into_iter()
            .map(|f| f.mean())
            .reduce(|a, b| a + b)
            .unwrap();
        let grads = loss.backward();
        // BatchNorm running statistics are state, not parameters: not trainable.
        let trainable: Vec<_> = float_tensors(&backbone, Some(&grads))
            .into_iter()
            .filter(|t| t.trainable)
            .collect();
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
