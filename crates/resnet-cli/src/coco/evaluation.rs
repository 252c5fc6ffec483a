//! COCO's box detection metrics, computed as pycocotools' `COCOeval` (iouType `"bbox"`) does:
//! ten IoU thresholds 0.50:0.05:0.95, 101-point interpolated precision, the small / medium /
//! large area ranges, at most 1, 10 and 100 detections per image and category, crowd regions
//! matched without counting, and the same tie-breaking (stable sorts by score). The fixtures in
//! `tests/fixtures/coco_eval/` (made by `tools/make_coco_eval_fixtures.py` with pycocotools)
//! hold it to pycocotools' numbers.

use std::collections::HashMap;

use super::annotations::{CocoAnnotation, CocoAnnotations};
use super::results::CocoDetection;

/// COCO's area ranges (`all`, `small`, `medium`, `large`) in square pixels; bounds inclusive.
const AREA_RANGES: [(f64, f64); 4] = [
    (0.0, 1e10),
    (0.0, 32.0 * 32.0),
    (32.0 * 32.0, 96.0 * 96.0),
    (96.0 * 96.0, 1e10),
];
/// The detections per image and category each figure keeps.
const MAX_DETECTIONS: [usize; 3] = [1, 10, 100];
/// numpy's `np.spacing(1)`, which pycocotools adds to precision's denominator.
const SPACING_OF_ONE: f64 = f64::EPSILON;

/// The twelve numbers pycocotools' `COCOeval.summarize()` prints, each `None` where it is
/// undefined (pycocotools prints -1: no annotation falls in that area range).
#[derive(Debug, Clone, PartialEq)]
pub struct CocoMetrics {
    /// AP, AP50, AP75, AP small, AP medium, AP large, AR@1, AR@10, AR@100, AR small, AR
    /// medium, AR large, in `summarize()`'s order.
    pub stats: [Option<f64>; 12],
    /// Each category id's AP@[.50:.95] (all areas, 100 detections), in the ground truth's
    /// category order; `None` for a category without annotations.
    pub per_category: Vec<(u64, Option<f64>)>,
}

/// numpy's `linspace(start, stop, count)`: `start + i * step`, the last value `stop` exactly
/// (the thresholds must compare equal to pycocotools').
fn linspace(start: f64, stop: f64, count: usize) -> Vec<f64> {
    let step = (stop - start) / (count - 1) as f64;
    (0..count)
        .map(|i| match i + 1 == count {
            true => stop,
            false => i as f64 * step + start,
        })
        .collect()
}

/// One image and category's matches at every IoU threshold, for one area range.
struct ImageEvaluation {
    /// Scores of the kept detections, best first.
    scores: Vec<f64>,
    /// `[threshold][detection]`: matched an annotation.
    matched: Vec<Vec<bool>>,
    /// `[threshold][detection]`: ignored (matched a crowd or out-of-range annotation, or
    /// unmatched and outside the area range).
    ignored: Vec<Vec<bool>>,
    /// Annotations that count (not crowd, in the area range).
    counted: usize,
}

