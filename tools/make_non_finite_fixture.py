#!/usr/bin/env python3
"""Make tests/fixtures/non_finite/: where PyTorch's NaN goes in mmdet's ResNet-18.

Takes the parity fixture `resnet18` (mmdet's ResNet(depth=18, base_channels=8) with random
weights and statistics, tests/fixtures/parity/) and its input, sets one input pixel to NaN,
runs mmdet's real ResNet in eval mode (float32, as the Rust side computes) and writes
`resnet18_nan_pixel.io.safetensors`: `input` and `output.<i>`, NaN where PyTorch has NaN.

It also checks, and prints, the rules crates/burn-resnet/tests/backbone/non_finite.rs asserts without a fixture: a NaN
(or Inf) conv weight in layer2 makes C3-C5 NaN everywhere and, in training, the loss NaN (which
gradients then hold NaN, and how many, is recorded in `resnet18_nan_weight_train.counts.safetensors`: not all
do, e.g. a BatchNorm bias after the NaN conv gets a sum of finite, ReLU-masked gradients); a negative running_var in layer3 makes C4-C5 NaN in eval mode; in training a NaN
running_mean leaves the outputs finite and stays NaN.

Run from the repository root (environment: ../shared/reference/mmdet_resnet.py):
    python3 tools/make_non_finite_fixture.py [--reference-dir ../shared/reference]
"""
import argparse
import sys

import torch
from safetensors.torch import load_file, save_file

PARITY = "tests/fixtures/parity"
OUT = "tests/fixtures/non_finite/resnet18_nan_pixel.io.safetensors"
TRAIN_OUT = "tests/fixtures/non_finite/resnet18_nan_weight_train.counts.safetensors"
# (batch, channel, row, column) of the NaN pixel: inside the image, away from the borders.
PIXEL = (0, 1, 13, 9)


def model(ResNet, weights):
    # norm_eval=False (burn-resnet's default; mmdet's class default is True): train() then
    # puts the BatchNorms on batch statistics. Eval outputs do not depend on it.
    m = ResNet(depth=18, base_channels=8, norm_eval=False)
    m.load_state_dict({k: v.float() for k, v in weights.items()})
    m.eval()  # mmdet's ResNet.train() returns None, so no chaining
    return m


def nan_counts(outputs):
    return [(int(o.isnan().sum()), o.numel()) for o in outputs]


def check_rules(ResNet, weights, image):
    for value in (float("nan"), float("inf")):
        w = dict(weights)
        w["layer2.0.conv1.weight"] = w["layer2.0.conv1.weight"].float().clone()
        w["layer2.0.conv1.weight"].view(-1)[0] = value
        with torch.no_grad():
            counts = nan_counts(model(ResNet, w)(image))
        print(f"layer2.0.conv1.weight[0] = {value}: NaN per output {counts}")
        assert counts[0][0] == 0 and all(n == total for n, total in counts[1:])
    for key, value in (("layer3.0.bn1.running_var", -1.0), ("layer3.0.bn1.running_var", float("nan")),
                       ("layer3.0.bn1.running_mean", float("nan"))):
        w = dict(weights)
        w[key] = w[key].float().clone()
        w[key][0] = value
        with torch.no_grad():
            counts = nan_counts(model(ResNet, w)(image))
        print(f"{key}[0] = {value}: NaN per output {counts}")
        assert counts[0][0] == counts[1][0] == 0 and all(n == total for n, total in counts[2:])
    # Training: a NaN weight.
    w = dict(weights)
    w["layer2.0.conv1.weight"] = w["layer2.0.conv1.weight"].float().clone()
    w["layer2.0.conv1.weight"].view(-1)[0] = float("nan")
    m = model(ResNet, w)
    m.train()
    loss = sum(o.mean() for o in m(image))
    loss.backward()
    counts = {n: int(p.grad.isnan().sum()) for n, p in m.named_parameters()}
    finite = [n for n, c in counts.items() if c == 0]
    print(f"training with a NaN weight: loss {loss.item()}, parameters with no NaN gradient: {finite}")
    assert loss.isnan()
    # One float32 scalar per parameter, under mmdet's key: how many of its gradient's elements
    # are NaN.
    save_file({n: torch.tensor([float(c)]) for n, c in counts.items()}, TRAIN_OUT,
              metadata={"mmdet": "ResNet(depth=18, base_channels=8, norm_eval=False), train mode",
                        "loss": "sum of the outputs' means", "nan_weight": "layer2.0.conv1.weight[0]"})
    print(f"wrote {TRAIN_OUT}")
    # Training: a NaN running_mean.
    w = dict(weights)
    w["layer3.0.bn1.running_mean"] = w["layer3.0.bn1.running_mean"].float().clone()
    w["layer3.0.bn1.running_mean"][0] = float("nan")
    m = model(ResNet, w)
    m.train()
    outputs = m(image)
    loss = sum(o.mean() for o in outputs)
    loss.backward()
    mean = m.layer3[0].bn1.running_mean
    print(f"training with a NaN running_mean: loss {loss.item()}, outputs NaN {nan_counts(outputs)}, "
          f"updated running_mean[0] {mean[0].item()}, others finite {bool(mean[1:].isfinite().all())}")
    assert loss.isfinite() and mean[0].isnan() and mean[1:].isfinite().all()
    # Training: a NaN input pixel.
    m = model(ResNet, weights)
    m.train()
    nan_image = image.clone()
    nan_image.view(-1)[0] = float("nan")
    outputs = m(nan_image)
    print(f"training with a NaN input element: outputs NaN {nan_counts(outputs)}")
    assert all(n == total for n, total in nan_counts(outputs))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-dir", default="../shared/reference")
    args = parser.parse_args()
    sys.path.insert(0, args.reference_dir)
    from mmdet_resnet import ResNet

    weights = load_file(f"{PARITY}/resnet18.weights.safetensors")
    image = load_file(f"{PARITY}/resnet18.io.safetensors")["input"].float()
    check_rules(ResNet, weights, image)

    image = image.clone()
    image[PIXEL] = float("nan")
    with torch.no_grad():
        outputs = model(ResNet, weights)(image)
    print(f"NaN input pixel {PIXEL} of {tuple(image.shape)}: NaN per output {nan_counts(outputs)}")
    tensors = {"input": image.contiguous()}
    tensors.update({f"output.{i}": o.contiguous() for i, o in enumerate(outputs)})
    save_file(tensors, OUT, metadata={"weights": "../parity/resnet18.weights.safetensors", "nan_pixel": str(PIXEL),
                                      "mmdet": "ResNet(depth=18, base_channels=8)"})
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
