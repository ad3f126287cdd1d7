//! The op as a Burn backend extension: on `Flex` the forward and backward call stn-kernels
//! directly, and under `Autodiff<Flex>` a hand-written backward runs (never Burn's
//! gather/scatter decomposition). Backends without a native kernel take the generic tensor-op
//! path of [`crate::generic`]; [`crate::ops`] routes each call. The same extension carries the
//! convolution and max pooling of [`crate::conv`] (kernels in `conv_kernel.rs`), which other
//! backends run as Burn's own ops.
//!
//! With the `gpu` feature, Burn's CubeCL backends (`Cube`: wgpu, CUDA) join the same way: the
//! sampling ops run the CubeCL kernels of `crate::gpu` (f32), with the same hand-written
//! backward nodes under `Autodiff` ([`NativeOps`] is what a backend supplies to them); their
//! convolution and pooling are Burn's own.

use burn::backend::autodiff::{
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Autodiff, Backend, Bytes, DType, Flex};
use burn::tensor::Shape;
use std::sync::Arc;

use crate::conv_kernel::{self as ck, ConvGeom, PoolGeom};
use stn_kernels::{self as k, Float, GradRequest, SampleOptions, TensorRef, Tps};

/// What a parameterized op does with its parameters: the three matrix/spline families the
/// kernels fuse into the sampler.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WarpKind {
    /// Affine matrices (N, 2, 3) for 4-D inputs or (N, 3, 4) for 5-D inputs.
    Affine,
    /// Homographies (N, 8), `h33 = 1`.
    Projective,
    /// Thin-plate-spline target points (N, K, 2).
    Tps(Tps),
}

/// A fused warp: parameters straight into the sampler, output of spatial size `out_size`.
#[derive(Debug, Clone, PartialEq)]
pub struct WarpSpec {
    /// The parameter family.
    pub kind: WarpKind,
    /// Spatial output size: (H_out, W_out) or (D_out, H_out, W_out).
    pub out_size: Vec<usize>,
    /// Sampler options.
    pub options: SampleOptions,
}

/// A grid from parameters: `size` is (N, C, H, W) or (N, C, D, H, W), as PyTorch's `affine_grid`.
#[derive(Debug, Clone, PartialEq)]
pub struct GridSpec {
    /// The parameter family.
    pub kind: WarpKind,
    /// Output size, batch and channels included (channels are ignored).
    pub size: Vec<usize>,
    /// Corner alignment of the grid's normalized coordinates.
    pub align_corners: bool,
}

/// The stn ops at the primitive level. Inputs must already be validated ([`crate::ops`] does
/// that); a kernel error here is a broken invariant and panics with the kernel's message.
#[backend_extension(Flex, Autodiff, Cube: cfg(feature = "gpu"))]
pub trait StnBackend: Backend {
    /// `grid_sample(input, grid)`: (N, C, H, W) with (N, Ho, Wo, 2), or 5-D with (N, Do, Ho, Wo, 3).
    fn stn_grid_sample(
        input: FloatTensor<Self>,
        grid: FloatTensor<Self>,
        options: SampleOptions,
    ) -> FloatTensor<Self>;

    /// Samples `input` through the transform `params` of `spec.kind` without a stored grid.
    fn stn_warp(input: FloatTensor<Self>, params: FloatTensor<Self>, spec: WarpSpec) -> FloatTensor<Self>;

    /// The sampling grid of `params` (affine, projective or TPS).
    fn stn_param_grid(params: FloatTensor<Self>, spec: GridSpec) -> FloatTensor<Self>;

