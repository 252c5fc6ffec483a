//! The stem's max-pool.

use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::{Device, Distribution, Tensor};

use super::values;
use crate::flex_kernels::max_pool::try_max_pool2d;

#[test]
fn max_pool_matches_burn_max_pool() {
    let device = Device::flex();
    for (shape, kernel, stride, padding) in [
        ([2, 5, 17, 12], 3, 2, 1),
        ([1, 3, 9, 10], 2, 2, 0),
        ([1, 2, 8, 8], 3, 1, 1),
    ] {
        let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let options = MaxPoolOptions::new([kernel; 2])
            .with_stride([stride; 2])
            .with_padding([padding; 2]);
        let expected = max_pool2d(x.clone(), options);
        let actual = try_max_pool2d(&x, kernel, stride, padding).expect("plain flex f32");
        assert_eq!(
            values(actual),
            values(expected),
            "{shape:?} k{kernel} s{stride} p{padding}"
        );
    }
    assert!(
        try_max_pool2d(&Tensor::<4>::ones([1, 1, 4, 4], &device), 3, 2, 2).is_none(),
        "padding over half the window"
    );
}
