//! Pictures of the detection task's results: a validation image, enlarged, with its true boxes
//! and the detector's boxes drawn on it, as a PNG (`OUT/detections/valid_N.png`).

use super::data::detection::Object;
use super::models::detector::Detection;
use crate::error::CliError;

/// Colours of the classes' boxes.
const COLOURS: [[u8; 3]; 4] = [[255, 80, 80], [80, 200, 255], [255, 220, 0], [200, 90, 255]];

/// `picture` (the image as the model saw it), 4x enlarged, with its true boxes (white) and
/// `detections` (by class colour, scores ≥ 0.3), as a PNG.
pub fn draw(
    picture: &image::RgbImage,
    objects: &[Object],
    detections: &[Detection],
    path: &std::path::Path,
) -> Result<(), CliError> {
    const SCALE: usize = 4;
    let side = picture.width().max(picture.height()) as usize * SCALE;
    let mut image = image::imageops::resize(
        picture,
        picture.width() * SCALE as u32,
        picture.height() * SCALE as u32,
        image::imageops::FilterType::Nearest,
    );
    let mut rectangle = |bbox: &[f32; 4], colour: [u8; 3]| {
        let [x0, y0, x1, y1] =
            bbox.map(|v| ((v * SCALE as f32).round().max(0.0) as usize).min(side - 1));
        for x in x0..=x1 {
            for y in [y0, y1] {
                image.put_pixel(x as u32, y as u32, image::Rgb(colour));
            }
        }
        for y in y0..=y1 {
            for x in [x0, x1] {
                image.put_pixel(x as u32, y as u32, image::Rgb(colour));
            }
        }
    };
    for object in objects {
        rectangle(&object.bbox, [255, 255, 255]);
    }
    for detection in detections.iter().filter(|d| d.score >= 0.3) {
        rectangle(&detection.bbox, COLOURS[detection.label % COLOURS.len()]);
    }
    image
        .save(path)
        .map_err(|e| CliError::Train(format!("{}: {e}", path.display())))
}
