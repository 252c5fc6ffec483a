#!/usr/bin/env python3
"""Make tests/fixtures/init/: what mmdetection 3.3's `ResNet.init_weights()` leaves in every
tensor, as statistics (no raw values), for checking burn-resnet's initialisation against it.

mmdet's ResNet (an mmengine BaseModule) given neither `init_cfg` nor `pretrained` sets
    init_cfg = [Kaiming(layer='Conv2d'), Constant(val=1, layer=['_BatchNorm', 'GroupNorm'])]
(mmengine's Kaiming defaults: normal, mode='fan_out', nonlinearity='relu', bias 0) and, with
`zero_init_residual`, hands each block `Constant(val=0, override=dict(name='norm3'))` (`'norm2'`
for BasicBlock) — but only `if block is BasicBlock` / `elif block is Bottleneck`, comparing
`self.arch_settings[depth][0]` to resnet.py's own classes by identity: ResNeXt's Bottleneck is
a subclass, so ResNeXt never zero-initialises its last norms.

mmengine's `BaseModule.init_weights()` first applies a module's own init_cfg to every matching
submodule (the whole subtree), then calls `init_weights()` on each child that has one. So the
ResNet's Kaiming reaches every Conv2d, plugins' included; afterwards the blocks apply their
zero override, and then each plugin that defines `init_weights` (NonLocal2d: its own normal
std 0.01 and zero `conv_out`; GeneralizedAttention: its Kaiming-uniform fan_in) re-runs it.
mmcv's ContextBlock has only `reset_parameters()` (run in its constructor), so the ResNet's
Kaiming fan_out overrides both its fan_in `conv_mask` and its zero last conv.

Each case builds the model at full width (cheap on a CPU), seeds torch, calls `init_weights()`
and writes tests/fixtures/init/<case>.json:
  mmdet_args   the reference's arguments (class and keyword arguments)
  toml         the same backbone as a burn-resnet config
  tensors      per parameter and buffer, in state_dict order: name (mmdet key), kind, shape,
               module (class owning it), all_zero, all_one, mean, std (population), and for
               parameters mmengine's own record of what initialised it (`init_info`); for
               non-constant Conv2d and Linear weights also fan_in, fan_out, excess_kurtosis (normal 0,
               uniform -1.2), the std of each candidate rule (`expected_std`) and the rules
               whose std it matches (`matches`, within max(2%, 4/sqrt(2n)) relative)

    python3 tools/make_init_fixture.py [--reference-dir ../shared/reference]
"""
import argparse
import copy
import importlib.util
import json
import logging
import math
import os
import re
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import toml_value  # noqa: E402  (shared fixture helpers)

CASES = {
    "resnet50": ("ResNet", dict(depth=50, zero_init_residual=True)),
    "resnext50_4x4d": ("ResNeXt", dict(depth=50, groups=4, base_width=4, zero_init_residual=True)),
    "resnet18": ("ResNet", dict(depth=18, zero_init_residual=True)),
    "resnet50_gcb": ("ResNet", dict(depth=50, zero_init_residual=True, plugins=[
        dict(cfg=dict(type="ContextBlock", ratio=1 / 4), stages=(False, True, True, True), position="after_conv3")])),
    # Two plugins after conv2 of stage 4 only; the attention with a postfix.
    "resnet50_nonlocal_attention": ("ResNet", dict(depth=50, zero_init_residual=True, plugins=[
        dict(cfg=dict(type="NonLocal2d", reduction=2), stages=(False, False, False, True), position="after_conv2"),
        dict(cfg=dict(type="GeneralizedAttention", spatial_range=-1, num_heads=8, attention_type="1111",
                      kv_stride=2, postfix="_1"), stages=(False, False, False, True), position="after_conv2")])),
    # DCNv2 needs compiled mmcv ops (mmcv.ops.ModulatedDeformConv2dPack): not built here.
}
SEED = 0