/// Score `detections` against `truth` as pycocotools' `COCOeval` with iouType `"bbox"`.
pub fn evaluate(truth: &CocoAnnotations, detections: &[CocoDetection]) -> CocoMetrics {
    let thresholds = linspace(0.5, 0.95, 10);
    let recall_points = linspace(0.0, 1.0, 101);
    let mut image_ids: Vec<u64> = truth.images.iter().map(|i| i.id).collect();
    image_ids.sort_unstable();
    image_ids.dedup();
    let mut category_ids: Vec<u64> = truth.categories.iter().map(|c| c.id).collect();
    category_ids.sort_unstable();
    category_ids.dedup();

    let mut annotations: HashMap<(u64, u64), Vec<&CocoAnnotation>> = HashMap::new();
    for annotation in &truth.annotations {
        let key = (annotation.image_id, annotation.category_id);
        annotations.entry(key).or_default().push(annotation);
    }
    let mut found: HashMap<(u64, u64), Vec<&CocoDetection>> = HashMap::new();
    for detection in detections {
        let key = (detection.image_id, detection.category_id);
        found.entry(key).or_default().push(detection);
    }
    let most = MAX_DETECTIONS[MAX_DETECTIONS.len() - 1];
    for list in found.values_mut() {
        list.sort_by(|a, b| best_first(a.score, b.score)); // stable, as numpy's mergesort
        list.truncate(most);
    }

    let (t_count, r_count, a_count, m_count) = (
        thresholds.len(),
        recall_points.len(),
        AREA_RANGES.len(),
        MAX_DETECTIONS.len(),
    );
    // precision[t][r][k][a][m] and recall[t][k][a][m], flattened; -1 where undefined.
    let k_count = category_ids.len();
    let mut precision = vec![-1.0; t_count * r_count * k_count * a_count * m_count];
    let mut recall = vec![-1.0; t_count * k_count * a_count * m_count];
    let p_at = |t: usize, r: usize, k: usize, a: usize, m: usize| {
        ((((t * r_count + r) * k_count + k) * a_count + a) * m_count) + m
    };
    let r_at =
        |t: usize, k: usize, a: usize, m: usize| ((t * k_count + k) * a_count + a) * m_count + m;

    let empty_truth = Vec::new();
    let empty_found = Vec::new();
    for (k, &category) in category_ids.iter().enumerate() {
        for (a, &range) in AREA_RANGES.iter().enumerate() {
            let evaluations: Vec<ImageEvaluation> = image_ids
                .iter()
                .filter_map(|&image| {
                    let key = (image, category);
                    evaluate_image(
                        annotations.get(&key).unwrap_or(&empty_truth),
                        found.get(&key).unwrap_or(&empty_found),
                        range,
                        &thresholds,
                    )
                })
                .collect();
            let counted: usize = evaluations.iter().map(|e| e.counted).sum();
            if evaluations.is_empty() || counted == 0 {
                continue;
            }
            for (m, &max_detections) in MAX_DETECTIONS.iter().enumerate() {
                // Every image's first `max_detections`, ranked together by score (stable:
                // ties keep the images' order).
                let mut ranked: Vec<(f64, usize, usize)> = evaluations
                    .iter()
                    .enumerate()
                    .flat_map(|(e, evaluation)| {
                        let kept = evaluation.scores.len().min(max_detections);
                        (0..kept).map(move |d| (evaluation.scores[d], e, d))
                    })
                    .collect();
                ranked.sort_by(|x, y| best_first(x.0, y.0));
                for t in 0..t_count {
                    let curve = precision_recall(&ranked, &evaluations, t, counted);
                    recall[r_at(t, k, a, m)] = curve.last().map_or(0.0, |&(_, r)| r);
                    for (r, value) in interpolate(curve, &recall_points).into_iter().enumerate() {
                        precision[p_at(t, r, k, a, m)] = value;
                    }
                }
            }
        }
    }

    let mean_precision = |threshold: Option<f64>, a: usize, m: usize, k: Option<usize>| {
        let mut values = Vec::new();
        for (t, &value) in thresholds.iter().enumerate() {
            if threshold.is_some_and(|wanted| wanted != value) {
                continue;
            }
            for r in 0..r_count {
                for kk in 0..k_count {
                    if k.is_none_or(|k| k == kk) {
                        values.push(precision[p_at(t, r, kk, a, m)]);
                    }
                }
            }
        }
        mean_defined(&values)
    };
    let mean_recall = |a: usize, m: usize| {
        let values: Vec<f64> = (0..t_count)
            .flat_map(|t| (0..k_count).map(move |k| (t, k)))
            .map(|(t, k)| recall[r_at(t, k, a, m)])
            .collect();
        mean_defined(&values)
    };
    let last = m_count - 1;
    let stats = [
        mean_precision(None, 0, last, None),
        mean_precision(Some(0.5), 0, last, None),
        mean_precision(Some(0.75), 0, last, None),
        mean_precision(None, 1, last, None),
        mean_precision(None, 2, last, None),
        mean_precision(None, 3, last, None),
        mean_recall(0, 0),
        mean_recall(0, 1),
        mean_recall(0, last),
        mean_recall(1, last),
        mean_recall(2, last),
        mean_recall(3, last),
    ];
    // The ground truth's category order (the file's), not the sorted one.
    let per_category = truth
        .categories
        .iter()
        .map(|c| {
            let k = category_ids
                .binary_search(&c.id)
                .expect("a listed category");
            (c.id, mean_precision(None, 0, last, Some(k)))
        })
        .collect();
    CocoMetrics {
        stats,
        per_category,
    }
}

/// Descending scores as numpy's `argsort(-scores)`: NaN last, `-0.0` equal to `0.0`.
fn best_first(a: f64, b: f64) -> std::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        (false, false) => b.partial_cmp(&a).expect("neither is NaN"),
    }
}

/// The mean of the defined values (pycocotools' `s[s > -1].mean()`), `None` when none is.
fn mean_defined(values: &[f64]) -> Option<f64> {
    let defined: Vec<f64> = values.iter().copied().filter(|&v| v > -1.0).collect();
    (!defined.is_empty()).then(|| defined.iter().sum::<f64>() / defined.len() as f64)
}