    /// 2-D convolution (groups 1) of `x` (N, C, H, W) with `weight` (O, C, KH, KW) plus `bias`
    /// (O), to (N, O, spec.out_size).
    fn stn_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        spec: ConvSpec,
    ) -> FloatTensor<Self>;

    /// 2-D max pooling of `x` (N, C, H, W) without padding or dilation, to (N, C, spec.out_size).
    fn stn_max_pool2d(x: FloatTensor<Self>, spec: PoolSpec) -> FloatTensor<Self>;

    /// `exp` of every element: on flex the pure-Rust `libm` (the same bits on every CPU and C
    /// library, where flex calls the platform's); Burn's own elsewhere.
    fn stn_exp(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_exp(x)
    }

    /// The natural logarithm of every element, as [`StnBackend::stn_exp`] does `exp`.
    fn stn_ln(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_log(x)
    }

    /// The sine of every element, as [`StnBackend::stn_exp`] does `exp`.
    fn stn_sin(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_sin(x)
    }

    /// The cosine of every element, as [`StnBackend::stn_exp`] does `exp`.
    fn stn_cos(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_cos(x)
    }
}

/// The geometry of a max pooling without padding or dilation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSpec {
    /// Window (rows, columns).
    pub kernel: [usize; 2],
    /// Row and column stride.
    pub stride: [usize; 2],
    /// Output (rows, columns).
    pub out_size: [usize; 2],
}

impl PoolSpec {
    fn geom(&self, x: &[usize]) -> PoolGeom {
        PoolGeom {
            planes: x[0] * x[1],
            h: x[2],
            w: x[3],
            kernel: self.kernel,
            stride: self.stride,
            oh: self.out_size[0],
            ow: self.out_size[1],
        }
    }
}

/// The geometry of a 2-D convolution with groups 1 (the shapes come from the tensors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvSpec {
    /// Row and column stride.
    pub stride: [usize; 2],
    /// Zero padding before the first row and column.
    pub padding: [usize; 2],
    /// Row and column dilation.
    pub dilation: [usize; 2],
    /// Output (rows, columns); with the end padding included.
    pub out_size: [usize; 2],
}

impl ConvSpec {
    fn geom(&self, x: &[usize], w: &[usize]) -> ConvGeom {
        ConvGeom {
            n: x[0],
            c: x[1],
            h: x[2],
            w: x[3],
            o: w[0],
            kh: w[2],
            kw: w[3],
            oh: self.out_size[0],
            ow: self.out_size[1],
            stride: self.stride,
            pad: self.padding,
            dilation: self.dilation,
        }
    }
}

// ---------------------------------------------------------------- flex <-> kernels

/// The tensor, contiguous: zero-copy when it already is (any start offset), else one copy.
fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.is_contiguous() {
        t
    } else {
        t.to_contiguous()
    }
}

fn dims(t: &FlexTensor) -> Vec<usize> {
    t.layout().shape().to_vec()
}

/// Adopts the kernel's output buffer (no copy).
fn to_flex<T: Float + elem::Elem>(out: k::Tensor<T>) -> FlexTensor {
    FlexTensor::new(Bytes::from_elems(out.data), Layout::contiguous(Shape::from(out.shape)), T::DTYPE)
}

/// Float element types the kernels and flex share.
mod elem {
    use burn::backend::DType;

    /// An element type with its flex dtype.
    pub trait Elem: stn_kernels::Float + burn::tensor::Element + bytemuck::Pod {
        /// The flex dtype of this element type.
        const DTYPE: DType;
    }
    impl Elem for f32 {
        const DTYPE: DType = DType::F32;
    }
    impl Elem for f64 {
        const DTYPE: DType = DType::F64;
    }
}
use elem::Elem;

fn slice<T: Elem>(t: &FlexTensor) -> &[T] {
    t.as_slice::<T>().expect("stn: contiguous tensor of the op's dtype")
}

fn view<'a, T: Elem>(t: &'a FlexTensor, shape: &'a [usize]) -> TensorRef<'a, T> {
    TensorRef::new(slice::<T>(t), shape)
}

fn unwrap<T>(r: k::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("stn: {e}"))
}

/// Calls `$body` with `$T` bound to the element type of `$dtype` (f32 or f64).
macro_rules! with_float {
    ($dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            DType::F32 => {
                type $T = f32;
                $body
            }
            DType::F64 => {
                type $T = f64;
                $body
            }
            other => panic!("stn: the native kernels take f32 or f64 tensors, got {other:?}"),
        }
    };
}

