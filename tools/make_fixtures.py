#!/usr/bin/env python3
"""Make the parity fixtures in tests/fixtures/parity/ from mmdetection's real ResNet.

Each case builds mmdet's `ResNet` (or `ResNeXt`, `Res2Net` or `ResNeSt`) at tiny width, randomises every parameter
and BatchNorm statistic (so no branch is silently zero, e.g. under zero_init_residual),
rounds the weights to float16-exact values (so they can be stored as F16 and the file stays
small, while the reference still computes in float32), runs it in eval mode on a random input
and writes:

  <case>.toml                  the same backbone as a burn-resnet config
  <case>.weights.safetensors   model.state_dict() with mmdet's key names, F16 (cases in
                               SHARED_WEIGHTS use another case's file)
  <case>.io.safetensors        `input` and `output.<i>` (float32); metadata `weights` names
                               the weights file, `mmdet` the reference's arguments
  <case>.grads.safetensors     training cases only: gradients and updated running statistics;
                               metadata `zero_in_exact_arithmetic` (when any) lists the
                               gradients that are zero in exact arithmetic, comma-separated

Run from the repository root (see ../shared/reference/mmdet_resnet.py for the environment):
    python3 tools/make_fixtures.py [--reference-dir ../shared/reference] [--only NAME ...]

`--only` writes just the cases whose names contain one of the given strings (e.g. `--only
res2net`), leaving every other fixture file untouched; each case keeps its own seed either way.
"""
import argparse
import copy
import importlib.util
import os
import sys

import logging

import torch
from safetensors.torch import load_file, save_file

