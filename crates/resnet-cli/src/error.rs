//! Errors of the `resnet` command.

use std::path::PathBuf;

use burn_resnet::ResNetError;

/// Everything the CLI reports before exiting with status 1.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// From the library: config, weights, backend or input.
    #[error(transparent)]
    ResNet(#[from] ResNetError),

    /// A COCO annotation or results file is unreadable or invalid.
    #[error(transparent)]
    Coco(#[from] crate::coco::CocoError),

    /// The image could not be read or decoded.
    #[error("image {path}: {message}", path = .path.display())]
    Image {
        /// The image path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },

    /// The features could not be written.
    #[error("output {path}: {message}", path = .path.display())]
    Output {
        /// The output path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },

    /// `--size` cannot be used.
    #[error("--size: {0}")]
    Size(String),

    /// A training config or run failed.
    #[error("train: {0}")]
    Train(String),

    /// A benchmark could not run or read the PyTorch baseline.
    #[error("bench: {0}")]
    Bench(String),

    /// The binary was built without any backend feature.
    #[error("this build has no backend; rebuild with `--features flex` (or ndarray, wgpu, cuda)")]
    NoBackend,
}
