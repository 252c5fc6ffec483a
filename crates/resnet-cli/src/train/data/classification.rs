//! The classification dataset: images of random shapes, generated from a seed, so that
//! `resnet train` needs no download and every run sees the same data.
//!
//! Each image is `size × size` RGB: a dark, noisy background and one shape (circle, square,
//! triangle or cross) of random size, position and bright colour. The label is the shape.

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::shapes::{CLASSES, PIXEL_MEAN, PIXEL_STD, Rng, shape_contains};

/// One generated image and its class.
#[derive(Clone, Debug)]
pub struct ShapeItem {
    /// `3 × size × size` values, channel-major, normalised to mean 0 and std ~1.
    pub pixels: Vec<f32>,
    /// Index into [`CLASSES`].
    pub label: usize,
}

/// A split of the dataset: `len` images drawn from `seed`.
#[derive(Clone, Debug)]
pub struct ShapesDataset {
    /// Images per split.
    pub len: usize,
    /// Image side in pixels.
    pub size: usize,
    /// Seed of this split (train and validation use different ones).
    pub seed: u64,
}

impl ShapesDataset {
    /// Draw image `index`.
    pub fn item(&self, index: usize) -> ShapeItem {
        let mut rng = Rng(self.seed ^ (index as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
        let label = (rng.next() % CLASSES.len() as u64) as usize;
        let size = self.size as f32;
        let radius = rng.uniform(0.18, 0.38) * size;
        let (cx, cy) = (
            rng.uniform(radius, size - radius),
            rng.uniform(radius, size - radius),
        );
        let background: [f32; 3] = [
            rng.uniform(0.0, 0.3),
            rng.uniform(0.0, 0.3),
            rng.uniform(0.0, 0.3),
        ];
        let colour: [f32; 3] = [
            rng.uniform(0.5, 1.0),
            rng.uniform(0.5, 1.0),
            rng.uniform(0.5, 1.0),
        ];
        let plane = self.size * self.size;
        let mut pixels = vec![0.0f32; 3 * plane];
        for y in 0..self.size {
            for x in 0..self.size {
                let inside =
                    shape_contains(label, x as f32 + 0.5 - cx, y as f32 + 0.5 - cy, radius);
                let base = if inside { colour } else { background };
                for (channel, value) in base.iter().enumerate() {
                    let noisy = value + rng.uniform(-0.1, 0.1);
                    pixels[channel * plane + y * self.size + x] = (noisy - PIXEL_MEAN) / PIXEL_STD;
                }
            }
        }
        ShapeItem { pixels, label }
    }
}

impl Dataset<ShapeItem> for ShapesDataset {
    fn get(&self, index: usize) -> Result<ShapeItem, burn::data::dataset::DatasetError> {
        Ok(self.item(index))
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// A batch: images `[batch, 3, size, size]` and labels `[batch]`.
#[derive(Clone, Debug)]
pub struct ShapeBatch {
    pub images: Tensor<4>,
    pub labels: Tensor<1, Int>,
}

/// Stacks items into a [`ShapeBatch`] on the training device.
#[derive(Clone, Debug)]
pub struct ShapeBatcher {
    /// Image side in pixels.
    pub size: usize,
}

impl Batcher<ShapeItem, ShapeBatch> for ShapeBatcher {
    fn batch(&self, items: Vec<ShapeItem>, device: &Device) -> ShapeBatch {
        let batch = items.len();
        let pixels: Vec<f32> = items
            .iter()
            .flat_map(|item| item.pixels.iter().copied())
            .collect();
        let labels: Vec<i64> = items.iter().map(|item| item.label as i64).collect();
        ShapeBatch {
            images: Tensor::from_data(
                TensorData::new(pixels, [batch, 3, self.size, self.size]),
                device,
            ),
            labels: Tensor::from_data(TensorData::new(labels, [batch]), device),
        }
    }
}