# Our config keys are mmdet's argument names; these cases are written to both. A case's `type`
# (first, as in the TOML) names the mmdet class; without one it is ResNeXt when `groups` is given,
# else ResNet. `type` is a config key only: the class is built from the other arguments.
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
    # GCNet: ContextBlock r16 after conv3 on stages 2-4 (mmdet's gcnet configs), every weight
    # random (the context blocks' zero-initialised last convs too).
    "resnet50_gcb": dict(depth=50, base_channels=8, plugins=[
        dict(cfg=dict(type="ContextBlock", ratio=1 / 16), stages=(False, True, True, True), position="after_conv3")]),
    # Two plugins at one position, in order: a sub-sampled NonLocal2d, then a ContextBlock
    # (with a postfix), after conv2 of the blocks of stages 3-4.
    "resnet50_nonlocal_gcb": dict(depth=50, base_channels=8, plugins=[
        dict(cfg=dict(type="NonLocal2d", reduction=2, sub_sample=True), stages=(False, False, True, True),
             position="after_conv2"),
        dict(cfg=dict(type="ContextBlock", ratio=1 / 4, fusion_types=("channel_mul", "channel_add"), postfix="_1"),
             stages=(False, False, True, True), position="after_conv2")]),
    # ResNeXt with a plugin after conv2: its input is the grouped width (mmdet #4228).
    "resnext50_4x2d_gcb": dict(depth=50, base_channels=8, groups=4, base_width=2, plugins=[
        dict(cfg=dict(type="ContextBlock", ratio=1 / 4), stages=(False, True, True, True), position="after_conv2")]),
    # DCNv2 on stages 2-4 (mmdet's dcnv2 configs), random offsets and masks (the offset convs'
    # weights are drawn like every other conv's, so samples land between pixels and outside).
    "resnet50_dcnv2": dict(depth=50, base_channels=8, dcn=dict(type="DCNv2", deform_groups=1, fallback_on_stride=False),
                           stage_with_dcn=(False, True, True, True)),
    # ResNeXt with DCN (v1, unmodulated) and two deform groups on stages 3-4: grouped weights,
    # grouped offsets.
    "resnext50_4x2d_dcn": dict(depth=50, base_channels=8, groups=4, base_width=2,
                               dcn=dict(type="DCN", deform_groups=2, fallback_on_stride=False),
                               stage_with_dcn=(False, False, True, True)),
    # DCNv2 with plugins: a ContextBlock after conv3 (stages 2-4) and a NonLocal2d after the
    # deformable conv2 (stage 3).
    "resnet50_dcn_gcb": dict(depth=50, base_channels=8, dcn=dict(type="DCNv2", deform_groups=1, fallback_on_stride=False),
                             stage_with_dcn=(False, True, True, True), plugins=[
        dict(cfg=dict(type="ContextBlock", ratio=1 / 4), stages=(False, True, True, True), position="after_conv3"),
        dict(cfg=dict(type="NonLocal2d", reduction=2), stages=(False, False, True, False), position="after_conv2")]),
    # Generalized attention (mmdet's empirical_attention configs): '1111' after conv2 of stages
    # 3-4, keys and values at stride 2.
    "resnet50_gen_attention": dict(depth=50, base_channels=8, plugins=[
        dict(cfg=dict(type="GeneralizedAttention", spatial_range=-1, num_heads=2, attention_type="1111", kv_stride=2),
             stages=(False, False, True, True), position="after_conv2")]),
    # '0010' (key content with a learned query) after conv2 of stages 3-4, queries at stride 2
    # (mmdet's *_attn0010_* configs, with q_stride for the upsampling path).
    "resnet50_attention0010": dict(depth=50, base_channels=8, plugins=[
        dict(cfg=dict(type="GeneralizedAttention", spatial_range=-1, num_heads=2, attention_type="0010", kv_stride=2,
                      q_stride=2), stages=(False, False, True, True), position="after_conv2")]),
    # Res2Net-50 (mmdet's Res2Net: Bottle2neck blocks, `convs.i`/`bns.i` per scale). mmdet forces
    # deep_stem and avg_down (and style pytorch) whatever it is given; burn-resnet's config states
    # them. Scale width = base_width * 2^stage here (mmdet: planes * base_width / base_channels).
    "res2net50_w4s4": dict(type="Res2Net", depth=50, base_channels=8, base_width=4, scales=4,
                           deep_stem=True, avg_down=True),
    # Three scales, stride 1 with dilation 2 in stage 4: the first block of stage 4 has
    # stage_type 'stage' without a pool (the last split passes through), and a 1x1 avg-pool
    # downsample.
    "res2net50_w4s3_dilated": dict(type="Res2Net", depth=50, base_channels=8, base_width=4, scales=3,
                                   deep_stem=True, avg_down=True, strides=[1, 2, 2, 1], dilations=[1, 1, 1, 2]),
    # ResNeSt-50 (mmdet's ResNeSt: split-attention conv2 `conv2.{conv,bn0,fc1,bn1,fc2}`, a 3x3
    # avg-pool after it in strided blocks). mmdet's ResNeSt is a ResNetV1d, which passes
    # deep_stem and avg_down itself: the config states them, `backbone()` does not pass them.
    # Defaults: radix 2 (softmax over the radix), reduction_factor 4, avg_down_stride.
    "resnest50_r2": dict(type="ResNeSt", depth=50, base_channels=8, deep_stem=True, avg_down=True),
    # Radix 4 over 2 groups (conv groups = 8, fc1/fc2 grouped by 2), reduction_factor 1 (the
    # attention width max(width * radix // 1, 32) exceeds 32 from layer2 on), the stride on the
    # split-attention conv itself (no avd pool), stride 1 with dilation 2 in stage 4.
    "resnest50_r4_g2_dilated": dict(type="ResNeSt", depth=50, base_channels=8, deep_stem=True, avg_down=True,
                                    radix=4, groups=2, base_width=4, reduction_factor=1, avg_down_stride=False,
                                    strides=[1, 2, 2, 1], dilations=[1, 1, 1, 2]),
    # Radix 1: a sigmoid gate instead of the radix softmax; caffe style (the stride on conv1, so
    # conv2 is never strided and no avd pool is built).
    "resnest50_r1_caffe": dict(type="ResNeSt", depth=50, base_channels=8, deep_stem=True, avg_down=True,
                               radix=1, style="caffe"),
    # DCNv2 as the split-attention conv (groups = radix) on stages 2-4, with ContextBlocks after
    # conv2 (after the avd pool) of stages 2-4 and after conv3 of stage 4. groups 1: mmdet builds
    # after_conv2 plugins with `planes` channels, which is the width only then.
    "resnest50_dcn_gcb": dict(type="ResNeSt", depth=50, base_channels=8, deep_stem=True, avg_down=True, radix=2,
                              dcn=dict(type="DCNv2", deform_groups=1, fallback_on_stride=False),
                              stage_with_dcn=(False, True, True, True), plugins=[
        dict(cfg=dict(type="ContextBlock", ratio=1 / 4), stages=(False, True, True, True), position="after_conv2"),
        dict(cfg=dict(type="ContextBlock", ratio=1 / 4, postfix="_1"), stages=(False, False, False, True),
             position="after_conv3")]),
}
# Cases whose every conv weight is drawn at random (not only the norms).
RANDOM_CONVS = {"resnet50_gcb", "resnet50_nonlocal_gcb", "resnext50_4x2d_gcb", "resnet50_plugins_train",
                "resnet50_dcnv2", "resnext50_4x2d_dcn", "resnet50_dcn_gcb", "resnet50_dcn_train",
                "resnet50_gen_attention", "resnet50_attention0010", "resnet50_attention_train",
                "resnest50_r2", "resnest50_r4_g2_dilated", "resnest50_r1_caffe", "resnest50_dcn_gcb",
                "resnest50_2stages_train", "resnest50_r2_g2_train"}
