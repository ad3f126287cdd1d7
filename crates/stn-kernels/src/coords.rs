//! Coordinate math, one axis at a time: un-normalization, clipping, reflection, and the
//! interpolation taps (index, weight, derivative) of the nearest, linear and cubic kernels.
//!
//! These follow PyTorch's CPU kernels (`GridSamplerKernel.cpp` for 2-D, the scalar
//! `GridSampler.cpp` for 3-D), including what a NaN coordinate does there:
//! 2-D clamps NaN to 0 under border/reflection padding (zeros padding makes it out of range,
//! and the NaN weights reach the output); 3-D clamps NaN to `size - 1` in the forward pass
//! and drops the point from the backward pass. Where PyTorch's 2-D bilinear backward crashes
//! on NaN (border/reflection), the backward here differentiates what the forward computed:
//! the point sits at 0 with a zero gradient to its coordinate.

use crate::float::Float;
use crate::options::Padding;

/// Padding codes used as const generic parameters, so no per-pixel branch picks the padding.
pub(crate) const PAD_ZEROS: u8 = 0;
/// See [`PAD_ZEROS`].
pub(crate) const PAD_BORDER: u8 = 1;
/// See [`PAD_ZEROS`].
pub(crate) const PAD_REFLECTION: u8 = 2;

pub(crate) fn pad_code(p: Padding) -> u8 {
    match p {
        Padding::Zeros => PAD_ZEROS,
        Padding::Border => PAD_BORDER,
        Padding::Reflection => PAD_REFLECTION,
    }
}

/// The bicubic convolution constant (PyTorch, `UpSampleBicubic2d.h`).
const CUBIC_A: f64 = -0.75;

/// One spatial axis of the input: its size, stride, and the constants of its coordinate math.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Axis<T> {
    /// Extent of the axis, as a float.
    pub size_t: T,
    /// Element stride of the axis inside one channel plane.
    pub stride: usize,
    /// `size - 1`: the largest in-range coordinate.
    pub max_val: T,
    /// Un-normalization scale: `(size - 1) / 2` (align_corners) or `size / 2`.
    pub scale: T,
    /// Un-normalization shift: 0 (align_corners) or 0.5.
    pub shift: T,
    /// Reflection: lower mirror (`0` or `-0.5`) and twice the mirrored span.
    pub low: T,
    pub twice_span: T,
    /// Reflection over an empty span (align_corners with size 1): everything maps to 0.
    pub empty: bool,
}

impl<T: Float> Axis<T> {
    pub fn new(size: usize, stride: usize, align: bool) -> Self {
        let size_t = T::from_usize(size);
        let max_val = T::from_usize(size - 1);
        let two = T::from_f64(2.0);
        let half = T::from_f64(0.5);
        if align {
            let scale = max_val / two;
            Axis {
                size_t,
                stride,
                max_val,
                scale,
                shift: T::ZERO,
                low: T::ZERO,
                twice_span: max_val * two,
                empty: size <= 1,
            }
        } else {
            let scale = size_t / two;
            Axis {
                size_t,
                stride,
                max_val,
                scale,
                shift: half,
                low: -half,
                twice_span: size_t * two,
                empty: false,
            }
        }
    }

    /// Grid coordinate in [-1, 1] to pixel coordinate (PyTorch's vectorized formula;
    /// subtracting a zero shift changes nothing, so one branch-free form serves both).
    #[inline(always)]
    pub fn unnormalize(&self, g: T) -> T {
        (g + T::ONE) * self.scale - self.shift
    }

    /// Clip to [0, size - 1]; NaN becomes 0 (2-D semantics).
    #[inline(always)]
    fn clip(&self, x: T) -> T {
        let lo = if x > T::ZERO { x } else { T::ZERO };
        if lo < self.max_val {
            lo
        } else {
            self.max_val
        }
    }

    /// Clip and its derivative; the borders themselves count as outside (derivative 0).
    #[inline(always)]
    fn clip_grad(&self, x: T) -> (T, T) {
        if x <= T::ZERO {
            (T::ZERO, T::ZERO)
        } else if x >= self.max_val {
            (self.max_val, T::ZERO)
        } else {
            (x, T::ONE)
        }
    }

    /// Mirror into [low, low + span] (NaN stays NaN).
    #[inline(always)]
    fn reflect(&self, x: T) -> T {
        if self.empty {
            return T::ZERO;
        }
        let a = (x - self.low).abs();
        let extra = a - (a / self.twice_span).trunc() * self.twice_span;
        let other = self.twice_span - extra;
        // NaN compares false, so a NaN `extra` is kept (PyTorch's `minimum` propagates it).
        (if other < extra { other } else { extra }) + self.low
    }

