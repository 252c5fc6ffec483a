//! `resnet train` on data from disk (`[data]`): an image folder and a COCO set that
//! `resnet export-shapes` writes, read back by the real loaders; bad data refused; and a
//! backbone fine-tuned from a checkpoint (`weights`).

use std::path::Path;

use super::train::validation_loss;
use super::*;

/// Export a training config's shapes to `dir/data`; the config's text without its split sizes
/// plus `[data]` (`data` the table's lines), written to `dir/disk.toml`.
fn exported(dir: &Path, task_lines: &str, data: &str) -> PathBuf {
    let generated = dir.join("generated.toml");
    std::fs::write(
        &generated,
        format!("train_images = 512\nvalid_images = 64\n{task_lines}"),
    )
    .unwrap();
    let out = dir.join("data");
    stdout(&resnet(&[
        "export-shapes",
        "--config",
        generated.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    let config = dir.join("disk.toml");
    let data = data.replace("DATA", out.to_str().unwrap());
    // `[data]` before the backbone's tables.
    let (head, tables) = task_lines.split_at(task_lines.find('[').unwrap());
    std::fs::write(&config, format!("{head}[data]\n{data}\n{tables}")).unwrap();
    config
}

#[test]
fn classification_trains_on_an_image_folder_and_resumes_exactly() {
    let dir = std::env::temp_dir().join(format!("resnet-cli-folder-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let task = "image_size = 48\nbatch_size = 16\nepochs = 2\nlearning_rate = 0.05\n[backbone]\ndepth = 18\n\
                base_channels = 8\nzero_init_residual = false\n[backbone.norm_cfg]\ntype = \"BN\"\nmomentum = 0.5\n";
    let config = exported(&dir, task, "train = \"DATA/train\"\nvalid = \"DATA/valid\"");
    // A stray file is left out and counted.
    std::fs::write(dir.join("data/train/notes.txt"), "not an image").unwrap();

    let straight = stdout(&train(&config, &dir.join("straight"), &[]));
    assert!(
        straight.contains("train: 512 images of 4 classes from"),
        "{straight}"
    );
    assert!(straight.contains("(1 other files left out)"), "{straight}");
    let (before, after) = (
        validation_loss(&straight, "before training"),
        validation_loss(&straight, "after training"),
    );
    assert!(
        after < 0.8 * before,
        "validation loss {before} -> {after}\n{straight}"
    );
    // Learned the labels the folders give: well above chance.
    let accuracy: f64 = straight
        .lines()
        .find(|l| l.starts_with("validation after"))
        .unwrap()
        .split("accuracy ")
        .nth(1)
        .unwrap()
        .split('%')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(accuracy > 50.0, "{straight}");

    // Stopped after epoch 1 and resumed: the same order and flips, the same final model.
    stdout(&train(
        &config,
        &dir.join("resumed"),
        &["--stop-after", "1"],
    ));
    let resumed = stdout(&train(&config, &dir.join("resumed"), &["--resume"]));
    assert_eq!(
        validation_loss(&resumed, "after training"),
        after,
        "{resumed}"
    );

    // An image that does not decode stops the run with its file named, not a panic.
    std::fs::write(dir.join("data/train/circle/000003.png"), "garbage").unwrap();
    let error = stderr_of_failure(&train(&config, &dir.join("broken"), &[]));
    assert!(
        error.contains("circle/000003.png: not a decodable PNG or JPEG image"),
        "{error}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn detection_trains_on_a_coco_set_and_writes_coco_results() {
    let dir = std::env::temp_dir().join(format!("resnet-cli-coco-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let task = "task = \"detect\"\nimage_size = 48\nbatch_size = 16\nepochs = 3\nlearning_rate = 0.002\n\
                [backbone]\ndepth = 18\nbase_channels = 8\nzero_init_residual = false\n\
                [neck]\nout_channels = 16\nnum_outs = 4\n";
    let data = "train = \"DATA/train\"\nvalid = \"DATA/valid\"\n\
                train_annotations = \"DATA/annotations/instances_train.json\"\n\
                valid_annotations = \"DATA/annotations/instances_valid.json\"";
    let config = exported(&dir, task, data);
    // As real COCO sets have: a category without annotations (a fifth heatmap channel), crowd
    // regions, and a training image whose only objects are crowd regions (left out).
    let edit = |split: &str, edit: &dyn Fn(&mut serde_json::Value)| {
        let path = dir.join(format!("data/annotations/instances_{split}.json"));
        let mut root: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        root["categories"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"id": 9, "name": "unused"}));
        edit(&mut root);
        std::fs::write(&path, root.to_string()).unwrap();
    };
    edit("train", &|root| {
        for annotation in root["annotations"].as_array_mut().unwrap() {
            if annotation["image_id"] == 1 {
                annotation["iscrowd"] = 1.into();
            }
        }
    });
    edit("valid", &|root| {
        root["annotations"][0]["iscrowd"] = 1.into()
    });
    let out_dir = dir.join("run");
    let out = stdout(&train(&config, &out_dir, &[]));
    assert!(out.contains("train: 511 images, "), "{out}");
    assert!(out.contains("of 5 categories"), "{out}");
    assert!(
        out.contains("(1 images without annotations left out, as mmdet's filter_empty_gt)"),
        "{out}"
    );
    assert!(out.contains("valid: 64 images, "), "{out}");
    // COCO's AP, AP50, AP75 and AP small / medium / large after every epoch, in %, the last
    // epoch's those of the final model ("COCO AP " also starts the "COCO AP small" lines: only
    // a number may follow the name).
    const FIGURES: [&str; 6] = [
        "COCO AP",
        "COCO AP50",
        "COCO AP75",
        "COCO AP small",
        "COCO AP medium",
        "COCO AP large",
    ];
    let epoch_figure = |epoch: usize, name: &str| -> f64 {
        let prefix = format!("epoch {epoch}/3 valid: {name} ");
        let values: Vec<f64> = out
            .lines()
            .filter_map(|l| l.strip_prefix(prefix.as_str())?.strip_suffix(" %"))
            .filter_map(|value| value.parse().ok())
            .collect();
        assert_eq!(values.len(), 1, "{prefix}\n{out}");
        values[0]
    };
    for epoch in 1..=3 {
        for name in FIGURES {
            let value = epoch_figure(epoch, name);
            assert!(
                value == -1.0 || (0.0..=100.0).contains(&value),
                "{name} {value}\n{out}"
            );
        }
    }
    let last_epoch = epoch_figure(3, "COCO AP");
    let ap = |when: &str| -> f64 {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("validation {when}: COCO AP ")))
            .unwrap_or_else(|| panic!("{out}"));
        line.split("COCO AP ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(ap("after training") > ap("before training"), "{out}");
    assert!(
        (ap("after training") - last_epoch).abs() <= 0.05,
        "{last_epoch}\n{out}"
    );
    // The final line's AP, AP50, AP75, small, medium and large ("-": undefined, pycocotools' -1).
    let final_figures: Vec<f64> = out
        .lines()
        .find_map(|l| l.strip_prefix("validation after training: COCO AP "))
        .unwrap_or_else(|| panic!("{out}"))
        .split([' ', '(', ',', ';'])
        .filter_map(|token| match token {
            "-" => Some(-1.0),
            number => number.parse().ok(),
        })
        .take(6)
        .collect();
    assert_eq!(final_figures.len(), 6, "{out}");
    for (name, after) in FIGURES.iter().zip(&final_figures) {
        let last = epoch_figure(3, name);
        assert!(
            (after - last).abs() <= 0.05,
            "{name}: {last} vs {after}\n{out}"
        );
    }
    // Each epoch's figures in burn-train's logs too.
    for name in FIGURES {
        let log = out_dir.join(format!("valid/epoch-3/{}.log", name.replace(' ', "_")));
        assert!(log.is_file(), "{}", log.display());
    }
    assert!(
        out.contains("Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]"),
        "{out}"
    );
    // The results file re-scores to the printed figures.
    let results = out_dir.join("detections_valid.json");
    let rescored = stdout(&resnet(&[
        "evaluate",
        "--annotations",
        dir.join("data/annotations/instances_valid.json")
            .to_str()
            .unwrap(),
        "--results",
        results.to_str().unwrap(),
    ]));
    let summary = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.contains("maxDets="))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(summary(&rescored), summary(&out));
    assert_eq!(summary(&out).len(), 12);
    assert!(out_dir.join("detections/valid_0.png").is_file());

    // An image whose size is not its annotation file's is named, before training starts.
    image::RgbImage::new(10, 12)
        .save(dir.join("data/valid/000002.png"))
        .unwrap();
    let error = stderr_of_failure(&train(&config, &dir.join("resized"), &[]));
    assert!(
        error.contains("000002.png: is 10 x 12 pixels;")
            && error.contains("says image 2 is 48 x 48"),
        "{error}"
    );
    // An image missing from the folder is named before training starts.
    std::fs::remove_file(dir.join("data/valid/000005.png")).unwrap();
    let error = stderr_of_failure(&train(&config, &dir.join("missing"), &[]));
    assert!(
        error.contains("000005.png: image 5 of") && error.contains("is not a file"),
        "{error}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn data_settings_that_cannot_work_are_refused() {
    let dir = std::env::temp_dir().join(format!("resnet-cli-data-settings-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("empty/some_class")).unwrap();
    let backbone = "[backbone]\ndepth = 18\nbase_channels = 8\n";
    let cases = [
        (
            "image_size = 32\nbatch_size = 2\nepochs = 1\nlearning_rate = 0.1\n",
            "train_images must be at least 1 (or read data from disk with a [data] table)",
        ),
        (
            "image_size = 32\ntrain_images = 8\nbatch_size = 2\nepochs = 1\nlearning_rate = 0.1\n[data]\ntrain = \"a\"\nvalid = \"b\"\n",
            "train_images sizes the generated data; with [data] the folders give the images",
        ),
        (
            "image_size = 32\nbatch_size = 2\nepochs = 1\nlearning_rate = 0.1\n[data]\ntrain = \"a\"\nvalid = \"b\"\ntrain_annotations = \"x.json\"\n",
            "data.train_annotations: classification reads image folders",
        ),
        (
            "image_size = 32\nbatch_size = 2\nepochs = 1\nlearning_rate = 0.1\n[data]\ntrain = \"EMPTY\"\nvalid = \"EMPTY\"\n",
            "its 1 class folders hold no .png, .jpg or .jpeg images",
        ),
        (
            "image_size = 32\nbatch_size = 2\nepochs = 1\nlearning_rate = 0.1\n[data]\ntrain = \"NOWHERE\"\nvalid = \"NOWHERE\"\n",
            "nowhere: ",
        ),
        (
            "task = \"detect\"\nimage_size = 32\nbatch_size = 2\nepochs = 1\nlearning_rate = 0.1\n[data]\ntrain = \"a\"\nvalid = \"b\"\n[neck]\nout_channels = 8\nnum_outs = 4\n",
            "data.train_annotations is missing: detection reads COCO annotation files",
        ),
    ];
    let base = "image_size = 32\ntrain_images = 8\nvalid_images = 4\nbatch_size = 2\nepochs = 1\nlearning_rate = 0.1\n";
    let weights_cases = [
        (
            format!("{base}weights_source = \"timm\"\n"),
            "weights_source names the key names of `weights`, which is not given",
        ),
        (
            format!("{base}weights = \"w.pth\"\nweights_source = \"keras\"\n"),
            "unknown source 'keras'; expected one of mmdet, torchvision, timm",
        ),
        (
            format!("{base}weights = \"NOWHERE/w.pth\"\n"),
            "nowhere/w.pth is not a file",
        ),
    ];
    let cases: Vec<(String, &str)> = cases
        .iter()
        .map(|(text, message)| (text.to_string(), *message))
        .chain(weights_cases)
        .collect();
    for (index, (text, message)) in cases.iter().enumerate() {
        let config = dir.join(format!("case{index}.toml"));
        let text = text
            .replace("EMPTY", dir.join("empty").to_str().unwrap())
            .replace("NOWHERE", dir.join("nowhere").to_str().unwrap());
        let (head, tail) = match text.find("[neck]") {
            Some(at) => text.split_at(at),
            None => (text.as_str(), ""),
        };
        std::fs::write(&config, format!("{head}{backbone}{tail}")).unwrap();
        let error = stderr_of_failure(&train(&config, &dir.join(format!("run{index}")), &[]));
        assert!(
            error.contains(message),
            "case {index}: {error:?} lacks {message:?}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `weights = ...`: the backbone starts from a torchvision checkpoint (fine-tuning, with a
/// frozen stem and a backbone learning rate of 0.1x); a resumed run does not reload it.
#[test]
fn fine_tuning_starts_the_backbone_from_a_checkpoint() {
    let dir = std::env::temp_dir().join(format!("resnet-cli-fine-tune-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, weights: &str| {
        let path = dir.join(name);
        let text = format!(
            "image_size = 32\ntrain_images = 64\nvalid_images = 32\nbatch_size = 16\nepochs = 2\n\
             learning_rate = 0.05\nbackbone_lr_factor = 0.1\n{weights}\
             [backbone]\ndepth = 18\nbase_channels = 8\nstem_channels = 64\nfrozen_stages = 1\n"
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    let tuned = write(
        "tuned.toml",
        "weights = \"tests/fixtures/checkpoints/torchvision_resnet18.pth\"\nweights_source = \"torchvision\"\n",
    );
    let scratch = write("scratch.toml", "");
    let out = stdout(&train(&tuned, &dir.join("tuned"), &["--stop-after", "1"]));
    assert!(
        out.contains("weights: tests/fixtures/checkpoints/torchvision_resnet18.pth (torchvision names; 2 non-backbone tensors skipped: fc.bias, fc.weight)"),
        "{out}"
    );
    let from_scratch = stdout(&train(
        &scratch,
        &dir.join("scratch"),
        &["--stop-after", "1"],
    ));
    assert!(!from_scratch.contains("weights:"), "{from_scratch}");
    // The loaded weights, not the seeded initialisation, are what the model starts from.
    assert_ne!(
        validation_loss(&out, "before training"),
        validation_loss(&from_scratch, "before training")
    );
    let resumed = stdout(&train(&tuned, &dir.join("tuned"), &["--resume"]));
    assert!(!resumed.contains("weights:"), "{resumed}");

    // A checkpoint of another architecture is refused, naming what does not fit.
    let wrong = write(
        "wrong.toml",
        "weights = \"tests/fixtures/checkpoints/timm_resnet18d.pth\"\n",
    );
    let error = stderr_of_failure(&train(&wrong, &dir.join("wrong"), &[]));
    assert!(error.contains("timm_resnet18d.pth"), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}
