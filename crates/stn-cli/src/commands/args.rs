//! Arguments shared by several subcommands.

use clap::ValueEnum;

/// `--distortion`: the paper's distortions of the digits.
#[derive(Clone, Copy, ValueEnum)]
pub enum DistortionArg {
    None,
    R,
    Rts,
    P,
    E,
    Tc,
}

impl DistortionArg {
    /// The distortion's name as `stn_data::Distortion` parses it.
    pub fn name(self) -> &'static str {
        match self {
            DistortionArg::None => "none",
            DistortionArg::R => "r",
            DistortionArg::Rts => "rts",
            DistortionArg::P => "p",
            DistortionArg::E => "e",
            DistortionArg::Tc => "tc",
        }
    }
}

/// `--model`.
#[derive(Clone, Copy, ValueEnum)]
pub enum ModelArg {
    Fcn,
    Cnn,
    StFcn,
    StCnn,
    Tutorial,
}

/// `--modes`: interpolation modes.
#[derive(Clone, Copy, ValueEnum)]
pub enum ModeArg {
    Bilinear,
    Nearest,
    Bicubic,
}

/// `--transform`: the transformer's family.
#[derive(Clone, Copy, ValueEnum)]
pub enum TransformArg {
    Affine,
    Projective,
    Tps,
    Attention,
}

/// Where the `path`s of a table's rows may be read from, how large a file they may name, and
/// the memory the run may hold in decoded images: the rules for tables that come from others.
#[derive(clap::Args, Clone, Debug)]
pub struct InputRules {
    /// Folder that `path` rows (Hugging Face image structs) are read from and must stay
    /// inside (default: each table file's folder; `stn sql`: the current folder).
    #[arg(long, value_name = "DIR")]
    pub base_dir: Option<std::path::PathBuf>,
    /// Read `path` rows outside that folder too (absolute paths, `..`, symbolic links that
    /// lead out). Devices, FIFOs, sockets and files over --max-file-bytes are refused even then.
    #[arg(long)]
    pub allow_outside_paths: bool,
    /// Largest image file a `path` row may name: bytes, or with K, M, G.
    #[arg(long, value_name = "SIZE", default_value = "256M", value_parser = stn_table::memory::parse_bytes)]
    pub max_file_bytes: u64,
    /// Memory the run may hold in decoded images, across every batch and thread: bytes, or
    /// with K, M, G (default: half the machine's memory). A batch that needs more is decoded
    /// in smaller pieces; a row that alone needs more fails with that reason.
    #[arg(long, value_name = "SIZE", value_parser = stn_table::memory::parse_bytes)]
    pub max_memory: Option<u64>,
}

impl InputRules {
    /// Sets the process's memory budget (`--max-memory`), when given.
    pub fn apply(&self) -> anyhow::Result<()> {
        if let Some(m) = self.max_memory {
            stn_table::memory::set_memory_budget(m)
                .map_err(anyhow::Error::msg)
                .map_err(|e| e.context("--max-memory"))?;
        }
        Ok(())
    }

    /// The decode options of these rules, with `max_pixels`.
    pub fn decode(&self, max_pixels: u64) -> stn_table::codec::DecodeOptions {
        stn_table::codec::DecodeOptions {
            max_pixels,
            base_dir: self.base_dir.clone(),
            allow_outside_paths: self.allow_outside_paths,
            max_file_bytes: self.max_file_bytes,
        }
    }
}

/// The keys of encrypted tables (Parquet modular encryption): the built-in local KMS.
pub use stn_table::crypto::KeyArgs;

/// Which version of a Delta table input is read (a folder or prefix holding `_delta_log/`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DeltaReadArgs {
    /// Read version N of a Delta table input (default: the latest).
    #[arg(long = "version", value_name = "N", conflicts_with = "timestamp")]
    pub delta_version: Option<u64>,
    /// Read the version of a Delta table input that was current at this time (RFC 3339, such
    /// as 2026-12-06T10:00:00Z).
    #[arg(long, value_name = "TIME")]
    pub timestamp: Option<String>,
}

impl DeltaReadArgs {
    /// The version to read.
    pub fn at(&self) -> stn_table::delta::DeltaAt {
        match (&self.delta_version, &self.timestamp) {
            (Some(v), _) => stn_table::delta::DeltaAt::Version(*v),
            (None, Some(t)) => stn_table::delta::DeltaAt::Timestamp(t.clone()),
            (None, None) => stn_table::delta::DeltaAt::Latest,
        }
    }
}

/// How an output Delta table is written (`--mode`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeltaModeArg {
    /// A new Delta table at --out (an existing one is an error).
    Create,
    /// One more version of the Delta table at --out, with the same columns.
    Append,
}

impl From<DeltaModeArg> for stn_table::delta::DeltaMode {
    fn from(m: DeltaModeArg) -> Self {
        match m {
            DeltaModeArg::Create => stn_table::delta::DeltaMode::Create,
            DeltaModeArg::Append => stn_table::delta::DeltaMode::Append,
        }
    }
}
