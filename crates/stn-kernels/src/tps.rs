//! Thin-plate splines: K control points on a regular grid over [-1, 1]; the parameters are
//! where those points land in the input. The (K+3)-square system is solved once per control
//! grid and the per-pixel basis once per (control grid, output size, align_corners); both are
//! cached.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::{KernelError, Result};
use crate::float::Float;
use crate::grid::base_coords;

/// A thin-plate-spline layout: `rows x cols` control points on a regular grid over [-1, 1]
/// (4 x 4 = 16 by default, as in the paper). Point `k` sits at column `k % cols`, row `k / cols`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tps {
    rows: usize,
    cols: usize,
}

impl Default for Tps {
    fn default() -> Self {
        Tps { rows: 4, cols: 4 }
    }
}

/// Largest control grid accepted (the system is dense, (K+3)^2).
const MAX_POINTS: usize = 1024;

impl Tps {
    /// A `rows x cols` control grid; both at least 2 (fewer points cannot fix an affine map).
    pub fn new(rows: usize, cols: usize) -> Result<Self> {
        if rows < 2 || cols < 2 {
            return Err(KernelError::InvalidValue {
                arg: "tps",
                message: format!("control grid needs at least 2 x 2 points, got {rows} x {cols}"),
            });
        }
        match rows.checked_mul(cols) {
            Some(k) if k <= MAX_POINTS => Ok(Tps { rows, cols }),
            _ => Err(KernelError::InvalidValue {
                arg: "tps",
                message: format!("control grid of {rows} x {cols} points exceeds {MAX_POINTS} points"),
            }),
        }
    }

    /// A square control grid of `k` points (`k` = 4, 9, 16, 25, ...).
    pub fn square(k: usize) -> Result<Self> {
        let side = (k as f64).sqrt().round() as usize;
        if side.checked_mul(side) != Some(k) {
            return Err(KernelError::InvalidValue {
                arg: "tps",
                message: format!("{k} control points do not form a square grid; use Tps::new(rows, cols)"),
            });
        }
        Tps::new(side, side)
    }

    /// Rows of control points.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns of control points.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Number of control points K.
    pub fn num_points(&self) -> usize {
        self.rows * self.cols
    }

    /// The control points (x, y), point `k` at column `k % cols`, row `k / cols`. These are
    /// also the identity parameters.
    pub fn control_points(&self) -> Vec<[f64; 2]> {
        let xs = linspace(self.cols);
        let ys = linspace(self.rows);
        (0..self.num_points()).map(|k| [xs[k % self.cols], ys[k / self.cols]]).collect()
    }

    /// Identity parameters as a flat (K, 2) buffer, for a batch of `n`.
    pub fn identity<T: Float>(&self, n: usize) -> Vec<T> {
        let one: Vec<T> =
            self.control_points().iter().flat_map(|p| [T::from_f64(p[0]), T::from_f64(p[1])]).collect();
        (0..n).flat_map(|_| one.iter().copied()).collect()
    }
}

impl Tps {
    /// Solves the spline whose control points land at `theta` (K points, (x, y) each), for
    /// evaluating the map and its Jacobian at any point in f64 (keypoints, inverses).
    pub fn solve(&self, theta: &[[f64; 2]]) -> Result<TpsMap> {
        let sys = system(self)?;
        let k = sys.k;
        if theta.len() != k {
            return Err(KernelError::InvalidValue {
                arg: "theta",
                message: format!(
                    "a {}x{} spline needs {k} points, got {}",
                    self.rows,
                    self.cols,
                    theta.len()
                ),
            });
        }
        if let Some(i) = theta.iter().position(|p| !(p[0].is_finite() && p[1].is_finite())) {
            return Err(KernelError::InvalidValue {
                arg: "theta",
                message: format!("control point {i} lands at a non-finite position {:?}", theta[i]),
            });
        }
        let n = k + 3;
        let coef = (0..n)
            .map(|j| {
                let mut c = [0.0; 2];
                for (kk, t) in theta.iter().enumerate() {
                    let l = sys.linv[j * n + kk];
                    c[0] += l * t[0];
                    c[1] += l * t[1];
                }
                c
            })
            .collect();
        Ok(TpsMap { sys, coef })
    }
}

/// A solved thin-plate spline: the map p -> f(p) of normalized coordinates that interpolates
/// its control points' landing positions, with its Jacobian (from [`Tps::solve`]).
#[derive(Clone)]
pub struct TpsMap {
    sys: Arc<System>,
    /// Radial weights (K) then the affine part (1, x, y), (x, y) each.
    coef: Vec<[f64; 2]>,
}

