//! `grid_sample` and its backward: sampling an input at a given grid of normalized coordinates.

use crate::coords::{pad_code, Axis, PAD_BORDER, PAD_REFLECTION, PAD_ZEROS};
use crate::engine::{self, BackwardOut, Plan, Source, SyncPtr, CHUNK};
use crate::error::{KernelError, Result};
use crate::fast2d::{self, CUBIC, LINEAR, NEAREST};
use crate::float::Float;
use crate::options::{GradRequest, Interpolation, SampleOptions};
use crate::source::GridSource;
use crate::tensor::{
    check_batch, check_shape_eq, check_tensor, filled_raw, fmt_shape, reserve, zeroed, Tensor, TensorRef,
};

/// Gradients of a [`grid_sample`] call; each is `None` unless requested.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleGrads<T> {
    /// d(loss)/d(input), shape of the input.
    pub input: Option<Tensor<T>>,
    /// d(loss)/d(grid), shape of the grid.
    pub grid: Option<Tensor<T>>,
}

/// Sizes of a validated input: batch, channels, spatial sizes in tensor order (D, H, W).
pub(crate) struct InputDims {
    pub n: usize,
    pub c: usize,
    pub spatial: Vec<usize>,
}

/// Validates an input tensor (N, C, H, W) or (N, C, D, H, W) and the options for its rank.
pub(crate) fn check_input<T>(input: &TensorRef<'_, T>, opts: &SampleOptions) -> Result<InputDims> {
    check_tensor("input", input, &[4, 5], "rank 4 (N, C, H, W) or rank 5 (N, C, D, H, W)")?;
    let s = input.shape;
    if s.len() == 5 && opts.mode == Interpolation::Bicubic {
        return Err(KernelError::Unsupported {
            arg: "mode",
            message: "bicubic interpolation is 2-D only (as in PyTorch); use bilinear (trilinear) or nearest for a 5-D input".into(),
        });
    }
    Ok(InputDims { n: s[0], c: s[1], spatial: s[2..].to_vec() })
}

/// Builds the engine plan of a D-dimensional problem. `spatial` and `out` are in tensor
/// order (D, H, W); axes are stored in (x, y, z) order.
pub(crate) fn plan<T: Float, const D: usize>(dims: &InputDims, out: &[usize], align: bool) -> Plan<T, D> {
    let sp = &dims.spatial;
    let mut stride = 1;
    let axes: [Axis<T>; D] = std::array::from_fn(|d| {
        let size = sp[D - 1 - d];
        let a = Axis::new(size, stride, align);
        stride *= size;
        a
    });
    Plan { n: dims.n, c: dims.c, axes, in_plane: sp.iter().product(), out_plane: out.iter().product() }
}

macro_rules! by_padding {
    ($pad:expr, $f:ident, [$($g:tt)*], ($($arg:expr),*)) => {
        match $pad {
            PAD_ZEROS => engine::$f::<$($g)*, PAD_ZEROS>($($arg),*),
            PAD_BORDER => engine::$f::<$($g)*, PAD_BORDER>($($arg),*),
            PAD_REFLECTION => engine::$f::<$($g)*, PAD_REFLECTION>($($arg),*),
            _ => unreachable!("padding codes are 0..=2"),
        }
    };
}

macro_rules! by_padding_fast {
    ($pad:expr, $f:ident, [$($g:tt)*], $k:literal, ($($arg:expr),*)) => {
        match $pad {
            PAD_ZEROS => fast2d::$f::<$($g)*, PAD_ZEROS, $k>($($arg),*),
            PAD_BORDER => fast2d::$f::<$($g)*, PAD_BORDER, $k>($($arg),*),
            PAD_REFLECTION => fast2d::$f::<$($g)*, PAD_REFLECTION, $k>($($arg),*),
            _ => unreachable!("padding codes are 0..=2"),
        }
    };
}

