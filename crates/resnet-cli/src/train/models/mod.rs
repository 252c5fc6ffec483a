//! The models `resnet train` trains around the backbone, each with burn-train's training and
//! validation steps: a pooled linear classifier ([`classifier`]) and an FPN with a
//! CenterNet-style detection head ([`detector`]).

pub mod classifier;
pub mod detector;

use burn::tensor::{Gradients, Tensor};

/// The gradients of one device's share of a training step whose batch is split over `devices`
/// devices: those of `loss` (the share's mean) divided by `devices`. burn-train's multi-device
/// strategy adds the shares' gradients up, so the sum is the gradient of the mean over the
/// whole batch, as on one device (PyTorch's DDP averages the same way).
pub fn share_gradients(loss: &Tensor<1>, devices: usize) -> Gradients {
    match devices {
        0 | 1 => loss.backward(),
        n => loss.clone().div_scalar(n as f64).backward(),
    }
}

#[cfg(test)]
mod tests {
    use burn::module::{Module, ModuleVisitor, Param};
    use burn::tensor::{Distribution, Tensor};
    use burn_resnet::{ResNet, ResNetConfig};

    /// Every float tensor of a module (weights and BatchNorm running statistics), flattened.
    fn values(module: &ResNet) -> Vec<f32> {
        struct Collect(Vec<f32>);
        impl ModuleVisitor for Collect {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                self.0.extend(param.val().into_data().iter::<f32>());
            }
        }
        let mut collect = Collect(Vec::new());
        // `valid()` merges what the workers' threads wrote into the running statistics.
        module.valid().visit(&mut collect);
        collect.0
    }

    /// What `--devices 2` does to BatchNorm's running statistics: burn-train's workers each run
    /// a training forward on their share, on their own thread, with clones of one model; the
    /// clones share Burn's `RunningState`, which keeps each thread's update and averages them.
    /// So the statistics are the mean of what each share alone would give (docs/cli.md).
    #[test]
    fn two_workers_leave_the_mean_of_their_shares_running_statistics() {
        let device = burn_resnet::BackendKind::default_enabled()
            .expect("a backend")
            .device()
            .unwrap()
            .autodiff();
        let config = ResNetConfig::from_toml_str("depth = 18\nbase_channels = 8\n", "test")
            .unwrap()
            .validate()
            .unwrap();
        device.seed(7);
        let model = config.init(&device);
        let shares: Vec<Tensor<4>> = (0..2)
            .map(|i| Tensor::random([2, 3, 32, 32], Distribution::Normal(i as f64, 1.0), &device))
            .collect();

        // Each share alone, on a copy with statistics of its own.
        let alone: Vec<Vec<f32>> = shares
            .iter()
            .map(|share| {
                let copy = model.independent_clone();
                let _ = copy.forward(share.clone());
                values(&copy)
            })
            .collect();
        // Both shares at once, as burn-train's workers run them.
        std::thread::scope(|scope| {
            for share in &shares {
                let (worker, share) = (model.clone(), share.clone());
                scope.spawn(move || {
                    let _ = worker.forward(share);
                });
            }
        });
        let merged = values(&model);

        assert_eq!(merged.len(), alone[0].len());
        let mut changed = 0;
        for (i, &value) in merged.iter().enumerate() {
            let mean = (alone[0][i] + alone[1][i]) / 2.0;
            let error = (value - mean).abs() / mean.abs().max(1e-3);
            // Written so that NaN fails too.
            assert!(
                error <= 1e-5,
                "value {i}: merged {value}, shares {} and {}",
                alone[0][i],
                alone[1][i]
            );
            changed += usize::from(alone[0][i] != alone[1][i]);
        }
        assert!(
            changed > 100,
            "only {changed} values differ between the shares"
        );
    }
}