# Training-mode cases (BatchNorm on batch statistics: mmdet's `norm_eval` default, True, is
# turned off unless a case sets it): also saves the gradient of loss = sum of the outputs' means
# for every parameter (zeros for a frozen one, which gets none), and every BatchNorm running
# statistic after that one forward.
TRAIN_CASES = {
    "resnet18_train": dict(depth=18, base_channels=4),
    "resnet50_v1d_train": dict(depth=50, base_channels=4, deep_stem=True, avg_down=True),
    # Plugins in training mode: ContextBlock after conv3 of stages 2-4 and a NonLocal2d after
    # conv2 of stage 3; every weight random.
    "resnet50_plugins_train": dict(depth=50, base_channels=4, plugins=[
        dict(cfg=dict(type="ContextBlock", ratio=1 / 4), stages=(False, True, True, True), position="after_conv3"),
        dict(cfg=dict(type="NonLocal2d", reduction=2), stages=(False, False, True, False), position="after_conv2")]),
    # DCNv2 on stages 2-4 with a ContextBlock after conv3 (mmdet's gcnet + dcn configs):
    # gradients reach the offset convs through the bilinear sampling and the masks.
    "resnet50_dcn_train": dict(depth=50, base_channels=4, dcn=dict(type="DCNv2", deform_groups=1, fallback_on_stride=False),
                               stage_with_dcn=(False, True, True, True), plugins=[
        dict(cfg=dict(type="ContextBlock", ratio=1.0), stages=(False, True, True, True), position="after_conv3")]),
    # GeneralizedAttention '1111' after conv2 of stages 3-4, trained.
    "resnet50_attention_train": dict(depth=50, base_channels=4, plugins=[
        dict(cfg=dict(type="GeneralizedAttention", spatial_range=-1, num_heads=2, attention_type="1111", kv_stride=2),
             stages=(False, False, True, True), position="after_conv2")]),
    # Res2Net-50's Bottle2necks trained, in two stages: gradients through the per-scale splits,
    # the hierarchical sums and the avg-pooled last split of a strided first block. Two stages,
    # because all four are chaotic in float32: PyTorch's own float32 gradients miss float64 by
    # 3.0e-2 there (one ReLU element of the tiny layer3/layer4 maps, whose batch statistics cover
    # 24-84 positions, flips under a one-ulp change of the input); here they miss by 7.7e-5.
    "res2net50_2stages_train": dict(type="Res2Net", depth=50, base_channels=8, base_width=4, scales=4,
                                    deep_stem=True, avg_down=True, num_stages=2, strides=[1, 2],
                                    dilations=[1, 1], out_indices=[0, 1]),
    # ResNeSt-50's split attention trained, in two stages: gradients through the radix softmax,
    # the attention's fc1 -> BatchNorm -> ReLU -> fc2 on the pooled map, the avd pool of a
    # strided block and the avg-pool downsample. The attention's norm1 normalises a
    # [batch, inter, 1, 1] map, over `batch` values per channel only: see TRAIN_INPUT_SHAPES.
    "resnest50_2stages_train": dict(type="ResNeSt", depth=50, base_channels=8, deep_stem=True, avg_down=True,
                                    radix=2, groups=1, num_stages=2, strides=[1, 2], dilations=[1, 1],
                                    out_indices=[0, 1]),
    # Grouped split attention (groups 2, radix 2: conv groups 4, fc1/fc2 grouped by 2) trained,
    # also in two stages: with three, PyTorch's own float32 gradients miss float64 by 2e-4 to
    # 1e-1 depending on the seed and the input size (batch 8-48, 17x15 to 65x57).
    "resnest50_r2_g2_train": dict(type="ResNeSt", depth=50, base_channels=8, deep_stem=True, avg_down=True,
                                  radix=2, groups=2, base_width=4, num_stages=2, strides=[1, 2],
                                  dilations=[1, 1], out_indices=[0, 1]),
    # mmdet's detector setting (the `resnet50_detector` config): stem and layer1 frozen, every
    # BatchNorm on its (random) running statistics with its affine parameters trained.
    "resnet50_detector_train": dict(depth=50, base_channels=4, frozen_stages=1, norm_eval=True),
}
# DCN cases draw their offset convs' weights at a fraction of the Kaiming scale (powers of two,
# so they stay float16-exact): at full scale the offsets reach hundreds of pixels on maps of a
# few pixels (every sample outside the map, nothing tested), and PyTorch's own float32 then
# misses its float64 by up to 6e-2. Eval activations are larger (random running statistics)
# than training ones (normalised by the batch), hence two scales; offsets then reach ~8 pixels
# in eval and about one in training, and PyTorch's float32 gaps printed below stay under 3e-5
# (outputs). In training a DCN's gradient jumps wherever a sample crosses a pixel boundary,
# and batch statistics on 4x3 maps amplify that: at 1/4 of the Kaiming scale PyTorch's own
# float32 gradients miss by 1e-2 to 1e-1 depending on the seed, at 1/16 by 8e-4.
# GeneralizedAttention's query and key projections are drawn at 1/16 of the Kaiming scale:
# at full scale the attention logits reach the hundreds, the softmaxes saturate, and PyTorch's
# own float32 gradients miss its float64 ones by 2e-2 (2e-3 at 1/16).
ATTENTION_SCALE = 1 / 16
EVAL_OFFSET_SCALE = 1 / 64
TRAIN_OFFSET_SCALE = 1 / 16
MMDET_ONLY = dict(norm_eval=False)
# Big enough that layer4 normalises over 24 samples per channel: with fewer, batch statistics
# make float32 results ill-conditioned (PyTorch's own float32 gradients then differ from its
# float64 ones by ~5e-3). The script prints that float32-vs-float64 gap for each case.
TRAIN_INPUT_SHAPE = (2, 3, 97, 83)
# Training cases with an input of their own. ResNeSt's split attention has a BatchNorm on its
# globally pooled [batch, inter, 1, 1] map: in training it normalises `batch` values per
# channel, which with a batch of 2 is x -> +-1 (ill-conditioned wherever the two are close),
# and the pooled values of noise images differ little between images (less the larger the
# map). With a batch of 16 at 17x15, PyTorch's own float32 gradients miss float64 by 2.1e-5 /
# 1.0e-4 (the two ResNeSt cases), by 1.3e-4 / 1.2e-4 at 8x33x29, 2.6e-3 / 3.2e-3 at 2x33x29
# and 8.5e-2 / 4.6e-2 at TRAIN_INPUT_SHAPE; that is apart from the fc1 biases, zero in exact
# arithmetic (make_train_case), where float32 leaves 5e-7 / 7e-7 of the median gradient norm
# at 16x17x15 (5e-3 / 7e-3 against the 1e-4 floor; 4e-6 / 3e-6 at 8x33x29, 9e-4 / 8e-4 at
# TRAIN_INPUT_SHAPE).
TRAIN_INPUT_SHAPES = {
    "resnest50_2stages_train": (16, 3, 17, 15),
    "resnest50_r2_g2_train": (16, 3, 17, 15),
}


