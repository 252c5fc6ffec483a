//! What can be wrong with a COCO file, named down to the entry and the field.

use std::path::PathBuf;

/// An unreadable or invalid COCO annotation or results file.
#[derive(Debug, thiserror::Error)]
pub enum CocoError {
    /// The file could not be read, is not JSON, or lacks a top-level part.
    #[error("{path}: {message}", path = .path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// One entry (an image, a category, an annotation or a detection) has a bad field.
    #[error("{path}: {entry}: {field}: {message}", path = .path.display())]
    Entry {
        /// The file.
        path: PathBuf,
        /// The entry: its list, position and id where it has one, e.g. `annotations[3] (id 57)`.
        entry: String,
        /// The field, e.g. `bbox`.
        field: &'static str,
        /// What is wrong with it: expected and got.
        message: String,
    },
}
