//! `resnet train --devices N`: each step's batch split over N devices (here N workers on the one
//! CPU device) trains as one device with the whole batch, reproducibly, and resumes across
//! device counts.

use std::path::Path;

use super::train::validation_loss;
use super::*;

/// A ResNet-18 at width 8 on 48x48 shapes, 16 steps of 16 images per epoch, BatchNorm in eval
/// mode (`norm_eval`): each image's output then does not depend on the others in its batch, so
/// that a step split over devices is the same step.
///
/// The learning rate keeps the run from amplifying rounding: the shares add their gradients in
/// another order than one device does (~1e-7 of a step), and at 0.05 that difference grew
/// through the 32 steps until a ReLU flipped (1e-4 by the second epoch with the AVX2 kernels,
/// on main before any change); at 0.01 every step stays within 2e-7.
fn frozen_statistics_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("frozen_bn.toml");
    let text = "image_size = 48\ntrain_images = 256\nvalid_images = 64\nbatch_size = 16\nepochs = 2\n\
                learning_rate = 0.01\n[backbone]\ndepth = 18\nbase_channels = 8\nzero_init_residual = false\n\
                norm_eval = true\n";
    std::fs::write(&path, text).unwrap();
    path
}

/// Each step's training loss in `out`'s log of `epoch` (burn-train writes one line per device
/// share and step, then the epoch's mean).
fn step_losses(out: &Path, epoch: usize) -> Vec<f64> {
    let log = std::fs::read_to_string(out.join(format!("train/epoch-{epoch}/Loss.log"))).unwrap();
    log.lines()
        .filter(|line| !line.ends_with(",final"))
        .map(|line| line.split(',').next().unwrap().parse().unwrap())
        .collect()
}

/// Relative difference, the bound of every comparison here: float rounding (the shares add
/// their gradients in another order than one device's batch does) stays near 1e-7.
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-5 * a.abs().max(b.abs())
}

#[test]
fn two_devices_train_as_one_device_with_the_whole_batch() {
    let dir = std::env::temp_dir().join(format!("resnet-devices-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = frozen_statistics_config(&dir);
    let run = |out: &str, extra: &[&str]| stdout(&train(&config, &dir.join(out), extra));

    let one = run("one", &[]);
    let two = run("two", &["--devices", "2"]);
    assert!(
        two.contains("2 devices: each step's batch of 16 split into 2 shares of 8"),
        "{two}"
    );
    for epoch in 1..=2 {
        let (whole, shares) = (
            step_losses(&dir.join("one"), epoch),
            step_losses(&dir.join("two"), epoch),
        );
        assert_eq!((whole.len(), shares.len()), (16, 32), "epoch {epoch}");
        // A step's loss is the mean of its two shares' (equal-sized) means.
        for (step, pair) in shares.chunks(2).enumerate() {
            let mean = (pair[0] + pair[1]) / 2.0;
            assert!(
                close(mean, whole[step]),
                "epoch {epoch} step {}: shares {pair:?} (mean {mean}) vs one device {}",
                step + 1,
                whole[step]
            );
        }
    }
    let after = validation_loss(&one, "after training");
    assert!(
        close(validation_loss(&two, "after training"), after),
        "{two}\nvs\n{one}"
    );

    // Reproducible: the shares' gradients are added in whichever order the devices finish,
    // and with two that sum is the same (floating-point addition is commutative).
    run("again", &["--devices", "2"]);
    for epoch in 1..=2 {
        let [two, again] = ["two", "again"].map(|out| {
            std::fs::read(dir.join(out).join(format!("train/epoch-{epoch}/Loss.log"))).unwrap()
        });
        let sorted = |log: Vec<u8>| {
            // The two shares of a step are logged in the order they finished.
            let text = String::from_utf8(log).unwrap();
            let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
            for pair in lines.chunks_mut(2) {
                pair.sort();
            }
            lines
        };
        assert_eq!(sorted(two), sorted(again), "epoch {epoch}");
    }

    // A run checkpointed on two devices resumes on one, and ends where one device does.
    run("switched", &["--devices", "2", "--stop-after", "1"]);
    let resumed = run("switched", &["--resume"]);
    assert!(
        close(validation_loss(&resumed, "after training"), after),
        "{resumed}\nvs\n{one}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_batch_that_does_not_split_over_the_devices_is_refused_before_anything_is_written() {
    let dir = std::env::temp_dir().join(format!("resnet-devices-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = frozen_statistics_config(&dir);
    let out = dir.join("run");
    let err = stderr_of_failure(&train(&config, &out, &["--devices", "3"]));
    assert!(
        err.contains("--devices 3: batch_size 16 does not split evenly"),
        "{err}"
    );
    assert!(!out.exists(), "the run directory was created");
    let err = stderr_of_failure(&train(&config, &out, &["--devices", "0"]));
    assert!(err.contains("--devices"), "{err}");
    // GPUs the machine lacks are named (wgpu acquires each before training; a build without
    // wgpu says so instead), never a panic at the first tensor.
    let err = stderr_of_failure(&train(
        &config,
        &out,
        &["--backend", "wgpu", "--devices", "16"],
    ));
    assert!(
        err.contains("devices: wgpu device")
            && err.contains("of the 16 asked for is not available")
            || err.contains("'wgpu' is not compiled into this build"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.exists(), "the run directory was created");
    std::fs::remove_dir_all(&dir).ok();
}
