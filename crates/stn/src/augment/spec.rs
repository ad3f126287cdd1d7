//! The text form of an augmentation: `affine:rot=30,scale=0.8-1.2,shift=0.1;tps:0.1`.
//!
//! Items are separated by `;`. An op is `NAME` or `NAME:ARGS`, ARGS comma-separated `KEY=VALUE`
//! or one bare value (the op's main parameter). A value is a number or a range `LO-HI` (also
//! `LO..HI`). For angles, shears and shifts a single number `v` means `-v..v`; for scales,
//! aspects and probabilities it is the value itself. Items `KEY=VALUE` without an op name set
//! options: `mode=bilinear|nearest|bicubic`, `padding=zeros|border|reflection`,
//! `align_corners=true|false`, `same_on_batch=true|false`.
//!
//! | op | keys (bare value first) | defaults |
//! |---|---|---|
//! | `affine` | `rot`, `scale`, `aspect`, `shear` (both axes), `shear_x`, `shear_y`, `shift` (both axes), `shift_x`, `shift_y`, `p` | identity, p 1 |
//! | `rotation` (`rotate`) | `deg`, `p` | 0, p 1 |
//! | `perspective` | `distortion`, `p` | 0.5, p 1 |
//! | `tps` | `scale`, `grid` (`N` or `RxC`), `p` | 0.1, 3x3, p 1 |
//! | `elastic` | as `tps` | 0.05, 5x5, p 1 |
//! | `crop` (`resized_crop`) | `scale`, `ratio`, `p` | 0.08-1, 0.75-1.3333, p 1 |
//! | `hflip`, `vflip` | `p` | p 0.5 |

use std::fmt;

use stn_kernels::{Interpolation, Padding};

use super::op::{Op, Range};
use super::{Augment, AugmentOptions};
use crate::error::{Result, StnError};

fn err(op: &str, message: impl Into<String>) -> StnError {
    StnError::Augment { op: op.into(), message: message.into() }
}

fn number(op: &str, s: &str) -> Result<f64> {
    let v: f64 = s.trim().parse().map_err(|_| err(op, format!("`{s}` is not a number")))?;
    if !v.is_finite() {
        return Err(err(op, format!("`{s}` is not a finite number")));
    }
    Ok(v)
}

/// `v`, `lo-hi` or `lo..hi`; a single value is `sym ? -v..v : v..v`.
fn range(op: &str, s: &str, sym: bool) -> Result<Range> {
    let s = s.trim();
    let split = s.find("..").map(|i| (i, 2)).or_else(|| {
        s.char_indices()
            .skip(1)
            .find(|&(i, c)| c == '-' && !matches!(s.as_bytes()[i - 1], b'e' | b'E' | b'-'))
            .map(|(i, _)| (i, 1))
    });
    let r = match split {
        Some((i, n)) => Range::new(number(op, &s[..i])?, number(op, &s[i + n..])?),
        None => {
            let v = number(op, s)?;
            if sym {
                if v < 0.0 {
                    return Err(err(
                        op,
                        format!("a single value means -v..v and must not be negative, got {v}"),
                    ));
                }
                Range::sym(v)
            } else {
                Range::fixed(v)
            }
        }
    };
    Ok(r)
}

fn grid(op: &str, s: &str) -> Result<(usize, usize)> {
    let parse =
        |t: &str| t.trim().parse::<usize>().map_err(|_| err(op, format!("grid `{s}` is not N or RxC")));
    match s.split(['x', 'X']).collect::<Vec<_>>().as_slice() {
        [n] => Ok((parse(n)?, parse(n)?)),
        [r, c] => Ok((parse(r)?, parse(c)?)),
        _ => Err(err(op, format!("grid `{s}` is not N or RxC"))),
    }
}

fn flag(key: &str, v: &str) -> Result<bool> {
    match v.trim() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(err(key, format!("`{v}` is not true or false"))),
    }
}

