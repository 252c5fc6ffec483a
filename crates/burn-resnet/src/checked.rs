//! Checked 64-bit arithmetic for the figures (parameters, multiply-adds, activations): `None`
//! when a result does not fit, so that no count wraps.

/// The product of `values`, if it fits.
pub(crate) fn mul(values: &[u64]) -> Option<u64> {
    values
        .iter()
        .try_fold(1u64, |product, &v| product.checked_mul(v))
}
