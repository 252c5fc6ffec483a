//! Decoding and preprocessing the input image.

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use image::imageops::FilterType;

use crate::error::CliError;

/// The picture used when `--image` is not given (224x224 PNG).
pub const SAMPLE_PNG: &[u8] = include_bytes!("../assets/sample.png");

/// ImageNet RGB mean and std on a 0-255 scale (mmdet's `data_preprocessor` for pytorch-style
/// weights).
const MEAN: [f32; 3] = [123.675, 116.28, 103.53];
const STD: [f32; 3] = [58.395, 57.12, 57.375];

/// Decode `path` (or the bundled sample), resize to `[height, width]`, normalise with the
/// ImageNet mean and std, and return a `[1, 3, height, width]` tensor.
pub fn load(path: Option<&Path>, [height, width]: [usize; 2], device: &Device) -> Result<Tensor<4>, CliError> {
    let decoded = match path {
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|e| CliError::Image { path: path.into(), message: e.to_string() })?;
            image::load_from_memory(&bytes).map_err(|e| CliError::Image {
                path: path.into(),
                message: format!("not a decodable PNG or JPEG image ({e})"),
            })?
        }
        None => image::load_from_memory(SAMPLE_PNG).map_err(|e| CliError::Image {
            path: "<bundled sample>".into(),
            message: e.to_string(),
        })?,
    };
    let rgb = decoded.resize_exact(width as u32, height as u32, FilterType::Triangle).to_rgb8();
    let mut values = vec![0f32; 3 * height * width];
    for (x, y, pixel) in rgb.enumerate_pixels() {
        for channel in 0..3 {
            let index = channel * height * width + y as usize * width + x as usize;
            values[index] = (pixel[channel] as f32 - MEAN[channel]) / STD[channel];
        }
    }
    Ok(Tensor::from_data(TensorData::new(values, [1, 3, height, width]), device))
}