def train_input_shape(case):
    return TRAIN_INPUT_SHAPES.get(case, TRAIN_INPUT_SHAPE)


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
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import reference_dcn
    reference_dcn.register()  # mmcv's DCN / DCNv2 on torchvision's deform_conv2d
    import mmdet_resnet  # noqa: F401  (registers mmdet.models.backbones.resnet without mmcv ops)
    import mmdet
    root = os.path.dirname(mmdet.__file__)
    spec = importlib.util.spec_from_file_location(
        "mmdet.models.backbones.resnext", os.path.join(root, "models/backbones/resnext.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return mmdet_resnet.ResNet, module.ResNeXt


def load_backbones(reference_dir):
    """mmdet's backbone classes by name: ResNet, ResNeXt and Res2Net."""
    resnet, resnext = load_resnext(reference_dir)
    import mmdet_resnet
    # res2net.py imports `.resnet`, which load_resnext has put in sys.modules.
    res2net = mmdet_resnet._load("mmdet.models.backbones.res2net", "models/backbones/res2net.py")
    # resnest.py imports `..layers.ResLayer` (set by mmdet_resnet) and `.resnet`'s Bottleneck and
    # ResNetV1d, both in sys.modules by now.
    resnest = mmdet_resnet._load("mmdet.models.backbones.resnest", "models/backbones/resnest.py")
    return {"ResNet": resnet, "ResNeXt": resnext, "Res2Net": res2net.Res2Net, "ResNeSt": resnest.ResNeSt}


# Config keys a class sets itself, with the only value it takes: burn-resnet's config states
# them, mmdet's constructor must not get them (ResNeSt is a ResNetV1d, which passes
# deep_stem=True and avg_down=True to ResNet; passing them again is a TypeError).
IMPLIED = {"ResNeSt": dict(deep_stem=True, avg_down=True)}


def backbone(kwargs, classes):
    """The mmdet class a case builds and its constructor arguments (the case less `type` and
    less the keys the class sets itself, IMPLIED)."""
    kwargs = dict(kwargs)
    name = kwargs.pop("type", "ResNeXt" if "groups" in kwargs else "ResNet")
    for key, value in IMPLIED.get(name, {}).items():
        if key not in kwargs or kwargs.pop(key) != value:
            raise ValueError(f"a {name} case must state {key} = {value} (mmdet's {name} always has it)")
    return classes[name], kwargs


def toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return str(value)


def randomise(model, generator, convs=False, half_exact=True, offset_scale=EVAL_OFFSET_SCALE):
    """Give every BatchNorm random weight, bias and statistics, and every 1-D tensor random
    values; with `convs`, also draw conv weights (Kaiming-scaled; a DCN's offset conv times
    `offset_scale`) instead of keeping the model's init; with `half_exact`, round every tensor
    to a float16-representable value."""
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var") or (name.endswith(".weight") and tensor.dim() == 1):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif tensor.dim() == 1:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.2)
            elif convs:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * (2.0 / tensor[0].numel()) ** 0.5)
                if name.endswith("conv_offset.weight"):
                    tensor.mul_(offset_scale)
                if name.endswith(("query_conv.weight", "key_conv.weight")):
                    tensor.mul_(ATTENTION_SCALE)
            if half_exact:
                tensor.copy_(tensor.half().float())


def write_config(base, cls, kwargs, mmdet_kwargs=None):
    """`kwargs` is the case (with its `type`, if any, which is written first as a config key
    but is not an mmdet argument); `mmdet_kwargs` what the class is given (default: the case
    less `type`), for the comment."""
    if mmdet_kwargs is None:
        mmdet_kwargs = {k: v for k, v in kwargs.items() if k != "type"}
    with open(base + ".toml", "w") as f:
        arguments = ', '.join(f'{k}={v!r}' for k, v in mmdet_kwargs.items())
        f.write(f"# mmdet: {cls.__name__}({arguments})\n")
        f.write("# Generated by tools/make_fixtures.py; do not edit.\n")
        for key, value in kwargs.items():
            if key != "plugins":
                f.write(f"{key} = {toml_value(value)}\n")
        for plugin in kwargs.get("plugins", []):
            cfg = ", ".join(f"{k} = {toml_value(v)}" for k, v in plugin["cfg"].items())
            f.write(f"\n[[plugins]]\nposition = {toml_value(plugin['position'])}\n")
            if "stages" in plugin:
                f.write(f"stages = {toml_value(plugin['stages'])}\n")
            f.write(f"cfg = {{ {cfg} }}\n")


def save_weights(model, path):
    weights = {k: v.half().contiguous() for k, v in model.state_dict().items()
               if not k.endswith("num_batches_tracked")}
    save_file(weights, path)
    return weights


def train_step(model, images):
    """One training-mode forward and backward; returns outputs, loss and the state after it:
    gradients for parameters, updated running statistics for buffers, by state_dict key."""
    model.train()
    outputs = model(images)
    loss = sum(o.mean() for o in outputs)
    loss.backward()
    after = {name: torch.zeros_like(param) if param.grad is None else param.grad
             for name, param in model.named_parameters()}
    after.update({name: buffer for name, buffer in model.named_buffers()
                  if not name.endswith("num_batches_tracked")})
    return outputs, loss, after


def l2_relative(actual, expected):
    return ((actual - expected).norm() / expected.norm().clamp_min(1e-30)).item()


def parameter_count(model):
    return sum(p.numel() for p in model.parameters())


def make_train_case(case, config, seed, classes, out):
    resnet, kwargs = backbone(config, classes)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    kwargs = {**MMDET_ONLY, **kwargs}
    model = resnet(**copy.deepcopy(kwargs))
    if case not in RANDOM_CONVS:
        model.init_weights()
    randomise(model, generator, convs=case in RANDOM_CONVS, offset_scale=TRAIN_OFFSET_SCALE)
    base = os.path.join(out, case)
    write_config(base, resnet, config, kwargs)
    save_weights(model, base + ".weights.safetensors")
    images = torch.randn(train_input_shape(case), generator=generator)

    # The reference is computed in float64 from the same (float16-exact) weights and input, so
    # a float32 implementation is measured against the truth, not against PyTorch's rounding.
    model64 = resnet(**copy.deepcopy(kwargs)).double()
    state = {k: v.double() for k, v in load_file(base + ".weights.safetensors").items()}
    model64.load_state_dict(state, strict=False)  # num_batches_tracked is not saved
    outputs, loss, after = train_step(model64, images.double())

    # Gradients (for parameters) and running statistics after the step (for buffers), under
    # the state_dict's key names, so the file loads like a checkpoint.
    # Gradients that are zero in exact arithmetic (float64 leaves ~1e-16 there): the bias of a
    # conv followed by a train-mode BatchNorm (ResNeSt's `conv2.fc1`: the norm removes any
    # per-channel constant), of an attention-logit conv (a softmax is shift-invariant). Their
    # float32 values are rounding noise; listed in the metadata.
    # Frozen parameters (no gradient, saved as zeros) are left out of both.
    frozen = {name for name, param in model64.named_parameters() if not param.requires_grad}
    trained = {k: v for k, v in after.items() if "running_" not in k and k not in frozen}
    norms = sorted(v.norm().item() for v in trained.values())
    median = norms[len(norms) // 2]
    zero = [k for k, v in trained.items() if v.norm().item() < 1e-9 * median]
    save_file({k: v.float().contiguous() for k, v in after.items()}, base + ".grads.safetensors",
              metadata={"zero_in_exact_arithmetic": ",".join(zero)} if zero else None)
    io = {"input": images.contiguous(), "loss": loss.detach().float().reshape(1)}
    io.update({f"output.{i}": o.detach().float().contiguous() for i, o in enumerate(outputs)})
    save_file(io, base + ".io.safetensors", metadata={
        "mmdet": f"{resnet.__name__}{kwargs} in train mode, float64 reference",
        "weights": f"{case}.weights.safetensors",
    })
    # What float32 costs PyTorch itself on this case: the bar for burn-resnet's float32.
    outputs32, _, after32 = train_step(model, images)
    output_gap = max(l2_relative(o32.double(), o) for o32, o in zip(outputs32, outputs))
    # Gradients that are zero in exact arithmetic (attention-logit biases) are measured against
    # 1e-4 of the median gradient norm, as the Rust tests do.
    floor = 1e-4 * median
    gaps = {k: ((after32[k].double() - v).norm() / max(v.norm().item(), floor)).item() for k, v in after.items()}
    state_gap = max(gaps.values())
    zero_note = ""
    if zero:
        # Their float32 noise relative to the median gradient norm, and the others' gap alone.
        noise = max(after32[k].double().norm().item() for k in zero) / median
        others = max(v for k, v in gaps.items() if k not in zero)
        zero_note = (f" ({len(zero)} gradients zero in exact arithmetic, e.g. {zero[0]}: float32 leaves "
                     f"{noise:.1e} of the median gradient norm there; the others {others:.1e})")
    print(f"{case}: train mode, {parameter_count(model)} parameters, loss {loss.item():.6f}, "
          f"input {tuple(images.shape)}, outputs {[tuple(o.shape) for o in outputs]}; "
          f"PyTorch float32 vs float64 (L2-relative): outputs {output_gap:.1e}, "
          f"gradients and statistics {state_gap:.1e}{zero_note}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-dir", default=os.path.join("..", "shared", "reference"))
    parser.add_argument("--out", default=os.path.join("tests", "fixtures", "parity"))
    parser.add_argument("--only", nargs="+", metavar="NAME",
                        help="write only the cases whose names contain one of these strings")
    args = parser.parse_args()
    classes = load_backbones(os.path.abspath(args.reference_dir))
    from mmengine.logging import MMLogger
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    states = {}
    os.makedirs(args.out, exist_ok=True)

    def selected(case):
        return not args.only or any(name in case for name in args.only)

    # A selected case that takes its weights from another case needs that one built (not written).
    needed = {case for case in CASES if selected(case)}
    needed |= {SHARED_WEIGHTS[case] for case in needed if case in SHARED_WEIGHTS}
    if "resnet50_3stages" in needed:
        needed.add("resnet50_pytorch")

    for index, (case, kwargs) in enumerate(TRAIN_CASES.items()):
        if selected(case):
            make_train_case(case, kwargs, 2000 + index, classes, args.out)

    for index, (case, config) in enumerate(CASES.items()):
        if case not in needed:
            continue
        generator = torch.Generator().manual_seed(1000 + index)
        torch.manual_seed(1000 + index)
        cls, kwargs = backbone(config, classes)
        # (mmdet pops `fallback_on_stride` out of the `dcn` dict it is given: hand it a copy.)
        model = cls(**copy.deepcopy(kwargs))
        if case not in RANDOM_CONVS:
            # (Every tensor of a RANDOM_CONVS case is drawn below. mmcv's NonLocal2d with
            # sub_sample cannot even re-run init_weights: its `g` became a Sequential.)
            model.init_weights()
        randomise(model, generator, convs=case in RANDOM_CONVS)
        if case in SHARED_WEIGHTS or case == "resnet50_3stages":
            shared = states["resnet50_pytorch"]
            own = model.state_dict()
            model.load_state_dict({k: shared[k] for k in own})
        states[case] = model.state_dict()
        if not selected(case):
            continue  # built only for the weights a selected case shares
        model.eval()
        images = torch.randn(INPUT_SHAPE, generator=generator)
        with torch.no_grad():
            outputs = model(images)

        base = os.path.join(args.out, case)
        write_config(base, cls, config, kwargs)
        if case not in SHARED_WEIGHTS:
            weights = save_weights(model, base + ".weights.safetensors")
        io = {"input": images.contiguous()}
        io.update({f"output.{i}": o.contiguous() for i, o in enumerate(outputs)})
        save_file(io, base + ".io.safetensors", metadata={
            "mmdet": f"{cls.__name__}{kwargs}",
            "weights": f"{SHARED_WEIGHTS.get(case, case)}.weights.safetensors",
        })
        sizes = [tuple(o.shape) for o in outputs]
        # What float32 costs PyTorch itself (max abs difference relative to the max abs value,
        # as the Rust tests measure): the bar the 1e-4 tolerance must clear.
        with torch.no_grad():
            outputs64 = copy.deepcopy(model).double()(images.double())
        gap = max(((o.double() - o64).abs().max() / o64.abs().max()).item() for o, o64 in zip(outputs, outputs64))
        print(f"{case}: {parameter_count(model)} parameters, outputs {sizes}; PyTorch float32 vs float64: {gap:.1e}")


if __name__ == "__main__":
    main()
