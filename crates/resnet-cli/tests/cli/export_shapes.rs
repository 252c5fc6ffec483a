//! `resnet export-shapes`: a training config's generated data on disk, as an image folder and
//! as a COCO set that `resnet evaluate` (and pycocotools) read.

use std::path::Path;

use super::*;

fn config(dir: &Path, task: &str) -> PathBuf {
    let path = dir.join(format!("{task}.toml"));
    let neck = match task {
        "detect" => "[neck]\nout_channels = 8\nnum_outs = 4\n",
        _ => "",
    };
    let text = format!(
        "task = \"{task}\"\nimage_size = 32\ntrain_images = 6\nvalid_images = 5\nbatch_size = 2\n\
         epochs = 1\nlearning_rate = 0.01\n[backbone]\ndepth = 18\nbase_channels = 8\n{neck}"
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn export_shapes_writes_an_image_folder_and_a_coco_set() {
    let dir = std::env::temp_dir().join(format!("resnet-cli-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let folder = dir.join("folder");
    let classify = config(&dir, "classify");
    stdout(&resnet(&[
        "export-shapes",
        "--config",
        classify.to_str().unwrap(),
        "--out",
        folder.to_str().unwrap(),
    ]));
    assert_eq!(files(&folder), ["train", "valid"]);
    assert_eq!(
        files(&folder.join("train")),
        ["circle", "cross", "square", "triangle"]
    );
    let images: usize = files(&folder.join("valid"))
        .iter()
        .map(|class| files(&folder.join("valid").join(class)).len())
        .sum();
    assert_eq!(images, 5);

    let coco = dir.join("coco");
    let detect = config(&dir, "detect");
    stdout(&resnet(&[
        "export-shapes",
        "--config",
        detect.to_str().unwrap(),
        "--out",
        coco.to_str().unwrap(),
    ]));
    assert_eq!(files(&coco), ["annotations", "train", "valid"]);
    assert_eq!(files(&coco.join("train")).len(), 6);
    let annotations = coco.join("annotations/instances_valid.json");
    let truth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&annotations).unwrap()).unwrap();
    let image = image::open(coco.join("valid/000001.png")).unwrap();
    assert_eq!((image.width(), image.height()), (32, 32));
    // Every true box as a detection scores AP 1 under COCO's metrics.
    let perfect: Vec<serde_json::Value> = truth["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| serde_json::json!({"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}))
        .collect();
    assert!(perfect.len() >= 5, "{truth}");
    let results = dir.join("perfect.json");
    std::fs::write(&results, serde_json::Value::from(perfect).to_string()).unwrap();
    let text = stdout(&resnet(&[
        "evaluate",
        "--annotations",
        annotations.to_str().unwrap(),
        "--results",
        results.to_str().unwrap(),
    ]));
    assert!(
        text.contains("| area=   all | maxDets=100 ] = 1.000"),
        "{text}"
    );

    // A folder that holds anything is refused, and left as it was.
    let error = stderr_of_failure(&resnet(&[
        "export-shapes",
        "--config",
        detect.to_str().unwrap(),
        "--out",
        coco.to_str().unwrap(),
    ]));
    assert!(error.contains("exists and is not empty"), "{error}");
    assert_eq!(files(&coco.join("train")).len(), 6);
    std::fs::remove_dir_all(&dir).unwrap();
}