fn same_dtype(a: &FlexTensor, b: &FlexTensor) -> DType {
    assert_eq!(a.dtype(), b.dtype(), "stn: both tensors of an op must have the same dtype");
    a.dtype()
}

fn sample_fwd<T: Elem>(x: &FlexTensor, g: &FlexTensor, o: &SampleOptions) -> FlexTensor {
    let (xs, gs) = (dims(x), dims(g));
    to_flex(unwrap(k::grid_sample(view::<T>(x, &xs), view::<T>(g, &gs), o)))
}

fn warp_fwd<T: Elem>(x: &FlexTensor, p: &FlexTensor, s: &WarpSpec) -> FlexTensor {
    let (xs, ps) = (dims(x), dims(p));
    let (x, p) = (view::<T>(x, &xs), view::<T>(p, &ps));
    to_flex(unwrap(match s.kind {
        WarpKind::Affine => k::affine_sample(x, p, &s.out_size, &s.options),
        WarpKind::Projective => k::projective_sample(x, p, &s.out_size, &s.options),
        WarpKind::Tps(tps) => k::tps_sample(x, p, &tps, &s.out_size, &s.options),
    }))
}

fn grid_fwd<T: Elem>(p: &FlexTensor, s: &GridSpec) -> FlexTensor {
    let ps = dims(p);
    let p = view::<T>(p, &ps);
    to_flex(unwrap(match s.kind {
        WarpKind::Affine => k::affine_grid(p, &s.size, s.align_corners),
        WarpKind::Projective => k::projective_grid(p, &s.size, s.align_corners),
        WarpKind::Tps(tps) => k::tps_grid(p, &tps, &s.size, s.align_corners),
    }))
}

impl StnBackend for Flex {
    fn stn_grid_sample(input: FlexTensor, grid: FlexTensor, options: SampleOptions) -> FlexTensor {
        let (x, g) = (contiguous(input), contiguous(grid));
        with_float!(same_dtype(&x, &g), T => sample_fwd::<T>(&x, &g, &options))
    }

    fn stn_warp(input: FlexTensor, params: FlexTensor, spec: WarpSpec) -> FlexTensor {
        let (x, p) = (contiguous(input), contiguous(params));
        with_float!(same_dtype(&x, &p), T => warp_fwd::<T>(&x, &p, &spec))
    }

    fn stn_param_grid(params: FlexTensor, spec: GridSpec) -> FlexTensor {
        let p = contiguous(params);
        with_float!(p.dtype(), T => grid_fwd::<T>(&p, &spec))
    }

    fn stn_conv2d(x: FlexTensor, weight: FlexTensor, bias: FlexTensor, spec: ConvSpec) -> FlexTensor {
        let (x, w, b) = (contiguous(x), contiguous(weight), contiguous(bias));
        same_dtype(&x, &b);
        with_float!(same_dtype(&x, &w), T => conv_fwd::<T>(&x, &w, &b, &spec))
    }

    fn stn_exp(x: FlexTensor) -> FlexTensor {
        map_float(&contiguous(x), libm::expf, libm::exp)
    }

    fn stn_ln(x: FlexTensor) -> FlexTensor {
        map_float(&contiguous(x), libm::logf, libm::log)
    }

    fn stn_sin(x: FlexTensor) -> FlexTensor {
        map_float(&contiguous(x), libm::sinf, libm::sin)
    }

    fn stn_cos(x: FlexTensor) -> FlexTensor {
        map_float(&contiguous(x), libm::cosf, libm::cos)
    }

    fn stn_max_pool2d(x: FlexTensor, spec: PoolSpec) -> FlexTensor {
        let x = contiguous(x);
        with_float!(x.dtype(), T => pool_fwd::<T>(&x, &spec, false).0)
    }
}

fn pool_fwd<T: Elem>(x: &FlexTensor, spec: &PoolSpec, want_idx: bool) -> (FlexTensor, Vec<u32>) {
    let xs = dims(x);
    let (out, idx) = ck::max_pool_forward(slice::<T>(x), &spec.geom(&xs), want_idx);
    let shape = vec![xs[0], xs[1], spec.out_size[0], spec.out_size[1]];
    (to_flex(k::Tensor { data: out, shape }), idx)
}

