//! The conv kernels' choice and the packed-weight cache: non-finite values through every
//! kernel, the kernel switch, and a cache that is never stale and lets go of dropped weights.

use burn::nn::conv::Conv2d;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Distribution, Tensor};

use super::conv::{ConvCase, conv, supported_kernels};
use super::relative_difference;
use crate::ConvKernel;
use crate::flex_kernels::conv::try_conv2d;

/// A padded ("same") 3x3 stride-1 conv without residual or ReLU.
fn same_3x3(batch: usize, channels: [usize; 2], size: [usize; 2]) -> ConvCase {
    ConvCase {
        batch,
        channels,
        size,
        kernel: 3,
        stride: 1,
        padding: 1,
        dilation: 1,
        residual: false,
        relu: false,
        groups: 1,
    }
}

#[test]
fn every_conv_kernel_propagates_nan_and_inf_like_burn_conv() {
    let device = Device::flex();
    let case = ConvCase {
        relu: true,
        ..same_3x3(2, [8, 20], [9, 11])
    };
    let conv = conv(&case, &device);
    let mut values = super::values(Tensor::<4>::random(
        [2, 8, 9, 11],
        Distribution::Normal(0.0, 1.0),
        &device,
    ));
    values[5] = f32::NAN;
    values[400] = f32::INFINITY;
    let x = Tensor::<4>::from_data(
        burn::tensor::TensorData::new(values, [2, 8, 9, 11]),
        &device,
    );
    let expected = super::values(relu(conv.forward(x.clone())));
    assert!(
        expected.iter().any(|v| v.is_nan()),
        "the case must produce NaN"
    );
    for kernel in supported_kernels() {
        let actual = kernel
            .force(|| try_conv2d(&conv, &x, None, true))
            .flatten()
            .expect("plain flex f32");
        for (i, (a, e)) in super::values(actual).iter().zip(&expected).enumerate() {
            let same =
                (a.is_nan() && e.is_nan()) || a == e || (a - e).abs() <= 1e-4 * e.abs().max(1.0);
            assert!(same, "{kernel}: value {i} is {a}, Burn's conv gives {e}");
        }
    }
}

#[test]
fn conv_kernels_parse_and_a_forced_kernel_is_undone_after_the_call() {
    for kernel in ConvKernel::ALL {
        assert_eq!(kernel.to_string().parse::<ConvKernel>(), Ok(kernel));
    }
    assert!("avx1024".parse::<ConvKernel>().is_err());
    assert_eq!(
        ConvKernel::Portable.force(crate::flex_kernels::conv::tiled::chosen_kernel),
        Some(ConvKernel::Portable)
    );
    assert_eq!(
        crate::flex_kernels::conv::tiled::chosen_kernel(),
        ConvKernel::best()
    );
}

#[test]
fn packed_weights_are_kept_per_weight_and_never_stale() {
    use crate::flex_kernels::conv::tiled::packed_weights;
    let device = Device::flex();
    let n = Distribution::Normal(0.0, 1.0);
    let case = same_3x3(1, [6, 12], [8, 8]);
    let x = Tensor::<4>::random([1, 6, 8, 8], n, &device);
    // New weights over and over (dropped each time): each run must use its own weights.
    for round in 0..12 {
        let conv = conv(&case, &device);
        let expected = conv.forward(x.clone());
        let actual = ConvKernel::Portable
            .force(|| try_conv2d(&conv, &x, None, false))
            .flatten()
            .expect("plain flex f32");
        let difference = relative_difference(actual, expected);
        assert!(
            difference < 1e-5,
            "round {round}: relative difference {difference:e}"
        );
        let weight = crate::flex_kernels::flex_f32(&conv.weight.val()).expect("flex f32");
        let geometry = crate::flex_kernels::conv::conv_geometry(&conv, x.dims()).unwrap();
        let first = packed_weights(&weight, &geometry).unwrap();
        let again = packed_weights(&weight, &geometry).unwrap();
        assert!(
            std::sync::Arc::ptr_eq(&first, &again),
            "round {round}: packed again"
        );
    }
}

#[test]
fn a_dropped_weight_leaves_the_packed_weight_cache() {
    use crate::flex_kernels::conv::tiled::{is_cached, packed_weights};
    use crate::flex_kernels::{flex_f32, float_slice};
    let device = Device::flex();
    let case = same_3x3(1, [4, 8], [6, 6]);
    let geometry = |conv: &Conv2d| {
        crate::flex_kernels::conv::conv_geometry(conv, [1, 4, 6, 6]).expect("supported")
    };
    let first = conv(&case, &device);
    let weight = flex_f32(&first.weight.val()).expect("flex f32");
    let (address, len) = {
        let values = float_slice(&weight).unwrap();
        (values.as_ptr() as usize, values.len())
    };
    packed_weights(&weight, &geometry(&first)).unwrap();
    assert!(is_cached(address, len));
    // While the model holds the weight, another packing keeps it.
    let second = conv(&case, &device);
    let other = flex_f32(&second.weight.val()).expect("flex f32");
    packed_weights(&other, &geometry(&second)).unwrap();
    assert!(is_cached(address, len), "swept while still held");
    // Once the cache's clone is the last holder, the next packing drops it.
    drop(weight);
    drop(first);
    let third = conv(&case, &device);
    let another = flex_f32(&third.weight.val()).expect("flex f32");
    packed_weights(&another, &geometry(&third)).unwrap();
    assert!(
        !is_cached(address, len),
        "the dropped weight's packing is still cached"
    );
}
