//! The inference conv's speed on each of ResNet-50's conv shapes (batch 1 and 8): time per
//! call (the fastest of several), GFLOP/s and the share of the network's conv time. A profile, not a check (ignored by
//! default): `cargo test --release --workspace --features burn-resnet/ndarray,burn-resnet/wgpu
//! --lib -- --ignored --nocapture conv_profile`.

use std::time::Instant;

use crate::flex_kernels::conv::tiled::{self, ConvKernel};
use crate::flex_kernels::conv::{ConvGeometry, Epilogue, conv2d};

/// `(name, in channels, out channels, input side, kernel, stride, uses per network)`: every conv
/// of ResNet-50 (mmdet's `pytorch` style: the stride on the 3x3), in the order and with the
/// labels `bench/ort_baseline.py --profile` prints ONNX Runtime's per-shape times.
pub(crate) const RESNET50_CONVS: [(&str, usize, usize, usize, usize, usize, usize); 23] = [
    ("7x7/2 3>64 @224", 3, 64, 224, 7, 2, 1),
    ("1x1 64>64 @56", 64, 64, 56, 1, 1, 1),
    ("3x3 64>64 @56", 64, 64, 56, 3, 1, 3),
    ("1x1 64>256 @56", 64, 256, 56, 1, 1, 4),
    ("3x3/2 128>128 @56", 128, 128, 56, 3, 2, 1),
    ("1x1 256>64 @56", 256, 64, 56, 1, 1, 2),
    ("1x1 256>128 @56", 256, 128, 56, 1, 1, 1),
    ("1x1/2 256>512 @56", 256, 512, 56, 1, 2, 1),
    ("3x3 128>128 @28", 128, 128, 28, 3, 1, 3),
    ("1x1 128>512 @28", 128, 512, 28, 1, 1, 4),
    ("3x3/2 256>256 @28", 256, 256, 28, 3, 2, 1),
    ("1x1 512>128 @28", 512, 128, 28, 1, 1, 3),
    ("1x1 512>256 @28", 512, 256, 28, 1, 1, 1),
    ("1x1/2 512>1024 @28", 512, 1024, 28, 1, 2, 1),
    ("3x3 256>256 @14", 256, 256, 14, 3, 1, 5),
    ("1x1 256>1024 @14", 256, 1024, 14, 1, 1, 6),
    ("3x3/2 512>512 @14", 512, 512, 14, 3, 2, 1),
    ("1x1 1024>256 @14", 1024, 256, 14, 1, 1, 5),
    ("1x1 1024>512 @14", 1024, 512, 14, 1, 1, 1),
    ("1x1/2 1024>2048 @14", 1024, 2048, 14, 1, 2, 1),
    ("3x3 512>512 @7", 512, 512, 7, 3, 1, 2),
    ("1x1 512>2048 @7", 512, 2048, 7, 1, 1, 3),
    ("1x1 2048>512 @7", 2048, 512, 7, 1, 1, 2),
];

/// A small deterministic pseudo-random fill (no allocation of a generator per value).
pub(crate) fn fill(len: usize, seed: u32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state as f32 / u32::MAX as f32) - 0.5
        })
        .collect()
}

/// The fastest of `runs` calls, in ms, after one warm-up call: the run least disturbed by
/// whatever else the machine does.
pub(crate) fn fastest(runs: usize, f: &dyn Fn() -> Vec<f32>) -> f64 {
    let _ = f();
    (0..runs)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(f());
            started.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

pub(crate) fn geometry(batch: usize, conv: (usize, usize, usize, usize, usize)) -> ConvGeometry {
    let (cin, cout, side, k, stride) = conv;
    ConvGeometry {
        input: [batch, cin, side, side],
        out_channels: cout,
        kernel: [k, k],
        stride: [stride, stride],
        padding: [k / 2, k / 2],
        dilation: [1, 1],
        groups: 1,
    }
}

#[test]
#[ignore = "a profile: run with --release --ignored --nocapture"]
fn conv_profile() {
    for batch in [1, 8] {
        let mut rows = Vec::new();
        for (name, cin, cout, side, k, stride, uses) in RESNET50_CONVS {
            let g = geometry(batch, (cin, cout, side, k, stride));
            let input = fill(batch * cin * side * side, 1);
            let weight = fill(cout * cin * k * k, 2);
            let bias = fill(cout, 3);
            let out = g.output().unwrap();
            let residual = fill(out.iter().product(), 4);
            let epilogue = Epilogue {
                bias: Some(&bias),
                residual: (k == 1 && stride == 1 && cout == 4 * cin).then_some(&residual[..]),
                relu: true,
                ..Default::default()
            };
            let runs = if batch == 1 { 20 } else { 4 };
            let flop = 2.0 * (out.iter().product::<usize>() * cin * k * k) as f64;
            let time = |f: &dyn Fn() -> Vec<f32>| fastest(runs, f);
            let reference = conv2d(&input, &weight, &g, epilogue);
            let mut times = vec![time(&|| conv2d(&input, &weight, &g, epilogue))];
            for kernel in [ConvKernel::Avx512, ConvKernel::Avx2] {
                let packed = tiled::pack_weights(&weight, &g);
                let micro = kernel.micro_kernel().expect("a micro-kernel");
                let got = tiled::conv2d(&input, &packed, &g, epilogue, micro);
                let diff = got
                    .iter()
                    .zip(&reference)
                    .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(diff < 1e-3, "{name} {kernel}: {diff}");
                // Packed once, as the network's convs find them in the packed-weight cache.
                times.push(time(&|| {
                    tiled::conv2d(&input, &packed, &g, epilogue, micro)
                }));
            }
            rows.push((name, times, flop, uses));
        }
        let totals: Vec<f64> = (0..3)
            .map(|i| rows.iter().map(|(_, t, _, uses)| t[i] * *uses as f64).sum())
            .collect();
        println!(
            "batch {batch}: convs per network im2col-gemm {:.1} ms, avx512 {:.1}, avx2 {:.1}",
            totals[0], totals[1], totals[2]
        );
        for (name, times, flop, uses) in rows {
            print!("  {name:<20} x{uses}");
            for t in times {
                print!("  {t:8.3} ms {:6.1} GF/s", flop / t / 1e6);
            }
            println!();
        }
    }
}

#[test]
#[ignore = "a profile: run with --release --ignored --nocapture"]
fn microkernel_peak() {
    use crate::flex_kernels::conv::tiled::microkernel_rate;
    for kernel in [ConvKernel::Avx512, ConvKernel::Avx2, ConvKernel::Portable] {
        let micro = kernel.micro_kernel().expect("a micro-kernel");
        for width in [16, 32, 48] {
            println!(
                "{kernel} width {width}: {:.1} GFLOP/s on one thread",
                microkernel_rate(micro, width)
            );
        }
    }
}