fn conv_fwd<T: Elem>(x: &FlexTensor, w: &FlexTensor, b: &FlexTensor, spec: &ConvSpec) -> FlexTensor {
    let (xs, ws) = (dims(x), dims(w));
    let g = spec.geom(&xs, &ws);
    let out = ck::forward(slice::<T>(x), slice::<T>(w), slice::<T>(b), &g);
    let shape = vec![g.n, g.o, g.oh, g.ow];
    to_flex(k::Tensor { data: out, shape })
}

// ---------------------------------------------------------------- autodiff

/// Which two-input op a backward node belongs to.
#[derive(Debug, Clone)]
pub(crate) enum SamplerOp {
    Grid(SampleOptions),
    Warp(WarpSpec),
}

/// What a backend with native sampling kernels supplies to the shared backward nodes.
pub(crate) trait NativeOps: Backend {
    /// The tensor as the backward wants to keep it (flex: contiguous).
    fn keep(t: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Gradients of a sampling op to its input and to its grid or parameters, as requested.
    fn sampler_backward(
        op: &SamplerOp,
        gout: FloatTensor<Self>,
        x: FloatTensor<Self>,
        p: FloatTensor<Self>,
        req: GradRequest,
    ) -> (Option<FloatTensor<Self>>, Option<FloatTensor<Self>>);
    /// Gradient of a grid from parameters to its parameters.
    fn param_grid_backward(
        spec: &GridSpec,
        gout: FloatTensor<Self>,
        p: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

/// Backward of `stn_grid_sample` and `stn_warp`: parents (input, grid or params).
#[derive(Debug)]
struct SamplerBackward(SamplerOp);

fn sampler_bwd<T: Elem>(
    op: &SamplerOp,
    gout: &FlexTensor,
    x: &FlexTensor,
    p: &FlexTensor,
    req: GradRequest,
) -> (Option<FlexTensor>, Option<FlexTensor>) {
    let (os, xs, ps) = (dims(gout), dims(x), dims(p));
    let (go, x, p) = (view::<T>(gout, &os), view::<T>(x, &xs), view::<T>(p, &ps));
    let (gi, gp) = match op {
        SamplerOp::Grid(o) => {
            let r = unwrap(k::grid_sample_backward(go, x, p, o, req));
            (r.input, r.grid)
        }
        SamplerOp::Warp(s) => {
            let r = unwrap(match s.kind {
                WarpKind::Affine => k::affine_sample_backward(go, x, p, &s.options, req),
                WarpKind::Projective => k::projective_sample_backward(go, x, p, &s.options, req),
                WarpKind::Tps(tps) => k::tps_sample_backward(go, x, p, &tps, &s.options, req),
            });
            (r.input, r.params)
        }
    };
    (gi.map(to_flex), gp.map(to_flex))
}

fn grid_bwd<T: Elem>(s: &GridSpec, gout: &FlexTensor, p: &FlexTensor) -> FlexTensor {
    let (os, ps) = (dims(gout), dims(p));
    let (go, pv) = (view::<T>(gout, &os), view::<T>(p, &ps));
    let g = unwrap(match s.kind {
        WarpKind::Affine => k::affine_grid_backward(go, s.align_corners),
        WarpKind::Projective => k::projective_grid_backward(go, pv, s.align_corners),
        WarpKind::Tps(tps) => k::tps_grid_backward(go, &tps, s.align_corners),
    });
    to_flex(g)
}

impl NativeOps for Flex {
    fn keep(t: FlexTensor) -> FlexTensor {
        contiguous(t)
    }

    fn sampler_backward(
        op: &SamplerOp,
        gout: FlexTensor,
        x: FlexTensor,
        p: FlexTensor,
        req: GradRequest,
    ) -> (Option<FlexTensor>, Option<FlexTensor>) {
        let (gout, x, p) = (contiguous(gout), contiguous(x), contiguous(p));
        with_float!(same_dtype(&x, &p), T => sampler_bwd::<T>(op, &gout, &x, &p, req))
    }

    fn param_grid_backward(spec: &GridSpec, gout: FlexTensor, p: FlexTensor) -> FlexTensor {
        let (gout, p) = (contiguous(gout), contiguous(p));
        with_float!(p.dtype(), T => grid_bwd::<T>(spec, &gout, &p))
    }
}

impl<B: NativeOps> Backward<B, 2> for SamplerBackward {
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_p] = ops.parents;
        let (x, p) = ops.state;
        let gout = grads.consume::<B>(&ops.node);
        let req = GradRequest { input: node_x.is_some(), params: node_p.is_some() };
        if !req.input && !req.params {
            return;
        }
        let (gx, gp) = B::sampler_backward(&self.0, gout, x, p, req);
        if let (Some(node), Some(g)) = (node_x, gx) {
            grads.register::<B>(node.id, g);
        }
        if let (Some(node), Some(g)) = (node_p, gp) {
            grads.register::<B>(node.id, g);
        }
    }
}

/// Backward of `stn_param_grid`: one parent (the parameters).
#[derive(Debug)]
struct GridBackward(GridSpec);

impl<B: NativeOps> Backward<B, 1> for GridBackward {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_p] = ops.parents;
        let gout = grads.consume::<B>(&ops.node);
        if let Some(node) = node_p {
            let g = B::param_grid_backward(&self.0, gout, ops.state);
            grads.register::<B>(node.id, g);
        }
    }
}

