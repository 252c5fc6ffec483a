#!/usr/bin/env python3
"""Make the checkpoint fixtures in tests/fixtures/checkpoints/: tiny models saved exactly as
timm, torchvision-style code and mmdetection save them, with the features they compute.

  timm_resnet18d.pth / .safetensors  timm ResNet-18-D (deep stem, avg_down) at channels
                                     (8, 16, 32, 64), `torch.save(model.state_dict())` with
                                     its 10-class `fc`; safetensors via safetensors.torch
  timm_resnet18d.toml                the same backbone as a burn-resnet config (C1..C5 out)
  timm_resnet18d.io.safetensors      `input` and `output.<i>`: act1 (C1), layer1..layer4
  torchvision_resnet18.pth           a plain-stem ResNet-18 under torchvision's key names
                                     (`conv1`, `bn1`, `layerN.i.downsample.0/1`, `fc`); timm's
                                     plain ResNet uses exactly those names
  torchvision_resnet18.io.safetensors / .toml
  torchvision_resnet18_half.pth      the same model saved in float16 (`model.half()`), as
                                     half-precision checkpoints are shared, with the features
                                     of its float16 weights computed in float32
  torchvision_resnet18_half.io.safetensors
  mmdet_detector_r18.pth             a detector checkpoint as mmdet saves it: `meta` plus
                                     `state_dict` with `backbone.`-prefixed mmdet ResNet keys and
                                     some `neck.` keys (from mmdet's own ResNet-18, base 8)
  mmdet_detector_r18.io.safetensors / .toml
  timm_resnest_tiny.pth              timm's ResNeSt (`resnest50d`'s recipe: ResNet with
                                     ResNestBottleneck, deep stem, avg_down, radix 2, avd) at
                                     layers 3-4-6-3, channels (4, 8, 16, 32), stem_width 4,
                                     `torch.save(model.state_dict())` with its 10-class `fc`
  timm_resnest_tiny.toml             the same backbone as a burn-resnet config (type ResNeSt,
                                     depth 50, C1..C5 out)
  timm_resnest_tiny.io.safetensors   `input` and `output.<i>`: act1 (C1), layer1..layer4
  timm_res2net_tiny.pth              timm's Res2Net (`res2net50_26w_4s`'s recipe: ResNet with
                                     Bottle2neck, scale 4, timm's plain 64-channel 7x7 stem and
                                     strided-1x1-conv shortcuts `downsample.0/1`) at layers
                                     3-4-6-3, channels (4, 8, 16, 32), timm base_width 32 (split
                                     widths 2, 4, 8, 16), with its 10-class `fc`
  timm_res2net_tiny.toml / .io.safetensors
  timm_res2net_d_tiny.pth            the same as `res2net50d` builds it: deep stem (stem_width 2
                                     -> 4 channels), avg_down shortcuts (`downsample.1/2`)
  timm_res2net_d_tiny.toml / .io.safetensors

timm's ResNeSt is mmdet's network under mmdet's block names (`conv1`, `bn1`, `conv2.conv`,
`conv2.bn0`, `conv2.fc1`, `conv2.bn1`, `conv2.fc2`, `conv3`, `bn3`, `downsample.1/2`); only the
stem differs: timm `conv1.{0,1,3,4,6}` + `bn1` = mmdet `stem.{0,1,3,4,6}` + `stem.7`
(`timm_resnest_to_mmdet`). `--check-resnest` loads full-size timm resnest50d / resnest101e /
resnest200e (random init, random BatchNorm statistics; nothing downloaded) so renamed into
mmdet's ResNeSt(depth=50, stem_channels=64) / (depth=101 or 200, stem_channels=128) and compares
the stage outputs in eval mode (writes nothing).

timm's Bottle2neck is mmdet's but for the stage pool: timm average-pools the last split (3x3,
padding 1, count_include_pad) in every block with a stride or a shortcut conv, i.e. in a
stage's first block at stride 1 too (layer1), where mmdet concatenates it unpooled
(`stage_pool = "always"`). Its width is floor(planes * base_width / 64): burn-resnet's
base_width (over base_channels) is chosen to give the same widths.

Weights are random, BatchNorm statistics too; eval mode. Run from the repository root:
    python3 tools/make_checkpoints.py [--reference-dir ../shared/reference] [--only NAME ...]
        [--check-resnest]
`--only` writes just the fixtures whose names contain one of the given strings (the others are
still built, so every fixture keeps its random draws, but not written: torch.save files differ
on every save).
"""
import argparse
import logging
import os
import sys

