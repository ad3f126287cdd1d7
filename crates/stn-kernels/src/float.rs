//! The element types the kernels run on: `f32` and `f64`, from the same generic code.

use std::fmt::{Debug, Display};
use std::ops::{Add, AddAssign, Div, Mul, MulAssign, Neg, Sub, SubAssign};

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A floating-point element type of the kernels (`f32` or `f64`).
///
/// Sealed: the kernels rely on IEEE semantics (all-zero bits are `0.0`, NaN compares false).
pub trait Float:
    sealed::Sealed
    + crate::entry::Kernels
    + Copy
    + Send
    + Sync
    + Default
    + Debug
    + Display
    + PartialOrd
    + PartialEq
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + 'static
{
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// The type's name, for messages and benchmark output.
    const NAME: &'static str;
    /// Conversion from `f64` (rounding to nearest).
    fn from_f64(v: f64) -> Self;
    /// Conversion to `f64` (exact).
    fn to_f64(self) -> f64;
    /// Conversion from an index (exact below 2^24 for `f32`, 2^53 for `f64`).
    fn from_usize(v: usize) -> Self;
    /// Largest integer not above `self`.
    fn floor(self) -> Self;
    /// Integer part, rounding toward zero.
    fn trunc(self) -> Self;
    /// Nearest integer, ties to even (PyTorch's CPU `round` / `nearbyint`).
    fn round_even(self) -> Self;
    /// Absolute value.
    fn abs(self) -> Self;
    /// Natural logarithm. `ln`, `sin` and `cos` are the pure-Rust `libm`'s: the same bits on
    /// every CPU and C library (the platform's differ by CPU dispatch and version).
    fn ln(self) -> Self;
    /// Sine.
    fn sin(self) -> Self;
    /// Cosine.
    fn cos(self) -> Self;
    /// True for NaN.
    fn is_nan(self) -> bool;
    /// True unless NaN or infinite.
    fn is_finite(self) -> bool;
    /// Conversion of an integral value known to lie in `i32` range (truncating).
    ///
    /// # Safety
    /// `self` is finite and within `i32::MIN..=i32::MAX`.
    unsafe fn to_i32_unchecked(self) -> i32;
}

macro_rules! impl_float {
    ($t:ty, $name:literal, $ln:path, $sin:path, $cos:path) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const NAME: &'static str = $name;
            #[inline(always)]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn from_usize(v: usize) -> Self {
                v as $t
            }
            #[inline(always)]
            fn floor(self) -> Self {
                <$t>::floor(self)
            }
            #[inline(always)]
            fn trunc(self) -> Self {
                <$t>::trunc(self)
            }
            #[inline(always)]
            fn round_even(self) -> Self {
                <$t>::round_ties_even(self)
            }
            #[inline(always)]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                $ln(self)
            }
            #[inline(always)]
            fn sin(self) -> Self {
                $sin(self)
            }
            #[inline(always)]
            fn cos(self) -> Self {
                $cos(self)
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            #[inline(always)]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            #[inline(always)]
            unsafe fn to_i32_unchecked(self) -> i32 {
                // SAFETY: the caller guarantees a finite value in i32 range.
                unsafe { self.to_int_unchecked::<i32>() }
            }
        }
    };
}

impl_float!(f32, "f32", libm::logf, libm::sinf, libm::cosf);
impl_float!(f64, "f64", libm::log, libm::sin, libm::cos);
