//! The ops on Burn's CubeCL backends (wgpu: Vulkan, Metal, DX12; CUDA with the `cuda` feature):
//! grid sampling, the fused warps, the grids from parameters and all their backwards as CubeCL
//! kernels (`kernels.rs`), f32.
//!
//! **Deterministic.** Every result is a function of the inputs alone, bit for bit, on every run:
//! - the input gradient, the one sum whose terms arrive from many threads at once, accumulates
//!   in 64-bit fixed point with integer atomics. Integer addition is associative, so the order
//!   in which threads arrive cannot change the total. The scale is a power of two chosen per call
//!   from the largest finite |grad_output| (so no sum can overflow): `2^k` with
//!   `max |grad_output| * 4 * positions * 2^k < 2^62`. Each term is rounded once to a multiple
//!   of `2^-k`; non-finite terms set flags that give IEEE's sum of infinities and NaNs;
//! - the grid and coordinate gradients belong to one thread each (their sum over channels runs in
//!   channel order);
//! - parameter gradients sum per chunk of positions and then the chunks in order.
//!
//! **Accuracy against stn-kernels** (tested in `tests/gpu.rs`): outputs and gradients agree to
//! a few f32 roundings (relative 1e-4 of the tensor's largest magnitude); the sample coordinates
//! are computed in f32 on the device where the CPU computes the transform's coefficients in f64,
//! which can move a coordinate by an ulp and, at a tap boundary, the nearest neighbour.

mod kernels;

use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::wgpu::CubeTensor;
use burn::backend::DType;
use burn::tensor::Shape;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::{empty_device_contiguous_dtype, zeros_client};
use cubecl::calculate_cube_count_elemwise;
use cubecl::prelude::{CubeCount, CubeDim};
use stn_kernels::{GradRequest, Interpolation, Padding, PixelMap, SampleOptions, Tps};

use crate::backend::{GridSpec, WarpKind, WarpSpec};
use kernels as kr;

/// Ops run by the kernels here in this process (see [`crate::device::gpu_op_count`]).
pub(crate) static OPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn count() {
    OPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

fn dims(t: &CubeTensor) -> Vec<usize> {
    t.meta.shape().iter().copied().collect()
}

fn f32_only(t: &CubeTensor) {
    assert_eq!(t.dtype, DType::F32, "stn: the GPU kernels take f32 tensors, got {:?}", t.dtype);
}

/// A new contiguous tensor on `like`'s device.
fn empty(like: &CubeTensor, shape: Vec<usize>, dtype: DType) -> CubeTensor {
    empty_device_contiguous_dtype(like.client.clone(), like.device.clone(), Shape::from(shape), dtype)
}

/// Uploads host floats as a contiguous f32 tensor on `like`'s device.
fn upload(like: &CubeTensor, data: &[f32], shape: Vec<usize>) -> CubeTensor {
    let handle = like.client.create_from_slice(bytemuck::cast_slice(data));
    CubeTensor::new_contiguous(
        like.client.clone(),
        like.device.clone(),
        Shape::from(shape),
        handle,
        DType::F32,
    )
}

/// A one-element placeholder for a kernel argument the chosen variant does not read.
fn dummy(like: &CubeTensor, dtype: DType) -> CubeTensor {
    empty(like, vec![1], dtype)
}

fn launch_dims(t: &CubeTensor, threads: usize) -> (CubeCount, CubeDim) {
    let dim = CubeDim::new(&t.client, threads.max(1));
    (calculate_cube_count_elemwise(&t.client, threads.max(1), dim), dim)
}

fn mode_code(m: Interpolation) -> u32 {
    match m {
        Interpolation::Nearest => kr::MODE_NEAREST,
        Interpolation::Bilinear => kr::MODE_LINEAR,
        Interpolation::Bicubic => kr::MODE_CUBIC,
    }
}

fn pad_code(p: Padding) -> u32 {
    match p {
        Padding::Zeros => kr::PAD_ZEROS,
        Padding::Border => kr::PAD_BORDER,
        Padding::Reflection => kr::PAD_REFLECT,
    }
}

/// Where the sample points come from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Source {
    Grid,
    Family(WarpKind),
}

