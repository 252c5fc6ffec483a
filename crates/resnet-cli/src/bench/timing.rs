//! The timings of `resnet bench`: one case (inference, or a training step with SGD) on one
//! device, and the stages of an inference forward, with the peak resident memory of each case.

use std::time::Instant;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Distribution, Tensor};
use burn_resnet::{ResNet, ResNetSpec};

use super::{BenchArgs, Case};
use crate::error::CliError;

/// Timings of one case.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct Measurement {
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub images_per_s: f64,
    /// Peak resident memory during the case above the resident memory before it (model and
    /// input already built): what the case itself needs, in MiB; `NaN` where unknown (non-Linux).
    pub peak_mib: f64,
}

/// Median time of each stage of an inference forward (stem with its max-pool, then each
/// layer), syncing the device between stages; printed by `resnet bench --stages`.
pub fn stage_profile(
    spec: &ResNetSpec,
    device: &Device,
    batch: usize,
    args: &BenchArgs,
) -> Result<Vec<(&'static str, f64)>, CliError> {
    let model = spec.init(device);
    let model = if args.fold_batch_norms() {
        model.fold_batch_norms()
    } else {
        model
    };
    let images = Tensor::<4>::random(
        [batch, spec.config.in_channels, args.size, args.size],
        Distribution::Normal(0.0, 1.0),
        device,
    );
    let names = std::iter::once("stem").chain(
        burn_resnet::features::STAGE_NAMES
            .into_iter()
            .take(model.layers.len()),
    );
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); model.layers.len() + 1];
    for run in 0..args.warmup + args.runs() {
        let mut x = images.clone();
        for (index, slot) in times.iter_mut().enumerate() {
            let started = Instant::now();
            x = match index {
                0 => burn_resnet::stem::Stem::pool(
                    model.stem.forward(x, model.spec().stage_mode(None)),
                ),
                i => model.layers[i - 1].forward(x, model.spec().stage_mode(Some(i - 1))),
            };
            sync(device)?;
            if run >= args.warmup {
                slot.push(started.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    Ok(names
        .zip(times)
        .map(|(name, mut t)| {
            t.sort_by(f64::total_cmp);
            (name, t[t.len() / 2])
        })
        .collect())
}

/// Time one case on one device.
pub fn measure(
    spec: &ResNetSpec,
    device: &Device,
    case: Case,
    args: &BenchArgs,
) -> Result<Measurement, CliError> {
    let shape = [case.batch(), spec.config.in_channels, args.size, args.size];
    // The peak is measured from just before the first run, with the model's parameters (Burn
    // initialises them lazily) and the input in memory, as in the PyTorch script: it counts
    // activations, gradients, optimizer state and workspace, not the weights.
    let baseline_mib;
    let mut times = Vec::with_capacity(args.runs());
    match case {
        Case::Infer(_) => {
            let model = spec.init(device);
            let model = if args.fold_batch_norms() {
                model.fold_batch_norms()
            } else {
                model
            };
            let images = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), device);
            model.visit(&mut Materialize);
            baseline_mib = reset_peak_memory();
            for run in 0..args.warmup + args.runs() {
                // The forward pass and nothing after it, as the baselines time `model(images)`
                // and ONNX Runtime's `run`: the outputs are computed once `sync` returns.
                let started = Instant::now();
                let features = model.forward(images.clone());
                sync(device)?;
                if run >= args.warmup {
                    times.push(started.elapsed().as_secs_f64() * 1e3);
                }
                drop(features);
            }
        }
        Case::Train(_) => {
            let training = device.clone().autodiff();
            let mut model = match args.burn_checkpointing {
                // Built on the checkpointing device: Burn 0.22's `Device` equality ignores
                // autodiff and its checkpointing strategy, so a fork to it would leave the
                // parameters where they are (and their ops then refuse to mix strategies).
                true => spec
                    .init(&training.clone().gradient_checkpointing())
                    .train(),
                false => spec.init(device).fork(&training).train(),
            };
            let training = model.devices()[0].clone();
            let momentum = MomentumConfig {
                momentum: 0.9,
                dampening: 0.0,
                nesterov: false,
            };
            let mut optimizer = SgdConfig::new().with_momentum(Some(momentum)).init();
            let images = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &training);
            model.visit(&mut Materialize);
            baseline_mib = reset_peak_memory();
            for run in 0..args.warmup + args.runs() {
                let started = Instant::now();
                let grads = feature_loss(&model, images.clone()).backward();
                let grads = GradientsParams::from_grads(grads, &model);
                model = optimizer.step(0.01, model, grads);
                sync(device)?;
                if run >= args.warmup {
                    times.push(started.elapsed().as_secs_f64() * 1e3);
                }
            }
        }
    }
    times.sort_by(f64::total_cmp);
    let median_ms = times[times.len() / 2];
    Ok(Measurement {
        median_ms,
        min_ms: times[0],
        max_ms: times[times.len() - 1],
        images_per_s: case.batch() as f64 * 1e3 / median_ms,
        // The high-water mark can sit a fraction below the baseline read before; NaN (unknown)
        // stays NaN.
        peak_mib: match memory_mib("VmHWM:") - baseline_mib {
            peak if peak < 0.0 => 0.0,
            peak => peak,
        },
    })
}

/// The benchmark's loss: the sum of the outputs' means (a scalar that depends on every output).
fn feature_loss(model: &ResNet, images: Tensor<4>) -> Tensor<1> {
    model
        .forward(images)
        .into_iter()
        .map(|f| f.mean())
        .reduce(|a, b| a + b)
        .expect("at least one output")
}

fn sync(device: &Device) -> Result<(), CliError> {
    device
        .sync()
        .map_err(|e| CliError::Bench(format!("device sync failed: {e:?}")))
}

/// Touches every parameter, so that lazily initialised ones are allocated now.
struct Materialize;

impl ModuleVisitor for Materialize {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let _ = param.val();
    }
}

/// Reset the process's peak resident set size (Linux `clear_refs` 5) and return the current
/// resident size in MiB, the baseline the case's peak is measured from.
fn reset_peak_memory() -> f64 {
    // Free heap pages kept from an earlier case would otherwise be counted in the baseline and
    // reused uncounted by this one.
    burn_resnet::release_freed_memory();
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    memory_mib("VmRSS:")
}

/// A `/proc/self/status` memory line (`VmRSS:`, `VmHWM:`) in MiB; `NaN` where unavailable.
fn memory_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with(field))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}