    /// Mirror and its derivative (+1 or -1).
    #[inline(always)]
    fn reflect_grad(&self, x: T) -> (T, T) {
        if self.empty {
            return (T::ZERO, T::ZERO);
        }
        let d = x - self.low;
        let neg = d < T::ZERO;
        let a = d.abs();
        let extra = a - (a / self.twice_span).trunc() * self.twice_span;
        let other = self.twice_span - extra;
        let flip = extra > other;
        let r = if flip { other } else { extra };
        let g = if flip ^ neg { -T::ONE } else { T::ONE };
        (r + self.low, g)
    }

    /// Padding applied to a coordinate (forward).
    #[inline(always)]
    pub fn pad<const PAD: u8>(&self, x: T) -> T {
        match PAD {
            PAD_BORDER => self.clip(x),
            PAD_REFLECTION => self.clip(self.reflect(x)),
            _ => x,
        }
    }

    /// Padding applied to a coordinate, with d(padded)/d(x).
    #[inline(always)]
    pub fn pad_grad<const PAD: u8>(&self, x: T) -> (T, T) {
        match PAD {
            PAD_BORDER => self.clip_grad(x),
            PAD_REFLECTION => {
                let (r, gr) = self.reflect_grad(x);
                let (c, gc) = self.clip_grad(r);
                (c, gr * gc)
            }
            _ => (x, T::ONE),
        }
    }

    /// True when the integral float `i` indexes inside the axis (false for NaN).
    #[inline(always)]
    pub fn in_range(&self, i: T) -> bool {
        i > -T::ONE && i < self.size_t
    }
}

/// The taps of one axis for one sample point: `P` = 1 (nearest), 2 (linear) or 4 (cubic).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AxisTaps<T, const P: usize> {
    /// Element offset along the axis (index times stride); 0 where invalid.
    pub off: [usize; P],
    /// Interpolation weight of each tap.
    pub w: [T; P],
    /// d(weight)/d(unpadded pixel coordinate), the padding derivative included.
    pub dw: [T; P],
    /// Whether each tap lies inside the input.
    pub valid: [bool; P],
}

/// Computes the taps of one axis.
///
/// `D3` selects the 3-D kernel's conventions: invalid taps get weight 0 (the scalar 3-D
/// kernel skips them instead of multiplying a zero by the weight) and its NaN rules.
/// `BWD` is true in backward passes (which differ only for NaN, see the module docs).
#[inline(always)]
pub(crate) fn axis_taps<T: Float, const P: usize, const PAD: u8, const D3: bool, const BWD: bool>(
    x: T,
    a: &Axis<T>,
) -> AxisTaps<T, P> {
    let mut t = AxisTaps { off: [0; P], w: [T::ZERO; P], dw: [T::ZERO; P], valid: [false; P] };
    match P {
        1 => {
            let xp = if D3 && x.is_nan() {
                if PAD == PAD_ZEROS || BWD {
                    x
                } else {
                    a.max_val
                }
            } else {
                a.pad::<PAD>(x)
            };
            let r = xp.round_even();
            t.w[0] = T::ONE;
            if a.in_range(r) {
                t.valid[0] = true;
                t.off[0] = r.to_f64() as usize * a.stride;
            }
        }
        2 => {
            let (xp, mult) = if x.is_nan() {
                nan_linear::<T, PAD, D3, BWD>(x, a)
            } else if BWD {
                a.pad_grad::<PAD>(x)
            } else {
                (a.pad::<PAD>(x), T::ONE)
            };
            let x0 = xp.floor();
            let frac = xp - x0;
            let x1 = x0 + T::ONE;
            t.w[0] = T::ONE - frac;
            t.w[1] = frac;
            t.dw[0] = -mult;
            t.dw[1] = mult;
            if a.in_range(x0) {
                t.valid[0] = true;
                t.off[0] = x0.to_f64() as usize * a.stride;
            }
            if a.in_range(x1) {
                t.valid[1] = true;
                t.off[1] = x1.to_f64() as usize * a.stride;
            }
            if D3 {
                for k in 0..2 {
                    if !t.valid[k] {
                        t.w[k] = T::ZERO;
                        t.dw[k] = T::ZERO;
                    }
                }
            }
        }
        _ => {
            // Cubic: the coordinate itself is not padded; each tap is (PyTorch).
            let x0 = x.floor();
            let s = x - x0;
            let c = cubic_coefficients(s);
            let dc = cubic_derivatives(s);
            for k in 0..P.min(4) {
                let q = a.pad::<PAD>(x0 + T::from_f64(k as f64 - 1.0));
                let qi = q.trunc();
                t.w[k] = c[k];
                t.dw[k] = dc[k];
                if a.in_range(qi) {
                    t.valid[k] = true;
                    t.off[k] = qi.to_f64() as usize * a.stride;
                }
            }
        }
    }
    t
}