impl Source {
    fn code(self) -> u32 {
        match self {
            Source::Grid => kr::SRC_GRID,
            Source::Family(WarpKind::Affine) => kr::SRC_AFFINE,
            Source::Family(WarpKind::Projective) => kr::SRC_PROJ,
            Source::Family(WarpKind::Tps(_)) => kr::SRC_TPS,
        }
    }

    fn tps(self) -> Option<Tps> {
        match self {
            Source::Family(WarpKind::Tps(t)) => Some(t),
            _ => None,
        }
    }
}

/// One call's geometry: input (N, C, spatial...) sampled to `out` (spatial, D-H-W order).
struct Plan {
    source: Source,
    input: Vec<usize>,
    out: Vec<usize>,
    align: bool,
}

impl Plan {
    fn spatial(&self) -> usize {
        self.out.len()
    }

    fn positions(&self) -> usize {
        self.out.iter().product()
    }

    /// The kernels' constants; `normalized` maps to normalized coordinates (grids) instead of
    /// input pixels.
    fn consts(&self, normalized: bool) -> Vec<f32> {
        let d = self.spatial();
        let in_xyz: Vec<usize> = self.input[2..].iter().rev().copied().collect();
        let out_xyz: Vec<usize> = self.out.iter().rev().copied().collect();
        let mut c = vec![0f32; kr::CONSTS_LEN];
        for (a, &size) in in_xyz.iter().enumerate() {
            let s = size as f64;
            let (scale, shift, low, twice, empty) = if self.align {
                ((s - 1.0) / 2.0, 0.0, 0.0, 2.0 * (s - 1.0), size <= 1)
            } else {
                (s / 2.0, 0.5, -0.5, 2.0 * s, false)
            };
            let vals = [s, s - 1.0, scale, shift, low, twice, if empty { 1.0 } else { 0.0 }];
            for (f, v) in vals.iter().enumerate() {
                c[8 * a + f] = *v as f32;
            }
        }
        let mut pm = PixelMap::new(&in_xyz, &out_xyz, self.align);
        if normalized {
            for dd in 0..d {
                pm.scale[dd] = 1.0;
                pm.offset[dd] = 0.0;
                for e in 0..d {
                    pm.ratio[dd][e] = pm.out_a[e];
                }
            }
        }
        c[kr::C_OUT_H] = pm.out_h as f32;
        for dd in 0..d {
            for e in 0..d {
                c[kr::C_RATIO + 3 * dd + e] = pm.ratio[dd][e] as f32;
            }
            c[kr::C_SCALE + dd] = pm.scale[dd] as f32;
            c[kr::C_OFFSET + dd] = pm.offset[dd] as f32;
            c[kr::C_OUT_A + dd] = pm.out_a[dd] as f32;
            c[kr::C_OUT_B + dd] = pm.out_b[dd] as f32;
        }
        c[kr::C_POSITIONS] = self.positions() as f32;
        c
    }

    /// The spline basis (positions, K), or a placeholder.
    fn basis(&self, like: &CubeTensor) -> CubeTensor {
        match self.source.tps() {
            Some(tps) => {
                let (ho, wo) = (self.out[0], self.out[1]);
                let m = stn_kernels::tps_basis_matrix(&tps, ho, wo, self.align)
                    .unwrap_or_else(|e| panic!("stn: {e}"));
                let m: Vec<f32> = m.iter().map(|v| *v as f32).collect();
                upload(like, &m, vec![ho * wo, tps.num_points()])
            }
            None => upload(like, &[0.0], vec![1, 1]),
        }
    }

    /// Per-sample coefficients of `params` (a placeholder for a grid source).
    fn coefs(&self, params: &CubeTensor, consts: &CubeTensor) -> CubeTensor {
        let n = self.input[0];
        if self.source == Source::Grid {
            return dummy(params, DType::F32);
        }
        let (ctrl, width) = match self.source.tps() {
            Some(tps) => {
                let c: Vec<f32> =
                    tps.control_points().iter().flat_map(|p| [p[0] as f32, p[1] as f32]).collect();
                let k = tps.num_points();
                (upload(params, &c, vec![2 * k]), 16 + 2 * k)
            }
            None => (upload(params, &[0.0, 0.0], vec![2]), 16),
        };
        let coefs = empty(params, vec![n, width], DType::F32);
        let (count, dim) = launch_dims(params, n);
        kr::coefs_kernel::launch(
            &params.client,
            count,
            dim,
            params.clone().into_tensor_arg(),
            consts.clone().into_tensor_arg(),
            ctrl.into_tensor_arg(),
            coefs.clone().into_tensor_arg(),
            self.source.code(),
            self.spatial(),
            dtype_to_storage_type(DType::F32),
        );
        coefs
    }
}

