//! On an autodiff device every trainable parameter receives a finite, non-zero gradient.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Gradients, Tensor};

use crate::common::{config, devices};

/// Collects, by module path, the trainable parameters whose gradient is absent or all zero.
struct GradientCheck<'a> {
    grads: &'a Gradients,
    path: Vec<String>,
    checked: usize,
    problems: Vec<String>,
}

impl ModuleVisitor for GradientCheck<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let tensor = param.val();
        if !tensor.is_require_grad() {
            return; // BatchNorm running statistics are state, not parameters.
        }
        self.checked += 1;
        let path = self.path.join(".");
        match tensor.grad(self.grads) {
            None => self.problems.push(format!("{path}: no gradient")),
            Some(grad) => {
                let values = crate::common::values(grad);
                if values.iter().any(|v| !v.is_finite()) {
                    self.problems.push(format!("{path}: non-finite gradient"));
                } else if values.iter().all(|v| *v == 0.0) {
                    self.problems.push(format!("{path}: all-zero gradient"));
                }
            }
        }
    }
}

fn check_gradients(toml: &str, expected_params: usize) {
    for (backend, device) in devices() {
        let training = device.clone().autodiff();
        let backbone = config(toml).init(&device).unwrap().fork(&training).train();
        let images = Tensor::<4>::random([2, 3, 40, 40], burn::tensor::Distribution::Normal(0.0, 1.0), &training);
        let loss = backbone
            .forward(images)
            .into_iter()
            .map(|f| f.mean())
            .reduce(|a, b| a + b)
            .unwrap();
        let grads = loss.backward();
        let mut check = GradientCheck { grads: &grads, path: Vec::new(), checked: 0, problems: Vec::new() };
        backbone.visit(&mut check);
        assert_eq!(check.checked, expected_params, "{backend}: trainable tensors visited");
        assert!(check.problems.is_empty(), "{backend}: {:#?}", check.problems);
    }
}

// zero_init_residual = false: with it, each block's last norm starts at 0 and the convs
// before it get an exactly-zero gradient on the first step (as in mmdet).

#[test]
fn every_parameter_of_a_basic_block_resnet_gets_a_gradient() {
    // Stem conv + 2 norm tensors; 8 blocks x (2 convs + 2 norms x 2); 3 downsamples x 3.
    check_gradients("depth = 18\nbase_channels = 4\nzero_init_residual = false", 3 + 8 * 6 + 3 * 3);
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