/// The sampling ops under `Autodiff<B>`: B's forward, the shared backward nodes.
fn ad_grid_sample<B: NativeOps + StnBackend, C: CheckpointStrategy>(
    input: FloatTensor<Autodiff<B, C>>,
    grid: FloatTensor<Autodiff<B, C>>,
    options: SampleOptions,
) -> FloatTensor<Autodiff<B, C>> {
    let back = SamplerBackward(SamplerOp::Grid(options));
    match back.prepare::<C>([input.node(), grid.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let (x, g) = (B::keep(input.into_primitive()), B::keep(grid.into_primitive()));
            let out = B::stn_grid_sample(x.clone(), g.clone(), options);
            prep.finish((x, g), out)
        }
        OpsKind::UnTracked(prep) => {
            prep.finish(B::stn_grid_sample(input.into_primitive(), grid.into_primitive(), options))
        }
    }
}

fn ad_warp<B: NativeOps + StnBackend, C: CheckpointStrategy>(
    input: FloatTensor<Autodiff<B, C>>,
    params: FloatTensor<Autodiff<B, C>>,
    spec: WarpSpec,
) -> FloatTensor<Autodiff<B, C>> {
    let back = SamplerBackward(SamplerOp::Warp(spec.clone()));
    match back.prepare::<C>([input.node(), params.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let (x, p) = (B::keep(input.into_primitive()), B::keep(params.into_primitive()));
            let out = B::stn_warp(x.clone(), p.clone(), spec);
            prep.finish((x, p), out)
        }
        OpsKind::UnTracked(prep) => {
            prep.finish(B::stn_warp(input.into_primitive(), params.into_primitive(), spec))
        }
    }
}

