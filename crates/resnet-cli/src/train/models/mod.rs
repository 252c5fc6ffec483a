//! The models `resnet train` trains around the backbone, each with burn-train's training and
//! validation steps: a pooled linear classifier ([`classifier`]) and an FPN with a
//! CenterNet-style detection head ([`detector`]).

pub mod classifier;
pub mod detector;
