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

With `--dcn DCN|DCNv2 --stage-with-dcn 0,1,1,1 [--deform-groups N]` (what `resnet bench --torch`
passes for a config with `dcn`) the 3x3 conv of every Bottleneck in the selected stages is
mmcv's DCN / DCNv2 rebuilt on `torchvision.ops.deform_conv2d` (`tools/reference_dcn.py`), as
PyTorch users without compiled mmcv ops run it. `--frozen-stages N` and `--norm-eval` train as
mmdet's ResNet does with those arguments (passed for configs that set them).

    python3 bench/torch_baseline.py --threads 2
"""
import argparse
import json
import os
import statistics
import sys
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


def train_mode(model, frozen_stages, norm_eval):
    """mmdet's ResNet.train(): frozen parts (stem, then layer1..frozen_stages) get no gradients
    and keep their norms in eval mode; `norm_eval` puts every BatchNorm in eval mode."""
    model.train()
    frozen = ([model.stem] if frozen_stages >= 0 else []) + list(model.layers[:max(frozen_stages, 0)])
    for part in frozen:
        part.eval()
        for p in part.parameters():
            p.requires_grad_(False)
    if norm_eval:
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()


def with_deformable_convs(model, kind, stages, deform_groups):
    """Replace the 3x3 conv of every Bottleneck of the selected stages by mmcv's DCN/DCNv2."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
    import reference_dcn
    pack = reference_dcn.ModulatedDeformConv2dPack if kind == "DCNv2" else reference_dcn.DeformConv2dPack
    for layer, selected in zip(model.layers, stages):
        for block in layer if selected else []:
            conv = block.conv2
            block.conv2 = pack(conv.in_channels, conv.out_channels, 3, stride=conv.stride[0], padding=conv.padding[0],
                               dilation=conv.dilation[0], groups=conv.groups, deform_groups=deform_groups)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cases", default="infer b1,infer b8,train b8")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--dcn", choices=["DCN", "DCNv2"])
    parser.add_argument("--stage-with-dcn", default="0,0,0,0")
    parser.add_argument("--deform-groups", type=int, default=1)
    parser.add_argument("--frozen-stages", type=int, default=-1)
    parser.add_argument("--norm-eval", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = Body()
    if args.dcn:
        with_deformable_convs(model, args.dcn, [s == "1" for s in args.stage_with_dcn.split(",")], args.deform_groups)

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
            train_mode(model, args.frozen_stages, args.norm_eval)
            optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9,
                                        dampening=0)

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
