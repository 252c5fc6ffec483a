#!/usr/bin/env python3
"""Multiply-accumulate counts of mmdetection's ResNet for burn-resnet configs: tests/fixtures/mmdet_macs.json.

An independent reference for the MACs `resnet info` prints (crates/burn-resnet/src/summary.rs
and plugin/figures.rs). Each config is built with `bench/mmdet_model.py` (mmdet 3.3's real
ResNet; mmcv's ContextBlock, NonLocal2d and GeneralizedAttention; the timm-style SE and the
tools/reference_dcn.py DCN/DCNv2 that module adds), put in eval mode and traced by fvcore's
`FlopCountAnalysis` on one 1x3xHxW image. fvcore counts one multiply-accumulate as one "flop"
for convolutions, linears and matrix products, which is what burn-resnet counts:

  * counted: `aten::_convolution` (fvcore: N * prod(weight shape) * out_h * out_w, so
    in/groups * k*k * out * out_h * out_w; biases not counted), `aten::linear`, `aten::matmul`,
    `aten::mm`, `aten::bmm`, `aten::addmm`, `aten::einsum`;
  * `aten::matmul`/`aten::mm` use a broadcast-aware handle (MACs = prod(output shape) * the
    contracted size) instead of fvcore's (prod(first operand) * last dim of the second), which
    undercounts when the first operand is broadcast over the second's batch dimensions; every
    case is also counted with fvcore's own handle and a difference is reported;
  * `torchvision::deform_conv2d` (the DCN's deformable conv; fvcore has no handle for it) is
    counted as the regular conv it replaces: prod(weight shape) * out_h * out_w per image, the
    bilinear sampling and the modulation not counted, as burn-resnet does; its offset conv is an
    ordinary `aten::_convolution`. The count is cross-checked against the modules' shapes;
  * not counted (fvcore's default handles set to None): batch/group/layer/instance norm,
    adaptive average pooling, bilinear/nearest upsampling, grid sampling; and everything fvcore
    skips anyway (softmax, sigmoid, max/avg pooling, mean, elementwise add/mul/div, sin/cos, ...),
    including ResNeSt's radix sums (`aten::sum`) and its attention product (`aten::mul`): its
    split attention counts only as convs, the radix-parts conv and the 1x1 fc1/fc2 on the pooled
    1x1 map (in/groups * out per image each).

The tool checks that every op fvcore counted is one of the above and prints, per case, the
ops counted (`by_operator()`), the ops seen but not counted (`unsupported_ops()`), the plugin
MACs (sum over the plugin modules, and total minus the plain reference at the same size), and
what burn-resnet's formulas (plugin/figures.rs, ported below) give for every plugin instance on
the input shape it really gets, listing each mismatch.

Output: a JSON list of {"name", "path" (configs/...) or "toml" (the config text), "height",
"width", "macs", "note" (optional)}. A case whose count holds something burn-resnet does not
count, or misses something it does, that cannot be separated, is skipped and reported.

    /tmp/refenv/bin/pip install fvcore          (besides bench/mmdet_model.py's requirements)
    /tmp/refenv/bin/python tools/mmdet_macs.py [--output PATH] [--quiet]
"""
import argparse
import json
import math
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import mmdet_model  # noqa: E402

from fvcore.nn import FlopCountAnalysis  # noqa: E402
from fvcore.nn.jit_handles import (addmm_flop_jit, bmm_flop_jit, conv_flop_jit, einsum_flop_jit,  # noqa: E402
                                   get_shape, linear_flop_jit, matmul_flop_jit)

OUTPUT = os.path.join(ROOT, "tests", "fixtures", "mmdet_macs.json")

# fvcore's default handles that count work burn-resnet does not count as MACs. fvcore's
# `set_op_handle(op=None)` only adds an op to its ignore list and leaves a default handle in
# place (fvcore 0.1.5), so `count` clears every handle and sets only the MAC ones: these ops are
# then seen and not counted, and listed by `unsupported_ops()`.
NOT_MACS = ["aten::batch_norm", "aten::group_norm", "aten::layer_norm", "aten::instance_norm",
            "aten::upsample_nearest2d", "aten::upsample_bilinear2d", "aten::adaptive_avg_pool2d",
            "aten::grid_sampler"]