impl std::fmt::Debug for TpsMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TpsMap").field("points", &self.sys.k).finish()
    }
}

impl TpsMap {
    /// f(p) and its Jacobian [[dfx/dx, dfx/dy], [dfy/dx, dfy/dy]].
    pub fn eval_jacobian(&self, p: [f64; 2]) -> ([f64; 2], [[f64; 2]; 2]) {
        let k = self.sys.k;
        let a = &self.coef[k..];
        let mut f = [a[0][0] + a[1][0] * p[0] + a[2][0] * p[1], a[0][1] + a[1][1] * p[0] + a[2][1] * p[1]];
        let mut j = [[a[1][0], a[2][0]], [a[1][1], a[2][1]]];
        for (c, w) in self.sys.ctrl.iter().zip(&self.coef[..k]) {
            let (dx, dy) = (p[0] - c[0], p[1] - c[1]);
            let r2 = dx * dx + dy * dy;
            if r2 > 0.0 {
                // libm's log: the same bits with every C library (glibc's `log` varies).
                let ln = libm::log(r2);
                let u = r2 * ln;
                let du = 2.0 * (ln + 1.0);
                for d in 0..2 {
                    f[d] += w[d] * u;
                    j[d][0] += w[d] * du * dx;
                    j[d][1] += w[d] * du * dy;
                }
            }
        }
        (f, j)
    }

    /// f(p).
    pub fn eval(&self, p: [f64; 2]) -> [f64; 2] {
        self.eval_jacobian(p).0
    }

    /// The spline's affine part f_a(p) = A p + t, as `(A, t)`: what is left when the bending
    /// is taken out (the least-bending map through the landing points is `A p + t` plus radial
    /// terms whose weights sum to zero against 1, x and y).
    pub fn affine(&self) -> ([[f64; 2]; 2], [f64; 2]) {
        let a = &self.coef[self.sys.k..];
        ([[a[1][0], a[2][0]], [a[1][1], a[2][1]]], [a[0][0], a[0][1]])
    }

    /// The bending energy, Bookstein's w_x' K w_x + w_y' K w_y with K_ij = U(|c_i - c_j|),
    /// U(r) = r^2 log r^2 (the basis the spline uses) and w the radial weights: 0 for an affine
    /// map, growing with how much the spline bends (in normalized coordinates; proportional to
    /// the integral of the squared second derivatives over the plane).
    pub fn bending_energy(&self) -> f64 {
        let ctrl = &self.sys.ctrl;
        let w = &self.coef[..self.sys.k];
        let mut e = 0.0;
        for (i, (ci, wi)) in ctrl.iter().zip(w).enumerate() {
            for (cj, wj) in ctrl.iter().zip(w).skip(i + 1) {
                let (dx, dy) = (ci[0] - cj[0], ci[1] - cj[1]);
                let u = radial(dx * dx + dy * dy);
                // K is symmetric with a zero diagonal: each pair counted twice.
                e += 2.0 * u * (wi[0] * wj[0] + wi[1] * wj[1]);
            }
        }
        e
    }
}

fn linspace(n: usize) -> Vec<f64> {
    base_coords::<f64>(n, true)
}

/// The TPS radial basis U(r) = r^2 log r^2, from the squared distance.
#[inline]
pub(crate) fn radial(r2: f64) -> f64 {
    if r2 <= 0.0 {
        0.0
    } else {
        r2 * libm::log(r2)
    }
}

/// The solved system of one control grid: `L^{-1}`, (K+3) x (K+3), row-major.
pub(crate) struct System {
    k: usize,
    ctrl: Vec<[f64; 2]>,
    linv: Vec<f64>,
}

impl System {
    fn solve(tps: &Tps) -> Result<System> {
        let ctrl = tps.control_points();
        let k = ctrl.len();
        let n = k + 3;
        let mut l = vec![0.0; n * n];
        for i in 0..k {
            for j in 0..k {
                let dx = ctrl[i][0] - ctrl[j][0];
                let dy = ctrl[i][1] - ctrl[j][1];
                l[i * n + j] = radial(dx * dx + dy * dy);
            }
            let p = [1.0, ctrl[i][0], ctrl[i][1]];
            for (c, pc) in p.iter().enumerate() {
                l[i * n + k + c] = *pc;
                l[(k + c) * n + i] = *pc;
            }
        }
        let linv = invert(&l, n).ok_or_else(|| KernelError::InvalidValue {
            arg: "tps",
            message: format!("the {}x{} thin-plate-spline system is singular", tps.rows, tps.cols),
        })?;
        Ok(System { k, ctrl, linv })
    }