fn ad_param_grid<B: NativeOps + StnBackend, C: CheckpointStrategy>(
    params: FloatTensor<Autodiff<B, C>>,
    spec: GridSpec,
) -> FloatTensor<Autodiff<B, C>> {
    let back = GridBackward(spec.clone());
    match back.prepare::<C>([params.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let p = B::keep(params.into_primitive());
            let out = B::stn_param_grid(p.clone(), spec);
            prep.finish(p, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(B::stn_param_grid(params.into_primitive(), spec)),
    }
}

/// Backward of `stn_conv2d`: parents (input, weight, bias).
#[derive(Debug)]
struct ConvBackward(ConvSpec);

fn conv_bwd<T: Elem>(
    spec: &ConvSpec,
    gout: &FlexTensor,
    x: &FlexTensor,
    w: &FlexTensor,
    need: [bool; 3],
) -> [Option<FlexTensor>; 3] {
    let (xs, ws) = (dims(x), dims(w));
    let g = spec.geom(&xs, &ws);
    let r = ck::backward(slice::<T>(gout), slice::<T>(x), slice::<T>(w), &g, need);
    let wrap = |v: Option<Vec<T>>, shape: Vec<usize>| v.map(|data| to_flex(k::Tensor { data, shape }));
    [wrap(r.x, xs), wrap(r.w, ws), wrap(r.b, vec![g.o])]
}

impl Backward<Flex, 3> for ConvBackward {
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let gout = contiguous(grads.consume::<Flex>(&ops.node));
        let need = [0, 1, 2].map(|i| ops.parents[i].is_some());
        if need == [false; 3] {
            return;
        }
        let (x, w) = ops.state;
        let got = with_float!(same_dtype(&x, &w), T => conv_bwd::<T>(&self.0, &gout, &x, &w, need));
        for (node, g) in ops.parents.into_iter().zip(got) {
            if let (Some(node), Some(g)) = (node, g) {
                grads.register::<Flex>(node.id, g);
            }
        }
    }
}

/// `f32` or `f64` function of every element of the contiguous float tensor `x`.
fn map_float(x: &FlexTensor, f: fn(f32) -> f32, g: fn(f64) -> f64) -> FlexTensor {
    let shape = dims(x);
    match x.dtype() {
        DType::F64 => to_flex(k::Tensor { data: slice::<f64>(x).iter().map(|v| g(*v)).collect(), shape }),
        _ => to_flex(k::Tensor { data: slice::<f32>(x).iter().map(|v| f(*v)).collect(), shape }),
    }
}

/// Two contiguous float tensors of one shape combined element by element.
fn zip_float(a: &FlexTensor, b: &FlexTensor, f: fn(f32, f32) -> f32, g: fn(f64, f64) -> f64) -> FlexTensor {
    let shape = dims(a);
    match a.dtype() {
        DType::F64 => to_flex(k::Tensor {
            data: slice::<f64>(a).iter().zip(slice::<f64>(b)).map(|(x, y)| g(*x, *y)).collect(),
            shape,
        }),
        _ => to_flex(k::Tensor {
            data: slice::<f32>(a).iter().zip(slice::<f32>(b)).map(|(x, y)| f(*x, *y)).collect(),
            shape,
        }),
    }
}

/// Backward of `stn_exp` (state: its output, `d exp(x) = exp(x) dx`), of `stn_ln` (state:
/// its input, `d ln(x) = dx / x`), of `stn_sin` (state: its input, `d sin(x) = cos(x) dx`) and
/// of `stn_cos` (state: its input, `d cos(x) = -sin(x) dx`), with `libm`'s sine and cosine.
#[derive(Debug)]
enum ElementwiseBackward {
    Exp,
    Ln,
    Sin,
    Cos,
}

impl Backward<Flex, 1> for ElementwiseBackward {
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let gout = contiguous(grads.consume::<Flex>(&ops.node));
        if let Some(node) = node {
            let g = match self {
                ElementwiseBackward::Exp => zip_float(&gout, &ops.state, |g, y| g * y, |g, y| g * y),
                ElementwiseBackward::Ln => zip_float(&gout, &ops.state, |g, x| g / x, |g, x| g / x),
                ElementwiseBackward::Sin => {
                    zip_float(&gout, &ops.state, |g, x| g * libm::cosf(x), |g, x| g * libm::cos(x))
                }
                ElementwiseBackward::Cos => {
                    zip_float(&gout, &ops.state, |g, x| -(g * libm::sinf(x)), |g, x| -(g * libm::sin(x)))
                }
            };
            grads.register::<Flex>(node.id, g);
        }
    }
}

