//! Images to and from planar f32: PNG and JPEG files or bytes (gray, gray + alpha, RGB, RGBA; any
//! size; EXIF orientation applied), and interleaved 8-bit pixels as decoded tables store them.
//!
//! One place for the codecs: files (`stn rectify` on images), image tables and SQL all decode
//! and encode through [`Image::decode`] and [`Image::encode`].

use std::io::Cursor;
use std::path::Path;

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{DynamicImage, ExtendedColorType, ImageDecoder, ImageEncoder, ImageFormat, ImageReader, Limits};
use stn_kernels::{affine_sample, Interpolation, Padding, SampleOptions, TensorRef};

use crate::error::{DataError, Result};

/// A planar image: `channels` planes of `height x width` values in [0, 1], (C, H, W) row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// Pixels, `channels * height * width` values.
    pub data: Vec<f32>,
    /// 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA).
    pub channels: usize,
    /// Height.
    pub height: usize,
    /// Width.
    pub width: usize,
}

/// Largest image accepted when reading a file (pixels), against decompression bombs.
pub const MAX_PIXELS: u64 = 1 << 28;

/// Largest image file read (bytes) unless told otherwise: 256 MiB, more than any 64-megapixel
/// PNG or JPEG needs. A larger file is refused before it is read.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 256 << 20;

/// What an image's header says, read without decoding the pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Channels the decoded image has (1 to 4, as [`Image::decode`] gives them).
    pub channels: usize,
}

impl ImageInfo {
    /// Pixels (width x height).
    pub fn pixels(&self) -> u64 {
        self.width as u64 * self.height as u64
    }
}

/// The kind of a file that is not a regular file, in words.
fn file_kind(ft: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if ft.is_char_device() {
            return "a character device";
        }
        if ft.is_block_device() {
            return "a block device";
        }
        if ft.is_socket() {
            return "a socket";
        }
    }
    if ft.is_dir() {
        "a folder"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

/// Reads an image file of at most `max_bytes` bytes, safely for paths that come from other
/// people: only a regular file is read (a FIFO, device, socket or folder is refused without
/// blocking on it: the file is opened non-blocking and checked after opening, so a path swapped
/// for a FIFO meanwhile cannot hang the run), and a file larger than `max_bytes` is refused
/// before it is read (and never read past the limit if it grows). With `follow_symlinks`
/// false, a symbolic link as the last component is refused (`O_NOFOLLOW`).
pub fn read_image_file(
    path: &Path,
    max_bytes: u64,
    follow_symlinks: bool,
) -> std::result::Result<Vec<u8>, String> {
    Ok(read_image_file_prefix(path, max_bytes, u64::MAX, follow_symlinks)?.0)
}

/// The first `prefix` bytes of an image file (all of it when shorter) and the file's length,
/// with the checks of [`read_image_file`]: enough to read an image's header.
pub fn read_image_file_prefix(
    path: &Path,
    max_bytes: u64,
    prefix: u64,
    follow_symlinks: bool,
) -> std::result::Result<(Vec<u8>, u64), String> {
    use std::io::Read;
    let mut open = std::fs::OpenOptions::new();
    open.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY;
        if !follow_symlinks {
            flags |= libc::O_NOFOLLOW;
        }
        open.custom_flags(flags);
    }
    #[cfg(not(unix))]
    let _ = follow_symlinks;
    // Checked before opening too: opening some devices has effects of its own.
    let seen = if follow_symlinks { std::fs::metadata(path) } else { std::fs::symlink_metadata(path) };
    if let Ok(m) = seen {
        let ft = m.file_type();
        if ft.is_symlink() {
            return Err("is a symbolic link (refused here)".into());
        }
        if !ft.is_file() {
            return Err(format!("is {}, not a regular file", file_kind(&ft)));
        }
    }
    let file = open.open(path).map_err(|e| {
        if e.raw_os_error() == Some(libc_eloop()) {
            "is a symbolic link (refused here)".to_string()
        } else {
            format!("cannot read: {e}")
        }
    })?;
    let meta = file.metadata().map_err(|e| format!("cannot read: {e}"))?;
    if !meta.file_type().is_file() {
        return Err(format!("is {}, not a regular file", file_kind(&meta.file_type())));
    }
    let len = meta.len();
    if len > max_bytes {
        return Err(format!("is {len} bytes, more than the limit of {max_bytes} bytes"));
    }
    let want = prefix.min(len);
    let mut bytes = Vec::with_capacity(want as usize);
    file.take(want.max(prefix.min(max_bytes.saturating_add(1))))
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > max_bytes {
        return Err(format!("grew past the limit of {max_bytes} bytes while read"));
    }
    Ok((bytes, len))
}

