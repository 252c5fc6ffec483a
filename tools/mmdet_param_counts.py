#!/usr/bin/env python3
"""Parameter counts of mmdetection's ResNet for burn-resnet configs: tests/fixtures/mmdet_param_counts.json.

burn-resnet claims to build mmdet's architectures; the parameter count is the cheapest check
that a config means the same network on both sides (every conv, norm and plugin shape enters
it). This builds, with `bench/mmdet_model.py` (mmdet 3.3's real ResNet/ResNeXt/Res2Net/ResNeSt,
plus what it adds: reference DCN/DCNv2, SE, FrozenBN, BasicBlock plugins), every top-level
`configs/*.toml` and the inline configs below, which exercise each plugin type at each position,
the plugin options that change shapes, DCN/DCNv2 with several deform groups and
`fallback_on_stride`, GN and FrozenBN norms, ResNeXt with a plugin and with DCN, Res2Net (scales,
base_width, stages, a plugin after conv3, DCNv2, mmdet's floating-point split width), ResNeSt
(radix, groups, reduction_factor, avg_down_stride, caffe style, DCNv2, plugins after conv2) and
the stem/stage options. The inline configs use base_channels = 16 (or less) so the Rust test that
rebuilds them stays cheap.

Output: a JSON list of {"name", "path" (configs/…) or "toml" (the config text), "params",
"builder"}; entries whose `unmirrored` is non-empty are skipped (reported on stderr). Each count
is printed. `--forward` also runs every model once (64x64, eval) as a smoke test.

    /tmp/refenv/bin/python tools/mmdet_param_counts.py [--forward]
"""
import argparse
import glob
import json
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import mmdet_model  # noqa: E402

OUTPUT = os.path.join(ROOT, "tests", "fixtures", "mmdet_param_counts.json")


def plugin_config(name, position, cfg, stages=None, depth=50, extra=""):
    """A Bottleneck (or, for depth 18/34, BasicBlock) config with one plugin entry."""
    stages_line = f"stages = {json.dumps(stages).lower()}\n" if stages else ""
    return name, (f"depth = {depth}\nbase_channels = 16\n{extra}\n[[plugins]]\n"
                  f"position = \"{position}\"\n{stages_line}cfg = {cfg}\n")


RES2NET16 = 'type = "Res2Net"\ndepth = 50\nbase_channels = 16\ndeep_stem = true\navg_down = true\n'
# mmdet's ResNeSt is a ResNetV1d: deep stem and avg_down always (burn-resnet's config states them).
RESNEST16 = 'type = "ResNeSt"\ndepth = 50\nbase_channels = 16\ndeep_stem = true\navg_down = true\n'