def load_classes(reference_dir):
    sys.path.insert(0, reference_dir)
    import mmdet_resnet  # registers mmdet.models.backbones.resnet without mmcv ops
    import mmdet
    path = os.path.join(os.path.dirname(mmdet.__file__), "models/backbones/resnext.py")
    spec = importlib.util.spec_from_file_location("mmdet.models.backbones.resnext", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return {"ResNet": mmdet_resnet.ResNet, "ResNeXt": module.ResNeXt}


def toml_text(cls_name, kwargs):
    lines = [f"# mmdet: {cls_name}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"]
    lines += [f"{k} = {toml_value(v)}" for k, v in kwargs.items() if k != "plugins"]
    for plugin in kwargs.get("plugins", []):
        cfg = ", ".join(f"{k} = {toml_value(v)}" for k, v in plugin["cfg"].items())
        lines += ["", "[[plugins]]", f"position = {toml_value(plugin['position'])}",
                  f"stages = {toml_value(plugin['stages'])}", f"cfg = {{ {cfg} }}"]
    return "\n".join(lines) + "\n"


def fans(tensor):
    receptive = tensor[0][0].numel()
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def rules(fan_in, fan_out):
    return {
        # mmdet ResNet's init_cfg: Kaiming(layer='Conv2d'), mmengine defaults.
        "kaiming_normal_fan_out": math.sqrt(2 / fan_out),
        # ContextBlock.reset_parameters: kaiming_init(conv_mask, mode='fan_in') (normal, relu).
        "kaiming_normal_fan_in": math.sqrt(2 / fan_in),
        # GeneralizedAttention.init_weights: kaiming uniform, fan_in, leaky_relu a=1 (gain 1).
        "kaiming_uniform_fan_in_a1": 1 / math.sqrt(fan_in),
        # PyTorch's Conv2d/Linear default: kaiming uniform a=sqrt(5).
        "torch_default": 1 / math.sqrt(3 * fan_in),
        # NonLocal2d.init_weights: normal_init(std=0.01).
        "normal_0.01": 0.01,
    }


def rounded(x):
    return float(f"{x:.6g}")


def describe(name, tensor, kind, module, init_info):
    t = tensor.detach().double()
    entry = {"name": name, "kind": kind, "shape": list(tensor.shape), "module": module}
    if not tensor.is_floating_point():
        entry.update(dtype=str(tensor.dtype).replace("torch.", ""), value=tensor.tolist())
        return entry
    entry.update(all_zero=bool((t == 0).all()), all_one=bool((t == 1).all()),
                 mean=rounded(t.mean().item()), std=rounded(t.std(unbiased=False).item()))
    if init_info is not None:
        entry["init_info"] = init_info
    if module in ("Conv2d", "Linear") and name.endswith(".weight") and t.std().item() > 0:
        fan_in, fan_out = fans(tensor)
        std = t.std(unbiased=False).item()
        centred = t - t.mean()
        tol = max(0.02, 4 / math.sqrt(2 * t.numel()))
        expected = rules(fan_in, fan_out)
        entry.update(
            fan_in=fan_in, fan_out=fan_out,
            excess_kurtosis=rounded((centred ** 4).mean().item() / std ** 4 - 3),
            expected_std={k: rounded(v) for k, v in expected.items()},
            matches=[k for k, v in expected.items() if abs(std / v - 1) < tol])
    return entry


def module_types(model):
    return {name: type(m).__name__ for name, m in model.named_modules()}


def run_case(cls_name, cls, kwargs):
    torch.manual_seed(SEED)
    model = cls(**copy.deepcopy(kwargs))
    # mmengine records, per parameter, the last init whose result changed the parameter's mean,
    # and logs it from `_dump_init_info` before deleting the record: capture it there.
    infos = {}
    model._dump_init_info = lambda: infos.update(
        {n: model._params_init_info[p]["init_info"].strip() for n, p in model.named_parameters()})
    torch.manual_seed(SEED)
    model.init_weights()
    owners = module_types(model)
    params = dict(model.named_parameters())
    tensors = []
    for name, tensor in model.state_dict(keep_vars=True).items():
        owner = owners.get(name.rsplit(".", 1)[0], "?")
        kind = "parameter" if name in params else "buffer"
        tensors.append(describe(name, tensor, kind, owner, infos.get(name) if kind == "parameter" else None))
    return tensors


def collapse(names):
    """layer3.4.bn3.weight -> layer*.*.bn3.weight, with a count, for the printed summary."""
    groups = {}
    for name in names:
        key = re.sub(r"^layer\d+\.\d+\.", "layer*.*.", name)
        groups[key] = groups.get(key, 0) + 1
    return [f"{k} (x{n})" if n > 1 else k for k, n in groups.items()]


def summarise(case, tensors):
    floats = [t for t in tensors if "std" in t]
    zero = [t["name"] for t in floats if t["all_zero"]]
    one = [t["name"] for t in floats if t["all_one"]]
    print(f"== {case}")
    print(f"  all zero: {', '.join(collapse(zero))}")
    print(f"  all one:  {', '.join(collapse(one))}")
    odd = {}
    for t in floats:
        if "matches" in t and "kaiming_normal_fan_out" not in t["matches"]:
            key = re.sub(r"^layer\d+\.\d+\.", "layer*.*.", t["name"])
            ratio = t["std"] / t["expected_std"]["kaiming_normal_fan_out"]
            odd.setdefault(key, []).append(f"{t['std']:.4g} ({ratio:.2f}x fan_out; {'/'.join(t['matches']) or '?'})")
    for key, values in odd.items():
        print(f"  not fan_out: {key}: {values[0]}" + (f" ... x{len(values)}" if len(values) > 1 else ""))
    plugin = {}
    for t in floats:
        if t["kind"] == "parameter" and re.search(r"(context_block|nonlocal_block|gen_attention_block)", t["name"]):
            key = re.sub(r"^layer\d+\.\d+\.", "layer*.*.", t["name"])
            plugin.setdefault(key, t)
    for key, t in plugin.items():
        what = "zero" if t["all_zero"] else "one" if t["all_one"] else f"std {t['std']:.4g} {t.get('matches', '')}"
        print(f"  plugin: {key}: {what}; by: {t['init_info']}")
    other = [t for t in floats if t["kind"] == "parameter" and len(t["shape"]) == 1 and not t["all_zero"]
             and not t["all_one"]]
    for t in other:
        print(f"  1-D neither 0 nor 1: {t['name']} mean {t['mean']:.4g} std {t['std']:.4g} ({t['init_info']})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-dir", default=os.path.join("..", "shared", "reference"))
    parser.add_argument("--out", default=os.path.join("tests", "fixtures", "init"))
    args = parser.parse_args()
    classes = load_classes(os.path.abspath(args.reference_dir))
    from mmengine.logging import MMLogger
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    os.makedirs(args.out, exist_ok=True)
    for case, (cls_name, kwargs) in CASES.items():
        tensors = run_case(cls_name, classes[cls_name], kwargs)
        doc = {
            "mmdet_args": {"class": cls_name, "kwargs": kwargs, "seed": SEED,
                           "call": "model.init_weights() (init_cfg=None, pretrained=None)",
                           "versions": versions()},
            "toml": toml_text(cls_name, kwargs),
            "tensors": tensors,
        }
        path = os.path.join(args.out, case + ".json")
        with open(path, "w") as f:
            # One tensor per line: small diffs, greppable.
            f.write("{\n")
            f.write(f'"mmdet_args": {json.dumps(doc["mmdet_args"])},\n')
            f.write(f'"toml": {json.dumps(doc["toml"])},\n')
            f.write('"tensors": [\n' + ",\n".join(json.dumps(t) for t in tensors) + "\n]\n}\n")
        summarise(case, tensors)
        print(f"  {path}: {os.path.getsize(path)} bytes, {len(tensors)} tensors")


def versions():
    import mmcv
    import mmdet
    import mmengine
    return {"mmdet": mmdet.__version__, "mmcv": mmcv.__version__, "mmengine": mmengine.__version__,
            "torch": torch.__version__.split("+")[0]}


if __name__ == "__main__":
    main()
