//! Parameters whose initial value is computed from the one Burn's initializer drew: a norm
//! weight scaled to 0 (`zero_init_residual`), a bias set to 0 (mmcv's inits).
//!
//! Burn's `Param::map` stores the closure's result as it is. Built on an autodiff device, that
//! result is the output of an op (`x · 0`), not a leaf: it gets no gradient, so the optimizer
//! never moves it, and `Module::train` panics on it ("Can't convert a non leaf tensor into a
//! tracked tensor"). [`remade`] stores a fresh leaf instead.

use burn::module::Param;
use burn::tensor::Tensor;

/// `param` holding `value(current)` as a fresh leaf that requires a gradient exactly when the
/// current value did, on whichever device (plain or autodiff) the module is built.
pub(crate) fn remade<const D: usize>(
    param: Param<Tensor<D>>,
    value: impl FnOnce(Tensor<D>) -> Tensor<D>,
) -> Param<Tensor<D>> {
    param.map(|current| {
        let trains = current.is_require_grad();
        value(current).detach().set_require_grad(trains)
    })
}

/// `param` set to zeros.
pub(crate) fn zeroed<const D: usize>(param: Param<Tensor<D>>) -> Param<Tensor<D>> {
    remade(param, |current| current.zeros_like())
}
