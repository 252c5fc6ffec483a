#!/usr/bin/env python3
"""PyTorch baseline for `resnet bench`: the config's network timed in PyTorch eager.

`--config PATH` (what `resnet bench --torch` passes) builds the burn-resnet config's network with
mmdetection's own ResNet/ResNeXt/Res2Net (`bench/mmdet_model.py`; needs mmdet==3.3.0
mmcv-lite==2.1.0 mmengine, or torchvision alone for configs that are exactly a torchvision
ResNet), so the two sides time the same architecture: the parameter count is reported to check
it. Without `--config` it is torchvision's ResNet-50 body (conv1 … layer4, C2..C5), as before.
Weights are the builders' default random init; nothing is downloaded.

Cases, f32, `--size` x `--size` inputs (default 224):
  infer bN   eval mode under torch.inference_mode()
  train bN   train mode (mmdet's `train()`: frozen_stages, norm_eval); loss = sum of the output
             features' means; backward; SGD(lr=0.01, momentum=0.9, dampening=0) over the
             parameters that require gradients
Each case: `--warmup` untimed runs, then `--runs` timed runs; peak memory is the process's peak
resident set (VmHWM) during the case minus its resident set just before (model and input built,
libraries loaded): what the case itself needs (Linux).

`--json` (what `resnet bench --torch` reads) prints one line per object on stdout: first
  {"model": {"builder": "mmdet 3.3.0 ResNet", "params": 23508032, "unmirrored": []}}
(`unmirrored`: config settings the builder could not reproduce), then one per case:
  {"case": "infer b1", "median_ms": …, "min_ms": …, "max_ms": …, "images_per_s": …, "peak_mib": …}
Without `--json`, a table. With `--expect-params N` (`resnet bench --torch` passes its own count)
nothing is timed unless the network has N parameters and nothing unmirrored: the model line
alone says what was built.

    python3 bench/torch_baseline.py --config configs/resnext101_32x4d.toml --threads 2
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mmdet_model  # noqa: E402


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


def run_case(name, step, batch, warmup, runs, device="cpu"):
    # Measured from just before the first step: weights and input are in memory, activations,
    # gradients and optimizer state are not. On a GPU: the GPU memory PyTorch allocated, and
    # each step waits for the GPU to finish.
    gpu = device != "cpu"
    if gpu:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device) / 2**20
    else:
        baseline = reset_peak()
    for _ in range(warmup):
        step()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        if gpu:
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    median = statistics.median(times)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if gpu else memory_mib("VmHWM:")
    return {
        "case": name,
        "median_ms": median,
        "min_ms": min(times),
        "max_ms": max(times),
        "images_per_s": batch * 1e3 / median,
        "peak_mib": peak - baseline,
    }


def parse_case(name):
    """`"infer b8"` → `("infer", 8)`."""
    kind, _, batch = name.partition(" ")
    if kind not in ("infer", "train") or not batch.startswith("b") or not batch[1:].isdigit() or int(batch[1:]) < 1:
        raise ValueError(f"case {name!r}: expected 'infer bN' or 'train bN'")
    return kind, int(batch[1:])


def make_step(model, kind, images):
    """One timed step of a case; sets the model's mode first."""
    if kind == "infer":
        model.eval()

        def step():
            with torch.inference_mode():
                model(images)
        return step

    model.train()  # mmdet's train(): freezes frozen_stages, keeps norms in eval under norm_eval
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9,
                                dampening=0)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = sum(out.mean() for out in model(images))
        loss.backward()
        optimizer.step()
    return step


def argument_parser(description, default_cases, runtime):
    """The options both baselines take (`runtime` names the flag of `resnet bench` that runs it)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", help="burn-resnet config TOML (default: torchvision's ResNet-50 body)")
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cases", default=default_cases)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--expect-params", type=int,
                        help="time nothing unless the network has this many parameters and nothing unmirrored "
                             f"(what `resnet bench {runtime}` passes: its own count)")
    return parser


def parse_arguments(parser):
    """The parsed options and the cases as `(name, kind, batch)`; a usage error for bad ones."""
    args = parser.parse_args()
    try:
        cases = [(name, *parse_case(name)) for name in (c.strip() for c in args.cases.split(",")) if name]
    except ValueError as error:
        parser.error(str(error))
    if args.size < 1 or args.runs < 1 or args.warmup < 0:
        parser.error("--size and --runs must be at least 1, --warmup at least 0")
    return args, cases


def build_model(args, script):
    """The config's network (`--config`, else torchvision's ResNet-50 body), what built it, and
    its input channels; `script` names the caller in errors (exit status 2)."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    try:
        if args.config:
            config = mmdet_model.load_config(args.config)
            model, info = mmdet_model.build_from_config(config)
            return model, info, config["in_channels"]
        model, info = mmdet_model.resnet50_body()
        return model, info, 3
    except (mmdet_model.MissingDependency, ValueError, OSError) as error:
        print(f"{script}: {error}", file=sys.stderr)
        sys.exit(2)


def report_model(info, args):
    """Print what was built; whether to time it (`--expect-params`: only the network asked for)."""
    if args.json:
        print(json.dumps({"model": info}), flush=True)
    else:
        unmirrored = f"; not mirrored: {', '.join(info['unmirrored'])}" if info["unmirrored"] else ""
        print(f"{info['builder']}, {info['params']:,} parameters{unmirrored}")
    if args.expect_params is not None and (info["params"] != args.expect_params or info["unmirrored"]):
        # Not the network asked for: no timings to compare (the model line says why).
        if not args.json:
            print(f"not timed: expected {args.expect_params:,} parameters and nothing unmirrored")
        return False
    return True


def report_case(result, args):
    """Print one case's timings: a JSON line or a table row."""
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        print(f"{result['case']:<9} median {result['median_ms']:8.1f} ms  min {result['min_ms']:8.1f}"
              f"  max {result['max_ms']:8.1f}  {result['images_per_s']:7.1f} img/s"
              f"  +peak {result['peak_mib']:7.0f} MiB", flush=True)


def main():
    parser = argument_parser(__doc__.splitlines()[0], "infer b1,infer b8,train b8", "--torch")
    parser.add_argument("--device", default="cpu",
                        help="cpu, or a CUDA GPU (cuda, cuda:1): time the model there (`resnet bench --torch-device`)")
    args, cases = parse_arguments(parser)
    model, info, in_channels = build_model(args, "bench/torch_baseline.py")
    if not report_model(info, args):
        return
    if args.device != "cpu" and not torch.cuda.is_available():
        print(f"bench/torch_baseline.py: --device {args.device}: this PyTorch sees no CUDA GPU", file=sys.stderr)
        sys.exit(2)
    model = model.to(args.device)
    for name, kind, batch in cases:
        images = torch.randn(batch, in_channels, args.size, args.size, device=args.device)
        step = make_step(model, kind, images)
        report_case(run_case(name, step, batch, args.warmup, args.runs, args.device), args)
    if not args.json:
        print(f"torch {torch.__version__}, {args.device}, {args.threads} threads, {args.size}x{args.size}")


if __name__ == "__main__":
    main()
