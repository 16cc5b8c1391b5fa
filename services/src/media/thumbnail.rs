//! Thumbnail generation: decode a JPEG, PNG, WebP or GIF (its first frame), resize, encode.
//!
//! Pure CPU work on bytes and pixels; callers run it on the blocking pool.

use std::io::{BufReader, Cursor, Read, Seek};

use image::{
    codecs::{jpeg::JpegEncoder, png::PngEncoder},
    imageops::FilterType,
    DynamicImage, ImageError, ImageFormat, ImageReader, Limits,
};

use crate::error::{Error, Result};

/// How the thumbnail relates to the requested box (the spec's `method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Keep the aspect ratio and fit inside the box; never larger than the original.
    Scale,
    /// Fill the box exactly, cutting what overflows (centred).
    Crop,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scale => "scale",
            Self::Crop => "crop",
        }
    }
}

/// Largest side of a thumbnail a client may ask for; larger requests get this. Every distinct size
/// is a cached file, so the bound also bounds what a client can make the server store.
pub const MAX_SIDE: u32 = 1600;

/// The thumbnail sizes served; a request gets the smallest that covers it (else the largest).
pub const SIZES: [(u32, u32); 6] = [(32, 32), (96, 96), (320, 240), (640, 480), (800, 600), (MAX_SIDE, 1200)];

/// The served size for a requested one.
pub fn snap((width, height): (u32, u32)) -> (u32, u32) {
    SIZES.iter().copied().find(|(w, h)| *w >= width && *h >= height).unwrap_or(SIZES[SIZES.len() - 1])
}

/// Images larger than this (either side) are not decoded: the decompressed pixels would be huge.
const MAX_SOURCE_SIDE: u32 = 12_000;
/// Memory the decoder may allocate for one image.
const MAX_DECODE_ALLOC: u64 = 512 * 1024 * 1024;

/// A generated thumbnail.
pub struct Thumbnail {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
    pub width: u32,
    pub height: u32,
}

/// The dimensions a thumbnail of an `original` image gets for the requested box.
pub fn target_size(original: (u32, u32), requested: (u32, u32), method: Method) -> (u32, u32) {
    let (ow, oh) = (original.0.max(1), original.1.max(1));
    let (rw, rh) = (requested.0.clamp(1, MAX_SIDE), requested.1.clamp(1, MAX_SIDE));
    match method {
        Method::Scale => {
            if rw >= ow && rh >= oh {
                return (ow, oh);
            }
            let ratio = (f64::from(rw) / f64::from(ow)).min(f64::from(rh) / f64::from(oh));
            ((f64::from(ow) * ratio).round().max(1.0) as u32, (f64::from(oh) * ratio).round().max(1.0) as u32)
        }
        Method::Crop => {
            // The exact box, unless the original is smaller: then the largest box of the same
            // shape that the original fills, so pixels are never invented.
            let shrink = (f64::from(ow) / f64::from(rw)).min(f64::from(oh) / f64::from(rh)).min(1.0);
            ((f64::from(rw) * shrink).floor().max(1.0) as u32, (f64::from(rh) * shrink).floor().max(1.0) as u32)
        }
    }
}

/// Makes a thumbnail of the image read from `source`. JPEG sources give JPEG thumbnails; the
/// others give PNG, which keeps transparency.
pub fn generate<R: Read + Seek>(source: R, requested: (u32, u32), method: Method) -> Result<Thumbnail> {
    let mut reader = ImageReader::new(BufReader::new(source))
        .with_guessed_format()
        .map_err(|e| Error::Internal(format!("cannot read media: {e}")))?;
    let format = match reader.format() {
        Some(f @ (ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP | ImageFormat::Gif)) => f,
        _ => return Err(Error::BadState("cannot generate thumbnails for this content".into())),
    };
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SOURCE_SIDE);
    limits.max_image_height = Some(MAX_SOURCE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    reader.limits(limits);
    let image = reader.decode().map_err(|e| match e {
        ImageError::Limits(_) => Error::TooLarge("the content is too large to thumbnail".into()),
        other => Error::BadState(format!("cannot generate thumbnails for this content: {other}")),
    })?;
    let (width, height) = target_size((image.width(), image.height()), requested, method);
    let resized = if (width, height) == (image.width(), image.height()) {
        image
    } else {
        match method {
            Method::Scale => image.resize_exact(width, height, FilterType::Triangle),
            Method::Crop => image.resize_to_fill(width, height, FilterType::Triangle),
        }
    };
    encode(resized, format == ImageFormat::Jpeg)
}

fn encode(image: DynamicImage, jpeg: bool) -> Result<Thumbnail> {
    let (width, height) = (image.width(), image.height());
    let mut bytes = Cursor::new(Vec::new());
    let failed = |e: ImageError| Error::Internal(format!("cannot encode a thumbnail: {e}"));
    let content_type = if jpeg {
        DynamicImage::ImageRgb8(image.to_rgb8())
            .write_with_encoder(JpegEncoder::new_with_quality(&mut bytes, 85))
            .map_err(failed)?;
        "image/jpeg"
    } else {
        let image = if image.color().has_alpha() {
            DynamicImage::ImageRgba8(image.to_rgba8())
        } else {
            DynamicImage::ImageRgb8(image.to_rgb8())
        };
        image.write_with_encoder(PngEncoder::new(&mut bytes)).map_err(failed)?;
        "image/png"
    };
    Ok(Thumbnail { bytes: bytes.into_inner(), content_type, width, height })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_fits_inside_and_never_upscales() {
        assert_eq!(target_size((400, 200), (100, 100), Method::Scale), (100, 50));
        assert_eq!(target_size((400, 200), (1000, 1000), Method::Scale), (400, 200));
        assert_eq!(target_size((400, 200), (800, 50), Method::Scale), (100, 50));
    }

    #[test]
    fn crop_fills_the_box_within_the_original() {
        assert_eq!(target_size((400, 200), (100, 100), Method::Crop), (100, 100));
        assert_eq!(target_size((400, 200), (300, 300), Method::Crop), (200, 200));
        assert_eq!(target_size((400, 200), (5000, 5000), Method::Crop), (200, 200));
    }
}
