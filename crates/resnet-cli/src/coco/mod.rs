//! The COCO detection format: ground-truth files ([`annotations`]), results files
//! ([`results`]), both read entry by entry with errors that name the file, the entry and the
//! field ([`error`], [`json`]); and COCO's box metrics as pycocotools computes them
//! ([`evaluation`]) and printed as it prints them ([`Summary`]).

pub mod annotations;
pub mod error;
pub mod evaluation;
mod json;
pub mod results;
mod summary;

#[cfg(test)]
mod tests;

pub use annotations::{CocoAnnotations, CocoImage};
pub use error::CocoError;
pub use evaluation::evaluate;
pub use results::{CocoDetection, read_results, write_results};
pub use summary::Summary;
