//! `with_cp` (mmdet's gradient checkpointing) against the plain training path.

use burn::module::Module;
use burn::tensor::{Distribution, Tensor};
use burn_resnet::ResNet;

use crate::common::{TINY, config, devices, float_tensors, values};

/// `with_cp` recomputes each block in the backward pass: the same outputs, gradients and running
/// statistics as without it (it only changes what is kept in memory; `resnet bench --with-cp`
/// shows how much).
#[test]
fn with_cp_gives_the_same_outputs_gradients_and_statistics() {
    // zero_init_residual = false: with the last norm of each block at 0, every gradient through
    // the recomputed convs would be exactly 0 in both runs and compare equal whatever they did.
    for base in [
        TINY.to_string(),
        "depth = 50\nbase_channels = 8\nzero_init_residual = false\n".to_string(),
        "depth = 50\nbase_channels = 8\ngroups = 2\nbase_width = 4\nzero_init_residual = false\n"
            .to_string(),
    ] {
        let base = base.as_str();
        for (backend, device) in devices() {
            let training = device.clone().autodiff();
            // The same weights for both (through a burnpack file; seeding the shared generator
            // would race with the other tests), the same images and loss weights.
            let file =
                std::env::temp_dir().join(format!("with-cp-{}-{backend}.bpk", std::process::id()));
            config(base)
                .init(&device)
                .unwrap()
                .save_burnpack(&file)
                .unwrap();
            let images =
                Tensor::<4>::random([2, 3, 40, 40], Distribution::Normal(0.5, 1.0), &training);
            let loss_weights: Vec<Tensor<4>> = config(base)
                .init(&device)
                .unwrap()
                .forward(Tensor::zeros([2, 3, 40, 40], &device))
                .iter()
                .map(|o| Tensor::random(o.dims(), Distribution::Normal(0.0, 1.0), &training))
                .collect();
            let run = |with_cp: bool| {
                let fresh = config(&format!("{base}with_cp = {with_cp}\n"))
                    .init(&device)
                    .unwrap();
                let model: ResNet = fresh.load_burnpack(&file).unwrap().fork(&training).train();
                let blocks_before = burn_resnet::recomputed_blocks_on_this_thread();
                let outputs = model.forward(images.clone());
                let checkpointed = burn_resnet::recomputed_blocks_on_this_thread() - blocks_before;
                let loss = outputs
                    .iter()
                    .zip(&loss_weights)
                    .map(|(o, w)| (o.clone() * w.clone()).sum())
                    .reduce(|a, b| a + b)
                    .unwrap();
                let grads = loss.backward();
                let tensors = float_tensors(&model, Some(&grads));
                let synced = float_tensors(&model.valid(), None);
                (
                    outputs.into_iter().map(values).collect::<Vec<_>>(),
                    tensors,
                    synced,
                    checkpointed,
                )
            };
            let (plain_out, plain, plain_synced, plain_checkpointed) = run(false);
            let (cp_out, cp, cp_synced, checkpointed) = run(true);
            // The comparison means something only where the recomputing op ran: on flex, for
            // every block (elsewhere with_cp falls back to the plain blocks, documented).
            let blocks: usize = config(base)
                .validate()
                .unwrap()
                .stages
                .iter()
                .map(|s| s.num_blocks)
                .sum();
            assert_eq!(plain_checkpointed, 0, "{backend} {base}");
            if backend == burn_resnet::BackendKind::Flex {
                assert_eq!(
                    checkpointed, blocks,
                    "{backend} {base}: blocks run by the checkpointed op"
                );
            }
            assert_eq!(
                (cp_out.len(), cp.len(), cp_synced.len()),
                (plain_out.len(), plain.len(), plain_synced.len()),
                "{backend} {base}"
            );
            let close = |a: &[f32], b: &[f32]| {
                let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
                a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
            };
            for (i, (a, b)) in cp_out.iter().zip(&plain_out).enumerate() {
                assert!(
                    close(a, b) < 1e-5,
                    "{backend} {base}: output {i} differs by {:e}",
                    close(a, b)
                );
            }
            for (a, b) in cp.iter().zip(&plain) {
                if let (Some(ga), Some(gb)) = (&a.grad, &b.grad) {
                    assert!(
                        close(ga, gb) < 1e-4,
                        "{backend}: gradient of {} differs by {:e}",
                        a.path,
                        close(ga, gb)
                    );
                    assert!(
                        gb.iter().any(|g| *g != 0.0),
                        "{backend} {base}: the gradient of {} is all zero",
                        b.path
                    );
                }
                assert_eq!(a.grad.is_some(), b.grad.is_some(), "{backend}: {}", a.path);
            }
            for (a, b) in cp_synced.iter().zip(&plain_synced) {
                assert!(
                    close(&a.values, &b.values) < 1e-5,
                    "{backend}: {} differs after the step",
                    a.path
                );
            }
            std::fs::remove_file(&file).unwrap();
        }
    }
}
