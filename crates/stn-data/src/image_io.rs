//! Image files (PNG, JPEG; gray or colour; any size) to and from planar f32 images.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageBuffer, ImageFormat, ImageReader, Limits, Luma, Rgb};

use crate::error::{DataError, Result};

/// A planar image: `channels` planes of `height x width` values in [0, 1], (C, H, W) row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// Pixels, `channels * height * width` values.
    pub data: Vec<f32>,
    /// 1 (gray) or 3 (RGB).
    pub channels: usize,
    /// Height.
    pub height: usize,
    /// Width.
    pub width: usize,
}

/// Largest image accepted when reading (pixels), against decompression bombs.
pub const MAX_PIXELS: u64 = 1 << 28;

fn io_err(path: &Path, message: impl Into<String>) -> DataError {
    DataError::Io { path: path.to_path_buf(), message: message.into() }
}

impl Image {
    /// Reads a PNG or JPEG file (the format is read from the content, not the name) as gray
    /// (`channels = 1`) or RGB (`channels = 3`). A file that is not an image of a supported
    /// format, is corrupt, or is larger than [`MAX_PIXELS`] is an error naming it.
    pub fn load(path: &Path, channels: usize) -> Result<Image> {
        if channels != 1 && channels != 3 {
            return Err(DataError::Invalid { arg: "channels", message: format!("1 or 3, got {channels}") });
        }
        Ok(Image::from_dynamic(&Image::decode(path)?, channels))
    }

    /// Reads a PNG or JPEG file with its own channels: gray (1) or RGB (3, for any colour
    /// image; alpha is dropped). Errors as [`Image::load`].
    pub fn load_native(path: &Path) -> Result<Image> {
        let img = Image::decode(path)?;
        let channels = if img.color().has_color() { 3 } else { 1 };
        Ok(Image::from_dynamic(&img, channels))
    }

    /// Reads and decodes a PNG or JPEG file, with the size limit.
    fn decode(path: &Path) -> Result<DynamicImage> {
        let bytes = std::fs::read(path).map_err(|e| io_err(path, format!("cannot read: {e}")))?;
        let mut reader = ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| io_err(path, format!("cannot read: {e}")))?;
        match reader.format() {
            Some(ImageFormat::Png) | Some(ImageFormat::Jpeg) => {}
            _ => return Err(io_err(path, "not a PNG or JPEG image")),
        }
        let mut limits = Limits::default();
        limits.max_alloc = Some(MAX_PIXELS * 16);
        reader.limits(limits);
        let img = reader.decode().map_err(|e| io_err(path, format!("cannot decode the image: {e}")))?;
        let (w, h) = (img.width() as usize, img.height() as usize);
        if (w as u64) * (h as u64) > MAX_PIXELS || w == 0 || h == 0 {
            return Err(io_err(path, format!("image of {w} x {h} pixels is empty or too large")));
        }
        Ok(img)
    }

    fn from_dynamic(img: &DynamicImage, channels: usize) -> Image {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let data = if channels == 1 {
            img.to_luma32f().into_raw()
        } else {
            let rgb = img.to_rgb32f().into_raw();
            let mut planar = vec![0f32; 3 * w * h];
            for (p, px) in rgb.chunks_exact(3).enumerate() {
                for c in 0..3 {
                    planar[c * w * h + p] = px[c];
                }
            }
            planar
        };
        Image { data, channels, height: h, width: w }
    }

    /// Encodes the image as PNG bytes (values clamped to [0, 1], 8 bits per channel).
    pub fn to_png(&self) -> Result<Vec<u8>> {
        let (w, h) = (self.width, self.height);
        let q = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
        let mut out = Cursor::new(Vec::new());
        let res = if self.channels == 1 {
            let buf: ImageBuffer<Luma<u8>, Vec<u8>> =
                ImageBuffer::from_raw(w as u32, h as u32, self.data.iter().map(|&v| q(v)).collect())
                    .ok_or_else(|| DataError::Invalid {
                        arg: "image",
                        message: "size does not match its data".into(),
                    })?;
            buf.write_to(&mut out, ImageFormat::Png)
        } else {
            let plane = w * h;
            let mut inter = Vec::with_capacity(3 * plane);
            for p in 0..plane {
                for c in 0..3 {
                    inter.push(q(self.data[c * plane + p]));
                }
            }
            let buf: ImageBuffer<Rgb<u8>, Vec<u8>> = ImageBuffer::from_raw(w as u32, h as u32, inter)
                .ok_or_else(|| DataError::Invalid {
                    arg: "image",
                    message: "size does not match its data".into(),
                })?;
            buf.write_to(&mut out, ImageFormat::Png)
        };
        res.map_err(|e| DataError::Invalid { arg: "image", message: format!("cannot encode PNG: {e}") })?;
        Ok(out.into_inner())
    }
}