/// A NaN coordinate under linear interpolation: (padded coordinate, derivative multiplier).
#[cold]
fn nan_linear<T: Float, const PAD: u8, const D3: bool, const BWD: bool>(x: T, a: &Axis<T>) -> (T, T) {
    if PAD == PAD_ZEROS {
        // Out of range; 2-D keeps the NaN weights (they reach the output as PyTorch's do).
        return (x, if D3 { T::ZERO } else { T::ONE });
    }
    if D3 {
        if BWD {
            (x, T::ZERO) // dropped from the backward, as PyTorch's 3-D kernel does
        } else {
            (a.max_val, T::ONE)
        }
    } else {
        (T::ZERO, T::ZERO)
    }
}

/// Keys cubic convolution weights of the taps at -1, 0, 1, 2 for fractional offset `s`.
#[inline(always)]
pub(crate) fn cubic_coefficients<T: Float>(s: T) -> [T; 4] {
    let a = T::from_f64(CUBIC_A);
    let one = T::ONE;
    let two = T::from_f64(2.0);
    let three = T::from_f64(3.0);
    let four = T::from_f64(4.0);
    let five = T::from_f64(5.0);
    let eight = T::from_f64(8.0);
    let far = |x: T| ((a * x - five * a) * x + eight * a) * x - four * a;
    let near = |x: T| ((a + two) * x - (a + three)) * x * x + one;
    [far(s + one), near(s), near(one - s), far(two - s)]
}

/// d(weight)/d(s) of [`cubic_coefficients`].
#[inline(always)]
pub(crate) fn cubic_derivatives<T: Float>(s: T) -> [T; 4] {
    let a = T::from_f64(CUBIC_A);
    let two = T::from_f64(2.0);
    let three = T::from_f64(3.0);
    let eight = T::from_f64(8.0);
    let ten = T::from_f64(10.0);
    // PyTorch's `get_cubic_coefficients_grad` gives -d(weight)/ds; negate it.
    let x0 = -T::ONE - s;
    let g0 = (-three * a * x0 - ten * a) * x0 - eight * a;
    let x1 = -s;
    let g1 = (-three * (a + two) * x1 - two * (a + three)) * x1;
    let x2 = T::ONE - s;
    let g2 = (three * (a + two) * x2 - two * (a + three)) * x2;
    let x3 = two - s;
    let g3 = (three * a * x3 - ten * a) * x3 + eight * a;
    [-g0, -g1, -g2, -g3]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cubic_weights_sum_to_one_and_derivatives_match_differences() {
        for i in 0..=16 {
            let s = i as f64 / 16.0;
            let c = cubic_coefficients(s);
            assert!((c.iter().sum::<f64>() - 1.0).abs() < 1e-12, "s = {s}");
            let h = 1e-6;
            let (cp, cm) = (cubic_coefficients(s + h), cubic_coefficients(s - h));
            let d = cubic_derivatives(s);
            for k in 0..4 {
                let fd = (cp[k] - cm[k]) / (2.0 * h);
                assert!((fd - d[k]).abs() < 1e-6, "s = {s}, tap {k}: {fd} vs {}", d[k]);
            }
        }
    }

    #[test]
    fn reflection_mirrors_repeatedly() {
        let a = Axis::<f64>::new(4, 1, true); // mirrors at 0 and 3
        assert_eq!(a.pad::<PAD_REFLECTION>(-1.0), 1.0);
        assert_eq!(a.pad::<PAD_REFLECTION>(4.0), 2.0);
        assert_eq!(a.pad::<PAD_REFLECTION>(7.0), 1.0);
        assert_eq!(a.pad_grad::<PAD_REFLECTION>(4.0), (2.0, -1.0));
        let b = Axis::<f64>::new(4, 1, false); // mirrors at -0.5 and 3.5, then clipped
        assert_eq!(b.pad::<PAD_REFLECTION>(-1.0), 0.0);
        assert_eq!(b.pad::<PAD_REFLECTION>(4.0), 3.0);
        assert_eq!(b.pad::<PAD_REFLECTION>(-0.25), 0.0);
        assert_eq!(b.pad::<PAD_REFLECTION>(5.0), 2.0);
    }

    #[test]
    fn border_clips_nan_to_zero_in_2d() {
        let a = Axis::<f32>::new(5, 1, false);
        assert_eq!(a.pad::<PAD_BORDER>(f32::NAN), 0.0);
        assert_eq!(a.pad::<PAD_BORDER>(9.0), 4.0);
        assert_eq!(a.pad_grad::<PAD_BORDER>(4.0), (4.0, 0.0));
        assert_eq!(a.pad_grad::<PAD_BORDER>(0.0), (0.0, 0.0));
        assert_eq!(a.pad_grad::<PAD_BORDER>(2.5), (2.5, 1.0));
    }
}
