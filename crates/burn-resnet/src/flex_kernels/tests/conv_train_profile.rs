//! The training conv's three products on each of ResNet-50's conv shapes at batch 8: the forward
//! conv, the input gradient and the weight gradient, time per call (the fastest of several),
//! GFLOP/s and each one's share of a step's conv time. A profile, not a check (ignored by
//! default): `cargo test --release --workspace --features burn-resnet/ndarray,burn-resnet/wgpu
//! --lib -- --ignored --nocapture conv_train_profile`; `bench/torch_conv_profile.py` prints
//! PyTorch's times for the same shapes under the same labels.

use super::conv_profile::{RESNET50_CONVS, fastest, fill, geometry};
use crate::flex_kernels::conv::backward::{input_grad, weight_grad};
use crate::flex_kernels::conv::{Epilogue, conv2d};

#[test]
#[ignore = "a profile: run with --release --ignored --nocapture"]
fn conv_train_profile() {
    let batch = 8;
    let mut totals = [0.0f64; 3];
    let mut rows = Vec::new();
    for (index, (name, cin, cout, side, k, stride, uses)) in RESNET50_CONVS.into_iter().enumerate()
    {
        let g = geometry(batch, (cin, cout, side, k, stride));
        let out = g.output().unwrap();
        let input = fill(batch * cin * side * side, 1);
        let weight = fill(cout * cin * k * k, 2);
        let grad_out = fill(out.iter().product(), 3);
        let flop = 2.0 * (out.iter().product::<usize>() * cin * k * k) as f64;
        let runs = 7;
        let forward = fastest(runs, &|| conv2d(&input, &weight, &g, Epilogue::default()));
        // The stem's input is the image: no gradient is asked for it.
        let input_time = if index == 0 {
            0.0
        } else {
            fastest(runs, &|| input_grad(&weight, &grad_out, &g))
        };
        let weight_time = fastest(runs, &|| weight_grad(&input, &grad_out, &g));
        let times = [forward, input_time, weight_time];
        for (total, t) in totals.iter_mut().zip(times) {
            *total += t * uses as f64;
        }
        rows.push((name, uses, times, flop));
    }
    println!(
        "batch {batch}: per step forward {:.1} ms, input grad {:.1}, weight grad {:.1}, all {:.1}",
        totals[0],
        totals[1],
        totals[2],
        totals.iter().sum::<f64>()
    );
    for (name, uses, times, flop) in rows {
        print!("  {name:<20} x{uses}");
        for t in times {
            print!("  {t:8.3} ms {:6.1} GF/s", flop / t / 1e6);
        }
        println!();
    }
}

/// The stride-1 3x3 convs' forward and input gradient at batch 8, `im2col` + GEMM against
/// Winograd in the blocked layout with its conversions and per-call packing
/// ([`crate::flex_kernels::blocked::single`]), and the packing alone.
#[test]
#[ignore = "a profile: run with --release --ignored --nocapture"]
fn winograd_train_profile() {
    use crate::flex_kernels::blocked::single::{winograd_conv, winograd_input_grad};
    use crate::flex_kernels::blocked::winograd::pack_winograd;
    let batch = 8;
    for (name, cin, cout, side, k, stride, uses) in RESNET50_CONVS {
        if k != 3 || stride != 1 {
            continue;
        }
        let g = geometry(batch, (cin, cout, side, k, stride));
        let out = g.output().unwrap();
        let input = fill(batch * cin * side * side, 1);
        let weight = fill(cout * cin * k * k, 2);
        let grad_out = fill(out.iter().product(), 3);
        let runs = 7;
        let times = [
            fastest(runs, &|| conv2d(&input, &weight, &g, Epilogue::default())),
            fastest(runs, &|| winograd_conv(&input, &weight, &g).unwrap()),
            fastest(runs, &|| input_grad(&weight, &grad_out, &g)),
            fastest(runs, &|| {
                winograd_input_grad(&weight, &grad_out, &g).unwrap()
            }),
            fastest(runs, &|| pack_winograd(&weight, cout, cin)),
        ];
        println!(
            "  {name:<16} x{uses}  forward {:7.3} -> {:7.3} ms  input grad {:7.3} -> {:7.3} ms  \
             packing {:6.3} ms",
            times[0], times[1], times[2], times[3], times[4]
        );
    }
}
