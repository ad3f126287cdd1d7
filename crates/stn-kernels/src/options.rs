//! Sampling options: interpolation mode, padding mode, corner alignment, and which gradients to compute.

/// How the sampler interpolates between input pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Interpolation {
    /// The nearest pixel; ties round half to even, as PyTorch's CPU kernel. No gradient to the grid.
    Nearest,
    /// Bilinear in 2-D, trilinear in 3-D.
    #[default]
    Bilinear,
    /// Bicubic convolution (Keys, A = -0.75), 2-D only; padding applies to each of the 16 taps.
    Bicubic,
}

/// What the sampler reads outside the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Padding {
    /// Zero outside the input.
    #[default]
    Zeros,
    /// The nearest border pixel (coordinates are clipped).
    Border,
    /// The input mirrored at its borders, as many times as needed, then clipped.
    Reflection,
}

impl std::str::FromStr for Interpolation {
    type Err = String;

    /// PyTorch's names: `bilinear`, `nearest`, `bicubic`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bilinear" => Ok(Interpolation::Bilinear),
            "nearest" => Ok(Interpolation::Nearest),
            "bicubic" => Ok(Interpolation::Bicubic),
            other => Err(format!("`{other}`: use bilinear, nearest or bicubic")),
        }
    }
}

impl std::str::FromStr for Padding {
    type Err = String;

    /// PyTorch's names: `zeros`, `border`, `reflection`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "zeros" => Ok(Padding::Zeros),
            "border" => Ok(Padding::Border),
            "reflection" => Ok(Padding::Reflection),
            other => Err(format!("`{other}`: use zeros, border or reflection")),
        }
    }
}

/// Options of a sampling call, with PyTorch's meaning and defaults
/// (`mode='bilinear'`, `padding_mode='zeros'`, `align_corners=False`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SampleOptions {
    /// Interpolation mode.
    pub mode: Interpolation,
    /// Padding mode.
    pub padding: Padding,
    /// `true`: -1 and 1 are the centres of the corner pixels; `false`: their outer edges.
    pub align_corners: bool,
}

impl SampleOptions {
    /// Options with the given mode, padding and alignment.
    pub fn new(mode: Interpolation, padding: Padding, align_corners: bool) -> Self {
        Self { mode, padding, align_corners }
    }
}

/// Which gradients a backward call computes; a caller pays only for those it asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GradRequest {
    /// Compute the gradient with respect to the sampled input.
    pub input: bool,
    /// Compute the gradient with respect to the grid or the transformation parameters.
    pub params: bool,
}

impl GradRequest {
    /// Both gradients.
    pub const ALL: Self = Self { input: true, params: true };
    /// Only the gradient to the input.
    pub const INPUT: Self = Self { input: true, params: false };
    /// Only the gradient to the grid or parameters.
    pub const PARAMS: Self = Self { input: false, params: true };
}
