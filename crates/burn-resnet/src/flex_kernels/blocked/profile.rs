//! The blocked conv's speed on each of ResNet-50's conv shapes (batch 1 and 8), with the
//! residual add in the epilogue of the blocks' last 1x1 convs, as `conv_profile` times the NCHW
//! kernels. A profile, not a check (ignored by default): `cargo test --release --workspace
//! --features burn-resnet/ndarray,burn-resnet/wgpu --lib -- --ignored --nocapture
//! blocked_profile`.

use std::sync::Arc;

use super::activation::Activation;
use super::conv::{BlockedConv, pack_blocked, padded};
use super::tile::Isa;
use super::winograd::pack_winograd;
use crate::flex_kernels::conv::tiled::ConvKernel;
use crate::flex_kernels::tests::conv_profile::{RESNET50_CONVS, fastest, fill};

#[test]
#[ignore = "a profile: run with --release --ignored --nocapture"]
fn blocked_profile() {
    for kernel in [ConvKernel::Avx512, ConvKernel::Avx2] {
        if !kernel.is_supported() {
            continue;
        }
        let isa = super::isa(kernel).expect("a micro-kernel");
        for batch in [1, 8] {
            println!("{kernel} batch {batch}: ms per conv (fastest run), GFLOP/s");
            let mut total = 0.0;
            for (name, cin, cout, side, k, stride, uses) in RESNET50_CONVS {
                let ms = time_conv(isa, batch, [cin, cout, side, k, stride], name);
                let out = (side + 2 * (k / 2) - k) / stride + 1;
                let flops = 2.0 * (batch * cout * out * out * cin * k * k) as f64;
                println!(
                    "  {name:<22} {ms:>7.2} ms {:>6.1} GFLOP/s x{uses}",
                    flops / ms / 1e6
                );
                if k == 3 && stride == 1 {
                    let winograd_ms =
                        time_conv(isa, batch, [cin, cout, side, k, stride], "winograd");
                    println!(
                        "  {name:<22} {winograd_ms:>7.2} ms {:>6.1} GFLOP/s-equivalent, Winograd",
                        flops / winograd_ms / 1e6
                    );
                }
                total += ms * uses as f64;
            }
            println!("  all 53 convs: {total:.1} ms");
        }
    }
}

fn time_conv(isa: Isa, batch: usize, [cin, cout, side, k, stride]: [usize; 5], name: &str) -> f64 {
    let winograd = name == "winograd";
    let weight = fill(cout * cin * k * k, 7);
    let weights = if winograd {
        pack_winograd(&weight, cout, cin)
    } else {
        pack_blocked(&weight, cout, cin, [k, k])
    };
    let conv = BlockedConv {
        weights: Arc::new(weights),
        scale: None,
        bias: padded(&fill(cout, 3)),
        in_channels: cin,
        out_channels: cout,
        kernel: [k, k],
        stride: [stride, stride],
        padding: [k / 2, k / 2],
        dilation: [1, 1],
        winograd,
    };
    let image = fill(batch * cin * side * side, 5);
    let input = Activation::from_image(&image, [batch, cin, side, side], k / 2);
    // The blocks' last 1x1 convs (to 4x their input) add the shortcut.
    let residual = (k == 1 && stride == 1 && cout == 4 * cin).then(|| {
        let out = fill(batch * cout * side * side, 9);
        Activation::from_image(&out, [batch, cout, side, side], 0)
    });
    // Outputs reuse the buffer of the previous run (`buffers`), as activations do.
    fastest(if batch == 1 { 20 } else { 4 }, &|| {
        drop(std::hint::black_box(conv.run(
            &input,
            residual.as_ref(),
            true,
            0,
            isa,
        )));
        Vec::new()
    })
}

