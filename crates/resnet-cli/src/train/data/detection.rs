//! The detection dataset: each image holds one to three shapes (the four classes of
//! [`super::shapes`]) that do not overlap, with their tight boxes; and the CenterNet-style
//! targets the detector learns (a Gaussian peak per object on a class heatmap at the head's
//! stride, plus the box size and the sub-pixel offset at each peak).

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::tensor::{Device, Tensor, TensorData};

use super::shapes::{CLASSES, PIXEL_MEAN, PIXEL_STD, Rng, shape_box, shape_contains};

/// One object: class and box `[x0, y0, x1, y1]` in pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    pub label: usize,
    pub bbox: [f32; 4],
}

/// One generated image and its objects.
#[derive(Clone, Debug)]
pub struct DetectionItem {
    /// `3 × size × size`, channel-major, normalised as the classification images.
    pub pixels: Vec<f32>,
    pub objects: Vec<Object>,
    /// The image's position in its dataset (what COCO scoring maps back to an image id).
    pub index: usize,
}

/// A split: `len` images of side `size` drawn from `seed`.
#[derive(Clone, Debug)]
pub struct DetectionDataset {
    pub len: usize,
    pub size: usize,
    pub seed: u64,
}

impl DetectionDataset {
    /// Draw image `index`.
    pub fn item(&self, index: usize) -> DetectionItem {
        let mut rng = Rng(self.seed ^ (index as u64).wrapping_mul(0x9E6C_63D0_676A_9A99));
        let size = self.size as f32;
        let count = 1 + (rng.next() % 3) as usize;
        let mut shapes: Vec<(usize, f32, f32, f32, [f32; 3])> = Vec::new();
        // Rejection sampling of non-overlapping discs (a few tries per object).
        for _ in 0..count * 20 {
            if shapes.len() == count {
                break;
            }
            let radius = rng.uniform(0.08, 0.2) * size;
            let (cx, cy) = (
                rng.uniform(radius, size - radius),
                rng.uniform(radius, size - radius),
            );
            let label = (rng.next() % CLASSES.len() as u64) as usize;
            let colour = [
                rng.uniform(0.5, 1.0),
                rng.uniform(0.5, 1.0),
                rng.uniform(0.5, 1.0),
            ];
            let apart = shapes
                .iter()
                .all(|&(_, x, y, r, _)| (x - cx).hypot(y - cy) > r + radius + 2.0);
            if apart {
                shapes.push((label, cx, cy, radius, colour));
            }
        }
        let background = [
            rng.uniform(0.0, 0.3),
            rng.uniform(0.0, 0.3),
            rng.uniform(0.0, 0.3),
        ];
        let plane = self.size * self.size;
        let mut pixels = vec![0.0f32; 3 * plane];
        for y in 0..self.size {
            for x in 0..self.size {
                let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
                let inside = shapes
                    .iter()
                    .find(|&&(label, cx, cy, r, _)| shape_contains(label, px - cx, py - cy, r));
                let base = inside.map_or(background, |shape| shape.4);
                for (channel, value) in base.iter().enumerate() {
                    let noisy = value + rng.uniform(-0.1, 0.1);
                    pixels[channel * plane + y * self.size + x] = (noisy - PIXEL_MEAN) / PIXEL_STD;
                }
            }
        }
        let objects = shapes
            .iter()
            .map(|&(label, cx, cy, r, _)| Object {
                label,
                bbox: shape_box(label, cx, cy, r),
            })
            .collect();
        DetectionItem {
            pixels,
            objects,
            index,
        }
    }
}