/// The plan as a 2-D plan when the 2-D fast path applies to it.
fn as_2d<T: Float, const D: usize>(plan: &Plan<T, D>) -> Option<&Plan<T, 2>> {
    if !fast2d::applicable(plan) || (!cfg!(test) && std::env::var_os("STN_KERNELS_GENERIC").is_some()) {
        return None;
    }
    // SAFETY: D == 2 (checked by `applicable`), so Plan<T, D> and Plan<T, 2> are the same type.
    Some(unsafe { &*(plan as *const Plan<T, D> as *const Plan<T, 2>) })
}

/// A D-dimensional source used as the 2-D source it is (D == 2 checked by `as_2d`).
struct As2d<'a, S, const D: usize>(&'a S);

impl<T: Float, const D: usize, S: Source<T, D>> Source<T, 2> for As2d<'_, S, D> {
    type Acc = S::Acc;
    fn new_acc(&self) -> S::Acc {
        self.0.new_acc()
    }
    #[inline(always)]
    fn coords(&self, n: usize, p0: usize, len: usize, xs: &mut [[T; CHUNK]; 2]) {
        // SAFETY: D == 2, so the arrays have the same type.
        let xs = unsafe { &mut *(xs as *mut [[T; CHUNK]; 2] as *mut [[T; CHUNK]; D]) };
        self.0.coords(n, p0, len, xs)
    }
    #[inline(always)]
    fn backward(
        &self,
        n: usize,
        p0: usize,
        len: usize,
        xs: &[[T; CHUNK]; 2],
        g: &[[T; CHUNK]; 2],
        acc: &mut S::Acc,
    ) {
        // SAFETY: D == 2, so the arrays have the same type.
        let (xs, g) = unsafe {
            (
                &*(xs as *const [[T; CHUNK]; 2] as *const [[T; CHUNK]; D]),
                &*(g as *const [[T; CHUNK]; 2] as *const [[T; CHUNK]; D]),
            )
        };
        self.0.backward(n, p0, len, xs, g, acc)
    }
}