import torch
from safetensors.torch import save_file
import timm.models.resnet as timm_resnet

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures  # noqa: E402  (shared fixture helpers)

INPUT_SHAPE = (2, 3, 45, 37)


def randomise(model, generator):
    # Random norms and statistics as in the parity fixtures, random convs too, full float32.
    make_fixtures.randomise(model, generator, convs=True, half_exact=False)


def timm_features(model, x):
    x = model.act1(model.bn1(model.conv1(x)))
    outs = [x]
    x = model.maxpool(x)
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        x = layer(x)
        outs.append(x)
    return outs


def save_io(path, images, outputs, source):
    io = {"input": images.contiguous()}
    io.update({f"output.{i}": o.contiguous() for i, o in enumerate(outputs)})
    save_file(io, path, metadata={"source": source})


def write_config(path, source, lines):
    with open(path, "w") as f:
        f.write(f"# {source}\n# Generated by tools/make_checkpoints.py; do not edit.\n")
        f.write("\n".join(lines) + "\n")


# timm's deep stem (`conv1` a Sequential, then `bn1`) under mmdet's names (`stem`).
TIMM_STEM_TO_MMDET = {"conv1.0.": "stem.0.", "conv1.1.": "stem.1.", "conv1.3.": "stem.3.", "conv1.4.": "stem.4.",
                      "conv1.6.": "stem.6.", "bn1.": "stem.7."}


def timm_resnest_to_mmdet(state):
    """A timm ResNeSt state_dict under mmdet ResNeSt's key names, less the classifier `fc`."""
    renamed = {}
    for key, value in state.items():
        if key.startswith("fc."):
            continue
        prefix = next((p for p in TIMM_STEM_TO_MMDET if key.startswith(p)), None)
        renamed[TIMM_STEM_TO_MMDET[prefix] + key[len(prefix):] if prefix else key] = value
    return renamed


def timm_resnest(layers, channels, stem_width, **kwargs):
    """timm's ResNeSt as `resnest50d` / `resnest101e` build it (timm.models.resnest)."""
    from timm.models.resnest import ResNestBottleneck
    return timm_resnet.ResNet(block=ResNestBottleneck, layers=layers, channels=channels, stem_width=stem_width,
                              stem_type="deep", avg_down=True, base_width=64, cardinality=1,
                              block_args=dict(radix=2, avd=True, avd_first=False), **kwargs)


def timm_res2net(layers, channels, base_width, **kwargs):
    """timm's Res2Net as `res2net50_26w_4s` (plain stem) / `res2net50d` (with stem_type='deep',
    avg_down=True, stem_width) build it (timm.models.res2net), scale 4."""
    from timm.models.res2net import Bottle2neck
    return timm_resnet.ResNet(block=Bottle2neck, layers=layers, channels=channels, base_width=base_width,
                              block_args=dict(scale=4), **kwargs)


