//! One channel block's 16 values as a vector, for the three instruction sets the blocked conv
//! runs on: one AVX-512 register, two AVX2 registers, or a plain array the compiler vectorises.
//! The kernel ([`super::tile`]) is written once over [`Lanes`]; each instruction set's entry
//! point enables its target feature, and these `#[inline(always)]` methods are inlined into it.

/// Channels per block of the blocked layout (one AVX-512 vector of `f32`).
pub(crate) const BLOCK: usize = 16;

/// A vector of [`BLOCK`] `f32` lanes.
pub(super) trait Lanes: Copy {
    /// All lanes 0.
    fn zero() -> Self;
    /// `BLOCK` values from `p`.
    ///
    /// # Safety
    /// `p` valid for `BLOCK` reads.
    unsafe fn load(p: *const f32) -> Self;
    /// `*p` in every lane.
    ///
    /// # Safety
    /// `p` valid for one read.
    unsafe fn splat(p: *const f32) -> Self;
    /// Store to `p`.
    ///
    /// # Safety
    /// `p` valid for `BLOCK` writes.
    unsafe fn store(self, p: *mut f32);
    /// `self + a · b`, fused.
    fn mul_add(self, a: Self, b: Self) -> Self;
    /// `self + other`.
    fn add(self, other: Self) -> Self;
    /// `self - other`.
    fn sub(self, other: Self) -> Self;
    /// `self · other`.
    fn mul(self, other: Self) -> Self;
    /// PyTorch's ReLU per lane (NaN stays NaN).
    fn relu(self) -> Self;
}

/// Plain Rust lanes, vectorised for the build's target (SSE2 on x86-64).
#[derive(Clone, Copy)]
pub(super) struct Portable([f32; BLOCK]);

impl Lanes for Portable {
    #[inline(always)]
    fn zero() -> Self {
        Self([0.0; BLOCK])
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller's contract.
        Self(unsafe { p.cast::<[f32; BLOCK]>().read_unaligned() })
    }
    #[inline(always)]
    unsafe fn splat(p: *const f32) -> Self {
        // SAFETY: the caller's contract.
        Self([unsafe { *p }; BLOCK])
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the caller's contract.
        unsafe { p.cast::<[f32; BLOCK]>().write_unaligned(self.0) }
    }
    #[inline(always)]
    fn mul_add(self, a: Self, b: Self) -> Self {
        Self(std::array::from_fn(|i| self.0[i] + a.0[i] * b.0[i]))
    }
    #[inline(always)]
    fn add(self, other: Self) -> Self {
        Self(std::array::from_fn(|i| self.0[i] + other.0[i]))
    }
    #[inline(always)]
    fn sub(self, other: Self) -> Self {
        Self(std::array::from_fn(|i| self.0[i] - other.0[i]))
    }
    #[inline(always)]
    fn mul(self, other: Self) -> Self {
        Self(std::array::from_fn(|i| self.0[i] * other.0[i]))
    }
    #[inline(always)]
    fn relu(self) -> Self {
        Self(self.0.map(crate::flex_kernels::relu))
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::Lanes;

    /// One AVX-512 register. Only used inside functions that enable `avx512f`.
    #[derive(Clone, Copy)]
    pub(in crate::flex_kernels::blocked) struct Avx512(__m512);

    // SAFETY (every method): the intrinsics need `avx512f`, which the blocked conv's AVX-512
    // entry point enables and checks at run time before calling; pointer validity is the
    // caller's contract.
    impl Lanes for Avx512 {
        #[inline(always)]
        fn zero() -> Self {
            Self(unsafe { _mm512_setzero_ps() })
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            Self(unsafe { _mm512_loadu_ps(p) })
        }
        #[inline(always)]
        unsafe fn splat(p: *const f32) -> Self {
            Self(unsafe { _mm512_set1_ps(*p) })
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            unsafe { _mm512_storeu_ps(p, self.0) }
        }
        #[inline(always)]
        fn mul_add(self, a: Self, b: Self) -> Self {
            Self(unsafe { _mm512_fmadd_ps(a.0, b.0, self.0) })
        }
        #[inline(always)]
        fn add(self, other: Self) -> Self {
            Self(unsafe { _mm512_add_ps(self.0, other.0) })
        }
        #[inline(always)]
        fn sub(self, other: Self) -> Self {
            Self(unsafe { _mm512_sub_ps(self.0, other.0) })
        }
        #[inline(always)]
        fn mul(self, other: Self) -> Self {
            Self(unsafe { _mm512_mul_ps(self.0, other.0) })
        }
        #[inline(always)]
        fn relu(self) -> Self {
            // max(0, v) returns its second operand for a NaN: NaN stays NaN.
            Self(unsafe { _mm512_max_ps(_mm512_setzero_ps(), self.0) })
        }
    }

    /// Two AVX2 registers (lanes 0–7, 8–15). Only used inside functions that enable `avx2` and
    /// `fma`.
    #[derive(Clone, Copy)]
    pub(in crate::flex_kernels::blocked) struct Avx2(__m256, __m256);

    // SAFETY (every method): as for `Avx512`, with `avx2` and `fma`.
    impl Lanes for Avx2 {
        #[inline(always)]
        fn zero() -> Self {
            unsafe { Self(_mm256_setzero_ps(), _mm256_setzero_ps()) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            unsafe { Self(_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))) }
        }
        #[inline(always)]
        unsafe fn splat(p: *const f32) -> Self {
            let v = unsafe { _mm256_broadcast_ss(&*p) };
            Self(v, v)
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            unsafe {
                _mm256_storeu_ps(p, self.0);
                _mm256_storeu_ps(p.add(8), self.1);
            }
        }
        #[inline(always)]
        fn mul_add(self, a: Self, b: Self) -> Self {
            unsafe {
                Self(
                    _mm256_fmadd_ps(a.0, b.0, self.0),
                    _mm256_fmadd_ps(a.1, b.1, self.1),
                )
            }
        }
        #[inline(always)]
        fn add(self, other: Self) -> Self {
            unsafe {
                Self(
                    _mm256_add_ps(self.0, other.0),
                    _mm256_add_ps(self.1, other.1),
                )
            }
        }
        #[inline(always)]
        fn sub(self, other: Self) -> Self {
            unsafe {
                Self(
                    _mm256_sub_ps(self.0, other.0),
                    _mm256_sub_ps(self.1, other.1),
                )
            }
        }
        #[inline(always)]
        fn mul(self, other: Self) -> Self {
            unsafe {
                Self(
                    _mm256_mul_ps(self.0, other.0),
                    _mm256_mul_ps(self.1, other.1),
                )
            }
        }
        #[inline(always)]
        fn relu(self) -> Self {
            unsafe {
                let zero = _mm256_setzero_ps();
                Self(_mm256_max_ps(zero, self.0), _mm256_max_ps(zero, self.1))
            }
        }
    }
}