/// Forward sampling of `input` through `src` (a grid or parameters).
fn sample(input: CubeTensor, src: CubeTensor, plan: &Plan, options: &SampleOptions) -> CubeTensor {
    count();
    f32_only(&input);
    f32_only(&src);
    let (input, src) = (into_contiguous(input), into_contiguous(src));
    let consts = upload(&input, &plan.consts(false), vec![kr::CONSTS_LEN]);
    let coefs = plan.coefs(&src, &consts);
    let mut shape = plan.input[..2].to_vec();
    shape.extend_from_slice(&plan.out);
    let out = empty(&input, shape, DType::F32);
    let threads = plan.input[0] * plan.positions();
    let (count, dim) = launch_dims(&input, threads);
    let (kind, mode, pad) = (plan.source.code(), mode_code(options.mode), pad_code(options.padding));
    let client = input.client.clone();
    let f32t = dtype_to_storage_type(DType::F32);
    if plan.spatial() == 2 {
        let basis = plan.basis(&input);
        kr::sample2d_kernel::launch(
            &client,
            count,
            dim,
            input.into_tensor_arg(),
            src.into_tensor_arg(),
            coefs.into_tensor_arg(),
            basis.into_tensor_arg(),
            consts.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            kind,
            mode,
            pad,
            f32t,
        );
    } else {
        kr::sample3d_kernel::launch(
            &client,
            count,
            dim,
            input.into_tensor_arg(),
            src.into_tensor_arg(),
            coefs.into_tensor_arg(),
            consts.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            kind,
            mode,
            pad,
            f32t,
        );
    }
    out
}

/// `grid_sample` on the device.
pub(crate) fn grid_sample(input: CubeTensor, grid: CubeTensor, options: &SampleOptions) -> CubeTensor {
    let g = dims(&grid);
    let plan = Plan {
        source: Source::Grid,
        input: dims(&input),
        out: g[1..g.len() - 1].to_vec(),
        align: options.align_corners,
    };
    sample(input, grid, &plan, options)
}

/// A fused warp on the device.
pub(crate) fn warp(input: CubeTensor, params: CubeTensor, spec: &WarpSpec) -> CubeTensor {
    let plan = Plan {
        source: Source::Family(spec.kind),
        input: dims(&input),
        out: spec.out_size.clone(),
        align: spec.options.align_corners,
    };
    sample(input, params, &plan, &spec.options)
}

fn grid_plan(spec: &GridSpec) -> Plan {
    let mut input = spec.size[..2].to_vec();
    input.extend_from_slice(&spec.size[2..]);
    Plan { source: Source::Family(spec.kind), input, out: spec.size[2..].to_vec(), align: spec.align_corners }
}

/// The normalized grid of `params` on the device.
pub(crate) fn param_grid(params: CubeTensor, spec: &GridSpec) -> CubeTensor {
    count();
    f32_only(&params);
    let params = into_contiguous(params);
    let plan = grid_plan(spec);
    let consts = upload(&params, &plan.consts(true), vec![kr::CONSTS_LEN]);
    let coefs = plan.coefs(&params, &consts);
    let basis = if plan.spatial() == 2 { plan.basis(&params) } else { upload(&params, &[0.0], vec![1, 1]) };
    let d = plan.spatial();
    let mut shape = vec![plan.input[0]];
    shape.extend_from_slice(&plan.out);
    shape.push(d);
    let grid = empty(&params, shape, DType::F32);
    let (count, dim) = launch_dims(&params, plan.input[0] * plan.positions());
    kr::grid_kernel::launch(
        &params.client,
        count,
        dim,
        coefs.into_tensor_arg(),
        basis.into_tensor_arg(),
        consts.into_tensor_arg(),
        grid.clone().into_tensor_arg(),
        plan.source.code(),
        d,
        dtype_to_storage_type(DType::F32),
    );
    grid
}

