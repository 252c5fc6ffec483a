#!/usr/bin/env python3
"""ONNX Runtime baseline for `resnet bench --ort`: the config's network exported from PyTorch to
ONNX and timed in ONNX Runtime on the CPU.

The network is the one `bench/torch_baseline.py` times (`bench/mmdet_model.py` builds it from the
same `--config`, or torchvision's ResNet-50 body without one), in eval mode, exported with
`torch.onnx.export` (opset 17, every returned feature an output, the batch dimension dynamic) and
run by an `InferenceSession` with all graph optimisations (ONNX Runtime folds the BatchNorms and
fuses the activations itself), `intra_op_num_threads = --threads`, one inter-op thread and
sequential execution. Inference cases only: ONNX Runtime does not train, so `train bN` cases are
skipped (no line for them).

Needs `onnxruntime`, `onnx` and `onnxscript` (all on PyPI) besides what torch_baseline needs.
`--json` prints what `bench/torch_baseline.py --json` prints (a model line, then one line per
timed case), the builder saying `ONNX Runtime <version> on <the PyTorch builder>`; peak memory is
measured the same way (the session is built, and its first run done, before the case starts).

    python3 bench/ort_baseline.py --config configs/resnet50.toml --threads 2

`--profile` also times each stage (stem, layer1, ...) from ONNX Runtime's own per-node profile
(`SessionOptions.enable_profiling`): the median over the timed runs of the summed node times of
each stage (nodes named after the PyTorch module they came from), and of each operator type,
printed after the cases: what `resnet bench --stages` prints for the project.
"""
import argparse
import json
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mmdet_model  # noqa: E402
import torch_baseline  # noqa: E402

OPSET = 17


def export(model, in_channels, size, path):
    """Export the eval-mode `model` (a list of feature maps out) to ONNX at `path`; return the
    output names."""
    model.eval()
    example = torch.randn(1, in_channels, size, size)
    with torch.inference_mode():
        outputs = model(example)
    names = [f"feature{i}" for i in range(len(outputs))]
    torch.onnx.export(model, (example,), path, input_names=["images"], output_names=names,
                      dynamic_axes={"images": {0: "batch"}, **{n: {0: "batch"} for n in names}},
                      opset_version=OPSET, dynamo=False)
    return names


def session(path, threads, profile=False):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.enable_profiling = profile
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="burn-resnet config TOML (default: torchvision's ResNet-50 body)")
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cases", default="infer b1,infer b8")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--profile", action="store_true",
                        help="also print each stage's and each operator type's time from ONNX Runtime's profile")
    parser.add_argument("--expect-params", type=int,
                        help="time nothing unless the network has this many parameters and nothing unmirrored "
                             "(what `resnet bench --ort` passes: its own count)")
    args = parser.parse_args()
    try:
        cases = [(name, *torch_baseline.parse_case(name))
                 for name in (c.strip() for c in args.cases.split(",")) if name]
    except ValueError as error:
        parser.error(str(error))
    if args.size < 1 or args.runs < 1 or args.warmup < 0:
        parser.error("--size and --runs must be at least 1, --warmup at least 0")
    try:
        import onnxruntime
    except ImportError as error:
        print(f"bench/ort_baseline.py: needs onnxruntime (pip install onnxruntime onnx onnxscript): {error}",
              file=sys.stderr)
        sys.exit(2)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    try:
        if args.config:
            config = mmdet_model.load_config(args.config)
            model, info = mmdet_model.build_from_config(config)
        else:
            config = None
            model, info = mmdet_model.resnet50_body()
    except (mmdet_model.MissingDependency, ValueError, OSError) as error:
        print(f"bench/ort_baseline.py: {error}", file=sys.stderr)
        sys.exit(2)
    info = dict(info, builder=f"ONNX Runtime {onnxruntime.__version__} on {info['builder']} (opset {OPSET})")
    if args.json:
        print(json.dumps({"model": info}), flush=True)
    else:
        unmirrored = f"; not mirrored: {', '.join(info['unmirrored'])}" if info["unmirrored"] else ""
        print(f"{info['builder']}, {info['params']:,} parameters{unmirrored}")
    if args.expect_params is not None and (info["params"] != args.expect_params or info["unmirrored"]):
        if not args.json:
            print(f"not timed: expected {args.expect_params:,} parameters and nothing unmirrored")
        return

    in_channels = config["in_channels"] if config else 3
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.onnx")
        export(model, in_channels, args.size, path)
        del model
        runner = session(path, args.threads)
        for name, kind, batch in cases:
            if kind != "infer":
                continue  # ONNX Runtime does not train
            feed = {"images": torch.randn(batch, in_channels, args.size, args.size).numpy()}
            runner.run(None, feed)  # the first run plans memory; not part of the case

            def step():
                runner.run(None, feed)
            result = torch_baseline.run_case(name, step, batch, args.warmup, args.runs)
            if args.json:
                print(json.dumps(result), flush=True)
            else:
                print(f"{result['case']:<9} median {result['median_ms']:8.1f} ms  min {result['min_ms']:8.1f}"
                      f"  max {result['max_ms']:8.1f}  {result['images_per_s']:7.1f} img/s"
                      f"  +peak {result['peak_mib']:7.0f} MiB", flush=True)
        if args.profile:
            print_profile(path, args, in_channels, cases)
    if not args.json:
        print(f"onnxruntime {onnxruntime.__version__}, {args.threads} threads, {args.size}x{args.size}")