fn libc_eloop() -> i32 {
    #[cfg(unix)]
    {
        libc::ELOOP
    }
    #[cfg(not(unix))]
    {
        -1
    }
}

/// How to encode an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// PNG (lossless) at a compression level.
    Png(PngLevel),
    /// JPEG at a quality from 1 to 100 (alpha is dropped: JPEG has none).
    Jpeg(u8),
}

/// PNG compression: `Fast` is fdeflate's single-pass coder (several times faster than zlib's
/// levels, files somewhat larger); `Level(0..=9)` is zlib's scale (0: stored, 6: zlib's and
/// Pillow's default, 9: smallest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PngLevel {
    /// fdeflate's fast coder.
    Fast,
    /// A zlib level, 0 to 9.
    Level(u8),
}

impl std::str::FromStr for PngLevel {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "fast" => Ok(PngLevel::Fast),
            _ => match s.parse::<u8>() {
                Ok(n) if n <= 9 => Ok(PngLevel::Level(n)),
                _ => Err(format!("PNG level: `fast` or 0 to 9, got `{s}`")),
            },
        }
    }
}

impl Default for Encoding {
    /// PNG at [`PngLevel::Fast`].
    fn default() -> Self {
        Encoding::Png(PngLevel::Fast)
    }
}

/// The image formats [`Image::decode`] reads, told from the bytes.
pub fn sniff(bytes: &[u8]) -> Option<ImageFormat> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(ImageFormat::Png)
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(ImageFormat::Jpeg)
    } else {
        None
    }
}

/// The format of image bytes, or the error for empty bytes and bytes that are no PNG or JPEG.
fn format_of(bytes: &[u8]) -> Result<ImageFormat> {
    let what = |m: String| DataError::Format { what: "image".into(), message: m };
    if bytes.is_empty() {
        return Err(what("empty bytes (0 bytes, not an image)".into()));
    }
    sniff(bytes).ok_or_else(|| {
        what(format!(
            "not a PNG or JPEG image ({} bytes starting {:02x?})",
            bytes.len(),
            &bytes[..bytes.len().min(4)]
        ))
    })
}

fn invalid(arg: &'static str, message: impl Into<String>) -> DataError {
    DataError::Invalid { arg, message: message.into() }
}

impl Image {
    /// Reads a PNG or JPEG file (the format is read from the content, not the name) as gray
    /// (`channels = 1`) or RGB (`channels = 3`). A file that is not an image of a supported
    /// format, is corrupt, or is larger than [`MAX_PIXELS`] is an error naming it.
    pub fn load(path: &Path, channels: usize) -> Result<Image> {
        if channels != 1 && channels != 3 {
            return Err(invalid("channels", format!("1 or 3, got {channels}")));
        }
        let img = Image::load_native(path)?;
        Ok(if channels == 1 { img.to_gray() } else { img.to_rgb() })
    }

    /// Reads a PNG or JPEG file with its own channels (gray, gray + alpha, RGB, RGBA), EXIF
    /// orientation applied. Errors as [`Image::load`].
    pub fn load_native(path: &Path) -> Result<Image> {
        let bytes = read_image_file(path, DEFAULT_MAX_FILE_BYTES, true)
            .map_err(|message| DataError::Io { path: path.to_path_buf(), message })?;
        Image::decode(&bytes, MAX_PIXELS)
            .map_err(|e| DataError::Io { path: path.to_path_buf(), message: e.to_string() })
    }

    /// Reads the header of PNG or JPEG bytes (size and channels) without decoding the pixels:
    /// what [`Image::decode`] would allocate, known before it does. Errors as [`Image::decode`]
    /// for bytes that are not an image or whose header is corrupt.
    pub fn probe(bytes: &[u8]) -> Result<ImageInfo> {
        let what = |m: String| DataError::Format { what: "image".into(), message: m };
        let format = format_of(bytes)?;
        // A PNG's first chunk says it all (the decoder would read on to the first IDAT).
        if format == ImageFormat::Png && bytes.len() >= 26 && &bytes[12..16] == b"IHDR" {
            let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
            let channels = match bytes[25] {
                0 => 1,
                4 => 2,
                2 => 3,
                // Palette: RGB, or RGBA with a transparency chunk; counted as the larger.
                3 | 6 => 4,
                t => return Err(what(format!("PNG color type {t} is not valid"))),
            };
            return Ok(ImageInfo { width: be(&bytes[16..20]), height: be(&bytes[20..24]), channels });
        }
        let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
        reader.no_limits();
        let decoder = reader.into_decoder().map_err(|e| what(format!("cannot read the header: {e}")))?;
        let (w, h) = decoder.dimensions();
        let ct = decoder.color_type();
        let channels = match (ct.has_color(), ct.has_alpha()) {
            (false, false) => 1,
            (false, true) => 2,
            (true, false) => 3,
            (true, true) => 4,
        };
        Ok(ImageInfo { width: w as usize, height: h as usize, channels })
    }