impl Dataset<DetectionItem> for DetectionDataset {
    fn get(&self, index: usize) -> Result<DetectionItem, burn::data::dataset::DatasetError> {
        Ok(self.item(index))
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// Images and CenterNet targets at the head's stride (`[batch, …, size/stride, size/stride]`).
#[derive(Clone, Debug)]
pub struct DetectionBatch {
    pub images: Tensor<4>,
    /// Per class, a Gaussian peak of 1 at each object's centre cell.
    pub heatmap: Tensor<4>,
    /// Box width and height in cells, at the centre cells.
    pub sizes: Tensor<4>,
    /// Centre minus its cell's corner, at the centre cells.
    pub offsets: Tensor<4>,
    /// 1 at the centre cells.
    pub mask: Tensor<4>,
    /// The objects, for evaluation.
    pub objects: Vec<Vec<Object>>,
    /// The images' positions in their dataset.
    pub indices: Vec<usize>,
}

/// Stacks items and draws their targets.
#[derive(Clone, Debug)]
pub struct DetectionBatcher {
    pub size: usize,
    /// Object classes (heatmap channels).
    pub classes: usize,
    /// The head's output stride.
    pub stride: usize,
}

impl Batcher<DetectionItem, DetectionBatch> for DetectionBatcher {
    fn batch(&self, items: Vec<DetectionItem>, device: &Device) -> DetectionBatch {
        let (batch, classes, cells) = (items.len(), self.classes, self.size / self.stride);
        let plane = cells * cells;
        let mut heatmap = vec![0.0f32; batch * classes * plane];
        let mut sizes = vec![0.0f32; batch * 2 * plane];
        let mut offsets = vec![0.0f32; batch * 2 * plane];
        let mut mask = vec![0.0f32; batch * plane];
        for (b, item) in items.iter().enumerate() {
            for object in &item.objects {
                let [x0, y0, x1, y1] = object.bbox.map(|v| v / self.stride as f32);
                let (cx, cy) = ((x0 + x1) / 2.0, (y0 + y1) / 2.0);
                let (ix, iy) = ((cx as usize).min(cells - 1), (cy as usize).min(cells - 1));
                // A peak whose spread follows the box (CenterNet's radius, simplified).
                let sigma = ((x1 - x0).max(y1 - y0) / 6.0).max(0.5);
                let peak = &mut heatmap[(b * classes + object.label) * plane..][..plane];
                for y in 0..cells {
                    for x in 0..cells {
                        let d2 = (x as f32 - ix as f32).powi(2) + (y as f32 - iy as f32).powi(2);
                        let value = (-d2 / (2.0 * sigma * sigma)).exp();
                        peak[y * cells + x] = peak[y * cells + x].max(value);
                    }
                }
                let at = iy * cells + ix;
                sizes[b * 2 * plane + at] = x1 - x0;
                sizes[b * 2 * plane + plane + at] = y1 - y0;
                offsets[b * 2 * plane + at] = cx - ix as f32;
                offsets[b * 2 * plane + plane + at] = cy - iy as f32;
                mask[b * plane + at] = 1.0;
            }
        }
        let pixels: Vec<f32> = items
            .iter()
            .flat_map(|item| item.pixels.iter().copied())
            .collect();
        let tensor = |values: Vec<f32>, channels: usize| {
            Tensor::from_data(
                TensorData::new(values, [batch, channels, cells, cells]),
                device,
            )
        };
        DetectionBatch {
            images: Tensor::from_data(
                TensorData::new(pixels, [batch, 3, self.size, self.size]),
                device,
            ),
            heatmap: tensor(heatmap, classes),
            sizes: tensor(sizes, 2),
            offsets: tensor(offsets, 2),
            mask: tensor(mask, 1),
            indices: items.iter().map(|item| item.index).collect(),
            objects: items.into_iter().map(|item| item.objects).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_peak_at_each_centre_with_its_size_and_offset() {
        use burn::data::dataloader::batcher::Batcher;
        let device = Device::flex();
        let dataset = DetectionDataset {
            len: 4,
            size: 64,
            seed: 7,
        };
        let items: Vec<_> = (0..4).map(|i| dataset.item(i)).collect();
        let batch = DetectionBatcher {
            size: 64,
            classes: CLASSES.len(),
            stride: 4,
        }
        .batch(items.clone(), &device);
        let values = |t: Tensor<4>| t.into_data().try_to_vec::<f32>().unwrap();
        let (heatmap, sizes, mask) = (
            values(batch.heatmap),
            values(batch.sizes),
            values(batch.mask),
        );
        let objects: usize = items.iter().map(|item| item.objects.len()).sum();
        assert_eq!(mask.iter().filter(|m| **m == 1.0).count(), objects);
        let plane = 16 * 16;
        for (b, item) in items.iter().enumerate() {
            for object in &item.objects {
                let [x0, y0, x1, y1] = object.bbox.map(|v| v / 4.0);
                let at = ((y0 + y1) / 2.0) as usize * 16 + ((x0 + x1) / 2.0) as usize;
                assert_eq!(heatmap[(b * 4 + object.label) * plane + at], 1.0);
                assert!((sizes[b * 2 * plane + at] - (x1 - x0)).abs() < 1e-6);
            }
        }
        assert_eq!(batch.indices, [0, 1, 2, 3]);
    }
}
