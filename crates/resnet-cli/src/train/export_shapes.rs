//! `resnet export-shapes`: a training config's generated data written to disk, as the formats
//! `resnet train` (and other tools) read from disk: the classification shapes as an image folder
//! (`OUT/{train,valid}/<class>/NNNNNN.png`), the detection shapes as a COCO set
//! (`OUT/{train,valid}/NNNNNN.png` and `OUT/annotations/instances_{train,valid}.json`, as COCO
//! 2017 lays out its own).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::config::{Task, TrainConfig};
use super::data::classification::ShapesDataset;
use super::data::detection::DetectionDataset;
use super::data::shapes::{CLASSES, to_rgb8};
use crate::error::CliError;

/// The options of `resnet export-shapes`.
#[derive(clap::Args)]
pub struct ExportShapesArgs {
    /// A training config (configs/train/*.toml) of generated shapes: its task, image size, split
    /// sizes and seed choose the images.
    #[arg(long)]
    config: PathBuf,
    /// The folder to write; it must not exist yet or be empty.
    #[arg(long)]
    out: PathBuf,
}

/// Write the config's training and validation splits under `--out`.
pub fn run(args: &ExportShapesArgs) -> Result<(), CliError> {
    let config = TrainConfig::from_file(&args.config)?;
    let out = &args.out;
    if std::fs::read_dir(out).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(output_error(
            out,
            "exists and is not empty; name a new folder (nothing was written)",
        ));
    }
    let splits = [
        ("train", config.train_images, config.seed),
        ("valid", config.valid_images, config.valid_seed()),
    ];
    for (split, len, seed) in splits {
        match config.task {
            Task::Classify => {
                let dataset = ShapesDataset {
                    len,
                    size: config.image_size,
                    seed,
                };
                write_folder(&dataset, &out.join(split))?;
            }
            Task::Detect => {
                let dataset = DetectionDataset {
                    len,
                    size: config.image_size,
                    seed,
                };
                let annotations = out
                    .join("annotations")
                    .join(format!("instances_{split}.json"));
                write_coco(&dataset, &out.join(split), &annotations)?;
            }
        }
        println!("{split}: {len} images");
    }
    let layout = match config.task {
        Task::Classify => "an image folder: OUT/{train,valid}/<class>/*.png",
        Task::Detect => {
            "a COCO set: OUT/{train,valid}/*.png, OUT/annotations/instances_{train,valid}.json"
        }
    };
    println!("wrote {} as {layout}", out.display());
    Ok(())
}

fn output_error(path: &Path, message: impl std::fmt::Display) -> CliError {
    CliError::Output {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

fn create_dir(path: &Path) -> Result<(), CliError> {
    std::fs::create_dir_all(path).map_err(|e| output_error(path, e))
}

fn save(image: &image::RgbImage, path: &Path) -> Result<(), CliError> {
    image.save(path).map_err(|e| output_error(path, e))
}

/// One sub-folder per class (the class names, so that sorting them gives label order), one
/// PNG per image.
fn write_folder(dataset: &ShapesDataset, root: &Path) -> Result<(), CliError> {
    for class in CLASSES {
        create_dir(&root.join(class))?;
    }
    for index in 0..dataset.len {
        let item = dataset.item(index);
        let path = root
            .join(CLASSES[item.label])
            .join(format!("{index:06}.png"));
        save(&to_rgb8(&item.pixels, dataset.size), &path)?;
    }
    Ok(())
}

/// The images as PNGs in `images`, their boxes as a COCO annotation file: image ids from 1,
/// category ids 1..=4 in class order, boxes `[x, y, width, height]`, areas their boxes'.
fn write_coco(
    dataset: &DetectionDataset,
    images: &Path,
    annotations: &Path,
) -> Result<(), CliError> {
    create_dir(images)?;
    let (mut image_entries, mut annotation_entries) = (Vec::new(), Vec::new());
    for index in 0..dataset.len {
        let item = dataset.item(index);
        let (id, file_name) = (index + 1, format!("{:06}.png", index + 1));
        save(
            &to_rgb8(&item.pixels, dataset.size),
            &images.join(&file_name),
        )?;
        image_entries.push(json!({
            "id": id, "file_name": file_name, "width": dataset.size, "height": dataset.size,
        }));
        for object in &item.objects {
            let [x0, y0, x1, y1] = object.bbox.map(f64::from);
            annotation_entries.push(json!({
                "id": annotation_entries.len() + 1,
                "image_id": id,
                "category_id": object.label + 1,
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": (x1 - x0) * (y1 - y0),
                "iscrowd": 0,
            }));
        }
    }
    let categories: Vec<Value> = CLASSES
        .iter()
        .enumerate()
        .map(|(label, name)| json!({"id": label + 1, "name": name, "supercategory": "shape"}))
        .collect();
    let root = json!({
        "info": {"description": "resnet export-shapes", "version": "1.0"},
        "images": image_entries,
        "annotations": annotation_entries,
        "categories": categories,
    });
    create_dir(annotations.parent().expect("a file under OUT/annotations"))?;
    std::fs::write(annotations, root.to_string()).map_err(|e| output_error(annotations, e))
}