/// An element-wise op `f` under autodiff whose backward `kind` keeps the op's input.
fn on_input<C: CheckpointStrategy>(
    kind: ElementwiseBackward,
    x: FloatTensor<Autodiff<Flex, C>>,
    f: fn(FlexTensor) -> FlexTensor,
) -> FloatTensor<Autodiff<Flex, C>> {
    match kind.prepare::<C>([x.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let x = contiguous(x.into_primitive());
            let out = f(x.clone());
            prep.finish(x, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(f(x.into_primitive())),
    }
}

/// Backward of `stn_max_pool2d`: one parent (the input).
#[derive(Debug)]
struct PoolBackward(PoolSpec);

impl Backward<Flex, 1> for PoolBackward {
    /// The input's shape and dtype, and the argmax of each output.
    type State = (Vec<usize>, DType, Arc<Vec<u32>>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let gout = contiguous(grads.consume::<Flex>(&ops.node));
        if let Some(node) = node {
            let (xs, dtype, idx) = ops.state;
            let g = self.0.geom(&xs);
            let gx = with_float!(dtype, T => to_flex(k::Tensor {
                data: ck::max_pool_backward(slice::<T>(&gout), &idx, &g),
                shape: xs,
            }));
            grads.register::<Flex>(node.id, gx);
        }
    }
}

impl<C: CheckpointStrategy> StnBackend for Autodiff<Flex, C> {
    fn stn_grid_sample(
        input: FloatTensor<Self>,
        grid: FloatTensor<Self>,
        options: SampleOptions,
    ) -> FloatTensor<Self> {
        ad_grid_sample::<Flex, C>(input, grid, options)
    }

    fn stn_warp(input: FloatTensor<Self>, params: FloatTensor<Self>, spec: WarpSpec) -> FloatTensor<Self> {
        ad_warp::<Flex, C>(input, params, spec)
    }

    fn stn_param_grid(params: FloatTensor<Self>, spec: GridSpec) -> FloatTensor<Self> {
        ad_param_grid::<Flex, C>(params, spec)
    }

    fn stn_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        spec: ConvSpec,
    ) -> FloatTensor<Self> {
        let back = ConvBackward(spec);
        match back.prepare::<C>([x.node(), weight.node(), bias.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (x, w) = (contiguous(x.into_primitive()), contiguous(weight.into_primitive()));
                let out = Flex::stn_conv2d(x.clone(), w.clone(), bias.into_primitive(), spec);
                prep.finish((x, w), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::stn_conv2d(
                x.into_primitive(),
                weight.into_primitive(),
                bias.into_primitive(),
                spec,
            )),
        }
    }

    fn stn_exp(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match ElementwiseBackward::Exp.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let out = Flex::stn_exp(x.into_primitive());
                prep.finish(out.clone(), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::stn_exp(x.into_primitive())),
        }
    }

    fn stn_ln(x: FloatTensor<Self>) -> FloatTensor<Self> {
        on_input::<C>(ElementwiseBackward::Ln, x, Flex::stn_ln)
    }

    fn stn_sin(x: FloatTensor<Self>) -> FloatTensor<Self> {
        on_input::<C>(ElementwiseBackward::Sin, x, Flex::stn_sin)
    }

    fn stn_cos(x: FloatTensor<Self>) -> FloatTensor<Self> {
        on_input::<C>(ElementwiseBackward::Cos, x, Flex::stn_cos)
    }

    fn stn_max_pool2d(x: FloatTensor<Self>, spec: PoolSpec) -> FloatTensor<Self> {
        match PoolBackward(spec).prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let x = contiguous(x.into_primitive());
                let dtype = x.dtype();
                let (out, idx) = with_float!(dtype, T => pool_fwd::<T>(&x, &spec, true));
                prep.finish((dims(&x), dtype, Arc::new(idx)), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::stn_max_pool2d(x.into_primitive(), spec)),
        }
    }
}

// ---------------------------------------------------------------- CubeCL backends

#[cfg(feature = "gpu")]
mod cube {
    use super::*;
    use burn::backend::ops::ModuleOps;
    use burn::backend::wgpu::{CubeBackend, CubeTensor};
    use burn::tensor::ops::ConvOptions;

    use crate::gpu;

