//! Scoring detections: intersection over union, and mean average precision at an IoU
//! threshold (VOC's all-point interpolated AP), as `resnet train` reports it for the detection
//! task.

use super::data::detection::Object;
use super::models::detector::Detection;

/// Intersection over union of two boxes; NaN when a coordinate is NaN (`f32::min`/`max` would
/// drop it and could score a NaN box as a perfect match), so such a box matches nothing.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    if a.iter().chain(b).any(|v| v.is_nan()) {
        return f32::NAN;
    }
    let overlap =
        (a[2].min(b[2]) - a[0].max(b[0])).max(0.0) * (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    overlap / (area(a) + area(b) - overlap).max(1e-9)
}

/// Mean average precision at IoU `threshold` over the classes that have objects (VOC's
/// all-point interpolated AP): per class, detections by descending score are true positives
/// when they match a not-yet-matched object of that class with IoU ≥ `threshold`.
pub fn mean_average_precision(
    detections: &[Vec<Detection>],
    objects: &[Vec<Object>],
    classes: usize,
    threshold: f32,
) -> (f64, Vec<Option<f64>>) {
    let per_class: Vec<Option<f64>> = (0..classes)
        .map(|class| {
            let total = objects
                .iter()
                .flatten()
                .filter(|o| o.label == class)
                .count();
            if total == 0 {
                return None;
            }
            let mut ranked: Vec<(usize, &Detection)> = detections
                .iter()
                .enumerate()
                .flat_map(|(image, ds)| {
                    ds.iter()
                        .filter(|d| d.label == class)
                        .map(move |d| (image, d))
                })
                .collect();
            ranked.sort_by(|a, b| b.1.score.total_cmp(&a.1.score));
            let mut matched: Vec<Vec<bool>> =
                objects.iter().map(|os| vec![false; os.len()]).collect();
            let (mut true_positives, mut precision_recall) =
                (0usize, Vec::with_capacity(ranked.len()));
            for (rank, (image, detection)) in ranked.iter().enumerate() {
                let best = objects[*image]
                    .iter()
                    .enumerate()
                    .filter(|(i, o)| o.label == class && !matched[*image][*i])
                    .map(|(i, o)| (i, iou(&o.bbox, &detection.bbox)))
                    .max_by(|a, b| a.1.total_cmp(&b.1));
                if let Some((i, _)) = best.filter(|(_, overlap)| *overlap >= threshold) {
                    matched[*image][i] = true;
                    true_positives += 1;
                }
                precision_recall.push((
                    true_positives as f64 / (rank + 1) as f64,
                    true_positives as f64 / total as f64,
                ));
            }
            // Area under the precision envelope (precision made non-increasing from the right).
            let (mut ap, mut previous_recall, mut envelope) = (0.0, 0.0, 0.0f64);
            let envelopes: Vec<f64> = precision_recall
                .iter()
                .rev()
                .map(|(p, _)| {
                    envelope = envelope.max(*p);
                    envelope
                })
                .collect();
            for ((_, recall), precision) in precision_recall.iter().zip(envelopes.iter().rev()) {
                ap += (recall - previous_recall) * precision;
                previous_recall = *recall;
            }
            Some(ap)
        })
        .collect();
    let present: Vec<f64> = per_class.iter().flatten().copied().collect();
    (
        present.iter().sum::<f64>() / present.len().max(1) as f64,
        per_class,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(label: usize, bbox: [f32; 4]) -> Object {
        Object { label, bbox }
    }

    fn detection(label: usize, score: f32, bbox: [f32; 4]) -> Detection {
        Detection { label, score, bbox }
    }

    #[test]
    fn iou_of_boxes() {
        assert_eq!(iou(&[0.0, 0.0, 2.0, 2.0], &[0.0, 0.0, 2.0, 2.0]), 1.0);
        assert_eq!(iou(&[0.0, 0.0, 2.0, 2.0], &[1.0, 0.0, 3.0, 2.0]), 2.0 / 6.0);
        assert_eq!(iou(&[0.0, 0.0, 1.0, 1.0], &[2.0, 2.0, 3.0, 3.0]), 0.0);
        assert!(iou(&[f32::NAN, 0.0, 2.0, 2.0], &[0.0, 0.0, 2.0, 2.0]).is_nan());
        assert!(iou(&[0.0, 0.0, 2.0, 2.0], &[0.0, 0.0, 2.0, f32::NAN]).is_nan());
    }

    #[test]
    fn a_detection_with_a_nan_coordinate_is_a_false_positive() {
        let a = [0.0, 0.0, 10.0, 10.0];
        let objects = vec![vec![object(0, a)]];
        // Ranked first, over the object's own box: without the NaN check its IoU came out
        // as 1e11 and it took the match.
        let detections = vec![vec![
            detection(0, 0.9, [f32::NAN, 0.0, 10.0, 10.0]),
            detection(0, 0.8, a),
        ]];
        let (_, per_class) = mean_average_precision(&detections, &objects, 1, 0.5);
        // Precision 0 then 1/2 at recall 1: AP 1/2.
        assert_eq!(per_class, vec![Some(0.5)]);
    }

    #[test]
    fn average_precision_ranks_detections_and_counts_each_object_once() {
        let a = [0.0, 0.0, 10.0, 10.0];
        let b = [20.0, 20.0, 30.0, 30.0];
        let objects = vec![vec![object(0, a)], vec![object(0, b), object(1, a)]];
        // Perfect: every object found, nothing else.
        let perfect = vec![
            vec![detection(0, 0.9, a)],
            vec![detection(0, 0.8, b), detection(1, 0.7, a)],
        ];
        let (map, per_class) = mean_average_precision(&perfect, &objects, 3, 0.5);
        assert_eq!((map, per_class), (1.0, vec![Some(1.0), Some(1.0), None]));
        // Class 0: a false positive ranked first, then both objects: precision 1/2 then 2/3 at
        // recall 1/2 and 1 → the envelope is 2/3 everywhere: AP 2/3. Class 1: a duplicate
        // detection of its one object is a false positive after the true one: AP 1.
        let ranked = vec![
            vec![detection(0, 0.95, b), detection(0, 0.9, a)],
            vec![
                detection(0, 0.8, b),
                detection(1, 0.7, a),
                detection(1, 0.6, a),
            ],
        ];
        let (map, per_class) = mean_average_precision(&ranked, &objects, 3, 0.5);
        assert!(
            (per_class[0].unwrap() - 2.0 / 3.0).abs() < 1e-12,
            "{per_class:?}"
        );
        assert_eq!(per_class[1], Some(1.0));
        assert!((map - (2.0 / 3.0 + 1.0) / 2.0).abs() < 1e-12);
        // A box that overlaps too little does not count: recall 0.
        let shifted = vec![vec![detection(0, 0.9, [6.0, 6.0, 16.0, 16.0])], vec![]];
        let (_, per_class) = mean_average_precision(&shifted, &objects, 2, 0.5);
        assert_eq!(per_class[0], Some(0.0));
    }
}
