#!/usr/bin/env python3
"""Make the parity fixtures in tests/fixtures/parity/ from mmdetection's real ResNet.

Each case builds mmdet's `ResNet` (or `ResNeXt`) at tiny width, randomises every parameter
and BatchNorm statistic (so no branch is silently zero, e.g. under zero_init_residual),
rounds the weights to float16-exact values (so they can be stored as F16 and the file stays
small, while the reference still computes in float32), runs it in eval mode on a random input
and writes:

  <case>.toml                  the same backbone as a burn-resnet config
  <case>.weights.safetensors   model.state_dict() with mmdet's key names, F16 (cases in
                               SHARED_WEIGHTS use another case's file)
  <case>.io.safetensors        `input` and `output.<i>` (float32); metadata `weights` names
                               the weights file, `mmdet` the reference's arguments

Run from the repository root (see ../shared/reference/mmdet_resnet.py for the environment):
    python3 tools/make_fixtures.py [--reference-dir ../shared/reference]
"""
import argparse
import importlib.util
import os
import sys

import logging

import torch
from safetensors.torch import save_file

# Our config keys are mmdet's argument names; these cases are written to both.
CASES = {
    "resnet18": dict(depth=18, base_channels=8),
    "resnet50_pytorch": dict(depth=50, base_channels=8),
    # Same parameter shapes as resnet50_pytorch: these reuse its weights file.
    "resnet50_caffe": dict(depth=50, base_channels=8, style="caffe"),
    "resnet50_v1d": dict(depth=50, base_channels=8, deep_stem=True, avg_down=True),
    # ResNeXt-50 (as 32x4d, but 4 groups of width 2 at base_channels 8, to keep the file small).
    "resnext50_4x2d": dict(depth=50, base_channels=8, groups=4, base_width=2),
    "resnet50_dilated": dict(depth=50, base_channels=8, strides=[1, 2, 1, 1], dilations=[1, 1, 2, 4]),
    "resnet50_3stages": dict(depth=50, base_channels=8, num_stages=3, strides=[1, 2, 2],
                             dilations=[1, 1, 1], out_indices=[0, 1, 2]),
    "resnet18_v1c_out13": dict(depth=18, base_channels=8, deep_stem=True, stem_channels=16,
                               out_indices=[1, 3]),
}
# Cases whose state_dict is the named case's: they share its weights file. (resnet50_3stages
# gets the same values but a file of its own: loading is strict, so layer4 would be unexpected.)
SHARED_WEIGHTS = {
    "resnet50_caffe": "resnet50_pytorch",
    "resnet50_dilated": "resnet50_pytorch",
}
# Odd sizes exercise the ceil behaviour of strided convs and of avg_down's pool.
INPUT_SHAPE = (2, 3, 45, 37)


def load_resnext(reference_dir):
    sys.path.insert(0, reference_dir)
    import mmdet_resnet  # noqa: F401  (registers mmdet.models.backbones.resnet without mmcv ops)
    import mmdet
    root = os.path.dirname(mmdet.__file__)
    spec = importlib.util.spec_from_file_location(
        "mmdet.models.backbones.resnext", os.path.join(root, "models/backbones/resnext.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return mmdet_resnet.ResNet, module.ResNeXt


def toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


def randomise(model, generator):
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var") or (name.endswith(".weight") and tensor.dim() == 1):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif tensor.dim() == 1:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.2)
            # Conv weights keep mmdet's Kaiming init; every tensor becomes float16-exact.
            tensor.copy_(tensor.half().float())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-dir", default=os.path.join("..", "shared", "reference"))
    parser.add_argument("--out", default=os.path.join("tests", "fixtures", "parity"))
    args = parser.parse_args()
    resnet, resnext = load_resnext(os.path.abspath(args.reference_dir))
    from mmengine.logging import MMLogger
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    states = {}
    os.makedirs(args.out, exist_ok=True)

    for index, (case, kwargs) in enumerate(CASES.items()):
        generator = torch.Generator().manual_seed(1000 + index)
        torch.manual_seed(1000 + index)
        cls = resnext if "groups" in kwargs else resnet
        model = cls(**kwargs)
        model.init_weights()
        randomise(model, generator)
        if case in SHARED_WEIGHTS or case == "resnet50_3stages":
            shared = states["resnet50_pytorch"]
            own = model.state_dict()
            model.load_state_dict({k: shared[k] for k in own})
        states[case] = model.state_dict()
        model.eval()
        images = torch.randn(INPUT_SHAPE, generator=generator)
        with torch.no_grad():
            outputs = model(images)

        base = os.path.join(args.out, case)
        with open(base + ".toml", "w") as f:
            f.write(f"# mmdet: {cls.__name__}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})\n")
            f.write("# Generated by tools/make_fixtures.py; do not edit.\n")
            f.write(f"# weights: {SHARED_WEIGHTS.get(case, case)}.weights.safetensors\n")
            for key, value in kwargs.items():
                f.write(f"{key} = {toml_value(value)}\n")
        weights = {k: v.half().contiguous() for k, v in model.state_dict().items()
                   if not k.endswith("num_batches_tracked")}
        if case not in SHARED_WEIGHTS:
            save_file(weights, base + ".weights.safetensors")
        io = {"input": images.contiguous()}
        io.update({f"output.{i}": o.contiguous() for i, o in enumerate(outputs)})
        save_file(io, base + ".io.safetensors", metadata={
            "mmdet": f"{cls.__name__}{kwargs}",
            "weights": f"{SHARED_WEIGHTS.get(case, case)}.weights.safetensors",
        })
        sizes = [tuple(o.shape) for o in outputs]
        print(f"{case}: {sum(v.numel() for v in weights.values())} weights, outputs {sizes}")


if __name__ == "__main__":
    main()
