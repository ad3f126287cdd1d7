//! Devices by name, for the command line and for programs: `cpu` (Burn's flex backend and the
//! stn-kernels CPU kernels), `wgpu` (the GPU through whichever graphics API wgpu settles on),
//! `vulkan` (pinned to Vulkan: it comes up there or not at all) and `cuda`. The GPU devices
//! need the `gpu` feature (`cuda`: the `cuda` feature); a build without it says so.
//!
//! The wgpu devices are initialized once per process and then shared, and [`Selected::api`]
//! tells on which graphics API the adapter actually runs, so a caller can refuse a silent
//! fallback (for example to OpenGL).

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;

use crate::error::{Result, StnError};

/// A device kind by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    /// Burn's flex backend on the CPU, with the stn-kernels kernels.
    Cpu,
    /// The default GPU adapter on whichever graphics API wgpu picks (Vulkan, Metal, DX12, GL).
    Wgpu,
    /// The default adapter on Vulkan (lavapipe counts: Vulkan on the CPU).
    Vulkan,
    /// CUDA device 0.
    Cuda,
}

impl DeviceKind {
    /// Every kind, in the order the command line lists them.
    pub const ALL: [DeviceKind; 4] =
        [DeviceKind::Cpu, DeviceKind::Wgpu, DeviceKind::Vulkan, DeviceKind::Cuda];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Wgpu => "wgpu",
            DeviceKind::Vulkan => "vulkan",
            DeviceKind::Cuda => "cuda",
        }
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DeviceKind {
    type Err = StnError;

    fn from_str(s: &str) -> Result<Self> {
        DeviceKind::ALL.into_iter().find(|k| k.name() == s.to_ascii_lowercase()).ok_or_else(|| {
            StnError::Device {
                name: s.into(),
                message: "unknown device; use cpu, wgpu, vulkan or cuda".into(),
            }
        })
    }
}

/// A device ready to use, with what it runs on.
#[derive(Debug, Clone)]
pub struct Selected {
    /// The kind asked for.
    pub kind: DeviceKind,
    /// The Burn device.
    pub device: Device,
    /// The graphics or compute API it runs on (`cpu`, `Vulkan`, `Gl`, `Metal`, `Dx12`, `cuda`).
    pub api: String,
    /// The adapter's name and type (for example `llvmpipe (LLVM 15.0.6, 256 bits), Cpu`).
    pub adapter: String,
}

impl fmt::Display for Selected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}: {})", self.kind, self.api, self.adapter)
    }
}

/// Whether this build has the GPU kernels (the `gpu` feature).
pub const fn has_gpu() -> bool {
    cfg!(feature = "gpu")
}

/// How many ops (forward or backward, one per call) the GPU kernels of stn have run in this
/// process: a way to check that work on a GPU device took the CubeCL kernels and not the
/// generic tensor-op path. Always 0 in a build without the `gpu` feature.
pub fn gpu_op_count() -> u64 {
    #[cfg(feature = "gpu")]
    {
        crate::gpu::OPS.load(std::sync::atomic::Ordering::Relaxed)
    }
    #[cfg(not(feature = "gpu"))]
    {
        0
    }
}

/// The device of `kind`, initialized on first use and shared afterwards. Errors name the device
/// and say why it is missing (not built in, no adapter on this machine).
pub fn select(kind: DeviceKind) -> Result<Selected> {
    match kind {
        DeviceKind::Cpu => {
            Ok(Selected { kind, device: Device::flex(), api: "cpu".into(), adapter: "flex".into() })
        }
        DeviceKind::Wgpu | DeviceKind::Vulkan => wgpu_device(kind),
        DeviceKind::Cuda => cuda_device(),
    }
}

/// [`select`] by name.
pub fn select_by_name(name: &str) -> Result<Selected> {
    select(name.parse()?)
}

#[cfg(feature = "gpu")]
fn wgpu_device(kind: DeviceKind) -> Result<Selected> {
    use burn::tensor::wgpu::WgpuBackend;
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};

    type Cache = Mutex<HashMap<DeviceKind, std::result::Result<Selected, String>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let mut cache = CACHE.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    let entry = cache.entry(kind).or_insert_with(|| {
        let api = if kind == DeviceKind::Vulkan { WgpuBackend::Vulkan } else { WgpuBackend::Auto };
        Device::wgpu_options().graphics_api(api).init_with_setup().map_err(|e| e.to_string()).map(
            |(device, setup)| {
                let info = setup.adapter.get_info();
                Selected {
                    kind,
                    device,
                    api: format!("{:?}", setup.backend),
                    adapter: format!("{}, {:?}", info.name, info.device_type),
                }
            },
        )
    });
    entry.clone().map_err(|message| StnError::Device {
        name: kind.name().into(),
        message: if kind == DeviceKind::Vulkan {
            format!("{message} (no Vulkan driver? On Debian or Ubuntu, `apt-get install mesa-vulkan-drivers libvulkan1` gives lavapipe, Vulkan on the CPU)")
        } else {
            message
        },
    })
}

#[cfg(not(feature = "gpu"))]
fn wgpu_device(kind: DeviceKind) -> Result<Selected> {
    Err(StnError::Device {
        name: kind.name().into(),
        message: "this build has no GPU support; rebuild with `--features stn/gpu`".into(),
    })
}

#[cfg(feature = "cuda")]
fn cuda_device() -> Result<Selected> {
    let device = std::panic::catch_unwind(|| {
        let device = Device::cuda(0);
        // Touch the device, so a missing driver is an error here and not a panic later.
        let _ = burn::tensor::Tensor::<1>::zeros([1], &device).into_data();
        device
    })
    .map_err(|_| StnError::Device {
        name: "cuda".into(),
        message: "no CUDA device or driver on this machine".into(),
    })?;
    Ok(Selected { kind: DeviceKind::Cuda, device, api: "cuda".into(), adapter: "CUDA device 0".into() })
}

#[cfg(not(feature = "cuda"))]
fn cuda_device() -> Result<Selected> {
    Err(StnError::Device {
        name: "cuda".into(),
        message: "this build has no CUDA support; rebuild with `--features stn/cuda`".into(),
    })
}
