//! Stops `resnet train` at the first training step whose loss or gradients are not finite.
//!
//! A diverged run (or weights that went NaN) would otherwise keep stepping: the optimizer turns
//! every weight into NaN, burn-train saves that as the epoch's checkpoint, and the displayed
//! metrics may still look finite. The guard runs inside each model's training step: it checks
//! the loss and the sum of every gradient (NaN or ±Inf anywhere makes that sum non-finite),
//! and on a failure hands back no gradients (so the optimizer leaves the weights as they were)
//! and stops burn-train through its [`Interrupter`], which ends the epoch before its checkpoint
//! is written. [`NonFiniteGuard::failure`] then names the epoch and step.

use std::sync::{Arc, Mutex};

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Gradients, Tensor};
use burn::train::Interrupter;

/// Shared by every clone of a model (burn-train clones it between steps).
#[derive(Clone)]
pub struct NonFiniteGuard {
    interrupter: Interrupter,
    /// Epoch of the first step this guard sees (1, or the one after a resumed checkpoint).
    first_epoch: usize,
    steps_per_epoch: usize,
    /// Devices each step runs on: each checks its own share, so a step is that many checks.
    devices: usize,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    steps: usize,
    failure: Option<String>,
}

impl std::fmt::Debug for NonFiniteGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonFiniteGuard")
            .field("first_epoch", &self.first_epoch)
            .field("steps_per_epoch", &self.steps_per_epoch)
            .finish()
    }
}

impl NonFiniteGuard {
    /// A guard that stops `interrupter`'s run; steps are counted from `first_epoch`, with
    /// `steps_per_epoch` steps each.
    pub fn new(interrupter: Interrupter, first_epoch: usize, steps_per_epoch: usize) -> Self {
        Self {
            interrupter,
            first_epoch,
            steps_per_epoch: steps_per_epoch.max(1),
            devices: 1,
            state: Arc::default(),
        }
    }

    /// The guard of a run whose steps are split over `devices` devices (burn-train's
    /// multi-device strategy): every device checks its share of each step.
    pub fn with_devices(self, devices: usize) -> Self {
        Self {
            devices: devices.max(1),
            ..self
        }
    }

    /// Check one step's loss and gradients; the gradients to apply (none after a failure).
    pub fn check<M: Module>(
        &self,
        module: &M,
        loss: &Tensor<1>,
        grads: Gradients,
    ) -> GradientsParams {
        let loss_value = loss.clone().sum().into_scalar::<f32>();
        let gradient_sum = gradient_sum(module, &grads);
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.steps += 1;
        if state.failure.is_some() {
            return GradientsParams::new();
        }
        let fault = if !loss_value.is_finite() {
            format!("the loss is {loss_value}")
        } else if !gradient_sum.is_finite() {
            format!(
                "the gradients hold NaN or Inf values (their sum is {gradient_sum}; the loss is {loss_value})"
            )
        } else {
            return GradientsParams::from_grads(grads, module);
        };
        let step = (state.steps - 1) / self.devices;
        // burn-train adds up the devices' gradients as they come: a device that finished
        // before this one may already have handed over its (finite) share.
        let applied = match self.devices {
            1 => "no update was applied",
            _ => "this device's share was not applied (the other devices' shares may have been)",
        };
        let message = format!(
            "stopped at epoch {}, step {} of {}: {fault}; {applied} and no checkpoint of this epoch was saved",
            self.first_epoch + step / self.steps_per_epoch,
            step % self.steps_per_epoch + 1,
            self.steps_per_epoch,
        );
        self.interrupter.stop(Some(&message));
        state.failure = Some(message);
        GradientsParams::new()
    }

    /// The interrupter that stops the run (give it to burn-train).
    pub fn interrupter(&self) -> Interrupter {
        self.interrupter.clone()
    }

    /// Why the run was stopped, if it was.
    pub fn failure(&self) -> Option<String> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .failure
            .clone()
    }
}

/// The gradients a training step hands burn-train: checked by `guard` when there is one.
pub fn checked_gradients<M: Module>(
    guard: Option<&NonFiniteGuard>,
    module: &M,
    loss: &Tensor<1>,
    grads: Gradients,
) -> GradientsParams {
    match guard {
        Some(guard) => guard.check(module, loss, grads),
        None => GradientsParams::from_grads(grads, module),
    }
}