/// ResNet-50's whole forward pass (folded BatchNorms) in the blocked layout and in NCHW, the
/// fastest of several runs, beside the sum of its convs above: what the passes between convs
/// cost; then the blocked pass step by step (median over the runs of each step's time: the
/// stages against ONNX Runtime's per-stage profile, `bench/ort_baseline.py --profile`), and at
/// batch 1 how far the blocked outputs (Winograd included) are from the NCHW path's.
/// `cargo test --release ... -- --ignored --nocapture blocked_network_profile`.
#[test]
#[ignore = "a profile: run with --release --ignored --nocapture"]
fn blocked_network_profile() {
    use burn::tensor::{Device, Distribution, Tensor};

    use super::InferenceLayout;
    let device = Device::flex();
    let model = crate::ResNetConfig::new(50)
        .init(&device)
        .expect("ResNet-50")
        .fold_batch_norms();
    for batch in [1, 8] {
        let x = Tensor::<4>::random([batch, 3, 224, 224], Distribution::Default, &device);
        for layout in InferenceLayout::ALL {
            let ms = layout.force(|| {
                fastest(if batch == 1 { 20 } else { 5 }, &|| {
                    drop(std::hint::black_box(model.forward(x.clone())));
                    Vec::new()
                })
            });
            println!("ResNet-50 b{batch} {layout}: {ms:.1} ms (fastest run)");
        }
        if batch == 1 {
            // What Winograd and the blocked sums change: each output's largest difference from
            // the NCHW path, relative to the output's largest magnitude.
            let [blocked, nchw] = InferenceLayout::ALL.map(|layout| {
                layout.force(|| {
                    model
                        .forward(x.clone())
                        .iter()
                        .map(|t| t.to_data().try_to_vec::<f32>().expect("f32"))
                        .collect::<Vec<_>>()
                })
            });
            for (stage, (b, n)) in blocked.iter().zip(&nchw).enumerate() {
                let largest = n.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let diff = b
                    .iter()
                    .zip(n)
                    .fold(0.0f32, |m, (b, n)| m.max((b - n).abs()));
                println!(
                    "  C{}: largest difference nchwc vs nchw {:.1e} of the largest value",
                    stage + 2,
                    diff / largest
                );
            }
        }
        let runs: Vec<Vec<(&str, f64)>> = (0..if batch == 1 { 20 } else { 5 })
            .map(|_| {
                super::plan::steps::start_recording();
                drop(std::hint::black_box(model.forward(x.clone())));
                super::plan::steps::recorded()
            })
            .collect();
        println!(
            "ResNet-50 b{batch} nchwc step by step (median of {} runs):",
            runs.len()
        );
        let mut total = 0.0;
        for (index, (step, _)) in runs[0].iter().enumerate() {
            let mut times: Vec<f64> = runs.iter().map(|run| run[index].1).collect();
            times.sort_by(f64::total_cmp);
            let median = times[times.len() / 2];
            total += median;
            println!("  {step:<20} {median:>7.2} ms");
        }
        println!("  {:<20} {total:>7.2} ms", "sum");
    }
}

/// The FMA peak the convs above are measured against: 16 independent AVX-512 FMA chains per
/// thread, on one thread and on every rayon thread at once. `cargo test --release ... --
/// --ignored --nocapture fma_peak`.
#[test]
#[ignore = "a profile: run with --release --ignored --nocapture"]
fn fma_peak() {
    use rayon::prelude::*;

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn chains(steps: usize) -> f32 {
        use std::arch::x86_64::*;
        let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-9));
        let mut acc = [_mm512_set1_ps(1.0); 16];
        for _ in 0..steps {
            for value in &mut acc {
                *value = _mm512_fmadd_ps(*value, a, b);
            }
        }
        acc.iter().map(|v| _mm512_reduce_add_ps(*v)).sum()
    }

    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        let steps = 100_000_000;
        let flops_per_thread = (steps * 16 * 16 * 2) as f64;
        for threads in [1, rayon::current_num_threads()] {
            let started = std::time::Instant::now();
            let sum: f32 = (0..threads)
                .into_par_iter()
                .map(|_| {
                    // SAFETY: the CPU has avx512f (checked above).
                    unsafe { chains(steps) }
                })
                .sum();
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "AVX-512 FMA peak, {threads} thread(s): {:.0} GFLOP/s ({sum})",
                flops_per_thread * threads as f64 / seconds / 1e9
            );
        }
    }
}
