#!/usr/bin/env python3
"""PyTorch baseline for `resnet bench`: the same ResNet-50 feature cases in PyTorch eager.

torchvision's ResNet-50 body (conv1 … layer4, no avgpool/fc, random weights: nothing is
downloaded) returns C2..C5 like burn-resnet's `configs/resnet50.toml`. Cases, f32, 224x224:
  infer b1, infer b8   eval mode under torch.inference_mode()
  train b8             train mode; loss = sum of the four outputs' means; backward;
                       SGD(lr=0.01, momentum=0.9, dampening=0)
Each case: `--warmup` untimed runs, then `--runs` timed runs; peak memory is the process's peak
resident set (VmHWM) during the case minus its resident set just before (model and input built,
libraries loaded): what the case itself needs (Linux). One JSON object per case on stdout with
`--json` (what `resnet bench --torch` reads), a table otherwise.

    python3 bench/torch_baseline.py --threads 2
"""
import argparse
import json
import os
import statistics
import time

import torch
import torchvision


class Body(torch.nn.Module):
    def __init__(self):
        super().__init__()
        net = torchvision.models.resnet50(weights=None)
        self.stem = torch.nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layers = torch.nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])

    def forward(self, x):
        x = self.stem(x)
        outs = []
        for layer in self.layers:
            x = layer(x)
            outs.append(x)
        return outs


def reset_peak():
    """Reset the peak resident size; return the current one (MiB), the case's baseline."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return memory_mib("VmRSS:")


def memory_mib(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def run_case(name, step, batch, warmup, runs):
    # Measured from just before the first step: weights and input are in memory, activations,
    # gradients and optimizer state are not.
    baseline = reset_peak()
    for _ in range(warmup):
        step()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1e3)
    median = statistics.median(times)
    return {
        "case": name,
        "median_ms": median,
        "min_ms": min(times),
        "max_ms": max(times),
        "images_per_s": batch * 1e3 / median,
        "peak_mib": memory_mib("VmHWM:") - baseline,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cases", default="infer b1,infer b8,train b8")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = Body()

    results = []
    for name in [c.strip() for c in args.cases.split(",") if c.strip()]:
        kind, batch = name.split()
        batch = int(batch.lstrip("b"))
        images = torch.randn(batch, 3, 224, 224)
        if kind == "infer":
            model.eval()

            def step():
                with torch.inference_mode():
                    model(images)
        else:
            model.train()
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, dampening=0)

            def step():
                optimizer.zero_grad(set_to_none=True)
                loss = sum(o.mean() for o in model(images))
                loss.backward()
                optimizer.step()
        results.append(run_case(name, step, batch, args.warmup, args.runs))

    for r in results:
        if args.json:
            print(json.dumps(r), flush=True)
        else:
            print(f"{r['case']:<9} median {r['median_ms']:8.1f} ms  min {r['min_ms']:8.1f}  max {r['max_ms']:8.1f}"
                  f"  {r['images_per_s']:7.1f} img/s  +peak {r['peak_mib']:7.0f} MiB")
    if not args.json:
        print(f"torch {torch.__version__}, {args.threads} threads")


if __name__ == "__main__":
    main()
