#!/usr/bin/env python3
"""Make the COCO evaluation fixtures in tests/fixtures/coco_eval/ with pycocotools.

Each case is a small COCO-format detection set drawn at random (images of varied sizes, boxes
spanning COCO's small/medium/large area ranges, crowd annotations, `area` fields that differ
from the boxes' w*h as segmentation areas do, non-contiguous category ids, a category without
annotations, images without annotations) and a results list (jittered copies of the true boxes,
false positives, duplicates, tied scores, more than 100 detections on one image, detections of
the category without annotations). pycocotools' `COCOeval` (iouType "bbox") scores them and
the case writes:

  <case>.gt.json        the ground truth (COCO's instances_*.json format)
  <case>.results.json   the detections (COCO's results format: image_id, category_id, bbox, score)
  <case>.stats.json     `stats`: COCOeval.summarize()'s 12 numbers (AP, AP50, AP75, APs, APm, APl,
                        AR1, AR10, AR100, ARs, ARm, ARl); `per_category`: each category id's
                        AP@[.5:.95] (area all, 100 detections; -1 where it has no annotations)

The Rust evaluator (crates/resnet-cli/src/train/coco/) must reproduce them to 1e-4.

Run from the repository root with pycocotools installed (pip install pycocotools numpy):
    python3 tools/make_coco_eval_fixtures.py
"""
import contextlib
import io
import json
import os

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

OUT = os.path.join("tests", "fixtures", "coco_eval")

# name: (seed, images, category ids (the last has no annotations), annotations per image at most)
CASES = {
    "mixed": (2026, 14, [1, 3, 7, 90], 6),
    "crowded": (7, 6, [2, 5], 9),
}


def r2(x):
    return float(round(float(x), 2))


def make_case(seed, n_images, category_ids, per_image):
    rng = np.random.default_rng(seed)
    images, annotations, results = [], [], []
    annotated = category_ids[:-1]
    ann_id = 1
    for index in range(n_images):
        image_id = 100 + 3 * index  # not contiguous, not starting at 1
        width, height = int(rng.integers(160, 400)), int(rng.integers(160, 400))
        images.append({"id": image_id, "width": width, "height": height,
                       "file_name": f"{image_id:06d}.png"})
        # Two images without annotations (one of them still gets detections).
        count = 0 if index in (3, 8) else int(rng.integers(1, per_image + 1))
        truths = []
        for _ in range(count):
            # Sides from 4 to ~200 px: areas across small (< 32²), medium and large (> 96²).
            side = float(np.exp(rng.uniform(np.log(4.0), np.log(min(width, height) * 0.8))))
            w = r2(side * rng.uniform(0.6, 1.4))
            h = r2(side * rng.uniform(0.6, 1.4))
            w, h = min(w, width - 1.0), min(h, height - 1.0)
            x = r2(rng.uniform(0, width - w))
            y = r2(rng.uniform(0, height - h))
            crowd = int(rng.uniform() < 0.12)
            # Segmentation areas are below the box's; some equal it.
            area = r2(w * h * (1.0 if rng.uniform() < 0.4 else rng.uniform(0.45, 1.0)))
            category = int(rng.choice(annotated))
            annotations.append({"id": ann_id, "image_id": image_id, "category_id": category,
                                "bbox": [x, y, w, h], "area": area, "iscrowd": crowd})
            truths.append((category, x, y, w, h))
            ann_id += 1
        # Detections: most truths found (jittered, maybe twice), false positives, tied scores.
        for category, x, y, w, h in truths:
            for _ in range(int(rng.choice([0, 1, 1, 1, 2]))):
                jitter = rng.normal(0, 0.06, 4) * np.array([w, h, w, h])
                bx, by = r2(x + jitter[0]), r2(y + jitter[1])
                bw, bh = r2(max(1.0, w + jitter[2])), r2(max(1.0, h + jitter[3]))
                label = category if rng.uniform() < 0.85 else int(rng.choice(category_ids))
                score = float(round(rng.uniform(0.3, 1.0) * 20) / 20)  # ties on purpose
                results.append({"image_id": image_id, "category_id": label,
                                "bbox": [bx, by, bw, bh], "score": score})
        many = 130 if index == 5 else int(rng.integers(0, 5))
        if index == 8:
            many = 3
        for _ in range(many):
            bw, bh = r2(rng.uniform(3, width / 2)), r2(rng.uniform(3, height / 2))
            results.append({"image_id": image_id, "category_id": int(rng.choice(category_ids)),
                            "bbox": [r2(rng.uniform(0, width - bw)), r2(rng.uniform(0, height - bh)),
                                     bw, bh],
                            "score": float(round(rng.uniform(0.0, 0.7), 3))})
    categories = [{"id": c, "name": f"class_{c}", "supercategory": "thing"}
                  for c in category_ids]
    return {"images": images, "annotations": annotations, "categories": categories}, results


def evaluate(gt_path, results):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_path)
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    per_category = {}
    for k, category in enumerate(ev.params.catIds):
        p = ev.eval["precision"][:, :, k, 0, 2]
        p = p[p > -1]
        per_category[str(category)] = float(np.mean(p)) if p.size else -1.0
    return [float(s) for s in ev.stats], per_category


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, (seed, n_images, category_ids, per_image) in CASES.items():
        gt, results = make_case(seed, n_images, category_ids, per_image)
        gt_path = os.path.join(OUT, f"{name}.gt.json")
        with open(gt_path, "w") as f:
            json.dump(gt, f)
        with open(os.path.join(OUT, f"{name}.results.json"), "w") as f:
            json.dump(results, f)
        stats, per_category = evaluate(gt_path, [dict(r) for r in results])
        with open(os.path.join(OUT, f"{name}.stats.json"), "w") as f:
            json.dump({"stats": stats, "per_category": per_category}, f, indent=1)
        crowd = sum(a["iscrowd"] for a in gt["annotations"])
        print(f"{name}: {len(gt['images'])} images, {len(gt['annotations'])} annotations "
              f"({crowd} crowd), {len(results)} detections; AP {stats[0]:.4f} AP50 {stats[1]:.4f}"
              f" APs {stats[3]:.4f} APm {stats[4]:.4f} APl {stats[5]:.4f} AR100 {stats[8]:.4f}")


if __name__ == "__main__":
    main()
