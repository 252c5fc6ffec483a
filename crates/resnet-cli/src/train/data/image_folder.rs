//! A classification set on disk as an image folder, `ROOT/<class>/*.{png,jpg,jpeg}` (torchvision's
//! `ImageFolder` layout): classes are the sub-folders in sorted order, labels their positions.
//!
//! burn-dataset has the same reader (`ImageFolderDataset::new_classification`), behind its
//! `vision` feature, which also builds its download support (an HTTP client) and decodes each
//! image into a vector of per-pixel enum values without resizing or flipping; this one walks the
//! folders itself, names the file of any image that fails to decode, and letterboxes, flips and
//! normalises as the model's input needs ([`super::letterbox`]), in an order shuffled each
//! epoch ([`super::epoch_order`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::data::dataset::{Dataset, DatasetError};

use super::classification::ShapeItem;
use super::epoch_order::EpochOrder;
use super::letterbox::letterbox;
use super::parallel::load_in_order;
use crate::error::CliError;
use crate::image_input::{Preprocessing, decode};

/// File extensions read as images (any case).
const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// The images of an image folder and their labels.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    /// The folder.
    pub root: PathBuf,
    /// Class names (the sub-folders), in label order.
    pub classes: Vec<String>,
    /// Every image and its label, by class then file name.
    pub items: Vec<(PathBuf, usize)>,
    /// Files that are not images (by extension), left out.
    pub skipped: usize,
}

fn data_error(path: &Path, message: impl std::fmt::Display) -> CliError {
    CliError::Train(format!("{}: {message}", path.display()))
}

fn sorted_entries(dir: &Path) -> Result<Vec<std::fs::DirEntry>, CliError> {
    let mut entries = std::fs::read_dir(dir)
        .and_then(|entries| entries.collect::<Result<Vec<_>, _>>())
        .map_err(|e| data_error(dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    Ok(entries)
}

impl ImageFolder {
    /// List `root`'s classes and images; an error when it has no class folder or no image.
    pub fn scan(root: &Path) -> Result<Self, CliError> {
        let mut folder = ImageFolder {
            root: root.to_path_buf(),
            classes: Vec::new(),
            items: Vec::new(),
            skipped: 0,
        };
        for class in sorted_entries(root)? {
            if !class.path().is_dir() {
                folder.skipped += 1;
                continue;
            }
            let label = folder.classes.len();
            folder
                .classes
                .push(class.file_name().to_string_lossy().into_owned());
            for file in sorted_entries(&class.path())? {
                let path = file.path();
                let extension = path.extension().map(|e| e.to_string_lossy().to_lowercase());
                match extension {
                    Some(e) if IMAGE_EXTENSIONS.contains(&e.as_str()) && path.is_file() => {
                        folder.items.push((path, label))
                    }
                    _ => folder.skipped += 1,
                }
            }
        }
        if folder.classes.is_empty() {
            return Err(data_error(
                root,
                "holds no class folders (expected ROOT/<class>/<image>.png)",
            ));
        }
        if folder.items.is_empty() {
            return Err(data_error(
                root,
                format!(
                    "its {} class folders hold no .png, .jpg or .jpeg images",
                    folder.classes.len()
                ),
            ));
        }
        Ok(folder)
    }
}

/// An image folder as training or validation data: each image letterboxed to `size` and
/// normalised; training images in each epoch's order, half of them mirrored.
#[derive(Debug, Clone)]
pub struct ImageFolderDataset {
    pub folder: ImageFolder,
    pub size: usize,
    pub preprocessing: Preprocessing,
    /// Training: each epoch's order and mirroring; validation: none (folder order).
    pub order: Option<Arc<EpochOrder>>,
    /// Threads that decode a batch's images.
    pub threads: usize,
}

impl Dataset<ShapeItem> for ImageFolderDataset {
    fn get(&self, index: usize) -> Result<ShapeItem, DatasetError> {
        let (image, flip) = self
            .order
            .as_ref()
            .map_or((index, false), |o| o.pick(index));
        let (path, label) =
            self.folder.items.get(image).ok_or_else(|| {
                DatasetError::new(std::io::Error::other(format!("no image {index}")))
            })?;
        let decoded =
            decode(path).map_err(|e| DatasetError::new(std::io::Error::other(e.to_string())))?;
        let (pixels, _) = letterbox(&decoded, self.size, self.preprocessing, flip);
        Ok(ShapeItem {
            pixels,
            label: *label,
        })
    }

    fn get_many(&self, indexes: Vec<usize>) -> Result<Vec<ShapeItem>, DatasetError> {
        load_in_order(&indexes, self.threads, |index| self.get(index))
    }

    fn len(&self) -> usize {
        self.folder.items.len()
    }
}