    /// Burn's convolution options for a spec: the end padding that gives `out_size`.
    fn conv_options(x: &[usize], w: &[usize], spec: &ConvSpec) -> ConvOptions<2> {
        let padding = std::array::from_fn(|i| {
            let (len, k) = (x[2 + i], w[2 + i]);
            let need = (spec.out_size[i] - 1) * spec.stride[i] + spec.dilation[i] * (k - 1) + 1;
            (spec.padding[i], need.saturating_sub(len + spec.padding[i]))
        });
        ConvOptions { stride: spec.stride, padding, dilation: spec.dilation, groups: 1 }
    }

    fn shape(t: &CubeTensor) -> Vec<usize> {
        t.meta.shape().iter().copied().collect()
    }

    /// Sampling runs the CubeCL kernels; convolution and pooling are Burn's own.
    impl StnBackend for CubeBackend {
        fn stn_grid_sample(input: CubeTensor, grid: CubeTensor, options: SampleOptions) -> CubeTensor {
            gpu::grid_sample(input, grid, &options)
        }

        fn stn_warp(input: CubeTensor, params: CubeTensor, spec: WarpSpec) -> CubeTensor {
            gpu::warp(input, params, &spec)
        }

        fn stn_param_grid(params: CubeTensor, spec: GridSpec) -> CubeTensor {
            gpu::param_grid(params, &spec)
        }

        fn stn_conv2d(x: CubeTensor, weight: CubeTensor, bias: CubeTensor, spec: ConvSpec) -> CubeTensor {
            let options = conv_options(&shape(&x), &shape(&weight), &spec);
            CubeBackend::conv2d(x, weight, Some(bias), options)
        }

        fn stn_max_pool2d(x: CubeTensor, spec: PoolSpec) -> CubeTensor {
            CubeBackend::max_pool2d(x, spec.kernel, spec.stride, [0, 0], [1, 1], false)
        }
    }

    impl NativeOps for CubeBackend {
        fn keep(t: CubeTensor) -> CubeTensor {
            t
        }

        fn sampler_backward(
            op: &SamplerOp,
            gout: CubeTensor,
            x: CubeTensor,
            p: CubeTensor,
            req: GradRequest,
        ) -> (Option<CubeTensor>, Option<CubeTensor>) {
            match op {
                SamplerOp::Grid(o) => gpu::grid_sample_backward(o, gout, x, p, req),
                SamplerOp::Warp(s) => gpu::warp_backward(s, gout, x, p, req),
            }
        }

        fn param_grid_backward(spec: &GridSpec, gout: CubeTensor, p: CubeTensor) -> CubeTensor {
            gpu::param_grid_backward(spec, gout, p)
        }
    }

    impl<C: CheckpointStrategy> StnBackend for Autodiff<CubeBackend, C> {
        fn stn_grid_sample(
            input: FloatTensor<Self>,
            grid: FloatTensor<Self>,
            options: SampleOptions,
        ) -> FloatTensor<Self> {
            ad_grid_sample::<CubeBackend, C>(input, grid, options)
        }

        fn stn_warp(
            input: FloatTensor<Self>,
            params: FloatTensor<Self>,
            spec: WarpSpec,
        ) -> FloatTensor<Self> {
            ad_warp::<CubeBackend, C>(input, params, spec)
        }

        fn stn_param_grid(params: FloatTensor<Self>, spec: GridSpec) -> FloatTensor<Self> {
            ad_param_grid::<CubeBackend, C>(params, spec)
        }

        fn stn_conv2d(
            x: FloatTensor<Self>,
            weight: FloatTensor<Self>,
            bias: FloatTensor<Self>,
            spec: ConvSpec,
        ) -> FloatTensor<Self> {
            let options = conv_options(&shape(x.primitive()), &shape(weight.primitive()), &spec);
            <Self as ModuleOps<Self>>::conv2d(x, weight, Some(bias), options)
        }

        fn stn_max_pool2d(x: FloatTensor<Self>, spec: PoolSpec) -> FloatTensor<Self> {
            <Self as ModuleOps<Self>>::max_pool2d(x, spec.kernel, spec.stride, [0, 0], [1, 1], false)
        }
    }
}
