//! The data `resnet train` learns from. Generated from a seed, so that training needs no
//! download and every run sees the same images: the four shapes both datasets draw
//! ([`shapes`]), one shape per image for classification ([`classification`]), and one to three
//! boxed shapes per image with the detector's targets for detection ([`detection`]). Or from
//! disk (`[data]`): image folders ([`image_folder`]) and COCO sets ([`coco_set`]), letterboxed
//! ([`letterbox`]) and, for training, shuffled and mirrored each epoch ([`epoch_order`]). Split
//! over several devices, the training split is re-laid out for burn-train ([`device_shards`]).

pub mod classification;
pub mod coco_set;
pub mod detection;
pub mod device_shards;
pub mod epoch_order;
pub mod image_folder;
pub mod letterbox;
pub mod parallel;
pub mod shapes;
