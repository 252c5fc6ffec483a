//! The COCO reader and evaluator against pycocotools' numbers (fixtures made by
//! `tools/make_coco_eval_fixtures.py`) and on bad files.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::results::CocoDetection;
use super::*;

/// The names of the twelve summary figures, for messages.
const NAMES: [&str; 12] = [
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/coco_eval")
}

/// pycocotools' stats and per-category AP of a fixture case (-1: undefined).
fn expected(case: &str) -> (Vec<f64>, Vec<(u64, f64)>) {
    let path = fixtures().join(format!("{case}.stats.json"));
    let root: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let stats = root["stats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let per_category = root["per_category"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, v)| (id.parse().unwrap(), v.as_f64().unwrap()))
        .collect();
    (stats, per_category)
}

fn assert_close(what: &str, ours: Option<f64>, theirs: f64) {
    match ours {
        None => assert_eq!(
            theirs, -1.0,
            "{what}: undefined here, {theirs} in pycocotools"
        ),
        Some(ours) => assert!(
            theirs >= 0.0 && (ours - theirs).abs() <= 1e-4,
            "{what}: {ours} here, {theirs} in pycocotools"
        ),
    }
}

#[test]
#[cfg_attr(
    no_workspace_files,
    ignore = "reads the repository's fixtures: run it there"
)]
fn every_fixture_matches_pycocotools() {
    let mut cases = 0;
    for case in ["mixed", "crowded"] {
        let truth =
            CocoAnnotations::from_file(&fixtures().join(format!("{case}.gt.json"))).unwrap();
        let results_path = fixtures().join(format!("{case}.results.json"));
        let detections = read_results(&results_path, &truth).unwrap();
        let metrics = evaluate(&truth, &detections);
        let (stats, per_category) = expected(case);
        for ((name, ours), theirs) in NAMES.iter().zip(metrics.stats).zip(stats) {
            assert_close(&format!("{case} {name}"), ours, theirs);
        }
        assert_eq!(metrics.per_category.len(), per_category.len());
        for (id, theirs) in per_category {
            let ours = metrics
                .per_category
                .iter()
                .find(|(c, _)| *c == id)
                .unwrap()
                .1;
            assert_close(&format!("{case} category {id}"), ours, theirs);
        }
        // Not a degenerate fixture: partial scores, and an undefined category.
        let ap = metrics.stats[0].unwrap();
        assert!(ap > 0.1 && ap < 0.9, "{case}: AP {ap}");
        assert!(metrics.per_category.iter().any(|(_, ap)| ap.is_none()));
        cases += 1;
    }
    let on_disk = std::fs::read_dir(fixtures())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".stats.json")
        })
        .count();
    assert_eq!(cases, on_disk, "a fixture case without a test");
}

fn truth_json() -> Value {
    json!({
        "images": [
            {"id": 1, "file_name": "a.png", "width": 100, "height": 80},
            {"id": 2, "file_name": "b.png", "width": 50, "height": 50},
        ],
        "categories": [{"id": 3, "name": "cat"}, {"id": 9, "name": "dog"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 3, "bbox": [10, 10, 20, 30], "area": 500, "iscrowd": 0},
            {"id": 11, "image_id": 2, "category_id": 9, "bbox": [0, 0, 50, 50]},
        ],
    })
}

fn read_truth(root: &Value) -> Result<CocoAnnotations, CocoError> {
    CocoAnnotations::from_json(Path::new("set.json"), root)
}

#[test]
fn a_perfect_result_scores_one_and_the_defaults_apply() {
    let truth = read_truth(&truth_json()).unwrap();
    // The missing area defaults to the box's; the missing iscrowd to 0.
    assert_eq!(
        (truth.annotations[1].area, truth.annotations[1].crowd),
        (2500.0, false)
    );
    let detections: Vec<CocoDetection> = truth
        .annotations
        .iter()
        .map(|a| CocoDetection {
            image_id: a.image_id,
            category_id: a.category_id,
            bbox: a.bbox,
            score: 0.5,
        })
        .collect();
    let metrics = evaluate(&truth, &detections);
    // One small object (area 500 < 32²) and one medium (2500): nothing is large.
    let expected = [1.0, 1.0, 1.0, 1.0, 1.0, -1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -1.0];
    for ((name, ours), theirs) in NAMES.iter().zip(metrics.stats).zip(expected) {
        assert_close(name, ours, theirs);
    }
    // Nothing detected: zeros, not undefined.
    let none = evaluate(&truth, &[]);
    assert_eq!(none.stats[0], Some(0.0));
    assert_eq!(none.stats[8], Some(0.0));
}

