//! `resnet evaluate`: COCO's metrics of a results file, as pycocotools prints them.

use super::*;

#[test]
fn evaluate_prints_pycocotools_summary_of_a_fixture() {
    let text = stdout(&resnet(&[
        "evaluate",
        "--annotations",
        "tests/fixtures/coco_eval/mixed.gt.json",
        "--results",
        "tests/fixtures/coco_eval/mixed.results.json",
    ]));
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("tests/fixtures/coco_eval/mixed.stats.json")).unwrap(),
    )
    .unwrap();
    let stats = expected["stats"].as_array().unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("maxDets=")).collect();
    assert_eq!(lines.len(), 12, "{text}");
    for (line, value) in lines.iter().zip(stats) {
        let printed = line.rsplit("= ").next().unwrap();
        assert_eq!(printed, format!("{:.3}", value.as_f64().unwrap()), "{line}");
    }
    assert!(
        lines[1].contains("Average Precision  (AP) @[ IoU=0.50      | area=   all | maxDets=100 ]"),
        "{}",
        lines[1]
    );
    assert!(
        text.contains("category 90 (class_90) = - (no annotations)"),
        "{text}"
    );
}

#[test]
fn evaluate_names_the_bad_entry_of_a_results_file() {
    let path =
        std::env::temp_dir().join(format!("resnet-cli-evaluate-{}.json", std::process::id()));
    std::fs::write(
        &path,
        r#"[{"image_id": 100, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5},
            {"image_id": 100, "category_id": 2, "bbox": [0, 0, 5, 5], "score": 0.5}]"#,
    )
    .unwrap();
    let error = stderr_of_failure(&resnet(&[
        "evaluate",
        "--annotations",
        "tests/fixtures/coco_eval/mixed.gt.json",
        "--results",
        path.to_str().unwrap(),
    ]));
    std::fs::remove_file(&path).unwrap();
    assert!(
        error.contains("results[1]: category_id: no category of the ground truth has id 2"),
        "{error}"
    );
}
