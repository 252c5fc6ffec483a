//! The data `resnet train` learns from, generated from a seed so that training needs no
//! download and every run sees the same images: the four shapes both datasets draw
//! ([`shapes`]), one shape per image for classification ([`classification`]), and one to three
//! boxed shapes per image with the detector's targets for detection ([`detection`]).

pub mod classification;
pub mod coco_set;
pub mod detection;
pub mod image_folder;
pub mod letterbox;
pub mod shapes;