EXTRA = [
    # ContextBlock: both poolings, each fusion alone and together, every position.
    plugin_config("r50w16_cb_att_add_mul_after_conv1", "after_conv1",
                  '{ type = "ContextBlock", ratio = 0.25, pooling_type = "att", fusion_types = ["channel_add", "channel_mul"] }'),
    plugin_config("r50w16_cb_avg_mul_after_conv2", "after_conv2",
                  '{ type = "ContextBlock", ratio = 0.25, pooling_type = "avg", fusion_types = ["channel_mul"] }',
                  stages=[False, True, True, True]),
    plugin_config("r50w16_cb_avg_add_mul_after_conv3", "after_conv3",
                  '{ type = "ContextBlock", ratio = 0.0625, pooling_type = "avg", fusion_types = ["channel_add", "channel_mul"] }'),
    ("r50w16_two_cb_after_conv3_postfix", """depth = 50
base_channels = 16

[[plugins]]
position = "after_conv3"
cfg = { type = "ContextBlock", ratio = 0.125 }

[[plugins]]
position = "after_conv3"
stages = [false, false, true, true]
cfg = { type = "ContextBlock", ratio = 0.5, pooling_type = "avg", fusion_types = ["channel_mul"], postfix = "_2" }
"""),
    # NonLocal2d: every mode, with and without sub_sample, positions in turn.
    plugin_config("r50w16_nl_embedded_gaussian_after_conv1", "after_conv1",
                  '{ type = "NonLocal2d", mode = "embedded_gaussian", sub_sample = false }'),
    plugin_config("r50w16_nl_embedded_gaussian_sub_after_conv2", "after_conv2",
                  '{ type = "NonLocal2d", mode = "embedded_gaussian", sub_sample = true }'),
    plugin_config("r50w16_nl_dot_product_after_conv3", "after_conv3",
                  '{ type = "NonLocal2d", mode = "dot_product", sub_sample = false, reduction = 4 }',
                  stages=[False, False, True, True]),
    plugin_config("r50w16_nl_dot_product_sub_after_conv1", "after_conv1",
                  '{ type = "NonLocal2d", mode = "dot_product", sub_sample = true, use_scale = false }'),
    plugin_config("r50w16_nl_gaussian_after_conv2", "after_conv2",
                  '{ type = "NonLocal2d", mode = "gaussian", sub_sample = false }'),
    plugin_config("r50w16_nl_gaussian_sub_after_conv3", "after_conv3",
                  '{ type = "NonLocal2d", mode = "gaussian", sub_sample = true, reduction = 8 }',
                  stages=[False, True, True, True]),
    # GeneralizedAttention: attention types (which convs, fcs and biases exist), strides,
    # heads, position embedding size.
    plugin_config("r50w16_ga_1111_after_conv1", "after_conv1",
                  '{ type = "GeneralizedAttention", num_heads = 8, attention_type = "1111", kv_stride = 2, q_stride = 1 }',
                  stages=[False, False, True, True]),
    plugin_config("r50w16_ga_0100_q2_after_conv2", "after_conv2",
                  '{ type = "GeneralizedAttention", num_heads = 4, attention_type = "0100", kv_stride = 1, q_stride = 2, '
                  'position_embedding_dim = 32, position_magnitude = 2 }'),
    plugin_config("r50w16_ga_0010_after_conv3", "after_conv3",
                  '{ type = "GeneralizedAttention", num_heads = 2, attention_type = "0010", kv_stride = 1, q_stride = 1 }',
                  stages=[False, False, False, True]),
    plugin_config("r50w16_ga_1001_defaults_after_conv2", "after_conv2",
                  '{ type = "GeneralizedAttention", attention_type = "1001" }',
                  stages=[False, False, True, True]),
    # SE (timm's), every position, default and explicit ratio.
    plugin_config("r50w16_se_after_conv1", "after_conv1", '{ type = "SE" }'),
    plugin_config("r50w16_se_r4_after_conv2", "after_conv2", '{ type = "SE", rd_ratio = 0.25 }'),
    plugin_config("r50w16_se_after_conv3", "after_conv3", '{ type = "SE", postfix = "_x" }',
                  stages=[True, True, False, False]),
    # Deformable convs.
    ("r50w16_dcn_dg2_c3-c5", """depth = 50
base_channels = 16
stage_with_dcn = [false, true, true, true]
dcn = { type = "DCN", deform_groups = 2 }
"""),
    ("r50w16_dcnv2_dg2_c4-c5", """depth = 50
base_channels = 16
stage_with_dcn = [false, false, true, true]
dcn = { type = "DCNv2", deform_groups = 2 }
"""),
    ("r50w16_dcnv2_fallback_on_stride", """depth = 50
base_channels = 16
stage_with_dcn = [true, true, true, true]
dcn = { type = "DCNv2", deform_groups = 4, fallback_on_stride = true }
"""),
    ("r50w16_caffe_dcn_fallback_on_stride", """depth = 50
base_channels = 16
style = "caffe"
stage_with_dcn = [false, true, true, true]
dcn = { type = "DCN", fallback_on_stride = true }
"""),
    # Norms.
    ("r50w16_gn", """depth = 50
base_channels = 16
deep_stem = true
norm_cfg = { type = "GN", num_groups = 8 }
"""),
    ("r50w16_frozen_bn", """depth = 50
base_channels = 16
norm_cfg = { type = "FrozenBN" }
"""),
    ("r50w16_bn_no_grad_with_cp", """depth = 50
base_channels = 16
frozen_stages = 2
norm_eval = true
with_cp = true
norm_cfg = { type = "BN", requires_grad = false, eps = 1e-3, momentum = 0.01 }
"""),
    # ResNeXt.
    plugin_config("resnext50_8x4d_w16_cb_after_conv2", "after_conv2", '{ type = "ContextBlock", ratio = 0.0625 }',
                  stages=[False, True, True, True], extra="groups = 8\nbase_width = 4\n"),
    ("resnext50_4x8d_w16_dcnv2_dg2", """depth = 50
base_channels = 16
groups = 4
base_width = 8
stage_with_dcn = [false, true, true, true]
dcn = { type = "DCNv2", deform_groups = 2 }
"""),
    ("resnext101_32x4d_gcb_r16_c3-c5", """depth = 101
groups = 32
base_width = 4
frozen_stages = 1
norm_eval = true

[[plugins]]
position = "after_conv3"
stages = [false, true, true, true]
cfg = { type = "ContextBlock", ratio = 0.0625 }
"""),
    # Stem and stage options.
    ("r101w16_caffe_v1d_3stages", """depth = 101
in_channels = 1
stem_channels = 32
base_channels = 16
num_stages = 3
strides = [1, 2, 1]
dilations = [1, 1, 2]
out_indices = [2]
stem_output = true
style = "caffe"
deep_stem = true
avg_down = true
"""),
    # BasicBlock plugins: mmdet asserts it has none; bench/mmdet_model.py adds them at
    # burn-resnet's hook points with mmcv-built plugins.
    plugin_config("r18w16_cb_after_conv1", "after_conv1", '{ type = "ContextBlock", ratio = 0.25 }', depth=18),
    ("r34w16_plugins_after_conv1_conv2", """depth = 34
base_channels = 16
avg_down = true
deep_stem = true

[[plugins]]
position = "after_conv1"
stages = [false, true, true, true]
cfg = { type = "NonLocal2d", mode = "dot_product" }

[[plugins]]
position = "after_conv2"
cfg = { type = "SE" }

[[plugins]]
position = "after_conv2"
stages = [false, false, true, true]
cfg = { type = "GeneralizedAttention", num_heads = 4, attention_type = "0110" }
"""),
    # Res2Net (mmdet's `Res2Net`: Bottle2neck, `scales - 1` split convs of width
    # floor(planes * base_width / base_channels); deep stem and avg_down, which it forces).
    ("res2net50w16_w4s4", RES2NET16 + "base_width = 4\nscales = 4\n"),
    ("res2net50w16_w4s3_3stages_out02", RES2NET16 + """base_width = 4
scales = 3
num_stages = 3
strides = [1, 2, 2]
dilations = [1, 1, 1]
out_indices = [0, 2]
"""),
    # GCNet on Res2Net, after conv3 only: mmdet builds after_conv1/after_conv2 plugins with
    # `planes` channels where a Bottle2neck's tensor has width * scales (mmdet cannot run them).
    ("res2net50w16_w4s4_gcb_r16_c3-c5", RES2NET16 + """base_width = 4
scales = 4

[[plugins]]
position = "after_conv3"
stages = [false, true, true, true]
cfg = { type = "ContextBlock", ratio = 0.0625 }
"""),
    # DCNv2 on every split conv of c3-c5 (mmdet's vfnet_res2net101-mdconv-c3-c5; mmdet builds
    # the same reference packs in `convs.i` when given the dcn, fallback_on_stride false).
    ("res2net50w16_w6s2_dcnv2_c3-c5", RES2NET16 + """base_width = 6
scales = 2
stage_with_dcn = [false, true, true, true]
dcn = { type = "DCNv2", deform_groups = 1, fallback_on_stride = false }
"""),
    # mmdet's split width is floor(planes * (base_width / base_channels)) in floating point:
    # 11 * (15 / 11) = 14.999999999999998, so layer1's splits are 14 wide, not 15.
    ("res2net50c11_w15s4_float_width", """type = "Res2Net"
depth = 50
base_channels = 11
base_width = 15
scales = 4
deep_stem = true
avg_down = true
"""),
    # ResNeSt (mmdet's ResNeSt: split-attention conv2 with conv groups = groups * radix,
    # attention fc1/fc2 of max(width * radix // reduction_factor, 32) channels, grouped by
    # `groups`, with biases). Radix 4 over 2 groups of width floor(planes * 4 / 16) * 2 =
    # planes / 2, reduction_factor 1, no avd pool (the split-attention conv strides).
    ("resnest50w16_r4_g2_w4_rf1", RESNEST16 + """radix = 4
groups = 2
base_width = 4
reduction_factor = 1
avg_down_stride = false
"""),
    # Radix 1 (a sigmoid gate): conv2 width -> width, fc2 back to width; caffe style.
    ("resnest50w16_r1_caffe", RESNEST16 + 'radix = 1\nstyle = "caffe"\n'),
    # DCNv2 as the split-attention conv of c3-c5 (its conv_offset reads `width` channels).
    ("resnest50w16_dcnv2_c3-c5", RESNEST16 + """stage_with_dcn = [false, true, true, true]
dcn = { type = "DCNv2", deform_groups = 1, fallback_on_stride = false }
"""),
    # A ContextBlock after conv2 (after the avd pool): `planes` channels at groups 1.
    ("resnest50w16_cb_after_conv2", RESNEST16 + """
[[plugins]]
position = "after_conv2"
stages = [false, true, true, true]
cfg = { type = "ContextBlock", ratio = 0.25 }
"""),
    # Grouped, with a plugin after conv2: its input has the grouped width (planes / 2 here),
    # where mmdet's ResNeSt builds it with `planes` and cannot run (bench/mmdet_model.py
    # rebuilds it with the width, as mmdet's ResNeXt builds it).
    ("resnest50w16_g2_w4_cb_after_conv2", RESNEST16 + """groups = 2
base_width = 4

[[plugins]]
position = "after_conv2"
stages = [false, true, true, true]
cfg = { type = "ContextBlock", ratio = 0.25 }
"""),
]


