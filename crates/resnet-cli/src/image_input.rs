//! Decoding and preprocessing the input image.

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use burn_resnet::Style;
use image::imageops::FilterType;

use crate::error::CliError;

/// The picture used when `--image` is not given (224x224 PNG).
pub const SAMPLE_PNG: &[u8] = include_bytes!("../assets/sample.png");

/// How pixels are normalised; it must match how the weights were trained (mmdet's
/// `data_preprocessor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preprocessing {
    /// torchvision/timm/pytorch-style weights: RGB, ImageNet mean and std (0-255 scale).
    Pytorch,
    /// Caffe-style (MSRA) weights: BGR channel order, Caffe means, std 1 (mmdet #4613).
    Caffe,
}

impl Preprocessing {
    /// The convention of a backbone style: caffe-style configs are for MSRA weights.
    pub fn for_style(style: Style) -> Self {
        match style {
            Style::Pytorch => Preprocessing::Pytorch,
            Style::Caffe => Preprocessing::Caffe,
        }
    }

    /// Per-channel mean and std, in the channel order of the tensor.
    fn mean_std(self) -> ([f32; 3], [f32; 3]) {
        match self {
            Preprocessing::Pytorch => ([123.675, 116.28, 103.53], [58.395, 57.12, 57.375]),
            Preprocessing::Caffe => ([103.53, 116.28, 123.675], [1.0, 1.0, 1.0]),
        }
    }

    /// A one-line description for the command's output.
    pub fn describe(self) -> &'static str {
        match self {
            Preprocessing::Pytorch => "RGB, ImageNet mean/std",
            Preprocessing::Caffe => "BGR, Caffe means, std 1",
        }
    }
}

/// Whether a JPEG file holds its image's end: an end-of-image marker (`FF D9`) after the last
/// start-of-scan marker (`FF DA`). Entropy-coded data never holds `FF D9` (a data `FF` is
/// followed by `00`), and an embedded EXIF thumbnail's own markers all come before the main
/// image's scans, so a file cut anywhere in the last scan has none.
pub fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let marker = |code: u8| bytes.windows(2).rposition(|w| w == [0xFF, code]);
    match (marker(0xDA), marker(0xD9)) {
        (Some(scan), Some(end)) => end > scan,
        _ => false,
    }
}

/// Read and decode a PNG or JPEG file, refusing a JPEG cut short (the decoder alone would fill
/// the missing part with grey and report nothing).
pub fn decode(path: &Path) -> Result<image::DynamicImage, CliError> {
    let bytes = std::fs::read(path).map_err(|e| CliError::Image {
        path: path.into(),
        message: e.to_string(),
    })?;
    if image::guess_format(&bytes).ok() == Some(image::ImageFormat::Jpeg)
        && !jpeg_is_complete(&bytes)
    {
        return Err(CliError::Image {
            path: path.into(),
            message:
                "the JPEG data ends before the image's end-of-image marker: the file is truncated"
                    .into(),
        });
    }
    image::load_from_memory(&bytes).map_err(|e| CliError::Image {
        path: path.into(),
        message: format!("not a decodable PNG or JPEG image ({e})"),
    })
}

impl Preprocessing {
    /// Normalise `rgb` into `values` (`3 × height × width`, channel-major, `height × width`
    /// at least the image's), the image at the top left; the rest is left as it is.
    pub fn normalise_into(
        self,
        rgb: &image::RgbImage,
        values: &mut [f32],
        [height, width]: [usize; 2],
    ) {
        let (mean, std) = self.mean_std();
        for (x, y, pixel) in rgb.enumerate_pixels() {
            for channel in 0..3 {
                let source = match self {
                    Preprocessing::Pytorch => channel,
                    Preprocessing::Caffe => 2 - channel, // BGR
                };
                let index = channel * height * width + y as usize * width + x as usize;
                values[index] = (pixel[source] as f32 - mean[channel]) / std[channel];
            }
        }
    }
}

/// Decode `path` (or the bundled sample), resize to `[height, width]`, normalise as
/// `preprocessing` says, and return a `[1, 3, height, width]` tensor.
pub fn load(
    path: Option<&Path>,
    [height, width]: [usize; 2],
    preprocessing: Preprocessing,
    device: &Device,
) -> Result<Tensor<4>, CliError> {
    let decoded = match path {
        Some(path) => decode(path)?,
        None => image::load_from_memory(SAMPLE_PNG).map_err(|e| CliError::Image {
            path: "<bundled sample>".into(),
            message: e.to_string(),
        })?,
    };
    let rgb = decoded
        .resize_exact(width as u32, height as u32, FilterType::Triangle)
        .to_rgb8();
    let mut values = vec![0f32; 3 * height * width];
    preprocessing.normalise_into(&rgb, &mut values, [height, width]);
    Ok(Tensor::from_data(
        TensorData::new(values, [1, 3, height, width]),
        device,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The bundled sample as PNG and re-encoded as JPEG.
    fn pictures() -> [(image::ImageFormat, Vec<u8>); 2] {
        let mut jpeg = Vec::new();
        let picture = image::load_from_memory(SAMPLE_PNG).unwrap().to_rgb8();
        picture
            .write_to(
                &mut std::io::Cursor::new(&mut jpeg),
                image::ImageFormat::Jpeg,
            )
            .unwrap();
        [
            (image::ImageFormat::Png, SAMPLE_PNG.to_vec()),
            (image::ImageFormat::Jpeg, jpeg),
        ]
    }

    fn load_bytes(bytes: &[u8], name: &str) -> Result<Tensor<4>, CliError> {
        let path = std::env::temp_dir().join(format!(
            "resnet-image-{}-{:?}-{name}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&path, bytes).unwrap();
        let loaded = load(
            Some(&path),
            [16, 16],
            Preprocessing::Pytorch,
            &Device::flex(),
        );
        std::fs::remove_file(&path).unwrap();
        loaded
    }

    #[test]
    fn whole_pictures_decode_and_jpeg_completeness_is_seen() {
        for (format, bytes) in pictures() {
            assert!(load_bytes(&bytes, "whole").is_ok(), "{format:?}");
        }
        let jpeg = &pictures()[1].1;
        assert!(jpeg_is_complete(jpeg));
        assert!(!jpeg_is_complete(&jpeg[..jpeg.len() - 1]));
    }

    proptest! {
        /// A picture cut anywhere fails to load (JPEG too, which the decoder alone would fill
        /// with grey), or, cut after all its pixels (in a PNG's end chunk), loads them exactly;
        /// never a panic.
        #[test]
        fn truncated_pictures_are_refused_or_exact(cut in any::<prop::sample::Index>(), which in 0usize..2) {
            let (format, bytes) = &pictures()[which];
            let cut = cut.index(bytes.len());
            if let Ok(loaded) = load_bytes(&bytes[..cut], "cut") {
                let whole = load_bytes(bytes, "whole").unwrap();
                prop_assert!(loaded.into_data() == whole.into_data(), "{:?} cut at {} of {} loads other pixels", format, cut, bytes.len());
            }
        }

        /// Pictures with bytes changed decode or fail; never a panic.
        #[test]
        fn damaged_pictures_never_panic(flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..6), which in 0usize..2) {
            let mut bytes = pictures()[which].1.clone();
            for (at, mask) in &flips {
                let i = at.index(bytes.len());
                bytes[i] ^= mask;
            }
            let _ = load_bytes(&bytes, "flipped");
        }
    }
}
