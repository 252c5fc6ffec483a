//! Fitting an image from disk into the square input the model trains on, as mmdet's
//! `Resize(keep_ratio=True)`, `RandomFlip` and `Pad` do: scaled (bilinear) so its longer side is
//! the input's, optionally mirrored, normalised, and placed at the top left of a canvas of zeros
//! (mmdet pads after normalising, so the padding is the mean colour). Boxes follow the image.

use crate::image_input::Preprocessing;

/// Where an image went on the canvas.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    /// The image's size on the canvas, `[width, height]` in pixels.
    pub resized: [usize; 2],
    /// Canvas pixels per original pixel, `[x, y]` (the rounding of the resized size makes them
    /// differ slightly).
    pub scale: [f32; 2],
    /// Mirrored left to right.
    pub flipped: bool,
}

impl Placement {
    /// The placement of a `width × height` image on a `size × size` canvas.
    pub fn new([width, height]: [u32; 2], size: usize, flipped: bool) -> Self {
        let ratio = size as f64 / width.max(height) as f64;
        let resized =
            [width, height].map(|side| ((side as f64 * ratio).round() as usize).clamp(1, size));
        Placement {
            resized,
            scale: [
                resized[0] as f32 / width as f32,
                resized[1] as f32 / height as f32,
            ],
            flipped,
        }
    }

    /// A box `[x0, y0, x1, y1]` of the original image, on the canvas.
    pub fn to_canvas(self, [x0, y0, x1, y1]: [f32; 4]) -> [f32; 4] {
        let [sx, sy] = self.scale;
        let (x0, x1) = (x0 * sx, x1 * sx);
        let (y0, y1) = (y0 * sy, y1 * sy);
        match self.flipped {
            false => [x0, y0, x1, y1],
            true => {
                let width = self.resized[0] as f32;
                [width - x1, y0, width - x0, y1]
            }
        }
    }

    /// A box `[x0, y0, x1, y1]` on the (unflipped) canvas, in the original image's pixels.
    pub fn to_image(self, [x0, y0, x1, y1]: [f32; 4]) -> [f32; 4] {
        let [sx, sy] = self.scale;
        [x0 / sx, y0 / sy, x1 / sx, y1 / sy]
    }
}

/// `image` scaled (bilinear) so its longer side is `size`, mirrored if `flipped`, as 8-bit RGB,
/// and where it goes on the `size × size` canvas.
pub fn resized(
    image: &image::DynamicImage,
    size: usize,
    flipped: bool,
) -> (image::RgbImage, Placement) {
    let placement = Placement::new([image.width(), image.height()], size, flipped);
    let [width, height] = placement.resized;
    let mut rgb = image
        .resize_exact(
            width as u32,
            height as u32,
            image::imageops::FilterType::Triangle,
        )
        .to_rgb8();
    if flipped {
        image::imageops::flip_horizontal_in_place(&mut rgb);
    }
    (rgb, placement)
}

/// `image` placed on a `size × size` canvas and normalised (`3 × size × size`, channel-major).
pub fn letterbox(
    image: &image::DynamicImage,
    size: usize,
    preprocessing: Preprocessing,
    flipped: bool,
) -> (Vec<f32>, Placement) {
    let (rgb, placement) = resized(image, size, flipped);
    let mut pixels = vec![0.0f32; 3 * size * size];
    preprocessing.normalise_into(&rgb, &mut pixels, [size, size]);
    (pixels, placement)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_follow_the_image_and_come_back() {
        // 200 x 100 onto 64: scaled by 0.32 to 64 x 32.
        let placement = Placement::new([200, 100], 64, false);
        assert_eq!(placement.resized, [64, 32]);
        let bbox = [10.0, 20.0, 60.0, 90.0];
        let close = |a: [f32; 4], b: [f32; 4]| a.iter().zip(b).all(|(a, b)| (a - b).abs() < 1e-4);
        let canvas = placement.to_canvas(bbox);
        assert!(close(canvas, [3.2, 6.4, 19.2, 28.8]), "{canvas:?}");
        let back = placement.to_image(canvas);
        assert!(close(back, bbox), "{back:?}");
        let flipped = Placement::new([200, 100], 64, true).to_canvas(bbox);
        assert!(
            close(flipped, [64.0 - 19.2, 6.4, 64.0 - 3.2, 28.8]),
            "{flipped:?}"
        );
    }

    #[test]
    fn the_image_sits_top_left_on_mean_padding_and_flips() {
        // A 4 x 2 image, left half red, right half blue, onto 8: 8 x 4, rows 4.. padding.
        let mut rgb = image::RgbImage::new(4, 2);
        for (x, _, pixel) in rgb.enumerate_pixels_mut() {
            *pixel = image::Rgb(if x < 2 { [255, 0, 0] } else { [0, 0, 255] });
        }
        let image = image::DynamicImage::ImageRgb8(rgb);
        let (pixels, placement) = letterbox(&image, 8, Preprocessing::Pytorch, false);
        assert_eq!(placement.resized, [8, 4]);
        let red = |x: usize, y: usize| pixels[y * 8 + x];
        assert!(
            red(0, 0) > 2.0 && red(7, 0) < -1.5,
            "{} {}",
            red(0, 0),
            red(7, 0)
        );
        assert!((0..8).all(|x| red(x, 5) == 0.0 && pixels[2 * 64 + 7 * 8 + x] == 0.0));
        let (mirrored, _) = letterbox(&image, 8, Preprocessing::Pytorch, true);
        assert!(mirrored[7] > 2.0 && mirrored[0] < -1.5);
    }
}
