//! A COCO ground-truth file (`instances_*.json`): its images, categories and box annotations,
//! read and checked entry by entry.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use super::error::CocoError;
use super::json::{self, Entry};

/// How far (pixels) a box may reach past the image's border: COCO's own exports round boxes
/// to two decimals, so a box can end a fraction of a pixel outside; anything further is an
/// error.
pub const BORDER_SLACK: f64 = 1.0;

/// One image of the set.
#[derive(Debug, Clone, PartialEq)]
pub struct CocoImage {
    /// `id`.
    pub id: u64,
    /// `file_name`, relative to the set's image folder.
    pub file_name: String,
    /// `width` in pixels.
    pub width: u64,
    /// `height` in pixels.
    pub height: u64,
}

/// One category.
#[derive(Debug, Clone, PartialEq)]
pub struct CocoCategory {
    /// `id` (COCO's are not contiguous: 1..=90 with gaps).
    pub id: u64,
    /// `name`.
    pub name: String,
}

/// One box annotation.
#[derive(Debug, Clone, PartialEq)]
pub struct CocoAnnotation {
    /// `id`.
    pub id: u64,
    /// `image_id`, an image of the set.
    pub image_id: u64,
    /// `category_id`, a category of the set.
    pub category_id: u64,
    /// `bbox`: `[x, y, width, height]` in pixels, width and height positive.
    pub bbox: [f64; 4],
    /// `area`: the object's (segmentation) area, which sorts it into COCO's small, medium and
    /// large ranges; the box's `width × height` where the file has none.
    pub area: f64,
    /// `iscrowd` (default 0): a crowd region, which detections may match without counting as
    /// found or missed.
    pub crowd: bool,
}

/// A COCO ground-truth file, checked: unique ids, every annotation on a known image and
/// category, boxes of positive size inside their image.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CocoAnnotations {
    /// `images`, in the file's order.
    pub images: Vec<CocoImage>,
    /// `categories`, in the file's order.
    pub categories: Vec<CocoCategory>,
    /// `annotations`, in the file's order.
    pub annotations: Vec<CocoAnnotation>,
}

impl CocoAnnotations {
    /// Read and check a COCO ground-truth file.
    pub fn from_file(path: &Path) -> Result<Self, CocoError> {
        Self::from_json(path, &json::read(path)?)
    }

    /// Check the parsed JSON of the file `path` (named in errors).
    pub fn from_json(path: &Path, root: &Value) -> Result<Self, CocoError> {
        let mut set = CocoAnnotations::default();
        let mut image_index = HashMap::new();
        for (index, value) in json::list(path, root, "images")?.iter().enumerate() {
            let entry = Entry::new(path, "images", index, value)?;
            let image = CocoImage {
                id: entry.id("id")?,
                file_name: entry.string("file_name")?.to_string(),
                width: positive(&entry, "width")?,
                height: positive(&entry, "height")?,
            };
            if image_index.insert(image.id, set.images.len()).is_some() {
                return Err(entry.error("id", format!("image id {} appears twice", image.id)));
            }
            set.images.push(image);
        }
        let mut category_ids = HashMap::new();
        for (index, value) in json::list(path, root, "categories")?.iter().enumerate() {
            let entry = Entry::new(path, "categories", index, value)?;
            let category = CocoCategory {
                id: entry.id("id")?,
                name: entry.string("name")?.to_string(),
            };
            if category_ids.insert(category.id, index).is_some() {
                return Err(entry.error("id", format!("category id {} appears twice", category.id)));
            }
            set.categories.push(category);
        }
        let mut annotation_ids = HashMap::new();
        for (index, value) in json::list(path, root, "annotations")?.iter().enumerate() {
            let entry = Entry::new(path, "annotations", index, value)?;
            let annotation = annotation(&entry, &set.images, &image_index, &category_ids)?;
            if annotation_ids.insert(annotation.id, index).is_some() {
                return Err(entry.error(
                    "id",
                    format!("annotation id {} appears twice", annotation.id),
                ));
            }
            set.annotations.push(annotation);
        }
        Ok(set)
    }
}

fn positive(entry: &Entry, field: &'static str) -> Result<u64, CocoError> {
    match entry.id(field)? {
        0 => Err(entry.error(field, "must be at least 1 pixel")),
        value => Ok(value),
    }
}

fn annotation(
    entry: &Entry,
    images: &[CocoImage],
    image_index: &HashMap<u64, usize>,
    category_ids: &HashMap<u64, usize>,
) -> Result<CocoAnnotation, CocoError> {
    let id = entry.id("id")?;
    let image_id = entry.id("image_id")?;
    let image = image_index
        .get(&image_id)
        .map(|&i| &images[i])
        .ok_or_else(|| entry.error("image_id", format!("no image has id {image_id}")))?;
    let category_id = entry.id("category_id")?;
    if !category_ids.contains_key(&category_id) {
        return Err(entry.error("category_id", format!("no category has id {category_id}")));
    }
    let bbox = entry.bbox("bbox")?;
    let [x, y, w, h] = bbox;
    if w <= 0.0 || h <= 0.0 {
        return Err(entry.error(
            "bbox",
            format!("width and height must be positive, got {w} x {h}"),
        ));
    }
    let (width, height) = (image.width as f64, image.height as f64);
    if x < -BORDER_SLACK
        || y < -BORDER_SLACK
        || x + w > width + BORDER_SLACK
        || y + h > height + BORDER_SLACK
    {
        return Err(entry.error(
            "bbox",
            format!(
                "[{x}, {y}, {w}, {h}] lies outside image {image_id} ({width} x {height} pixels)"
            ),
        ));
    }
    let area = entry.optional_number("area")?.unwrap_or(w * h);
    if area < 0.0 {
        return Err(entry.error("area", format!("must not be negative, got {area}")));
    }
    let crowd = match entry.optional_number("iscrowd")? {
        None => false,
        Some(0.0) => false,
        Some(1.0) => true,
        Some(flag) => return Err(entry.error("iscrowd", format!("expected 0 or 1, got {flag}"))),
    };
    Ok(CocoAnnotation {
        id,
        image_id,
        category_id,
        bbox,
        area,
        crowd,
    })
}
