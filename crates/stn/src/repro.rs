//! Layers and reductions whose bits do not depend on the CPU (any x86-64 with AVX2 and FMA,
//! AVX-512 or not, whatever its caches), for the parts of a model that Burn's own ops would
//! compute in a CPU-dependent order:
//!
//! - [`linear`]: a fully connected layer whose product is cut into fixed k slices of at most
//!   512 (gemm 0.19 splits a longer k into blocks sized from the L1 cache, so the order of the
//!   sums, and the bits, would follow the CPU); the slices' products are added in order.
//! - [`log_softmax`] and [`mean`]: sums in a fixed order (element-wise additions of columns, or
//!   along dimension 0 of a contiguous column, which burn-flex adds row after row), where a sum
//!   along the last dimension would take 8 lanes on AVX2 and 16 on AVX-512 (a different tree,
//!   different bits).
//!
//! - [`exp`] and [`ln`]: the pure-Rust `libm`, not the C library's `expf`/`logf` (whose bits
//!   depend on its version and on the variant it picks for the CPU).
//!
//! Gradients come from Burn's autodiff of these compositions: slices, products of k at most 512
//! (or of the batch), sums along dimension 0 and element-wise operations, each CPU-independent
//! in the same way.

use burn::backend::Dispatch;
use burn::nn::Linear;
use burn::tensor::Tensor;

use crate::backend::StnBackend;

/// `x (n x in) * weight (in x out) + bias`, as [`burn::nn::Linear::forward`] computes it, with
/// the product over `in` cut into fixed slices of at most 512 added in order.
pub fn linear(layer: &Linear, x: Tensor<2>) -> Tensor<2> {
    let w = layer.weight.val();
    let [k, out] = w.dims();
    let [n, _] = x.dims();
    // The slices of the convolution's products (one place decides them).
    let slices: Vec<_> = crate::conv_kernel::k_slices(k).collect();
    let mut y: Option<Tensor<2>> = None;
    for r in &slices {
        let part = if slices.len() == 1 {
            x.clone().matmul(w.clone())
        } else {
            x.clone().slice([0..n, r.clone()]).matmul(w.clone().slice([r.clone(), 0..out]))
        };
        y = Some(match y {
            None => part,
            Some(y) => y + part,
        });
    }
    let y = y.unwrap_or_else(|| x.matmul(w));
    match &layer.bias {
        Some(b) => y + b.val().unsqueeze::<2>(),
        None => y,
    }
}

/// `log_softmax` along dimension 1 of `x` (rows of class scores), class by class: the sum of
/// the exponentials is a chain of element-wise additions of columns, in class order, and no
/// step (nor its gradient) sums along a dimension, so the bits are the same on every CPU. Fit
/// for the few classes of a classifier (one column at a time).
pub fn log_softmax(x: Tensor<2>) -> Tensor<2> {
    let [n, c] = x.dims();
    let max = x.clone().detach().max_dim(1);
    let shifted: Vec<Tensor<2>> = (0..c).map(|j| x.clone().slice([0..n, j..j + 1]) - max.clone()).collect();
    let mut sum: Option<Tensor<2>> = None;
    for s in &shifted {
        let e = exp(s.clone());
        sum = Some(match sum {
            None => e,
            Some(acc) => acc + e,
        });
    }
    let Some(sum) = sum else { return x };
    let lse = ln(sum);
    Tensor::cat(shifted.into_iter().map(|s| s - lse.clone()).collect(), 1)
}

/// `exp` of every element, by the pure-Rust `libm` on the CPU (the same bits on every CPU and C
/// library; the platform's `expf` varies with the C library's version and variant), with its
/// gradient; Burn's own on a GPU.
pub fn exp<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as StnBackend>::stn_exp(x.into_dispatch()))
}

/// The natural logarithm of every element, as [`exp`].
pub fn ln<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as StnBackend>::stn_ln(x.into_dispatch()))
}

/// The sine of every element, as [`exp`].
pub fn sin<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as StnBackend>::stn_sin(x.into_dispatch()))
}

/// The cosine of every element, as [`exp`].
pub fn cos<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as StnBackend>::stn_cos(x.into_dispatch()))
}

/// The mean of every element of `x`, summed in a fixed order (as one contiguous column, along
/// dimension 0, which burn-flex adds row after row): the same bits on every CPU, where
/// [`Tensor::mean`] sums in SIMD lanes of the CPU's width.
pub fn mean<const D: usize>(x: Tensor<D>) -> Tensor<1> {
    let count = x.shape().num_elements();
    x.reshape([count, 1]).sum_dim(0).div_scalar(count as f64).reshape([1])
}

/// None where this CPU computes the bits these paths promise (x86-64 with AVX2 and FMA, the
/// baseline of the reference digests); else what a user comparing digests must know: the
/// results are as correct, but their last bits (so `weights_digest` and `output_digest`)
/// differ from those machines' (without FMA, gemm rounds each product and sum apart; another
/// architecture runs other kernels).
pub fn bitwise_note() -> Option<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return None;
        }
        Some(
            "this CPU has no AVX2 and FMA: results are as correct, but their last bits differ from those of \
             x86-64 CPUs with FMA, so weights_digest and output_digest will not match theirs",
        )
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Some(
            "on this CPU architecture results are as correct, but their last bits differ from those of x86-64 \
             CPUs with FMA, so weights_digest and output_digest will not match theirs",
        )
    }
}