    /// Row of M for a normalized point: M[k] = sum_j B[j] Linv[j][k], B = [U(|p - c_j|), 1, x, y].
    fn row(&self, x: f64, y: f64, out: &mut [f64]) {
        let n = self.k + 3;
        let mut b = Vec::with_capacity(n);
        for c in &self.ctrl {
            let (dx, dy) = (x - c[0], y - c[1]);
            b.push(radial(dx * dx + dy * dy));
        }
        b.extend_from_slice(&[1.0, x, y]);
        for (kk, o) in out.iter_mut().enumerate().take(self.k) {
            let mut s = 0.0;
            for (j, bj) in b.iter().enumerate() {
                s += bj * self.linv[j * n + kk];
            }
            *o = s;
        }
    }
}

/// Gauss-Jordan inverse with partial pivoting; None when singular.
fn invert(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut m = a.to_vec();
    let mut inv = vec![0.0; n * n];
    for i in 0..n {
        inv[i * n + i] = 1.0;
    }
    for col in 0..n {
        let piv = (col..n).max_by(|&x, &y| m[x * n + col].abs().total_cmp(&m[y * n + col].abs()))?;
        if m[piv * n + col].abs() < 1e-12 {
            return None;
        }
        if piv != col {
            for j in 0..n {
                m.swap(piv * n + j, col * n + j);
                inv.swap(piv * n + j, col * n + j);
            }
        }
        let d = m[col * n + col];
        for j in 0..n {
            m[col * n + j] /= d;
            inv[col * n + j] /= d;
        }
        for r in 0..n {
            if r != col {
                let f = m[r * n + col];
                if f != 0.0 {
                    for j in 0..n {
                        m[r * n + j] -= f * m[col * n + j];
                        inv[r * n + j] -= f * inv[col * n + j];
                    }
                }
            }
        }
    }
    Some(inv)
}

/// The per-pixel basis M (positions x K) of one output size, cached or computed on the fly.
pub(crate) struct Basis<T> {
    k: usize,
    wo: usize,
    xs: Vec<f64>,
    ys: Vec<f64>,
    sys: Arc<System>,
    m: Option<Vec<T>>,
}

/// Bases larger than this are computed block by block instead of stored.
const MAX_CACHED_BASIS_BYTES: usize = 64 << 20;
/// Bases kept in the cache (least recently used are dropped first).
const MAX_CACHED_BASES: usize = 8;

impl<T: Float> Basis<T> {
    /// Calls `f(t, row)` with the K entries of M for positions `p0 .. p0 + len`.
    #[inline]
    pub fn with_rows(&self, p0: usize, len: usize, mut f: impl FnMut(usize, &[T])) {
        let k = self.k;
        if let Some(m) = &self.m {
            for t in 0..len {
                f(t, &m[(p0 + t) * k..][..k]);
            }
        } else {
            let mut r64 = vec![0.0; k];
            let mut row = vec![T::ZERO; k];
            for t in 0..len {
                let p = p0 + t;
                self.sys.row(self.xs[p % self.wo], self.ys[p / self.wo], &mut r64);
                for (o, v) in row.iter_mut().zip(&r64) {
                    *o = T::from_f64(*v);
                }
                f(t, &row);
            }
        }
    }

    /// The control points of this basis.
    #[cfg(test)]
    pub fn control(&self) -> &[[f64; 2]] {
        &self.sys.ctrl
    }
}