/// pycocotools' `evaluateImg` for one image, category and area range: greedy matching of the
/// detections (best score first) to the annotations at each IoU threshold. `None` when the
/// image has neither annotations nor detections of the category.
fn evaluate_image(
    truth: &[&CocoAnnotation],
    detections: &[&CocoDetection],
    (low, high): (f64, f64),
    thresholds: &[f64],
) -> Option<ImageEvaluation> {
    if truth.is_empty() && detections.is_empty() {
        return None;
    }
    let outside = |area: f64| area < low || area > high;
    // Annotations that count first, then the ignored ones (a stable sort, as pycocotools').
    let mut order: Vec<usize> = (0..truth.len()).collect();
    let ignored_truth = |g: usize| truth[g].crowd || outside(truth[g].area);
    order.sort_by_key(|&g| ignored_truth(g));
    let ious: Vec<Vec<f64>> = detections
        .iter()
        .map(|d| {
            order
                .iter()
                .map(|&g| iou(&d.bbox, &truth[g].bbox, truth[g].crowd))
                .collect()
        })
        .collect();
    let truth_ignored: Vec<bool> = order.iter().map(|&g| ignored_truth(g)).collect();
    let crowd: Vec<bool> = order.iter().map(|&g| truth[g].crowd).collect();

    let mut matched = vec![vec![false; detections.len()]; thresholds.len()];
    let mut ignored = vec![vec![false; detections.len()]; thresholds.len()];
    for (t, &threshold) in thresholds.iter().enumerate() {
        let mut taken = vec![false; order.len()];
        for (d, detection) in detections.iter().enumerate() {
            let mut best_iou = threshold.min(1.0 - 1e-10);
            let mut best: Option<usize> = None;
            for g in 0..order.len() {
                // A matched annotation is taken, unless it is a crowd region.
                if taken[g] && !crowd[g] {
                    continue;
                }
                // Once matched to a counted annotation, ignored ones (sorted last) cannot win.
                if best.is_some_and(|b| !truth_ignored[b]) && truth_ignored[g] {
                    break;
                }
                if ious[d][g] < best_iou {
                    continue;
                }
                best_iou = ious[d][g];
                best = Some(g);
            }
            match best {
                Some(g) => {
                    ignored[t][d] = truth_ignored[g];
                    matched[t][d] = true;
                    taken[g] = true;
                }
                // An unmatched detection outside the area range is ignored.
                None => ignored[t][d] = outside(detection.bbox[2] * detection.bbox[3]),
            }
        }
    }
    Some(ImageEvaluation {
        scores: detections.iter().map(|d| d.score).collect(),
        matched,
        ignored,
        counted: truth_ignored.iter().filter(|&&i| !i).count(),
    })
}

/// pycocotools' box IoU (`maskApi.c`'s `bbIou`) of a detection and an annotation, boxes as
/// `[x, y, width, height]`; against a crowd region, the intersection over the detection's area.
fn iou(detection: &[f64; 4], truth: &[f64; 4], crowd: bool) -> f64 {
    let [dx, dy, dw, dh] = *detection;
    let [gx, gy, gw, gh] = *truth;
    let w = (dx + dw).min(gx + gw) - dx.max(gx);
    if w <= 0.0 {
        return 0.0;
    }
    let h = (dy + dh).min(gy + gh) - dy.max(gy);
    if h <= 0.0 {
        return 0.0;
    }
    let intersection = w * h;
    let union = match crowd {
        true => dw * dh,
        false => dw * dh + gw * gh - intersection,
    };
    intersection / union
}

/// The (precision, recall) after each ranked detection at threshold `t`; ignored detections
/// add an entry without counting as true or false positives, as pycocotools' cumulative sums.
fn precision_recall(
    ranked: &[(f64, usize, usize)],
    evaluations: &[ImageEvaluation],
    t: usize,
    counted: usize,
) -> Vec<(f64, f64)> {
    let (mut true_positives, mut false_positives) = (0.0f64, 0.0f64);
    ranked
        .iter()
        .map(|&(_, e, d)| {
            if !evaluations[e].ignored[t][d] {
                match evaluations[e].matched[t][d] {
                    true => true_positives += 1.0,
                    false => false_positives += 1.0,
                }
            }
            (
                true_positives / (true_positives + false_positives + SPACING_OF_ONE),
                true_positives / counted as f64,
            )
        })
        .collect()
}

/// Precision at each recall point: the precision envelope (made non-increasing from the
/// right) at the first entry whose recall reaches the point; 0 past the last entry.
fn interpolate(mut curve: Vec<(f64, f64)>, recall_points: &[f64]) -> Vec<f64> {
    for i in (1..curve.len()).rev() {
        if curve[i].0 > curve[i - 1].0 {
            curve[i - 1].0 = curve[i].0;
        }
    }
    let mut values = vec![0.0; recall_points.len()];
    for (value, &point) in values.iter_mut().zip(recall_points) {
        // numpy's searchsorted(side="left"): the first recall ≥ the point.
        let index = curve.partition_point(|&(_, r)| r < point);
        match curve.get(index) {
            Some(&(precision, _)) => *value = precision,
            None => break,
        }
    }
    values
}