/// The parameter gradient from d(loss)/d(coordinates) `gpos` (N, spatial..., D): chunked sums,
/// then the chunks in order, then the chain to the parameters.
fn reduce_params(
    plan: &Plan,
    gpos: &CubeTensor,
    coefs: &CubeTensor,
    basis: &CubeTensor,
    consts: &CubeTensor,
    params_shape: Vec<usize>,
) -> CubeTensor {
    let n = plan.input[0];
    let positions = plan.positions();
    let chunks = positions.div_ceil(kr::CHUNK);
    let q = match plan.source.tps() {
        Some(t) => 2 * t.num_points(),
        None => 16,
    };
    let f32t = || dtype_to_storage_type(DType::F32);
    let part = empty(gpos, vec![n, chunks, q], DType::F32);
    let (count, dim) = launch_dims(gpos, n * chunks * q);
    kr::param_partial_kernel::launch(
        &gpos.client,
        count,
        dim,
        gpos.clone().into_tensor_arg(),
        coefs.clone().into_tensor_arg(),
        basis.clone().into_tensor_arg(),
        consts.clone().into_tensor_arg(),
        part.clone().into_tensor_arg(),
        plan.source.code(),
        plan.spatial(),
        f32t(),
    );
    let sums = empty(gpos, vec![n, q], DType::F32);
    let (count, dim) = launch_dims(gpos, n * q);
    kr::chunk_sum_kernel::launch(
        &gpos.client,
        count,
        dim,
        part.into_tensor_arg(),
        sums.clone().into_tensor_arg(),
        f32t(),
    );
    let total: usize = params_shape.iter().product();
    let out = empty(gpos, params_shape, DType::F32);
    let (count, dim) = launch_dims(gpos, total);
    if plan.source.tps().is_some() {
        kr::tps_finish_kernel::launch(
            &gpos.client,
            count,
            dim,
            sums.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            f32t(),
        );
    } else {
        kr::param_finish_kernel::launch(
            &gpos.client,
            count,
            dim,
            sums.into_tensor_arg(),
            consts.clone().into_tensor_arg(),
            out.clone().into_tensor_arg(),
            plan.source.code(),
            plan.spatial(),
            f32t(),
        );
    }
    out
}