    /// Decodes PNG or JPEG bytes with their own channels: 1 (gray), 2 (gray + alpha), 3 (RGB;
    /// also palette and CMYK images) or 4 (RGBA); 16-bit samples keep their precision. The
    /// EXIF orientation is applied, as Pillow's `exif_transpose` and Hugging Face `datasets`
    /// do. The size in the header is checked against `max_pixels` before anything is decoded,
    /// so a header that claims a huge image is an error, not an allocation.
    pub fn decode(bytes: &[u8], max_pixels: u64) -> Result<Image> {
        let what = |m: String| DataError::Format { what: "image".into(), message: m };
        let format = format_of(bytes)?;
        // A PNG's size is in its first chunk: checked before the decoder reads further.
        if format == ImageFormat::Png && bytes.len() >= 24 && &bytes[12..16] == b"IHDR" {
            let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as u64;
            let (w, h) = (be(&bytes[16..20]), be(&bytes[20..24]));
            if w * h > max_pixels {
                return Err(what(format!(
                    "the header claims {w} x {h} pixels, more than the limit of {max_pixels}"
                )));
            }
        }
        let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
        // The header is read without limits so the size check below can name the size.
        reader.no_limits();
        let mut decoder = reader.into_decoder().map_err(|e| what(format!("cannot read the header: {e}")))?;
        let (w, h) = decoder.dimensions();
        let pixels = w as u64 * h as u64;
        if w == 0 || h == 0 {
            return Err(what(format!("image of {w} x {h} pixels is empty")));
        }
        if pixels > max_pixels {
            return Err(what(format!(
                "the header claims {w} x {h} pixels, more than the limit of {max_pixels}"
            )));
        }
        let mut limits = Limits::default();
        limits.max_alloc = Some(max_pixels.saturating_mul(16).max(1 << 20));
        decoder.set_limits(limits).map_err(|e| what(format!("cannot decode: {e}")))?;
        let orientation =
            decoder.orientation().map_err(|e| what(format!("cannot read the EXIF block: {e}")))?;
        let mut img = DynamicImage::from_decoder(decoder).map_err(|e| what(format!("cannot decode: {e}")))?;
        img.apply_orientation(orientation);
        Ok(Image::from_dynamic(&img))
    }

    fn from_dynamic(img: &DynamicImage) -> Image {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let color = img.color();
        let (channels, inter) = match (color.has_color(), color.has_alpha()) {
            (false, false) => (1, img.to_luma32f().into_raw()),
            (false, true) => (2, img.to_luma_alpha32f().into_raw()),
            (true, false) => (3, img.to_rgb32f().into_raw()),
            (true, true) => (4, img.to_rgba32f().into_raw()),
        };
        Image::from_interleaved(&inter, h, w, channels)
    }

    /// A planar image from interleaved (H, W, C) values in [0, 1].
    fn from_interleaved(inter: &[f32], h: usize, w: usize, channels: usize) -> Image {
        let plane = h * w;
        let mut data = vec![0f32; channels * plane];
        if channels == 1 {
            data.copy_from_slice(inter);
        } else {
            for (p, px) in inter.chunks_exact(channels).enumerate() {
                for (c, &v) in px.iter().enumerate() {
                    data[c * plane + p] = v;
                }
            }
        }
        Image { data, channels, height: h, width: w }
    }

    /// An image from interleaved 8-bit pixels (H, W, C), as decoded image tables store them
    /// (C from 1 to 4). The length must be `h * w * channels`.
    pub fn from_interleaved_u8(pixels: &[u8], h: usize, w: usize, channels: usize) -> Result<Image> {
        if !(1..=4).contains(&channels) {
            return Err(invalid("channels", format!("1 to 4, got {channels}")));
        }
        if h == 0 || w == 0 {
            return Err(invalid("image", format!("empty image of {h} x {w} pixels")));
        }
        let want = h.checked_mul(w).and_then(|p| p.checked_mul(channels));
        if want != Some(pixels.len()) {
            return Err(invalid(
                "image",
                format!(
                    "{} bytes of pixels, but {h} x {w} x {channels} needs {}",
                    pixels.len(),
                    h * w * channels
                ),
            ));
        }
        let plane = h * w;
        let mut data = vec![0f32; channels * plane];
        for (p, px) in pixels.chunks_exact(channels).enumerate() {
            for (c, &v) in px.iter().enumerate() {
                data[c * plane + p] = v as f32 / 255.0;
            }
        }
        Ok(Image { data, channels, height: h, width: w })
    }