def stage_of(node_name):
    """The stage a node belongs to, from the module path in its name (`/layer2/layer2.0/...`)."""
    parts = node_name.strip("/").split("/")
    return parts[0] if parts and parts[0].startswith("layer") else "stem"


def print_profile(path, args, in_channels, cases):
    """Per stage and per operator type, the median over `--runs` runs of the summed node times
    in ONNX Runtime's profile, for each inference case."""
    import statistics
    from collections import defaultdict
    for name, kind, batch in cases:
        if kind != "infer":
            continue
        runner = session(path, args.threads, profile=True)
        feed = {"images": torch.randn(batch, in_channels, args.size, args.size).numpy()}
        untimed = 1 + args.warmup  # the memory-planning run and the warm-up runs
        for _ in range(untimed + args.runs):
            runner.run(None, feed)
        profile_path = runner.end_profiling()
        with open(profile_path) as f:
            profile = json.load(f)
        os.remove(profile_path)
        # Each run starts with a `model_run` session event; its nodes' kernel times follow.
        stage_ms = defaultdict(lambda: defaultdict(float))
        op_ms = defaultdict(lambda: defaultdict(float))
        run = -1
        for event in sorted(profile, key=lambda e: e.get("ts", 0)):
            if event.get("cat") == "Session" and event.get("name") == "model_run":
                run += 1
            elif event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
                ms = event["dur"] / 1e3
                stage_ms[run][stage_of(event["name"][:-len("_kernel_time")])] += ms
                op_ms[run][event.get("args", {}).get("op_name", "?")] += ms
        timed = [r for r in sorted(stage_ms) if r >= untimed]
        if not timed:
            print(f"{name}: ONNX Runtime's profile has no node events", file=sys.stderr)
            continue
        median = lambda table, key: statistics.median(table[r][key] for r in timed)  # noqa: E731
        stages = sorted({s for r in timed for s in stage_ms[r]}, key=lambda s: (s != "stem", s))
        total = sum(median(stage_ms, s) for s in stages)
        print(f"{name}: ONNX Runtime profile, median of {len(timed)} runs (node kernel times)")
        for stage in stages:
            ms = median(stage_ms, stage)
            print(f"  {stage:<7} {ms:8.1f} ms  {100 * ms / total:5.1f}%")
        ops = sorted({o for r in timed for o in op_ms[r]}, key=lambda o: -median(op_ms, o))
        print("  by operator: " + ", ".join(f"{op} {median(op_ms, op):.1f} ms" for op in ops))


if __name__ == "__main__":
    main()