def smoke(model, in_channels):
    """One eval forward at 64x64: the model must run, not only build."""
    model.eval()
    with torch.inference_mode():
        outs = model(torch.randn(1, in_channels, 64, 64))
    return [tuple(o.shape) for o in outs]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forward", action="store_true", help="also run each model once (smoke test)")
    parser.add_argument("--output", default=OUTPUT)
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))

    cases = []
    for path in sorted(glob.glob(os.path.join(ROOT, "configs", "*.toml"))):
        relative = os.path.relpath(path, ROOT)
        with open(path) as f:
            cases.append((os.path.splitext(os.path.basename(path))[0], {"path": relative}, f.read()))
    cases += [(name, {"toml": text}, text) for name, text in EXTRA]

    entries = []
    for name, source, text in cases:
        torch.manual_seed(0)
        config = mmdet_model.parse_config(text, name)
        model, info = mmdet_model.build_from_config(config)
        if info["unmirrored"]:
            print(f"skipped {name}: not mirrored: {'; '.join(info['unmirrored'])}", file=sys.stderr)
            continue
        shapes = f"  {smoke(model, config['in_channels'])}" if args.forward else ""
        print(f"{name:<42} {info['params']:>12,}  {info['builder']}{shapes}", flush=True)
        entries.append({"name": name, **source, "params": info["params"], "builder": info["builder"]})

    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(entries, f, indent=1)
        f.write("\n")
    print(f"wrote {len(entries)} entries to {os.path.relpath(args.output, ROOT)}")


if __name__ == "__main__":
    main()