    /// Interleaved 8-bit pixels (H, W, C): values clamped to [0, 1] and rounded to 1/255.
    pub fn to_interleaved_u8(&self) -> Vec<u8> {
        let plane = self.height * self.width;
        let c = self.channels;
        let mut out = vec![0u8; c * plane];
        for ch in 0..c {
            let src = &self.data[ch * plane..(ch + 1) * plane];
            for (p, &v) in src.iter().enumerate() {
                out[p * c + ch] = quantize(v);
            }
        }
        out
    }

    /// The gray image: luminance 0.299 R + 0.587 G + 0.114 B (ITU-R 601, as Pillow's `L`) of
    /// colour images, the gray plane of gray ones; alpha is ignored.
    pub fn to_gray(&self) -> Image {
        let p = self.height * self.width;
        let data = if self.channels >= 3 {
            let (r, g, b) = (&self.data[..p], &self.data[p..2 * p], &self.data[2 * p..3 * p]);
            (0..p).map(|i| 0.299 * r[i] + 0.587 * g[i] + 0.114 * b[i]).collect()
        } else {
            self.data[..p].to_vec()
        };
        Image { data, channels: 1, height: self.height, width: self.width }
    }

    /// The RGB image (gray planes repeated, alpha dropped).
    pub fn to_rgb(&self) -> Image {
        let p = self.height * self.width;
        let data = if self.channels >= 3 { self.data[..3 * p].to_vec() } else { self.data[..p].repeat(3) };
        Image { data, channels: 3, height: self.height, width: self.width }
    }

    /// The image resampled to `height x width`: bilinear, border padding, `align_corners =
    /// false` (the resampling `stn::SpatialTransformer::localize` applies before its
    /// localization net, so a resized image gives the same theta).
    pub fn resized(&self, height: usize, width: usize) -> Result<Image> {
        if (height, width) == (self.height, self.width) {
            return Ok(self.clone());
        }
        let shape = [1, self.channels, self.height, self.width];
        let theta = [1f32, 0.0, 0.0, 0.0, 1.0, 0.0];
        let opts = SampleOptions::new(Interpolation::Bilinear, Padding::Border, false);
        let out = affine_sample(
            TensorRef::new(&self.data, &shape),
            TensorRef::new(&theta, &[1, 2, 3]),
            &[height, width],
            &opts,
        )?;
        Ok(Image { data: out.data, channels: self.channels, height, width })
    }

    /// Encodes the image as PNG bytes at the default level (values clamped to [0, 1], 8 bits
    /// per channel).
    pub fn to_png(&self) -> Result<Vec<u8>> {
        self.encode(Encoding::default())
    }

    /// Encodes the image (values clamped to [0, 1], 8 bits per channel). Nothing but the
    /// pixels is written: no metadata of any input reaches the output.
    pub fn encode(&self, encoding: Encoding) -> Result<Vec<u8>> {
        let (w, h) = (self.width as u32, self.height as u32);
        if self.data.len() != self.channels * self.height * self.width || self.data.is_empty() {
            return Err(invalid("image", "size does not match its data"));
        }
        let mut out = Vec::new();
        match encoding {
            Encoding::Png(level) => {
                let color = match self.channels {
                    1 => ExtendedColorType::L8,
                    2 => ExtendedColorType::La8,
                    3 => ExtendedColorType::Rgb8,
                    4 => ExtendedColorType::Rgba8,
                    c => return Err(invalid("image", format!("{c} channels cannot be PNG"))),
                };
                let compression = match level {
                    PngLevel::Fast => CompressionType::Fast,
                    PngLevel::Level(n) => CompressionType::Level(n.min(9)),
                };
                PngEncoder::new_with_quality(&mut out, compression, FilterType::Adaptive)
                    .write_image(&self.to_interleaved_u8(), w, h, color)
                    .map_err(|e| invalid("image", format!("cannot encode PNG: {e}")))?;
            }
            Encoding::Jpeg(quality) => {
                let opaque = match self.channels {
                    2 => Image { data: self.data[..self.height * self.width].to_vec(), channels: 1, ..*self },
                    4 => self.to_rgb(),
                    _ => self.clone(),
                };
                let color =
                    if opaque.channels == 1 { ExtendedColorType::L8 } else { ExtendedColorType::Rgb8 };
                JpegEncoder::new_with_quality(&mut out, quality.clamp(1, 100))
                    .write_image(&opaque.to_interleaved_u8(), w, h, color)
                    .map_err(|e| invalid("image", format!("cannot encode JPEG: {e}")))?;
            }
        }
        Ok(out)
    }
}

/// A value in [0, 1] as an 8-bit sample (clamped, rounded to nearest).
fn quantize(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}