/// Runs the forward pass of any source; returns the output buffer (N, C, out_plane).
pub(crate) fn run_forward<T: Float, S: Source<T, D>, const D: usize>(
    plan: &Plan<T, D>,
    src: &S,
    input: &[T],
    out_shape: &[usize],
    opts: &SampleOptions,
) -> Result<Vec<T>> {
    let pad = pad_code(opts.padding);
    if let Some(plan2) = as_2d(plan) {
        // SAFETY: the fast path writes every output element (every position of every block,
        // every channel), so the buffer needs no zeroing first.
        return unsafe {
            filled_raw::<T>("output", out_shape, |o| {
                let src2 = As2d::<S, D>(src);
                match opts.mode {
                    Interpolation::Nearest => {
                        by_padding_fast!(pad, forward, [T, As2d<'_, S, D>, NEAREST], 1, (plan2, &src2, input, o))
                    }
                    Interpolation::Bilinear => {
                        by_padding_fast!(pad, forward, [T, As2d<'_, S, D>, LINEAR], 4, (plan2, &src2, input, o))
                    }
                    Interpolation::Bicubic => {
                        by_padding_fast!(pad, forward, [T, As2d<'_, S, D>, CUBIC], 16, (plan2, &src2, input, o))
                    }
                }
            })
        };
    }
    let mut out = zeroed::<T>("output", out_shape)?;
    let o = &mut out[..];
    match (D, opts.mode) {
        (_, Interpolation::Nearest) => by_padding!(pad, forward, [T, S, D, 1, 1], (plan, src, input, o)),
        (2, Interpolation::Bilinear) => by_padding!(pad, forward, [T, S, D, 2, 4], (plan, src, input, o)),
        (2, Interpolation::Bicubic) => by_padding!(pad, forward, [T, S, D, 4, 16], (plan, src, input, o)),
        (_, Interpolation::Bilinear) => by_padding!(pad, forward, [T, S, D, 2, 8], (plan, src, input, o)),
        (_, Interpolation::Bicubic) => unreachable!("rejected by check_input"),
    }
    Ok(out)
}

/// Runs the backward pass of any source.
pub(crate) fn run_backward<T: Float, S: Source<T, D>, const D: usize>(
    plan: &Plan<T, D>,
    src: &S,
    input: TensorRef<'_, T>,
    grad_out: &[T],
    opts: &SampleOptions,
    req: GradRequest,
) -> Result<BackwardOut<T, S::Acc>> {
    let gin = if req.input { Some(zeroed::<T>("grad_input", input.shape)?) } else { None };
    let pad = pad_code(opts.padding);
    let (inp, p) = (input.data, req.params);
    if let Some(plan2) = as_2d(plan) {
        let src2 = As2d::<S, D>(src);
        let r = match opts.mode {
            Interpolation::Nearest => {
                by_padding_fast!(pad, backward, [T, As2d<'_, S, D>, NEAREST], 1, (plan2, &src2, inp, grad_out, gin, p))
            }
            Interpolation::Bilinear => {
                by_padding_fast!(pad, backward, [T, As2d<'_, S, D>, LINEAR], 4, (plan2, &src2, inp, grad_out, gin, p))
            }
            Interpolation::Bicubic => {
                by_padding_fast!(pad, backward, [T, As2d<'_, S, D>, CUBIC], 16, (plan2, &src2, inp, grad_out, gin, p))
            }
        };
        return Ok(r);
    }
    Ok(match (D, opts.mode) {
        (_, Interpolation::Nearest) => {
            by_padding!(pad, backward, [T, S, D, 1, 1], (plan, src, inp, grad_out, gin, p))
        }
        (2, Interpolation::Bilinear) => {
            by_padding!(pad, backward, [T, S, D, 2, 4], (plan, src, inp, grad_out, gin, p))
        }
        (2, Interpolation::Bicubic) => {
            by_padding!(pad, backward, [T, S, D, 4, 16], (plan, src, inp, grad_out, gin, p))
        }
        (_, Interpolation::Bilinear) => {
            by_padding!(pad, backward, [T, S, D, 2, 8], (plan, src, inp, grad_out, gin, p))
        }
        (_, Interpolation::Bicubic) => unreachable!("rejected by check_input"),
    })
}

/// Validates a grid against an input; returns the output spatial size (tensor order).
fn check_grid<T>(dims: &InputDims, grid: &TensorRef<'_, T>) -> Result<Vec<usize>> {
    let d = dims.spatial.len();
    let what = if d == 2 {
        "rank 4 (N, H_out, W_out, 2) for a 4-D input"
    } else {
        "rank 5 (N, D_out, H_out, W_out, 3) for a 5-D input"
    };
    check_tensor("grid", grid, &[d + 2], what)?;
    check_batch("grid", grid.shape[0], "input", dims.n)?;
    let last = *grid.shape.last().expect("rank checked");
    if last != d {
        let mut expected = grid.shape.to_vec();
        *expected.last_mut().expect("rank checked") = d;
        return Err(KernelError::Shape {
            arg: "grid",
            expected: format!("{} (last axis = {d} coordinates for a {d}-D input)", fmt_shape(&expected)),
            got: grid.shape.to_vec(),
        });
    }
    Ok(grid.shape[1..=d].to_vec())
}

/// Checks an upstream gradient against the expected output shape.
pub(crate) fn check_grad_output<T>(grad_output: &TensorRef<'_, T>, out_shape: &[usize]) -> Result<()> {
    check_tensor("grad_output", grad_output, &[out_shape.len()], &format!("rank {}", out_shape.len()))?;
    check_shape_eq("grad_output", grad_output.shape, out_shape)
}

/// Output shape (N, C, *out_spatial).
pub(crate) fn out_shape(dims: &InputDims, out_spatial: &[usize]) -> Vec<usize> {
    let mut s = vec![dims.n, dims.c];
    s.extend_from_slice(out_spatial);
    s
}

/// Samples `input` (N, C, H, W) or (N, C, D, H, W) at `grid` (N, H_out, W_out, 2) or
/// (N, D_out, H_out, W_out, 3), as PyTorch's `grid_sample`. Returns (N, C, H_out, W_out)
/// or (N, C, D_out, H_out, W_out).
pub fn grid_sample<T: Float>(
    input: TensorRef<'_, T>,
    grid: TensorRef<'_, T>,
    opts: &SampleOptions,
) -> Result<Tensor<T>> {
    T::grid_sample(input, grid, opts)
}

/// The body of [`grid_sample`], compiled here for `f32` and `f64` only ([`crate::entry`]).
pub(crate) fn grid_sample_in<T: Float>(
    input: TensorRef<'_, T>,
    grid: TensorRef<'_, T>,
    opts: &SampleOptions,
) -> Result<Tensor<T>> {
    let dims = check_input(&input, opts)?;
    let out_sp = check_grid(&dims, &grid)?;
    let shape = out_shape(&dims, &out_sp);
    let data = if dims.spatial.len() == 2 {
        let plan = plan::<T, 2>(&dims, &out_sp, opts.align_corners);
        let src = GridSource { grid: grid.data, axes: plan.axes, out_plane: plan.out_plane, grad: None };
        run_forward(&plan, &src, input.data, &shape, opts)?
    } else {
        let plan = plan::<T, 3>(&dims, &out_sp, opts.align_corners);
        let src = GridSource { grid: grid.data, axes: plan.axes, out_plane: plan.out_plane, grad: None };
        run_forward(&plan, &src, input.data, &shape, opts)?
    };
    Ok(Tensor { data, shape })
}

/// Gradients of [`grid_sample`] given d(loss)/d(output); computes only what `req` asks for
/// (`req.params` = the gradient to the grid).
pub fn grid_sample_backward<T: Float>(
    grad_output: TensorRef<'_, T>,
    input: TensorRef<'_, T>,
    grid: TensorRef<'_, T>,
    opts: &SampleOptions,
    req: GradRequest,
) -> Result<SampleGrads<T>> {
    T::grid_sample_backward(grad_output, input, grid, opts, req)
}

/// The body of [`grid_sample_backward`], compiled here for `f32` and `f64` only ([`crate::entry`]).
pub(crate) fn grid_sample_backward_in<T: Float>(
    grad_output: TensorRef<'_, T>,
    input: TensorRef<'_, T>,
    grid: TensorRef<'_, T>,
    opts: &SampleOptions,
    req: GradRequest,
) -> Result<SampleGrads<T>> {
    let dims = check_input(&input, opts)?;
    let out_sp = check_grid(&dims, &grid)?;
    let shape = out_shape(&dims, &out_sp);
    check_grad_output(&grad_output, &shape)?;
    // The grid gradient is written once per position by the source (every block, every chunk),
    // so it is not zeroed first; its length is set once the pass has written it.
    let mut grad_grid: Option<Vec<T>> =
        if req.params { Some(reserve::<T>("grad_grid", grid.shape)?) } else { None };
    let gptr = grad_grid.as_mut().map(|g| SyncPtr(g.as_mut_ptr()));
    let res = if dims.spatial.len() == 2 {
        let plan = plan::<T, 2>(&dims, &out_sp, opts.align_corners);
        let src = GridSource { grid: grid.data, axes: plan.axes, out_plane: plan.out_plane, grad: gptr };
        run_backward(&plan, &src, input, grad_output.data, opts, req)?.grad_input
    } else {
        let plan = plan::<T, 3>(&dims, &out_sp, opts.align_corners);
        let src = GridSource { grid: grid.data, axes: plan.axes, out_plane: plan.out_plane, grad: gptr };
        run_backward(&plan, &src, input, grad_output.data, opts, req)?.grad_input
    };
    if let Some(g) = grad_grid.as_mut() {
        // SAFETY: the backward pass wrote all grid.data.len() elements (see above).
        unsafe { g.set_len(grid.data.len()) };
    }
    Ok(SampleGrads {
        input: res.map(|data| Tensor { data, shape: input.shape.to_vec() }),
        grid: grad_grid.map(|data| Tensor { data, shape: grid.shape.to_vec() }),
    })
}