/// The sum of every gradient of `module`'s parameters (one value read back for all of them).
fn gradient_sum<M: Module>(module: &M, grads: &Gradients) -> f32 {
    struct Sum<'a> {
        grads: &'a Gradients,
        total: Option<Tensor<1>>,
    }
    impl ModuleVisitor for Sum<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(grad) = param.val().grad(self.grads) {
                let sum = grad.sum();
                self.total = Some(match self.total.take() {
                    Some(total) => total + sum,
                    None => sum,
                });
            }
        }
    }
    let mut sum = Sum { grads, total: None };
    module.visit(&mut sum);
    sum.total.map_or(0.0, |total| total.into_scalar::<f32>())
}

#[cfg(test)]
mod tests {
    use burn::module::Module;
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::{Device, Distribution, Tensor};
    use burn::train::Interrupter;

    use super::NonFiniteGuard;

    fn device() -> Device {
        burn_resnet::BackendKind::default_enabled()
            .expect("a backend")
            .device()
            .unwrap()
            .autodiff()
    }

    /// A linear layer's loss on random input, with `poison` added to the input.
    fn step(guard: &NonFiniteGuard, linear: &Linear, poison: f32) -> usize {
        let device = device();
        let input = Tensor::<2>::random([4, 3], Distribution::Normal(0.0, 1.0), &device) + poison;
        let loss = linear.forward(input).powi_scalar(2).mean();
        let grads = loss.backward();
        guard.check(linear, &loss, grads).len()
    }

    #[test]
    fn a_finite_step_passes_its_gradients_and_a_nan_one_stops_the_run() {
        let linear = LinearConfig::new(3, 2).init(&device());
        let interrupter = Interrupter::new();
        // Resumed after epoch 2, three steps per epoch: the fifth step is epoch 4, step 2.
        let guard = NonFiniteGuard::new(interrupter.clone(), 3, 3);
        for _ in 0..4 {
            assert_eq!(
                step(&guard, &linear, 0.0),
                linear.num_params().min(2),
                "weight and bias gradients"
            );
            assert!(!interrupter.should_stop());
        }
        assert_eq!(
            step(&guard, &linear, f32::NAN),
            0,
            "no gradients after a NaN loss"
        );
        assert!(interrupter.should_stop());
        let failure = guard.failure().expect("a failure");
        assert!(
            failure.contains("epoch 4, step 2 of 3") && failure.contains("NaN"),
            "{failure}"
        );
        // Later steps apply nothing, and the first failure is the one reported.
        assert_eq!(step(&guard, &linear, 0.0), 0);
        assert_eq!(guard.failure().unwrap(), failure);
    }

    #[test]
    fn a_step_split_over_devices_counts_once() {
        let linear = LinearConfig::new(3, 2).init(&device());
        // Two devices, four steps per epoch: the seventh check is the second device's share
        // of step 4 of epoch 1.
        let guard = NonFiniteGuard::new(Interrupter::new(), 1, 4).with_devices(2);
        for _ in 0..6 {
            step(&guard, &linear, 0.0);
        }
        assert_eq!(step(&guard, &linear, f32::INFINITY), 0);
        let failure = guard.failure().expect("a failure");
        assert!(
            failure.contains("epoch 1, step 4 of 4") && failure.contains("other devices' shares"),
            "{failure}"
        );
    }

    #[test]
    fn an_infinite_gradient_with_a_finite_loss_stops_the_run() {
        let linear = LinearConfig::new(3, 2).init(&device());
        let guard = NonFiniteGuard::new(Interrupter::new(), 1, 10);
        // sqrt(w − w) is 0 with an infinite slope: the loss is finite, the gradient is not.
        let weight = linear.weight.val();
        let loss = (weight.clone() - weight.detach()).sqrt().sum();
        assert_eq!(guard.check(&linear, &loss, loss.backward()).len(), 0);
        let failure = guard.failure().expect("a failure");
        assert!(
            failure.contains("epoch 1, step 1 of 10") && failure.contains("gradients"),
            "{failure}"
        );
    }
}
