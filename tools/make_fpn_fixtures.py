#!/usr/bin/env python3
"""Make tests/fixtures/fpn.safetensors: mmdetection 3.3's real `FPN` neck on random
ResNet-like inputs (C2..C5 at tiny widths, odd sizes), every weight random, in float32, with the
outputs and, computed in float64, the gradients of loss = sum of the outputs' means with respect
to every parameter and input. Keys: `<case>.input.<i>`, `<case>.output.<i>`,
`<case>.<mmdet parameter name>`, `<case>.grad.<parameter name or input.i>`; the metadata holds
each case's FPN arguments as TOML.

    python3 tools/make_fpn_fixtures.py
"""
import copy
import importlib.util
import os
import sys
import types

import torch
from safetensors.torch import save_file

CASES = {
    # Faster R-CNN's: an extra level by max-pooling.
    "faster_rcnn": dict(in_channels=[8, 16, 32, 64], out_channels=8, num_outs=5),
    # RetinaNet's: from C3, extra convs on the last input.
    "retinanet": dict(in_channels=[8, 16, 32, 64], out_channels=8, start_level=1, add_extra_convs="on_input", num_outs=5),
    # FCOS's: from C3, extra convs on the last output, ReLU between them, one level more.
    "fcos": dict(in_channels=[8, 16, 32, 64], out_channels=8, start_level=1, add_extra_convs="on_output",
                 relu_before_extra_convs=True, num_outs=6),
    # Extra convs on the last lateral; `add_extra_convs = true` means on_input.
    "on_lateral": dict(in_channels=[8, 16, 32, 64], out_channels=6, add_extra_convs="on_lateral", num_outs=6),
    "extra_true": dict(in_channels=[8, 16, 32, 64], out_channels=6, start_level=2, add_extra_convs=True, num_outs=4),
    # A sub-range of the inputs: end_level 2 (inclusive) uses C2..C4.
    "end_level_2": dict(in_channels=[8, 16, 32, 64], out_channels=8, start_level=0, end_level=2, num_outs=3),
}
SHAPES = [(2, 8, 25, 21), (2, 16, 13, 11), (2, 32, 7, 6), (2, 64, 4, 3)]


def load_fpn():
    import mmdet
    root = os.path.dirname(mmdet.__file__)
    for package in ("mmdet.models", "mmdet.models.necks"):
        if package not in sys.modules:
            module = types.ModuleType(package)
            module.__path__ = [os.path.join(root, *package.split(".")[1:])]
            sys.modules[package] = module
    spec = importlib.util.spec_from_file_location("mmdet.models.necks.fpn", os.path.join(root, "models/necks/fpn.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.FPN


def toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


def main():
    fpn = load_fpn()
    generator = torch.Generator().manual_seed(11)
    tensors, metadata = {}, {}
    for case, kwargs in CASES.items():
        model = fpn(**kwargs)
        with torch.no_grad():
            for parameter in model.parameters():
                fan_in = parameter[0].numel() if parameter.dim() > 1 else 1
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * (1.0 / fan_in) ** 0.5)
        model.eval()
        inputs = [torch.randn(shape, generator=generator) for shape in SHAPES]
        with torch.no_grad():
            outputs = model(inputs)
        model64 = copy.deepcopy(model).double()
        inputs64 = [x.double().requires_grad_() for x in inputs]
        sum(o.mean() for o in model64(inputs64)).backward()
        for i, x in enumerate(inputs):
            tensors[f"{case}.input.{i}"] = x
            grad = inputs64[i].grad  # None for an input the neck does not use
            tensors[f"{case}.grad.input.{i}"] = torch.zeros_like(x) if grad is None else grad.float()
        for i, o in enumerate(outputs):
            tensors[f"{case}.output.{i}"] = o.contiguous()
        for name, value in model.state_dict().items():
            tensors[f"{case}.{name}"] = value.contiguous()
        for name, parameter in model64.named_parameters():
            tensors[f"{case}.grad.{name}"] = parameter.grad.float().contiguous()
        metadata[case] = "\n".join(f"{k} = {toml_value(v)}" for k, v in kwargs.items())
        print(case, [tuple(o.shape) for o in outputs])
    out = os.path.join("tests", "fixtures", "fpn.safetensors")
    save_file(tensors, out, metadata=metadata)
    print(out, os.path.getsize(out))


if __name__ == "__main__":
    main()
