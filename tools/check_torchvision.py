#!/usr/bin/env python3
"""Full-size check against torchvision: build torchvision's resnet18 and resnet50 (random
weights and random BatchNorm statistics, eval mode), save them with `torch.save` exactly as
torchvision's checkpoints are saved, load each into burn-resnet through `resnet extract
--weights`, and compare burn-resnet's C2..C5 with torchvision's on the same preprocessed image.

Needs python3 with torch and torchvision, and the release binary:
    cargo build --release -p resnet-cli
    python3 tools/check_torchvision.py [--resnet target/release/resnet] [--arch resnet18 resnet50]
Files are written to a temporary directory and removed. Exit status 1 if any level is off by
more than --tolerance (max |difference| / max |torchvision value|, default 1e-4).
"""
import argparse
import os
import subprocess
import sys
import tempfile

import torch
import torchvision
from safetensors.torch import load_file

DEPTHS = {"resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet101": 101, "resnet152": 152}


def randomise_norms(model, generator):
    # Random affine parameters and running statistics, so that a mix-up of BatchNorm tensors
    # (weight/bias, mean/var) changes the features.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.weight.data = 0.5 + torch.rand(n, generator=generator)
            module.bias.data = 0.2 * torch.randn(n, generator=generator)
            module.running_mean.data = 0.2 * torch.randn(n, generator=generator)
            module.running_var.data = 0.5 + torch.rand(n, generator=generator)


def features(model, x):
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    outs = []
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        x = layer(x)
        outs.append(x)
    return outs


def check(arch, resnet, directory, tolerance):
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None)
    randomise_norms(model, generator)
    model.eval()
    weights = os.path.join(directory, f"{arch}.pth")
    torch.save(model.state_dict(), weights)
    config = os.path.join(directory, f"{arch}.toml")
    with open(config, "w") as f:
        f.write(f"depth = {DEPTHS[arch]}\n")
    out = os.path.join(directory, f"{arch}.features.safetensors")
    command = [resnet, "extract", "--config", config, "--weights", weights, "--out", out]
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0:
        print(run.stdout, run.stderr, sep="\n")
        raise SystemExit(f"{' '.join(command)} failed")
    ours = load_file(out)
    with torch.no_grad():
        reference = features(model, ours["input"])
    worst = 0.0
    for level, expected in zip(("C2", "C3", "C4", "C5"), reference):
        actual = ours[level]
        error = ((actual - expected).abs().max() / expected.abs().max()).item()
        worst = max(worst, error)
        print(f"{arch} {level} {tuple(actual.shape)}: relative error {error:.2e}")
    return worst <= tolerance


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resnet", default=os.path.join("target", "release", "resnet"))
    parser.add_argument("--arch", nargs="+", default=["resnet18", "resnet50"], choices=sorted(DEPTHS))
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        results = [check(arch, args.resnet, directory, args.tolerance) for arch in args.arch]
    print("all within tolerance" if all(results) else "some levels are off")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
