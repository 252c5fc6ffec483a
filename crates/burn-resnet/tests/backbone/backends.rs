//! One module type, every backend: the wgpu backend (Mesa's lavapipe on machines without a
//! GPU) passes the mmdet fixtures in eval and training mode, and the backends compiled in agree
//! with each other on a whole training step. The CPU backends pass every other test through
//! `common::devices()`; wgpu gets these few small cases (kernels compile per shape on wgpu):
//! one of each block kind in eval mode and in training.

#[cfg(any(
    all(feature = "flex", feature = "ndarray"),
    all(feature = "wgpu", any(feature = "flex", feature = "ndarray"))
))]
#[test]
fn every_backend_computes_the_same_training_step() {
    use crate::training_parity::{
        GRADIENT_TOLERANCE, STATISTICS_TOLERANCE, compare_steps, training_step,
    };
    let backends = burn_resnet::BackendKind::enabled();
    let first = backends[0];
    let baseline = training_step("resnet18_train", &first.device().unwrap());
    for other in &backends[1..] {
        let step = training_step("resnet18_train", &other.device().unwrap());
        compare_steps(
            &format!("resnet18_train: {other} against {first}"),
            &step,
            &baseline,
            (GRADIENT_TOLERANCE, STATISTICS_TOLERANCE),
        );
    }
}

#[cfg(feature = "wgpu")]
mod wgpu {
    use burn_resnet::BackendKind;

    use crate::parity::check_parity_on;
    use crate::training_parity::{
        GRADIENT_TOLERANCE, STATISTICS_TOLERANCE, check_resnest_training_on, compare_steps,
        reference_step, training_step,
    };

    #[test]
    fn wgpu_matches_mmdet_in_eval_mode() {
        let device = BackendKind::Wgpu.device().unwrap();
        for case in [
            "resnet50_v1d",
            "resnext50_4x2d",
            "resnet50_dcnv2",
            "res2net50_w4s4",
            "resnest50_r4_g2_dilated",
        ] {
            check_parity_on(case, BackendKind::Wgpu, &device);
        }
    }

    #[test]
    fn wgpu_training_step_matches_mmdet() {
        let device = BackendKind::Wgpu.device().unwrap();
        for case in ["resnet18_train", "res2net50_2stages_train"] {
            let expected = reference_step(case, &device);
            compare_steps(
                &format!("{case} on wgpu"),
                &training_step(case, &device),
                &expected,
                (GRADIENT_TOLERANCE, STATISTICS_TOLERANCE),
            );
        }
    }

    /// ResNeSt's split attention trained on wgpu (softmax, 1x1 BatchNorm, avd pool).
    #[test]
    fn wgpu_resnest_training_step_matches_mmdet() {
        let device = BackendKind::Wgpu.device().unwrap();
        check_resnest_training_on("resnest50_2stages_train", "wgpu", &device);
    }
}