# The ops whose counts are MACs (as `by_operator()` names them: without the `aten::` prefix).
MAC_OPS = {"conv", "linear", "matmul", "mm", "bmm", "addmm", "einsum", "deform_conv2d"}
# Ops fvcore sees but does not count that are known not to be multiply-accumulates here. An op
# outside this set (e.g. aten::baddbmm, a conv variant) stops the case: it may be a MAC op fvcore
# misses.
NON_MAC_OPS = {
    "aten::add", "aten::add_", "aten::sub", "aten::mul", "aten::mul_", "aten::div", "aten::div_",
    "aten::max_pool2d", "aten::avg_pool2d", "aten::softmax", "aten::sigmoid", "aten::mean",
    "aten::sin", "aten::cos", "aten::pow", "aten::rsub", "aten::linspace", "aten::zeros",
    "aten::repeat", "aten::unsqueeze", "aten::view", "aten::chunk", "aten::lift_fresh", "aten::rand",
    "aten::batch_norm", "aten::layer_norm", "aten::group_norm", "aten::instance_norm",
    "aten::upsample_bilinear2d", "aten::upsample_nearest2d", "aten::adaptive_avg_pool2d",
    "aten::relu", "aten::relu_", "aten::sqrt", "aten::neg", "aten::exp",
    # ResNeSt's split attention: the sum over the radix parts (before the pooling, and after the
    # attention product, an aten::mul) is additions only.
    "aten::sum",
}


def broadcast_matmul(inputs, outputs):
    """MACs of torch.matmul with broadcasting: every output element is one dot product of the
    contracted size (1-D operands as torch.matmul promotes them)."""
    a, b = (get_shape(v) for v in inputs[:2])
    out = get_shape(outputs[0])
    return math.prod(out) * a[-1]


def deform_conv2d_macs(inputs, outputs):
    """torchvision::deform_conv2d(input, weight, offset, mask, bias, ...): the regular conv's
    MACs, N * prod(weight shape) * out_h * out_w (burn-resnet's count; sampling not counted)."""
    weight = get_shape(inputs[1])
    out = get_shape(outputs[0])
    return out[0] * math.prod(weight) * out[2] * out[3]


# ---------------------------------------------------------------------------------------------
# burn-resnet's plugin formulas (crates/burn-resnet/src/plugin/figures.rs), on one input shape.

