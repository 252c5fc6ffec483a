//! The training command's own dataset: images of random shapes, generated from a seed, so
//! that `resnet train` needs no download and every run sees the same data.
//!
//! Each image is `size × size` RGB: a dark, noisy background and one shape (circle, square,
//! triangle or cross) of random size, position and bright colour. The label is the shape.

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::tensor::{Device, Int, Tensor, TensorData};

/// The classes, in label order.
pub const CLASSES: [&str; 4] = ["circle", "square", "triangle", "cross"];

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

/// SplitMix64: a tiny, good-enough generator, seeded per image so any image can be drawn
/// without the ones before it.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[low, high)`.
    pub(super) fn uniform(&mut self, low: f32, high: f32) -> f32 {
        low + (high - low) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }
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
                    pixels[channel * plane + y * self.size + x] = (noisy - 0.5) / 0.25;
                }
            }
        }
        ShapeItem { pixels, label }
    }
}

/// Whether the point `(dx, dy)` from a shape's centre lies inside shape `label` of `radius`.
pub(super) fn shape_contains(label: usize, dx: f32, dy: f32, radius: f32) -> bool {
    match label {
        0 => dx * dx + dy * dy <= radius * radius,
        1 => dx.abs() <= 0.8 * radius && dy.abs() <= 0.8 * radius,
        2 => dy.abs() <= radius && dx.abs() <= 0.5 * (dy + radius),
        _ => {
            (dx.abs() <= radius / 3.0 && dy.abs() <= radius)
                || (dy.abs() <= radius / 3.0 && dx.abs() <= radius)
        }
    }
}

/// The tight box `[x0, y0, x1, y1]` of shape `label` at `(cx, cy)` (pixels).
pub(super) fn shape_box(label: usize, cx: f32, cy: f32, radius: f32) -> [f32; 4] {
    let half = if label == 1 { 0.8 * radius } else { radius };
    [cx - half, cy - half, cx + half, cy + half]
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
