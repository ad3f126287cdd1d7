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
