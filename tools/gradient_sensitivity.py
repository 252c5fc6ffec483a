#!/usr/bin/env python3
"""How well-conditioned each gradient of a training fixture is: writes
tests/fixtures/parity/<case>.sensitivity.safetensors, one float32 scalar per parameter (mmdet's
key): how far the float64 gradient moves, L2-relative (`‖g' − g‖ / max(‖g‖, floor)`, the floor
the Rust tests use: 1e-4 of the median gradient norm), when the input image changes by a random
relative 1e-6 (the largest of three draws).

A gradient that moves by more than float32 can resolve under such a change is ill-conditioned:
no float32 implementation can be held closer to the float64 reference than that (float32 drifts
by ~1e-5 over 40 layers). The Rust test holds each gradient to the larger of its sensitivity and
the usual bound. On `resnet50_attention_train` (GeneralizedAttention in stages 3-4 on 4x3 maps,
BatchNorm on batch statistics) 239 of 249 gradients move by more than 5e-3, the attention
`gamma`s by 0.33-1.3: ReLU and max-pool decisions flip and batch statistics of 12 positions
amplify it.

Run from the repository root (environment: ../shared/reference/mmdet_resnet.py):
    python3 tools/gradient_sensitivity.py [--case resnet50_attention_train]
"""
import argparse
import copy
import logging
import os
import sys

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures  # noqa: E402  (its case table, loader and training step)

DIR = os.path.join("tests", "fixtures", "parity")
RELATIVE_CHANGE = 1e-6
DRAWS = 32


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-dir", default=os.path.join("..", "shared", "reference"))
    parser.add_argument("--case", default="resnet50_attention_train")
    args = parser.parse_args()
    classes = make_fixtures.load_backbones(os.path.abspath(args.reference_dir))
    from mmengine.logging import MMLogger
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    resnet, kwargs = make_fixtures.backbone(make_fixtures.TRAIN_CASES[args.case], classes)
    base = os.path.join(DIR, args.case)
    weights = {k: v.double() for k, v in load_file(base + ".weights.safetensors").items()}

    def gradients(images):
        model = resnet(**copy.deepcopy(kwargs), **make_fixtures.MMDET_ONLY).double()
        model.load_state_dict(weights, strict=False)  # num_batches_tracked is not saved
        _, _, after = make_fixtures.train_step(model, images)
        return {name: after[name] for name, _ in model.named_parameters()}

    images = load_file(base + ".io.safetensors")["input"].double()
    reference = gradients(images)
    norms = sorted(g.norm().item() for g in reference.values())
    floor = 1e-4 * norms[len(norms) // 2]
    generator = torch.Generator().manual_seed(0)
    sensitivity = dict.fromkeys(reference, 0.0)
    for _ in range(DRAWS):
        moved = gradients(images * (1 + RELATIVE_CHANGE * torch.randn(images.shape, generator=generator, dtype=torch.float64)))
        for name, g in reference.items():
            change = ((moved[name] - g).norm() / max(g.norm().item(), floor)).item()
            sensitivity[name] = max(sensitivity[name], change)
    save_file({k: torch.tensor([v], dtype=torch.float32) for k, v in sensitivity.items()}, base + ".sensitivity.safetensors",
              metadata={"what": f"float64 gradient change, L2-relative, for a {RELATIVE_CHANGE} relative input change (max of {DRAWS})"})
    values = sorted(sensitivity.values())
    print(f"{args.case}: {len(values)} gradients; above 5e-3: {sum(v > 5e-3 for v in values)}; largest:")
    for name, value in sorted(sensitivity.items(), key=lambda kv: -kv[1])[:8]:
        print(f"  {value:.2e}  {name}")


if __name__ == "__main__":
    main()
