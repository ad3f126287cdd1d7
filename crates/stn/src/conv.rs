//! A faster 2-D convolution for the small images of localization nets and classifiers.
//!
//! [`conv2d`] computes what `burn::tensor::module::conv2d` computes. On flex with f32/f64
//! tensors and `groups == 1` it runs one im2col + gemm per chunk of images, forward and
//! backward, with a hand-written backward under autodiff (Burn flex's own path treats the
//! batch as a 3-D convolution and computes the weight gradient as a convolution whose kernel
//! is the whole output map, which dominated a training step of the tutorial ST-CNN). Everything
//! else (other backends, dtypes, grouped convolutions, images whose column matrix would exceed
//! 2^23 elements) goes to Burn's convolution. [`forward`] is a drop-in for
//! `burn::nn::conv::Conv2d::forward` on the same module and record.
//!
//! Results equal Burn's up to float rounding (the sums run in another order) and are identical
//! for any thread count.
//!
//! ```
//! use burn::nn::conv::Conv2dConfig;
//! use burn::tensor::{Device, Distribution, Tensor};
//!
//! let device = Device::flex();
//! let conv = Conv2dConfig::new([1, 8], [5, 5]).init(&device);
//! let x = Tensor::<4>::random([4, 1, 28, 28], Distribution::Default, &device);
//! let ours = stn::conv::forward(&conv, x.clone());
//! let burns = conv.forward(x);
//! assert_eq!(ours.dims(), [4, 8, 24, 24]);
//! let diff: f32 = (ours - burns).abs().max().into_scalar();
//! assert!(diff < 1e-5);
//! ```

use burn::backend::{DType, Dispatch};
use burn::nn::conv::Conv2d;
use burn::nn::pool::MaxPool2d;
use burn::nn::PaddingConfig2d;
use burn::tensor::module;
use burn::tensor::ops::{ConvOptions, MaxPoolOptions};
use burn::tensor::Tensor;

use crate::backend::{ConvSpec, PoolSpec, StnBackend};
use crate::conv_kernel::MAX_IMAGE_COLS;
use crate::error::{Result, StnError};
use crate::ops::{check_float, check_same_dtype, check_sizes, has_native_kernel, shape_err};

fn option_err(field: &'static str, message: String) -> StnError {
    StnError::Config { field, message }
}

/// The output size of a convolution, or an error naming what does not fit.
fn out_len(axis: &str, len: usize, k: usize, o: &ConvOptions<2>, i: usize) -> Result<usize> {
    let (pb, pe) = o.padding[i];
    let span = o.dilation[i]
        .checked_mul(k - 1)
        .and_then(|s| s.checked_add(1))
        .ok_or_else(|| option_err("dilation", format!("{axis}: dilated kernel size overflows")))?;
    let padded = len
        .checked_add(pb)
        .and_then(|l| l.checked_add(pe))
        .ok_or_else(|| option_err("padding", format!("{axis}: padded size overflows")))?;
    if padded < span {
        return Err(option_err(
            "padding",
            format!(
                "{axis}: the input ({len}, padded to {padded}) is smaller than the dilated kernel ({span}); \
                 the output would be empty"
            ),
        ));
    }
    Ok((padded - span) / o.stride[i] + 1)
}

/// 2-D convolution of `x` (N, C, H, W) with `weight` (O, C / groups, KH, KW) and an optional
/// `bias` (O): Burn's `module::conv2d`, checked, and on flex (f32/f64, groups 1) the fast path.
///
/// Errors name the argument: non-float or mixed dtypes, zero sizes, a weight or bias that does
/// not fit the input, zero stride/dilation/groups, and a kernel larger than the padded input.
pub fn conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    options: ConvOptions<2>,
) -> Result<Tensor<4>> {
    let spec = check(&x, &weight, bias.as_ref(), &options)?;
    let wd = weight.dims();
    let native = options.groups == 1
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && has_native_kernel(&x.device())
        && wd[1]
            .saturating_mul(wd[2])
            .saturating_mul(wd[3])
            .saturating_mul(spec.out_size[0] * spec.out_size[1])
            <= MAX_IMAGE_COLS;
    if !native {
        return Ok(module::conv2d(x, weight, bias, options));
    }
    let bias = bias.unwrap_or_else(|| Tensor::zeros([wd[0]], (&x.device(), x.dtype())));
    Ok(Tensor::from_dispatch(<Dispatch as StnBackend>::stn_conv2d(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        spec,
    )))
}