type SystemCache = Mutex<HashMap<Tps, Arc<System>>>;
type BasisKey = (Tps, usize, usize, bool, &'static str);
type BasisCache = Mutex<Vec<(BasisKey, Arc<dyn Any + Send + Sync>)>>;

fn system(tps: &Tps) -> Result<Arc<System>> {
    static CACHE: OnceLock<SystemCache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(s) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(tps) {
        return Ok(s.clone());
    }
    let s = Arc::new(System::solve(tps)?);
    cache.lock().unwrap_or_else(|e| e.into_inner()).insert(*tps, s.clone());
    Ok(s)
}

/// The basis of `tps` for an output of `ho x wo`, from the cache when present.
/// The spline's basis M of an output of `ho x wo`, row-major (positions x K): the displacement at
/// output position `p` is `sum_k M[p, k] * (target_k - control_k)` in normalized coordinates. The
/// fused sampler uses the same rows; the GPU kernels upload this matrix.
pub fn tps_basis_matrix(tps: &Tps, ho: usize, wo: usize, align: bool) -> Result<Vec<f64>> {
    let b = basis::<f64>(tps, ho, wo, align)?;
    let positions = ho * wo;
    let mut m = Vec::with_capacity(positions * b.k);
    b.with_rows(0, positions, |_, row| m.extend_from_slice(row));
    Ok(m)
}

pub(crate) fn basis<T: Float>(tps: &Tps, ho: usize, wo: usize, align: bool) -> Result<Arc<Basis<T>>> {
    static CACHE: OnceLock<BasisCache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key: BasisKey = (*tps, ho, wo, align, T::NAME);
    {
        let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pos) = c.iter().position(|(k, _)| *k == key) {
            let entry = c.remove(pos);
            let hit = entry.1.clone().downcast::<Basis<T>>().ok();
            c.push(entry);
            if let Some(b) = hit {
                return Ok(b);
            }
        }
    }
    let sys = system(tps)?;
    let k = sys.k;
    let xs = base_coords::<f64>(wo, align);
    let ys = base_coords::<f64>(ho, align);
    let positions = ho.checked_mul(wo).ok_or(KernelError::TooLarge { arg: "size", shape: vec![ho, wo] })?;
    let bytes = positions.saturating_mul(k).saturating_mul(std::mem::size_of::<T>());
    let m = if bytes <= MAX_CACHED_BASIS_BYTES {
        let mut m = Vec::with_capacity(positions * k);
        let mut r = vec![0.0; k];
        for p in 0..positions {
            sys.row(xs[p % wo], ys[p / wo], &mut r);
            m.extend(r.iter().map(|v| T::from_f64(*v)));
        }
        Some(m)
    } else {
        None
    };
    let b = Arc::new(Basis { k, wo, xs, ys, sys, m });
    let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
    if c.len() >= MAX_CACHED_BASES {
        c.remove(0);
    }
    c.push((key, b.clone() as Arc<dyn Any + Send + Sync>));
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basis_reproduces_affine_functions() {
        // Targets on an affine map of the control points give that affine map everywhere.
        let tps = Tps::default();
        let b = basis::<f64>(&tps, 5, 7, false).unwrap();
        let xs = base_coords::<f64>(7, false);
        let ys = base_coords::<f64>(5, false);
        let f = |x: f64, y: f64| 0.3 + 1.1 * x - 0.2 * y;
        let t: Vec<f64> = b.control().iter().map(|c| f(c[0], c[1])).collect();
        b.with_rows(0, 35, |p, row| {
            let v: f64 = row.iter().zip(&t).map(|(m, t)| m * t).sum();
            assert!((v - f(xs[p % 7], ys[p / 7])).abs() < 1e-12);
        });
    }

    #[test]
    fn solved_map_interpolates_and_matches_the_basis() {
        let tps = Tps::new(3, 4).unwrap();
        let ctrl = tps.control_points();
        let theta: Vec<[f64; 2]> = ctrl
            .iter()
            .enumerate()
            .map(|(i, c)| [c[0] + 0.03 * i as f64, c[1] - 0.02 * (i % 3) as f64])
            .collect();
        let map = tps.solve(&theta).unwrap();
        for (c, t) in ctrl.iter().zip(&theta) {
            let f = map.eval(*c);
            assert!((f[0] - t[0]).abs() < 1e-10 && (f[1] - t[1]).abs() < 1e-10);
        }
        // Same values as the cached per-pixel basis, and a Jacobian equal to finite differences.
        let b = basis::<f64>(&tps, 5, 7, false).unwrap();
        let xs = base_coords::<f64>(7, false);
        let ys = base_coords::<f64>(5, false);
        b.with_rows(0, 35, |p, row| {
            let v: f64 = row.iter().zip(&theta).map(|(m, t)| m * t[1]).sum();
            assert!((v - map.eval([xs[p % 7], ys[p / 7]])[1]).abs() < 1e-12);
        });
        let p = [0.31, -0.42];
        let (_, j) = map.eval_jacobian(p);
        let h = 1e-6;
        for d in 0..2 {
            let mut a = p;
            let mut b = p;
            a[d] += h;
            b[d] -= h;
            for o in 0..2 {
                let fd = (map.eval(a)[o] - map.eval(b)[o]) / (2.0 * h);
                assert!((fd - j[o][d]).abs() < 1e-7, "d{o}/d{d}: {fd} vs {}", j[o][d]);
            }
        }
        assert!(tps.solve(&theta[1..]).is_err());
    }

    #[test]
    fn rejects_bad_layouts() {
        assert!(Tps::new(1, 4).is_err());
        assert!(Tps::square(15).is_err());
        assert_eq!(Tps::square(25).unwrap().num_points(), 25);
    }
}