/// The error of a ground truth whose JSON `edit` changed, as text.
fn truth_error(edit: impl FnOnce(&mut Value)) -> String {
    let mut root = truth_json();
    edit(&mut root);
    read_truth(&root).unwrap_err().to_string()
}

/// A change to the ground truth's JSON.
type Edit = Box<dyn FnOnce(&mut Value)>;

#[test]
fn bad_ground_truth_names_the_entry_and_the_field() {
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|r| r["annotations"][0]["bbox"] = json!([1, 2, 0, 3])),
            "set.json: annotations[0] (id 10): bbox: width and height must be positive, got 0 x 3",
        ),
        (
            Box::new(|r| r["annotations"][0]["bbox"] = json!([90, 10, 20, 30])),
            "annotations[0] (id 10): bbox: [90, 10, 20, 30] lies outside image 1 (100 x 80 pixels)",
        ),
        (
            Box::new(|r| r["annotations"][0]["bbox"] = json!([1, 2, 3])),
            "bbox: expected [x, y, width, height] (four finite numbers), got [1,2,3]",
        ),
        (
            Box::new(|r| r["annotations"][1]["category_id"] = json!(4)),
            "annotations[1] (id 11): category_id: no category has id 4",
        ),
        (
            Box::new(|r| r["annotations"][1]["image_id"] = json!(7)),
            "annotations[1] (id 11): image_id: no image has id 7",
        ),
        (
            Box::new(|r| r["annotations"][1]["id"] = json!(10)),
            "annotations[1] (id 10): id: annotation id 10 appears twice",
        ),
        (
            Box::new(|r| r["annotations"][0]["iscrowd"] = json!(2)),
            "iscrowd: expected 0 or 1, got 2",
        ),
        (
            Box::new(|r| r["annotations"][0]["area"] = json!(-1)),
            "area: must not be negative, got -1",
        ),
        (
            Box::new(|r| r["images"][1]["width"] = json!(0)),
            "images[1] (id 2): width: must be at least 1 pixel",
        ),
        (
            Box::new(|r| r["images"][1]["id"] = json!(1)),
            "images[1] (id 1): id: image id 1 appears twice",
        ),
        (
            Box::new(|r| r["categories"][0]["name"] = json!(5)),
            "categories[0] (id 3): name: expected a string, got a number",
        ),
        (
            Box::new(|r| {
                r["images"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("file_name")
                    .map(drop)
                    .unwrap()
            }),
            "images[0] (id 1): file_name: missing",
        ),
        (
            Box::new(|r| {
                r.as_object_mut()
                    .unwrap()
                    .remove("annotations")
                    .map(drop)
                    .unwrap()
            }),
            "set.json: expected a top-level \"annotations\" list (COCO's instances format)",
        ),
        (
            Box::new(|r| r["annotations"][0] = json!([1])),
            "annotations[0]: expected a JSON object, got a list",
        ),
    ];
    for (edit, message) in cases {
        let error = truth_error(edit);
        assert!(error.contains(message), "{error:?} lacks {message:?}");
    }
}

#[test]
fn results_are_checked_against_the_ground_truth() {
    let dir = std::env::temp_dir().join(format!("coco-results-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let truth = read_truth(&truth_json()).unwrap();
    let path = dir.join("results.json");
    let detections = vec![CocoDetection {
        image_id: 2,
        category_id: 9,
        bbox: [1.5, 2.0, 10.25, 3.0],
        score: 0.75,
    }];
    std::fs::write(&path, serde_json::to_string(&detections).unwrap()).unwrap();
    assert_eq!(read_results(&path, &truth).unwrap(), detections);
    let bad = [
        (
            json!([{"image_id": 5, "category_id": 9, "bbox": [0, 0, 1, 1], "score": 0.5}]),
            "results[0]: image_id: no image of the ground truth has id 5",
        ),
        (
            json!([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}]),
            "results[0]: category_id: no category of the ground truth has id 1",
        ),
        (
            json!([{"image_id": 1, "category_id": 9, "bbox": [0, 0, -1, 1], "score": 0.5}]),
            "results[0]: bbox: width and height must not be negative, got -1 x 1",
        ),
        (
            json!([{"image_id": 1, "category_id": 9, "bbox": [0, 0, 1, 1]}]),
            "results[0]: score: missing",
        ),
        (
            json!({"image_id": 1}),
            "expected a list of detections (COCO's results format), got an object",
        ),
    ];
    for (value, message) in bad {
        std::fs::write(&path, value.to_string()).unwrap();
        let error = read_results(&path, &truth).unwrap_err().to_string();
        assert!(error.contains(message), "{error:?} lacks {message:?}");
    }
    std::fs::write(&path, "[{").unwrap();
    let error = read_results(&path, &truth).unwrap_err().to_string();
    assert!(error.contains("results.json: not JSON"), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}