fn parse_op(name: &str, args: &str) -> Result<Op> {
    let name = name.trim();
    let mut op = match name {
        "affine" => Op::affine(),
        "rotation" | "rotate" => Op::Rotation { deg: Range::fixed(0.0), p: 1.0 },
        "perspective" => Op::Perspective { distortion: 0.5, p: 1.0 },
        "tps" => Op::Tps { scale: 0.1, rows: 3, cols: 3, p: 1.0 },
        "elastic" => Op::Tps { scale: 0.05, rows: 5, cols: 5, p: 1.0 },
        "crop" | "resized_crop" => {
            Op::ResizedCrop { scale: Range::new(0.08, 1.0), ratio: Range::new(0.75, 4.0 / 3.0), p: 1.0 }
        }
        "hflip" => Op::HFlip { p: 0.5 },
        "vflip" => Op::VFlip { p: 0.5 },
        _ => {
            return Err(err(
                name,
                "unknown op; the ops are affine, rotation, perspective, tps, elastic, crop, hflip, vflip",
            ))
        }
    };
    for arg in args.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        let (key, value) = match arg.split_once('=') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => ("", arg),
        };
        let at = format!("{name}.{}", if key.is_empty() { "value" } else { key });
        let unknown = |keys: &str| err(&at, format!("unknown key; {name} takes {keys}"));
        if key == "p" {
            let p = number(&at, value)?;
            match &mut op {
                Op::Affine { p: q, .. }
                | Op::Rotation { p: q, .. }
                | Op::Perspective { p: q, .. }
                | Op::Tps { p: q, .. }
                | Op::ResizedCrop { p: q, .. }
                | Op::HFlip { p: q }
                | Op::VFlip { p: q } => *q = p,
            }
            continue;
        }
        match &mut op {
            Op::Affine { rot, scale, aspect, shear_x, shear_y, shift_x, shift_y, .. } => match key {
                "" | "rot" | "rotate" | "deg" => *rot = range(&at, value, true)?,
                "scale" => *scale = range(&at, value, false)?,
                "aspect" => *aspect = range(&at, value, false)?,
                "shear" => {
                    *shear_x = range(&at, value, true)?;
                    *shear_y = *shear_x;
                }
                "shear_x" => *shear_x = range(&at, value, true)?,
                "shear_y" => *shear_y = range(&at, value, true)?,
                "shift" | "translate" => {
                    *shift_x = range(&at, value, true)?;
                    *shift_y = *shift_x;
                }
                "shift_x" => *shift_x = range(&at, value, true)?,
                "shift_y" => *shift_y = range(&at, value, true)?,
                _ => {
                    return Err(unknown(
                        "rot, scale, aspect, shear, shear_x, shear_y, shift, shift_x, shift_y, p",
                    ))
                }
            },
            Op::Rotation { deg, .. } => match key {
                "" | "deg" | "rot" => *deg = range(&at, value, true)?,
                _ => return Err(unknown("deg, p")),
            },
            Op::Perspective { distortion, .. } => match key {
                "" | "distortion" => *distortion = number(&at, value)?,
                _ => return Err(unknown("distortion, p")),
            },
            Op::Tps { scale, rows, cols, .. } => match key {
                "" | "scale" => *scale = number(&at, value)?,
                "grid" => (*rows, *cols) = grid(&at, value)?,
                _ => return Err(unknown("scale, grid, p")),
            },
            Op::ResizedCrop { scale, ratio, .. } => match key {
                "" | "scale" => *scale = range(&at, value, false)?,
                "ratio" => *ratio = range(&at, value, false)?,
                _ => return Err(unknown("scale, ratio, p")),
            },
            Op::HFlip { p } | Op::VFlip { p } => match key {
                "" => *p = number(&at, value)?,
                _ => return Err(unknown("p")),
            },
        }
    }
    op.validate()?;
    Ok(op)
}

impl Augment {
    /// Parses a spec (see the module docs of [`crate::augment`]); every op is validated.
    pub fn parse(spec: &str) -> Result<Augment> {
        let mut ops = Vec::new();
        let mut options = AugmentOptions::default();
        for item in spec.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            match item.split_once(':') {
                Some((name, args)) => ops.push(parse_op(name, args)?),
                None => match item.split_once('=') {
                    Some((key, v)) => {
                        let (key, v) = (key.trim(), v.trim());
                        match key {
                            "mode" => options.mode = v.parse().map_err(|e| err("mode", e))?,
                            "padding" => options.padding = v.parse().map_err(|e| err("padding", e))?,
                            "align_corners" => options.align_corners = flag(key, v)?,
                            "same_on_batch" => options.same_on_batch = flag(key, v)?,
                            _ => return Err(err(
                                key,
                                "unknown option; the options are mode, padding, align_corners, same_on_batch",
                            )),
                        }
                    }
                    None => ops.push(parse_op(item, "")?),
                },
            }
        }
        if ops.is_empty() {
            return Err(err("spec", format!("`{spec}` names no op")));
        }
        Augment::new(ops, options)
    }
}

fn fmt_range(r: &Range) -> String {
    if r.lo == r.hi {
        format!("{}", r.lo)
    } else {
        format!("{}..{}", r.lo, r.hi)
    }
}

impl fmt::Display for Augment {
    /// The canonical spec: every op with all its keys, then the options; parses back to an
    /// equal [`Augment`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut items: Vec<String> = self
            .ops()
            .iter()
            .map(|op| match op {
                Op::Affine { rot, scale, aspect, shear_x, shear_y, shift_x, shift_y, p } => format!(
                    "affine:rot={},scale={},aspect={},shear_x={},shear_y={},shift_x={},shift_y={},p={p}",
                    fmt_range(rot),
                    fmt_range(scale),
                    fmt_range(aspect),
                    fmt_range(shear_x),
                    fmt_range(shear_y),
                    fmt_range(shift_x),
                    fmt_range(shift_y)
                ),
                Op::Rotation { deg, p } => format!("rotation:deg={},p={p}", fmt_range(deg)),
                Op::Perspective { distortion, p } => format!("perspective:distortion={distortion},p={p}"),
                Op::Tps { scale, rows, cols, p } => format!("tps:scale={scale},grid={rows}x{cols},p={p}"),
                Op::ResizedCrop { scale, ratio, p } => {
                    format!("crop:scale={},ratio={},p={p}", fmt_range(scale), fmt_range(ratio))
                }
                Op::HFlip { p } => format!("hflip:p={p}"),
                Op::VFlip { p } => format!("vflip:p={p}"),
            })
            .collect();
        let o = self.options();
        let mode = match o.mode {
            Interpolation::Nearest => "nearest",
            Interpolation::Bilinear => "bilinear",
            Interpolation::Bicubic => "bicubic",
        };
        let padding = match o.padding {
            Padding::Zeros => "zeros",
            Padding::Border => "border",
            Padding::Reflection => "reflection",
        };
        items.push(format!("mode={mode}"));
        items.push(format!("padding={padding}"));
        items.push(format!("align_corners={}", o.align_corners));
        items.push(format!("same_on_batch={}", o.same_on_batch));
        write!(f, "{}", items.join(";"))
    }
}