/// Backward of a sampling op: gradients to the input and to the grid or parameters, as asked.
fn sample_backward(
    plan: &Plan,
    options: &SampleOptions,
    gout: CubeTensor,
    input: CubeTensor,
    src: CubeTensor,
    req: GradRequest,
) -> (Option<CubeTensor>, Option<CubeTensor>) {
    count();
    f32_only(&gout);
    let (gout, input, src) = (into_contiguous(gout), into_contiguous(input), into_contiguous(src));
    let f32t = || dtype_to_storage_type(DType::F32);
    let src_shape = dims(&src);
    let consts = upload(&input, &plan.consts(false), vec![kr::CONSTS_LEN]);
    let coefs = plan.coefs(&src, &consts);
    let basis = if plan.spatial() == 2 { plan.basis(&input) } else { upload(&input, &[0.0], vec![1, 1]) };
    let in_len: usize = plan.input.iter().product();
    let (scale, acc) = if req.input {
        let len: usize = dims(&gout).iter().product();
        let chunks = len.div_ceil(kr::MAX_CHUNK);
        let part = empty(&gout, vec![chunks], DType::F32);
        let (count, dim) = launch_dims(&gout, chunks);
        kr::absmax_kernel::launch(
            &gout.client,
            count,
            dim,
            gout.clone().into_tensor_arg(),
            part.clone().into_tensor_arg(),
            f32t(),
        );
        let scale = empty(&gout, vec![2], DType::F32);
        let (count, dim) = launch_dims(&gout, 1);
        kr::fx_scale_kernel::launch(
            &gout.client,
            count,
            dim,
            part.into_tensor_arg(),
            consts.clone().into_tensor_arg(),
            scale.clone().into_tensor_arg(),
            f32t(),
        );
        let acc =
            zeros_client(gout.client.clone(), gout.device.clone(), Shape::from(vec![3 * in_len]), DType::U32);
        (scale, acc)
    } else {
        (
            dummy(&gout, DType::F32),
            zeros_client(gout.client.clone(), gout.device.clone(), Shape::from(vec![3]), DType::U32),
        )
    };
    let d = plan.spatial();
    let gpos = if req.params {
        let mut s = vec![plan.input[0]];
        s.extend_from_slice(&plan.out);
        s.push(d);
        empty(&gout, s, DType::F32)
    } else {
        dummy(&gout, DType::F32)
    };
    let (count, dim) = launch_dims(&gout, plan.input[0] * plan.positions());
    let (kind, mode, pad) = (plan.source.code(), mode_code(options.mode), pad_code(options.padding));
    if d == 2 {
        kr::sample2d_bwd_kernel::launch(
            &gout.client,
            count,
            dim,
            gout.clone().into_tensor_arg(),
            input.clone().into_tensor_arg(),
            src.into_tensor_arg(),
            coefs.clone().into_tensor_arg(),
            basis.clone().into_tensor_arg(),
            consts.clone().into_tensor_arg(),
            scale.clone().into_tensor_arg(),
            acc.clone().into_tensor_arg(),
            gpos.clone().into_tensor_arg(),
            kind,
            mode,
            pad,
            req.input,
            req.params,
            f32t(),
        );
    } else {
        kr::sample3d_bwd_kernel::launch(
            &gout.client,
            count,
            dim,
            gout.clone().into_tensor_arg(),
            input.clone().into_tensor_arg(),
            src.into_tensor_arg(),
            coefs.clone().into_tensor_arg(),
            consts.clone().into_tensor_arg(),
            scale.clone().into_tensor_arg(),
            acc.clone().into_tensor_arg(),
            gpos.clone().into_tensor_arg(),
            kind,
            mode,
            pad,
            req.input,
            req.params,
            f32t(),
        );
    }
    let gin = req.input.then(|| {
        let out = empty(&input, plan.input.clone(), DType::F32);
        let (count, dim) = launch_dims(&input, in_len);
        kr::fx_finish_kernel::launch(
            &input.client,
            count,
            dim,
            acc.into_tensor_arg(),
            scale.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            f32t(),
        );
        out
    });
    let gsrc = req.params.then(|| match plan.source {
        Source::Grid => gpos,
        Source::Family(_) => reduce_params(plan, &gpos, &coefs, &basis, &consts, src_shape),
    });
    (gin, gsrc)
}

/// Backward of [`grid_sample`].
pub(crate) fn grid_sample_backward(
    options: &SampleOptions,
    gout: CubeTensor,
    input: CubeTensor,
    grid: CubeTensor,
    req: GradRequest,
) -> (Option<CubeTensor>, Option<CubeTensor>) {
    let g = dims(&grid);
    let plan = Plan {
        source: Source::Grid,
        input: dims(&input),
        out: g[1..g.len() - 1].to_vec(),
        align: options.align_corners,
    };
    sample_backward(&plan, options, gout, input, grid, req)
}

/// Backward of [`warp`].
pub(crate) fn warp_backward(
    spec: &WarpSpec,
    gout: CubeTensor,
    input: CubeTensor,
    params: CubeTensor,
    req: GradRequest,
) -> (Option<CubeTensor>, Option<CubeTensor>) {
    let plan = Plan {
        source: Source::Family(spec.kind),
        input: dims(&input),
        out: spec.out_size.clone(),
        align: spec.options.align_corners,
    };
    sample_backward(&plan, &spec.options, gout, input, params, req)
}

/// Backward of [`param_grid`]: d(loss)/d(params) from d(loss)/d(grid).
pub(crate) fn param_grid_backward(spec: &GridSpec, gout: CubeTensor, params: CubeTensor) -> CubeTensor {
    count();
    f32_only(&gout);
    let (gout, params) = (into_contiguous(gout), into_contiguous(params));
    let plan = grid_plan(spec);
    let consts = upload(&params, &plan.consts(true), vec![kr::CONSTS_LEN]);
    let coefs = plan.coefs(&params, &consts);
    let basis = if plan.spatial() == 2 { plan.basis(&params) } else { upload(&params, &[0.0], vec![1, 1]) };
    reduce_params(&plan, &gout, &coefs, &basis, &consts, dims(&params))
}
