//! The training fixtures on flex with every conv kernel this CPU runs. The kernel decides more
//! than inference: in a training step the blocked kernels (AVX-512, AVX2, portable) run the
//! stride-1 3x3 convs as Winograd (forward and input gradient, also inside the conv + eval
//! BatchNorm op of `norm_eval`) and the detector setting's frozen stages as one blocked pass;
//! `im2col` + GEMM runs them all as products. `training_parity.rs` runs the fixtures with the
//! CPU's default kernel only.

use burn::tensor::Device;
use burn_resnet::ConvKernel;

use crate::training_parity::{
    GRADIENT_TOLERANCE, STATISTICS_TOLERANCE, compare_steps, reference_step, training_step,
};

#[test]
fn training_fixtures_match_mmdet_with_every_conv_kernel() {
    let device = Device::flex();
    // Basic blocks with batch statistics; bottlenecks under `norm_eval` with stage 1 frozen.
    for case in ["resnet18_train", "resnet50_detector_train"] {
        let expected = reference_step(case, &device);
        for kernel in ConvKernel::ALL {
            // The forced kernel holds on this thread, where the backward pass runs too.
            let Some(actual) = kernel.force(|| training_step(case, &device)) else {
                println!("{case}: {kernel} not supported by this CPU, skipped");
                continue;
            };
            compare_steps(
                &format!("{case} with the {kernel} kernel"),
                &actual,
                &expected,
                (GRADIENT_TOLERANCE, STATISTICS_TOLERANCE),
            );
        }
    }
}
