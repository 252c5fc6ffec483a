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
import json
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
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
    parser = torch_baseline.argument_parser(__doc__.splitlines()[0], "infer b1,infer b8", "--ort")
    parser.add_argument("--profile", action="store_true",
                        help="also print each stage's and each operator type's time from ONNX Runtime's profile")
    args, cases = torch_baseline.parse_arguments(parser)
    try:
        import onnxruntime
    except ImportError as error:
        print(f"bench/ort_baseline.py: needs onnxruntime (pip install onnxruntime onnx onnxscript): {error}",
              file=sys.stderr)
        sys.exit(2)
    model, info, in_channels = torch_baseline.build_model(args, "bench/ort_baseline.py")
    info = dict(info, builder=f"ONNX Runtime {onnxruntime.__version__} on {info['builder']} (opset {OPSET})")
    if not torch_baseline.report_model(info, args):
        return

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
            torch_baseline.report_case(torch_baseline.run_case(name, step, batch, args.warmup, args.runs), args)
        if args.profile:
            print_profile(path, args, in_channels, cases)
    if not args.json:
        print(f"onnxruntime {onnxruntime.__version__}, {args.threads} threads, {args.size}x{args.size}")


def stage_of(node_name):
    """The stage a node belongs to, from the module path in its name: mmdet's `/layer2/...`, or
    the torchvision body's `/layers.1.0/...` (its `layers` list counts from 0)."""
    first = node_name.strip("/").split("/")[0]
    if first.startswith("layers."):
        return f"layer{int(first.split('.')[1]) + 1}"
    return first if first.startswith("layer") else "stem"


def conv_shape(node_args):
    """`(in channels, out channels, input side, kernel, stride)` of a Conv node from its profile
    arguments (the NCHW input and OIHW weight shapes ONNX Runtime records), or None."""
    if node_args.get("op_name") != "Conv":
        return None
    try:
        inputs = [next(iter(s.values())) for s in node_args["input_type_shape"]]
        output = next(iter(node_args["output_type_shape"][0].values()))
        x, w = inputs[0], inputs[1]
        return (x[1], w[0], x[2], w[2], max(1, round(x[2] / output[2])))
    except (KeyError, IndexError, StopIteration, ZeroDivisionError):
        return None


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
        conv_ms = defaultdict(lambda: defaultdict(list))
        run = -1
        for event in sorted(profile, key=lambda e: e.get("ts", 0)):
            if event.get("cat") == "Session" and event.get("name") == "model_run":
                run += 1
            elif event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
                ms = event["dur"] / 1e3
                stage_ms[run][stage_of(event["name"][:-len("_kernel_time")])] += ms
                op_ms[run][event.get("args", {}).get("op_name", "?")] += ms
                shape = conv_shape(event.get("args", {}))
                if shape:
                    conv_ms[run][shape].append(ms)
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
        # Per conv shape (as the project's `conv_profile` lists them): the median over runs of
        # the mean time of that shape's nodes, and how many nodes have it.
        print("  by conv shape (in>out channels, kernel/stride, input side): ms per node x nodes")
        shapes = sorted({c for r in timed for c in conv_ms[r]}, key=lambda c: (-c[2], c[3] != 7, c))
        for shape in shapes:
            per_node = statistics.median(
                sum(conv_ms[r][shape]) / len(conv_ms[r][shape]) for r in timed if conv_ms[r][shape])
            nodes = len(conv_ms[timed[0]][shape])
            cin, cout, side, kernel, stride = shape
            label = f"{kernel}x{kernel}" + (f"/{stride}" if stride > 1 else "") + f" {cin}>{cout} @{side}"
            print(f"    {label:<24} {per_node:8.3f} ms x{nodes}")


if __name__ == "__main__":
    main()