fn check(x: &Tensor<4>, w: &Tensor<4>, bias: Option<&Tensor<1>>, o: &ConvOptions<2>) -> Result<ConvSpec> {
    let elem = check_float("x", x)?;
    check_same_dtype(x, "weight", w)?;
    let (xd, wd) = (x.dims(), w.dims());
    check_sizes("x", &xd, elem)?;
    check_sizes("weight", &wd, elem)?;
    if o.groups == 0 {
        return Err(option_err("groups", "must be at least 1".into()));
    }
    for (name, v) in [("stride", o.stride), ("dilation", o.dilation)] {
        if v.contains(&0) {
            return Err(option_err(name, format!("{v:?}: every entry must be at least 1")));
        }
    }
    if xd[1] % o.groups != 0 || wd[0] % o.groups != 0 || wd[1] != xd[1] / o.groups {
        return Err(shape_err("weight", &[wd[0], xd[1] / o.groups.max(1), wd[2], wd[3]], &wd));
    }
    if let Some(b) = bias {
        check_same_dtype(x, "bias", b)?;
        if b.dims() != [wd[0]] {
            return Err(shape_err("bias", &[wd[0]], &b.dims()));
        }
    }
    let out_size = [out_len("rows", xd[2], wd[2], o, 0)?, out_len("columns", xd[3], wd[3], o, 1)?];
    check_sizes("output", &[xd[0], wd[0], out_size[0], out_size[1]], elem)?;
    Ok(ConvSpec { stride: o.stride, padding: o.padding_begin(), dilation: o.dilation, out_size })
}

/// `conv.forward(x)` through [`conv2d`]: the same module, parameters and record, the fast path
/// where it applies. Panics where `Conv2d::forward` would (a wrong input shape), with the
/// [`conv2d`] error's message.
pub fn forward(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    let options =
        ConvOptions::new_with_padding(conv.stride, padding_pairs(conv, h, w), conv.dilation, conv.groups);
    conv2d(x, conv.weight.val(), conv.bias.as_ref().map(|b| b.val()), options)
        .unwrap_or_else(|e| panic!("conv2d: {e}"))
}

/// The ((top, bottom), (left, right)) padding of `conv` for an h x w input, as Burn computes it.
fn padding_pairs(conv: &Conv2d, h: usize, w: usize) -> [(usize, usize); 2] {
    let same = |k: usize, s: usize, len: usize| {
        let out = len.div_ceil(s);
        let total = ((out.max(1) - 1) * s + k).saturating_sub(len);
        (total / 2, total - total / 2)
    };
    match conv.padding {
        PaddingConfig2d::Valid => [(0, 0), (0, 0)],
        PaddingConfig2d::Same => {
            [same(conv.kernel_size[0], conv.stride[0], h), same(conv.kernel_size[1], conv.stride[1], w)]
        }
        PaddingConfig2d::Explicit(top, left, bottom, right) => [(top, bottom), (left, right)],
    }
}

/// 2-D max pooling of `x` (N, C, H, W) with a `kernel` window moved by `stride`, no padding:
/// Burn's `module::max_pool2d` with padding 0 and dilation 1, checked, and on flex (f32/f64) a
/// direct kernel whose backward routes each gradient to its window's first maximum (a NaN
/// propagates, as in PyTorch).
pub fn max_pool2d(x: Tensor<4>, kernel: [usize; 2], stride: [usize; 2]) -> Result<Tensor<4>> {
    let elem = check_float("x", &x)?;
    let xd = x.dims();
    check_sizes("x", &xd, elem)?;
    for (name, v) in [("kernel", kernel), ("stride", stride)] {
        if v.contains(&0) {
            return Err(option_err(name, format!("{v:?}: every entry must be at least 1")));
        }
    }
    if kernel[0] > xd[2] || kernel[1] > xd[3] {
        return Err(option_err(
            "kernel",
            format!("{kernel:?} is larger than the input's {}x{} planes", xd[2], xd[3]),
        ));
    }
    let out_size = [(xd[2] - kernel[0]) / stride[0] + 1, (xd[3] - kernel[1]) / stride[1] + 1];
    let native = matches!(x.dtype(), DType::F32 | DType::F64)
        && has_native_kernel(&x.device())
        && xd[2] * xd[3] <= u32::MAX as usize;
    if !native {
        return Ok(module::max_pool2d(x, MaxPoolOptions::new(kernel).with_stride(stride)));
    }
    let spec = PoolSpec { kernel, stride, out_size };
    Ok(Tensor::from_dispatch(<Dispatch as StnBackend>::stn_max_pool2d(x.into_dispatch(), spec)))
}

/// `pool.forward(x)` through [`max_pool2d`] where the module has no padding, dilation 1 and
/// floor mode; other modules run their own `forward`. Panics where `MaxPool2d::forward` would.
pub fn pool_forward(pool: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
    let plain = pool.dilation == [1, 1] && !pool.ceil_mode && matches!(pool.padding, PaddingConfig2d::Valid);
    if !plain {
        return pool.forward(x);
    }
    max_pool2d(x, pool.kernel_size, pool.stride).unwrap_or_else(|e| panic!("max_pool2d: {e}"))
}