def figures_macs(kind, args, channels, height, width):
    """MACs figures.rs gives a plugin of type `kind` with burn-resnet args `args` (defaults
    resolved by mmdet_model.parse_config) on `channels` x `height` x `width`."""
    positions = height * width
    if kind == "SE":
        reduced = mmdet_model.make_divisible(channels * args["rd_ratio"], 8)
        return 2 * channels * reduced
    if kind == "ContextBlock":
        planes = int(channels * args["ratio"])
        macs = 2 * channels * positions if args["pooling_type"] == "att" else 0
        return macs + len(args["fusion_types"]) * 2 * channels * planes
    if kind == "NonLocal2d":
        inter = max(channels // max(args["reduction"], 1), 1)
        attended = (height // 2) * (width // 2) if args["sub_sample"] else positions
        embeddings = 1 if args["mode"] == "gaussian" else 3
        pairwise = channels if args["mode"] == "gaussian" else inter
        return (embeddings * channels * inter * positions + positions * attended * (pairwise + inter)
                + inter * channels * positions)
    if kind == "GeneralizedAttention":
        cq, pq, cb, pb = (c == "1" for c in args["attention_type"])
        heads = args["num_heads"]
        e = (channels // heads) * heads
        ped = args["position_embedding_dim"] if args["position_embedding_dim"] > 0 else channels
        sub = lambda size, stride: (size - 1) // stride + 1  # noqa: E731
        h, w = sub(height, args["q_stride"]), sub(width, args["q_stride"])
        h_kv, w_kv = sub(height, args["kv_stride"]), sub(width, args["kv_stride"])
        queries, keys = h * w, h_kv * w_kv
        c, half = channels, ped // 2
        macs = c * e * keys + e * c * queries  # value, proj
        if cq or pq:
            macs += c * e * queries  # query conv
        if cq or cb:
            macs += c * e * keys  # key conv
        if cq:
            macs += queries * keys * e
        elif cb:
            macs += keys * e
        if pq or pb:
            macs += (w * w_kv + h * h_kv) * half * e + queries * (w_kv + h_kv) * e
        return macs + queries * keys * e  # attention . value
    raise ValueError(kind)


def mmcv_macs(kind, args, channels, height, width):
    """What mmcv's module computes, by hand (the expected fvcore count): differs from
    figures_macs where mmcv takes a shortcut (GeneralizedAttention "0010" alone; "0001" without
    "0100" multiplies the positions by geom_bias before broadcasting over the queries)."""
    if kind != "GeneralizedAttention":
        return figures_macs(kind, args, channels, height, width)
    cq, pq, cb, pb = (c == "1" for c in args["attention_type"])
    heads = args["num_heads"]
    e = (channels // heads) * heads
    ped = args["position_embedding_dim"] if args["position_embedding_dim"] > 0 else channels
    sub = lambda size, stride: (size - 1) // stride + 1  # noqa: E731
    h, w = sub(height, args["q_stride"]), sub(width, args["q_stride"])
    h_kv, w_kv = sub(height, args["kv_stride"]), sub(width, args["kv_stride"])
    keys = h_kv * w_kv
    c, half = channels, ped // 2
    macs = c * e * keys  # value conv
    if cq or pq:
        macs += c * e * h * w
    if cq or cb:
        macs += c * e * keys
    if pq or pb:
        macs += (w * w_kv + h * h_kv) * half * e  # appr_geom_fc_x / _y
    if cb and not (cq or pq or pb):
        # "accelerate for saliency only": one query row (h = w = 1 from here on).
        macs += keys * e
        h = w = 1
    else:
        if cq:
            macs += h * w * keys * e
        elif cb:
            macs += keys * e
        if pq:
            macs += h * w * (w_kv + h_kv) * e
        elif pb:
            macs += (w * w_kv + h * h_kv) * e  # positions . geom_bias, broadcast afterwards
    queries = h * w
    return macs + queries * keys * e + e * c * queries  # attention . value, proj_conv


def why_different(kind, args):
    """Why mmcv computes less than figures.rs counts (the cases mmcv_macs knows)."""
    if kind == "GeneralizedAttention":
        cq, pq, cb, pb = (c == "1" for c in args["attention_type"])
        if cb and not (cq or pq or pb):
            return ("mmcv's GeneralizedAttention with attention_type \"0010\" alone takes its 'saliency only' "
                    "shortcut: one query row (h = w = 1), so attention.value costs keys*e and proj_conv runs on "
                    "1x1 (e*c), the result broadcast; burn-resnet computes and counts them at every query "
                    "(queries*keys*e and e*c*queries)")
        if pb and not pq:
            return ("mmcv's bias.position term without the query.position term multiplies each axis's projected "
                    "positions by geom_bias before broadcasting, (w*w_kv + h*h_kv)*e MACs; burn-resnet expands "
                    "geom_bias to every query and counts queries*(w_kv + h_kv)*e")
    return "unexplained"


# ---------------------------------------------------------------------------------------------
# Cases.

def plugin_toml(position, cfg, stages=None):
    stages_line = f"stages = {json.dumps(stages).lower()}\n" if stages else ""
    return f"depth = 50\nbase_channels = 16\n\n[[plugins]]\nposition = \"{position}\"\n{stages_line}cfg = {cfg}\n"


C3_C5 = [False, True, False, True]
H, W = 64, 80
PLAIN16 = "depth = 50\nbase_channels = 16\n"
# mmdet's ResNeSt is a ResNetV1d: deep stem and avg_down always (burn-resnet's config states them).
RESNEST16 = 'type = "ResNeSt"\ndepth = 50\nbase_channels = 16\ndeep_stem = true\navg_down = true\n'

# (name, source, height, width); source: {"path": ...} or {"toml": ...}.
CASES = [
    ("r50w16_plain", {"toml": PLAIN16}, H, W),
    ("r50w16_cb_r4_after_conv3_s2s4",
     {"toml": plugin_toml("after_conv3", '{ type = "ContextBlock", ratio = 0.25 }', C3_C5)}, H, W),
    ("r50w16_cb_r4_avg_add_mul_after_conv3_s2s4",
     {"toml": plugin_toml("after_conv3", '{ type = "ContextBlock", ratio = 0.25, pooling_type = "avg", '
                                         'fusion_types = ["channel_add", "channel_mul"] }', C3_C5)}, H, W),
    ("r50w16_nl_default_after_conv2_s2s4",
     {"toml": plugin_toml("after_conv2", '{ type = "NonLocal2d" }', C3_C5)}, H, W),
    ("r50w16_nl_dot_product_sub_after_conv2_s2s4",
     {"toml": plugin_toml("after_conv2", '{ type = "NonLocal2d", mode = "dot_product", sub_sample = true }', C3_C5)},
     H, W),
    ("r50w16_nl_gaussian_sub_after_conv2_s2s4",
     {"toml": plugin_toml("after_conv2", '{ type = "NonLocal2d", mode = "gaussian", sub_sample = true }', C3_C5)},
     H, W),
    ("r50w16_ga_h2_1111_kv2_after_conv2_s2s4",
     {"toml": plugin_toml("after_conv2", '{ type = "GeneralizedAttention", num_heads = 2, attention_type = "1111", '
                                         'kv_stride = 2 }', C3_C5)}, H, W),
    ("r50w16_ga_h4_0010_q2_after_conv2_s2s4",
     {"toml": plugin_toml("after_conv2", '{ type = "GeneralizedAttention", num_heads = 4, attention_type = "0010", '
                                         'q_stride = 2 }', C3_C5)}, H, W),
    ("r50w16_ga_0101_ped8_kv1_after_conv2_s2s4",
     {"toml": plugin_toml("after_conv2", '{ type = "GeneralizedAttention", attention_type = "0101", '
                                         'position_embedding_dim = 8, kv_stride = 1 }', C3_C5)}, H, W),
    # Beyond the brief's list: q_stride where the queries are counted (the "0010" case above
    # takes mmcv's one-query shortcut), and the position bias without the position query.
    ("r50w16_ga_h2_1111_q2_kv1_after_conv2_s2s4",
     {"toml": plugin_toml("after_conv2", '{ type = "GeneralizedAttention", num_heads = 2, attention_type = "1111", '
                                         'q_stride = 2, kv_stride = 1 }', C3_C5)}, H, W),
    ("r50w16_ga_h2_0001_kv2_after_conv2_s2s4",
     {"toml": plugin_toml("after_conv2", '{ type = "GeneralizedAttention", num_heads = 2, attention_type = "0001", '
                                         'kv_stride = 2 }', C3_C5)}, H, W),
    ("r50w16_se_r4_after_conv3",
     {"toml": plugin_toml("after_conv3", '{ type = "SE", rd_ratio = 0.25 }')}, H, W),
    ("r50w16_dcnv2_dg2_c3-c5",
     {"toml": PLAIN16 + 'stage_with_dcn = [false, true, true, true]\ndcn = { type = "DCNv2", deform_groups = 2 }\n'},
     H, W),
    ("resnet50_224", {"path": "configs/resnet50.toml"}, 224, 224),
    ("resnet50_gcb_r16_224", {"path": "configs/resnet50_gcb_r16.toml"}, 224, 224),
    ("resnet50_attention1111_c4-c5_224", {"path": "configs/resnet50_attention1111_c4-c5.toml"}, 224, 224),
    # Res2Net: the split convs each read conv1's output; a strided first block's pooled split.
    ("res2net50_26w_4s_224", {"path": "configs/res2net50_26w_4s.toml"}, 224, 224),
    ("res2net50w16_w4s3_dcnv2_c3-c5",
     {"toml": 'type = "Res2Net"\ndepth = 50\nbase_channels = 16\nbase_width = 4\nscales = 3\n'
              'deep_stem = true\navg_down = true\nstage_with_dcn = [false, true, true, true]\n'
              'dcn = { type = "DCNv2", deform_groups = 2 }\n'}, H, W),
    # ResNeSt: the split-attention conv (groups * radix groups, radix * width outputs) and its
    # attention fc1/fc2, 1x1 convs on the 1x1 pooled map (in/groups * out MACs per image each,
    # biases not counted); the radix softmax / sigmoid, the pooling, the radix sum and the
    # attention product are not MACs.
    ("resnest50_224", {"path": "configs/resnest50.toml"}, 224, 224),
    ("resnest101_224", {"path": "configs/resnest101.toml"}, 224, 224),
    ("resnest50w16_plain", {"toml": RESNEST16}, H, W),
    ("resnest50w16_r4_g2_w4_rf1",
     {"toml": RESNEST16 + 'radix = 4\ngroups = 2\nbase_width = 4\nreduction_factor = 1\navg_down_stride = false\n'},
     H, W),
    ("resnest50w16_r1_caffe", {"toml": RESNEST16 + 'radix = 1\nstyle = "caffe"\n'}, H, W),
    ("resnest50w16_dcnv2_c3-c5",
     {"toml": RESNEST16 + 'stage_with_dcn = [false, true, true, true]\ndcn = { type = "DCNv2", deform_groups = 1 }\n'},
     H, W),
    ("resnest50w16_cb_r4_after_conv2_s2s4",
     {"toml": RESNEST16 + '\n[[plugins]]\nposition = "after_conv2"\nstages = [false, true, false, true]\n'
                          'cfg = { type = "ContextBlock", ratio = 0.25 }\n'}, H, W),
]
# Which plain case a plugin case is compared with (same base_channels and input size).
PLAIN_OF = {"r50w16": "r50w16_plain", "resnet50": "resnet50_224", "resnest50w16": "resnest50w16_plain"}

PLUGIN_ABBRS = {"context_block": "ContextBlock", "nonlocal_block": "NonLocal2d",
                "gen_attention_block": "GeneralizedAttention", "se": "SE"}


def source_text(source):
    if "toml" in source:
        return source["toml"]
    with open(os.path.join(ROOT, source["path"])) as f:
        return f.read()


def plugin_instances(model, config):
    """Every plugin module of the model: (qualified name, burn-resnet type, args). The args are
    the config's plugin entry (defaults resolved) that built it, matched by mmdet's name."""
    entries = {}
    for entry in config["plugins"]:
        cfg = dict(entry["cfg"])
        kind = cfg.pop("type")
        abbr = next(a for a, k in PLUGIN_ABBRS.items() if k == kind)
        entries[abbr + cfg.get("postfix", "")] = (kind, cfg)
    found = []
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in entries:
            found.append((name, *entries[leaf]))
    return found


def count(model, x, matmul_handle):
    """fvcore's analysis with handles for the MAC ops only (module doc)."""
    analysis = FlopCountAnalysis(model, (x,))
    analysis.clear_op_handles()
    analysis.set_op_handle(**{
        "aten::_convolution": conv_flop_jit, "aten::linear": linear_flop_jit, "aten::bmm": bmm_flop_jit,
        "aten::addmm": addmm_flop_jit, "aten::einsum": einsum_flop_jit, "aten::matmul": matmul_handle,
        "aten::mm": matmul_handle, "torchvision::deform_conv2d": deform_conv2d_macs})
    assert not set(NOT_MACS) & set(analysis._op_handles)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    analysis.tracer_warnings("none")
    return analysis


def run_case(name, source, height, width):
    """Count one case: (entry or None, report lines, plugin summary)."""
    text = source_text(source)
    torch.manual_seed(0)
    config = mmdet_model.parse_config(text, name)
    model, info = mmdet_model.build_from_config(config)
    lines, problems, notes = [], [], []
    if info["unmirrored"]:
        return None, [f"SKIP {name}: not mirrored: {'; '.join(info['unmirrored'])}"], None
    model.eval()
    x = torch.randn(1, config["in_channels"], height, width)

    # Input shapes of every plugin and DCN module, from hooks.
    shapes = {}
    hooks = []
    plugins = plugin_instances(model, config)
    plugin_names = {p[0] for p in plugins}
    dcn_modules = [(n, m) for n, m in model.named_modules() if type(m).__name__.endswith("DeformConv2dPack")]
    for n, m in model.named_modules():
        if n in plugin_names or any(n == d for d, _ in dcn_modules):
            hooks.append(m.register_forward_hook(
                lambda mod, args, out, n=n: shapes.__setitem__(n, (tuple(args[0].shape), tuple(out.shape)))))
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()

    with torch.no_grad():
        analysis = count(model, x, broadcast_matmul)
        total = analysis.total()
        by_op = dict(analysis.by_operator())
        unsupported = dict(analysis.unsupported_ops())
        by_module = analysis.by_module()
        fv_default = count(model, x, matmul_flop_jit).total()

    counted = {op for op, v in by_op.items() if v}
    if counted - MAC_OPS:
        problems.append(f"fvcore counted non-MAC ops {sorted(counted - MAC_OPS)}")
    unknown = set(unsupported) - NON_MAC_OPS
    if unknown:
        problems.append(f"uncounted ops not known to be free of MACs: {sorted(unknown)}")
    if fv_default != total:
        notes.append(f"fvcore's own matmul handle gives {fv_default} ({fv_default - total:+d}): a broadcast operand")
    lines.append(f"{name}  {height}x{width}  builder: {info['builder']}")
    lines.append(f"  counted ops: {by_op}")
    lines.append(f"  seen, not counted: {dict(sorted(unsupported.items()))}")

    # DCN: the deform_conv2d handle against the modules' shapes.
    if dcn_modules:
        handle = by_op.get("deform_conv2d", 0)
        analytic = sum(m.weight.numel() * shapes[n][1][2] * shapes[n][1][3] for n, m in dcn_modules)
        offset = sum(by_module[n + ".conv_offset"] for n, _ in dcn_modules)
        lines.append(f"  DCN: {len(dcn_modules)} deformable convs; regular-conv MACs {handle} (analytic {analytic}), "
                     f"offset convs {offset}")
        if handle != analytic:
            problems.append(f"deform_conv2d handle {handle} != analytic {analytic}")
        notes.append(f"fvcore has no count for torchvision::deform_conv2d: its {handle} MACs were added by a handle "
                     f"as the regular conv it replaces (in/groups*k*k*out*out_h*out_w; sampling and modulation not "
                     f"counted); the {offset} MACs of the offset convs are fvcore's own conv count")

    # Plugins: fvcore per module vs mmcv by hand vs figures.rs.
    summary = None
    if plugins:
        fv_sum = fig_sum = 0
        mismatches = []
        for pname, kind, args in plugins:
            (n_, c, h, w), _ = shapes[pname]
            fv = by_module[pname]
            fig = figures_macs(kind, args, c, h, w)
            hand = mmcv_macs(kind, args, c, h, w)
            fv_sum += fv
            fig_sum += fig
            tag = "" if fv == fig else f"  MISMATCH figures.rs {fig} ({fig - fv:+d})"
            if fv != hand:
                problems.append(f"{pname}: fvcore {fv} != mmcv by hand {hand}")
            lines.append(f"  {pname:<40} {kind:<20} in {c}x{h}x{w}: fvcore {fv}{tag}")
            if fv != fig:
                mismatches.append((pname, c, h, w, fv, fig))
        summary = {"fvcore": fv_sum, "figures": fig_sum, "mismatches": mismatches}
        lines.append(f"  plugins: fvcore {fv_sum}, figures.rs {fig_sum} ({fig_sum - fv_sum:+d})")
        if mismatches:
            reasons = sorted({why_different(kind, args) for pname, kind, args in plugins
                              if any(m[0] == pname for m in mismatches)})
            notes.append(f"burn-resnet's plugin formulas (figures.rs) give {fig_sum} plugin MACs where mmcv computes "
                         f"{fv_sum} ({fig_sum - fv_sum:+d}; figures.rs total {total + fig_sum - fv_sum}): "
                         + "; ".join(reasons))
    lines.append(f"  total {total}")
    for p in problems:
        lines.append(f"  PROBLEM: {p}")
    if problems:
        return None, lines + [f"SKIP {name}"], summary
    entry = {"name": name, **source, "height": height, "width": width, "macs": int(total)}
    if notes:
        entry["note"] = "; ".join(notes)
    return entry, lines, summary


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=OUTPUT)
    parser.add_argument("--quiet", action="store_true", help="only the table")
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))

    entries, table = [], []
    totals = {}
    for name, source, height, width in CASES:
        entry, lines, summary = run_case(name, source, height, width)
        if not args.quiet:
            print("\n".join(lines), flush=True)
        if entry is None:
            table.append((name, height, width, None, None, summary))
            continue
        entries.append(entry)
        totals[name] = entry["macs"]
        table.append((name, height, width, entry["macs"], None, summary))

    print(f"\n{'case':<44} {'size':>8} {'fvcore MACs':>14} {'plugin (tot-plain)':>19} {'figures.rs plugin':>18}")
    for name, height, width, macs, _, summary in table:
        plain = totals.get(PLAIN_OF.get(name.split("_")[0], ""))
        delta = macs - plain if macs is not None and plain is not None and summary else None
        fig = summary["figures"] if summary else None
        cells = [f"{macs:,}" if macs is not None else "SKIPPED", f"{delta:,}" if delta is not None else "",
                 f"{fig:,}" if fig is not None else ""]
        print(f"{name:<44} {height:>3}x{width:<4} {cells[0]:>14} {cells[1]:>19} {cells[2]:>18}")

    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(entries, f, indent=1)
        f.write("\n")
    print(f"wrote {len(entries)} entries to {os.path.relpath(args.output, ROOT)}")


if __name__ == "__main__":
    main()