def check_resnest(reference_dir):
    """timm resnest50d / resnest101e weights in mmdet's ResNeSt: max abs difference per stage."""
    sys.path.insert(0, os.path.abspath(reference_dir))
    classes = make_fixtures.load_backbones(os.path.abspath(reference_dir))
    torch.manual_seed(7)  # the conv weights: timm's init
    generator = torch.Generator().manual_seed(7)
    images = torch.randn(2, 3, 64, 64, generator=generator)
    for name, layers, stem_width, depth in (("resnest50d", [3, 4, 6, 3], 32, 50),
                                            ("resnest101e", [3, 4, 23, 3], 64, 101),
                                            ("resnest200e", [3, 24, 36, 3], 64, 200)):
        timm_model = timm_resnest(layers, (64, 128, 256, 512), stem_width)
        make_fixtures.randomise(timm_model, generator, convs=False, half_exact=False)  # norms and statistics
        mmdet_model = classes["ResNeSt"](depth=depth, stem_channels=2 * stem_width)
        mmdet_model.load_state_dict(timm_resnest_to_mmdet(timm_model.state_dict()), strict=True)
        timm_model.eval()
        mmdet_model.eval()
        with torch.no_grad():
            expected = timm_features(timm_model, images)[1:]
            actual = mmdet_model(images)
        diffs = [(a - e).abs().max().item() for a, e in zip(actual, expected)]
        scale = max(e.abs().max().item() for e in expected)
        print(f"{name} -> mmdet ResNeSt(depth={depth}, stem_channels={2 * stem_width}): "
              f"{sum(p.numel() for p in mmdet_model.parameters())} parameters; max abs difference per stage "
              f"{', '.join(f'{d:.1e}' for d in diffs)} (outputs up to {scale:.1e})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-dir", default=os.path.join("..", "shared", "reference"))
    parser.add_argument("--out", default=os.path.join("tests", "fixtures", "checkpoints"))
    parser.add_argument("--only", nargs="+", metavar="NAME",
                        help="write only the fixtures whose names contain one of these strings")
    parser.add_argument("--check-resnest", action="store_true",
                        help="only compare full-size timm ResNeSts with mmdet's (writes nothing)")
    args = parser.parse_args()
    if args.check_resnest:
        from mmengine.logging import MMLogger
        MMLogger.get_current_instance().setLevel(logging.WARNING)
        check_resnest(args.reference_dir)
        return
    os.makedirs(args.out, exist_ok=True)

    def selected(name):
        return not args.only or any(s in name for s in args.only)
    generator = torch.Generator().manual_seed(4)
    images = torch.randn(INPUT_SHAPE, generator=generator)

    # timm ResNet-18-D: deep stem (stem_width 8 -> 16 channels), avg_down, 10-class head.
    model = timm_resnet.ResNet(block=timm_resnet.BasicBlock, layers=[2, 2, 2, 2], channels=(8, 16, 32, 64),
                               stem_width=8, stem_type="deep", avg_down=True, num_classes=10)
    randomise(model, generator)
    model.eval()
    with torch.no_grad():
        outputs = timm_features(model, images)
    base = os.path.join(args.out, "timm_resnet18d")
    if selected("timm_resnet18d"):
        torch.save(model.state_dict(), base + ".pth")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, base + ".safetensors")
        save_io(base + ".io.safetensors", images, outputs, "timm ResNet-18-D, channels (8, 16, 32, 64)")
        write_config(base + ".toml", "timm ResNet(BasicBlock, [2,2,2,2], channels=(8,16,32,64), stem_width=8, "
                     "stem_type='deep', avg_down=True)",
                     ["depth = 18", "base_channels = 8", "stem_channels = 16", "deep_stem = true",
                      "avg_down = true", "stem_output = true"])

    # torchvision key names: timm's plain ResNet-18 names its tensors exactly as torchvision.
    model = timm_resnet.ResNet(block=timm_resnet.BasicBlock, layers=[2, 2, 2, 2], channels=(8, 16, 32, 64),
                               stem_width=8, num_classes=10)
    randomise(model, generator)
    model.eval()
    with torch.no_grad():
        outputs = timm_features(model, images)[1:]
    base = os.path.join(args.out, "torchvision_resnet18")
    if selected("torchvision_resnet18"):
        torch.save(model.state_dict(), base + ".pth")
        save_io(base + ".io.safetensors", images, outputs, "ResNet-18 under torchvision key names")
        # timm's plain stem always has 64 channels (stem_width applies to deep stems only).
        write_config(base + ".toml", "torchvision-named ResNet-18, 64-channel stem, stage widths 8..64",
                     ["depth = 18", "base_channels = 8", "stem_channels = 64"])
    # The same model in float16 (no generator draws: the fixtures after it do not change).
    model.half()
    if selected("torchvision_resnet18_half"):
        torch.save(model.state_dict(), base + "_half.pth")
    model.float()
    with torch.no_grad():
        outputs = timm_features(model, images)[1:]
    if selected("torchvision_resnet18_half"):
        save_io(base + "_half.io.safetensors", images, outputs, "the float16 ResNet-18, features in float32")

    # An mmdet detector checkpoint: backbone under `backbone.`, plus neck tensors, plus meta.
    sys.path.insert(0, os.path.abspath(args.reference_dir))
    from mmdet_resnet import ResNet
    from mmengine.logging import MMLogger
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    model = ResNet(depth=18, base_channels=8)
    randomise(model, generator)
    model.eval()
    with torch.no_grad():
        outputs = model(images)
    state = {f"backbone.{k}": v for k, v in model.state_dict().items()}
    state["neck.lateral_convs.0.conv.weight"] = torch.randn(16, 8, 1, 1, generator=generator)
    state["neck.fpn_convs.0.conv.weight"] = torch.randn(16, 16, 3, 3, generator=generator)
    base = os.path.join(args.out, "mmdet_detector_r18")
    if selected("mmdet_detector_r18"):
        torch.save({"meta": {"mmdet_version": "3.3.0", "epoch": 12}, "state_dict": state}, base + ".pth")
        save_io(base + ".io.safetensors", images, list(outputs), "mmdet ResNet(depth=18, base_channels=8) in a detector")
        write_config(base + ".toml", "mmdet ResNet(depth=18, base_channels=8)", ["depth = 18", "base_channels = 8"])

    # timm's ResNeSt (resnest50d's recipe) at tiny widths: depth 50's 3-4-6-3 blocks, since
    # burn-resnet's config has no per-stage block counts; channels (4, 8, 16, 32), as at
    # (8, 16, 32, 64) the .pth is 1.9 MB (0.66 MB here). Its own generator: the fixtures above
    # keep theirs. Every block kind is there: layer1.0's identity-pool shortcut, the avd pool and
    # the average-pool shortcut of a strided first block, split attention of 32 channels (the
    # minimum, in timm and mmdet alike).
    generator = torch.Generator().manual_seed(5)
    model = timm_resnest([3, 4, 6, 3], (4, 8, 16, 32), 4, num_classes=10)
    randomise(model, generator)
    model.eval()
    with torch.no_grad():
        outputs = timm_features(model, images)
    base = os.path.join(args.out, "timm_resnest_tiny")
    if selected("timm_resnest_tiny"):
        torch.save(model.state_dict(), base + ".pth")
        save_io(base + ".io.safetensors", images, outputs, "timm ResNeSt (resnest50d's recipe), channels (4, 8, 16, 32)")
        write_config(base + ".toml", "timm ResNet(ResNestBottleneck, [3,4,6,3], channels=(4,8,16,32), stem_width=4, "
                     "stem_type='deep', avg_down=True, base_width=64, cardinality=1, "
                     "block_args=dict(radix=2, avd=True, avd_first=False))",
                     ['type = "ResNeSt"', "depth = 50", "base_channels = 4", "stem_channels = 8", "deep_stem = true",
                      "avg_down = true", "radix = 2", "reduction_factor = 4", "avg_down_stride = true",
                      "out_indices = [0, 1, 2, 3]", "stem_output = true"])
    # timm's Res2Nets at tiny widths: channels (4, 8, 16, 32), depth 50's 3-4-6-3 blocks. timm's
    # split width is floor(planes * base_width / 64), so base_width 32 gives 2, 4, 8, 16; ours is
    # floor(planes * base_width / base_channels), the same with base_channels 4, base_width 2.
    # Own generators: the fixtures above keep their draws.
    for name, seed, kwargs, source, lines in (
            ("timm_res2net_tiny", 6, dict(),
             "timm ResNet(Bottle2neck, [3,4,6,3], channels=(4,8,16,32), base_width=32, block_args=dict(scale=4)) "
             "(res2net50_26w_4s's recipe)",
             # timm's plain stem always has 64 channels (stem_width applies to deep stems only).
             ["stem_channels = 64", "deep_stem = false", "avg_down = false"]),
            ("timm_res2net_d_tiny", 7, dict(stem_type="deep", avg_down=True, stem_width=2),
             "timm ResNet(Bottle2neck, [3,4,6,3], channels=(4,8,16,32), base_width=32, block_args=dict(scale=4), "
             "stem_type='deep', avg_down=True, stem_width=2) (res2net50d's recipe)",
             # The deep stem outputs stem_width * 2 = 4 = base_channels channels.
             ["deep_stem = true", "avg_down = true"])):
        generator = torch.Generator().manual_seed(seed)
        model = timm_res2net([3, 4, 6, 3], (4, 8, 16, 32), 32, num_classes=10, **kwargs)
        widths = [getattr(model, f"layer{i}")[0].convs[0].weight.shape[0] for i in range(1, 5)]
        assert widths == [2, 4, 8, 16], widths
        randomise(model, generator)
        model.eval()
        with torch.no_grad():
            outputs = timm_features(model, images)
        base = os.path.join(args.out, name)
        if selected(name):
            torch.save(model.state_dict(), base + ".pth")
            save_io(base + ".io.safetensors", images, outputs, source)
            write_config(base + ".toml", source,
                         ['type = "Res2Net"', "depth = 50", "base_channels = 4", "base_width = 2", "scales = 4"]
                         + lines + ['stage_pool = "always"', "out_indices = [0, 1, 2, 3]", "stem_output = true"])
    for name in sorted(os.listdir(args.out)):
        print(name, os.path.getsize(os.path.join(args.out, name)))


if __name__ == "__main__":
    main()
