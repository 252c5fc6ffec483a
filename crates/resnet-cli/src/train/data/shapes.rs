//! What both training datasets draw with: the four shape classes (circle, square, triangle,
//! cross), their geometry, and the seeded generator behind every random choice.

/// The classes, in label order.
pub const CLASSES: [&str; 4] = ["circle", "square", "triangle", "cross"];

/// Mean and standard deviation of every channel of the generated images' normalised pixels
/// (`(value - mean) / std`, values in `[0, 1]`).
pub const PIXEL_MEAN: f32 = 0.5;
pub const PIXEL_STD: f32 = 0.25;

/// A generated image's normalised pixels (`3 × size × size`, channel-major) as 8-bit RGB.
pub fn to_rgb8(pixels: &[f32], size: usize) -> image::RgbImage {
    let plane = size * size;
    image::RgbImage::from_fn(size as u32, size as u32, |x, y| {
        let at = y as usize * size + x as usize;
        let value = |channel: usize| {
            let unit = pixels[channel * plane + at] * PIXEL_STD + PIXEL_MEAN;
            (unit.clamp(0.0, 1.0) * 255.0).round() as u8
        };
        image::Rgb([value(0), value(1), value(2)])
    })
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
