"""The PyTorch twin of a burn-resnet config: mmdetection 3.3's own `ResNet`/`ResNeXt`/`Res2Net`/`ResNeSt`.

`resnet bench --torch` compares burn-resnet with PyTorch; the comparison only means something
when both run the same network. `build(config_path)` reads a burn-resnet config TOML, applies
burn-resnet's defaults (crates/burn-resnet/src/config.rs and the plugin, norm and dcn modules),
and builds the network with mmdet's real backbone classes, so the baseline is what mmdet users
run rather than a re-implementation that could drift from it:

    model, info = build("configs/resnext101_32x4d.toml")
    info == {"builder": "mmdet 3.3.0 ResNeXt", "params": 42128704, "unmirrored": []}

`info["params"]` counts every parameter (frozen ones too), to check that both sides built the
same architecture; `info["unmirrored"]` names config settings the builder could not reproduce
(empty when the network is the config's). The model returns the tuple of selected features
(mmdet's ResNet does; with `stem_output` the stem activation C1 comes first) and trains through
mmdet's own `train()`, which applies `frozen_stages` and `norm_eval`.

Weights are the modules' construction-time init; mmdet's `init_weights()` is not called, as
timing does not depend on the values and mmcv 2.1's NonLocal2d(sub_sample=True) cannot re-run its
own init (its `g`/`phi` are wrapped in a Sequential by then). Nothing is downloaded.

mmdet is loaded without compiled mmcv ops: `mmdet.models` imports every detector and those need
`mmcv._ext`, which the pure-Python `mmcv-lite` wheel lacks, but the backbone itself only needs
`mmcv.cnn` (conv, norm and plugin builders, ContextBlock, NonLocal2d, GeneralizedAttention). So
`backbones/resnet.py`, `backbones/resnext.py`, `backbones/res2net.py`, `backbones/resnest.py` and
`layers/res_layer.py` are executed straight from the installed mmdet package, skipping the package
`__init__` files.
Install:

    pip install mmdet==3.3.0 mmcv-lite==2.1.0 mmengine   (plus torch, torchvision)

What mmdet cannot build itself is added here, each as burn-resnet defines it:
  * `dcn`: mmcv's DCN/DCNv2 need `mmcv.ops`; the 3x3 `conv2` of each Bottleneck in the selected
    stages is swapped for tools/reference_dcn.py's packs (mmcv's convention on
    `torchvision.ops.deform_conv2d`). `fallback_on_stride` keeps a regular conv where `conv2`
    is strided, as burn-resnet reads it (mmdet pops the key from the dict all blocks share, so
    there only the network's first DCN block falls back, strided or not). A Res2Net's
    Bottle2neck has no `conv2`: its `scales - 1` split convs (`convs.i`) are swapped instead,
    all of a block's or none (mmdet's own Res2Net builds the same packs there, `convs.i.
    conv_offset` included, but ignores `fallback_on_stride`: its Bottleneck base pops the key
    before Bottle2neck reads it; burn-resnet's reading is kept here too). A ResNeSt's
    split-attention conv (`conv2.conv`, groups = groups * radix) is swapped likewise (mmdet's
    own ResNeSt builds the same pack there and ignores `fallback_on_stride` the same way; with
    `avg_down_stride` that conv is never strided anyway: the avd pool after it strides).
  * Res2Net plugins after conv1 and after conv2 (the joined splits): mmdet builds them with
    `planes` channels, but the tensor there has `width * scales` channels (burn-resnet's
    width), so mmdet's network cannot run unless the two agree; where they differ the plugins
    are rebuilt by mmcv with `width * scales` input channels. After conv3 nothing differs.
    The same for a grouped ResNeSt (groups > 1), whose tensor there has the ResNeXt-style
    `width = floor(planes * base_width / base_channels) * groups` channels (ResNeXt itself
    rebuilds them; mmdet's ResNeSt does not).
  * `SE` plugins (timm's squeeze-excitation, not an mmcv plugin) and `FrozenBN` norms are
    registered in mmengine's MODELS registry under private names, so mmdet builds them.
  * Plugins on BasicBlocks (depth 18/34): mmdet asserts they are not implemented; the blocks are
    given burn-resnet's hook points (after conv1 → norm → ReLU; after conv2 → norm, before the
    residual add) with mmcv-built plugins.
  * `stem_output`: the max-pool's input is returned ahead of the stage outputs.

`type = "Res2Net"` builds mmdet's `Res2Net(scales, base_width, ...)`. mmdet's class forces
`deep_stem`, `avg_down` and pytorch style whatever it is given (and takes no `groups`); a config
that says otherwise is reported unmirrored (burn-resnet's `validate` rejects it anyway).

`type = "ResNeSt"` builds mmdet's `ResNeSt(groups, base_width, radix, reduction_factor,
avg_down_stride, ...)` (depths 50, 101, 152, 200). It is a ResNetV1d, which passes
`deep_stem=True, avg_down=True` itself (passing them again is a TypeError): burn-resnet's config
states them, they are not passed, and a config that says otherwise is reported unmirrored.

Without mmdet, a config that is exactly a torchvision ResNet/ResNeXt (7x7 stem of 64 channels,
pytorch style, default strides and dilations, four stages, three input channels, BatchNorm, no
plugins, no dcn) is built from torchvision's `ResNet` instead; any other config raises
`MissingDependency` saying what to install.
"""
import functools
import importlib.util
import os
import sys
import tomllib
import types

import torch
from torch import nn

MMDET_REQUIREMENT = "mmdet==3.3.0 mmcv-lite==2.1.0 mmengine"

_TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")

# burn-resnet's `ResNetConfig` keys and serde defaults (None: derived from other keys).
_DEFAULTS = {
    "type": "ResNet",  # or "Res2Net", "ResNeSt"
    "depth": None,  # required
    "in_channels": 3,
    "stem_channels": None,  # base_channels
    "base_channels": 64,
    "num_stages": 4,
    "strides": None,  # [1, 2, 2, 2][:num_stages]
    "dilations": None,  # [1] * num_stages
    "out_indices": None,  # every built stage
    "stem_output": False,
    "style": "pytorch",
    "deep_stem": False,
    "avg_down": False,
    "groups": 1,
    "base_width": None,  # 4 (ResNeXt's width per group), 26 for Res2Net (width per split)
    "scales": None,  # Res2Net only: 4
    "stage_pool": None,  # Res2Net only: "strided" (mmdet's) or "always" (timm's)
    "radix": None,  # ResNeSt only: 2
    "reduction_factor": None,  # ResNeSt only: 4
    "avg_down_stride": None,  # ResNeSt only: true
    "zero_init_residual": True,
    "frozen_stages": -1,
    "norm_eval": False,  # mmdet's class default is True; burn-resnet's is False
    "norm_cfg": None,  # {"type": "BN"}
    "with_cp": False,
    "plugins": [],
    "dcn": None,
    "stage_with_dcn": None,  # all false
}
_STAGE_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3),
                 200: (3, 24, 36, 3)}
_BOTTLENECK_DEPTHS = (50, 101, 152, 200)
_BACKBONE_TYPES = ("ResNet", "Res2Net", "ResNeSt")
# The depths each type's mmdet class has.
_DEPTHS = {"ResNet": (18, 34, 50, 101, 152), "Res2Net": (50, 101, 152), "ResNeSt": (50, 101, 152, 200)}
_BASE_WIDTH = {"ResNet": 4, "Res2Net": 26, "ResNeSt": 4}
_RES2NET_SCALES = 4
# What mmdet's Res2Net builds whatever it is given (it overrides these arguments).
_RES2NET_FORCED = {"deep_stem": True, "avg_down": True, "style": "pytorch", "groups": 1}
# ResNeSt's own keys and their defaults (mmdet's ResNeSt arguments of the same names).
_RESNEST_DEFAULTS = {"radix": 2, "reduction_factor": 4, "avg_down_stride": True}
# What mmdet's ResNeSt (a ResNetV1d) passes itself: not given to it (a TypeError otherwise).
_RESNEST_FORCED = {"deep_stem": True, "avg_down": True}

# Per plugin type: burn-resnet's keys and defaults (plugin/mod.rs, generalized_attention.rs).
_PLUGIN_DEFAULTS = {
    "ContextBlock": {"ratio": None, "pooling_type": "att", "fusion_types": ["channel_add"], "postfix": ""},
    "NonLocal2d": {"reduction": 2, "use_scale": True, "mode": "embedded_gaussian", "sub_sample": False, "postfix": ""},
    "GeneralizedAttention": {"spatial_range": -1, "num_heads": 9, "position_embedding_dim": -1,
                             "position_magnitude": 1, "kv_stride": 2, "q_stride": 1, "attention_type": "1111",
                             "postfix": ""},
    "SE": {"rd_ratio": 1.0 / 16.0, "postfix": ""},
}
_NORM_DEFAULTS = {
    "BN": {"requires_grad": True, "eps": 1e-5, "momentum": 0.1},
    "SyncBN": {"requires_grad": True, "eps": 1e-5, "momentum": 0.1},
    "GN": {"num_groups": None, "requires_grad": True, "eps": 1e-5},
    "FrozenBN": {"eps": 1e-5},
}
_DCN_DEFAULTS = {"type": None, "deform_groups": 1, "fallback_on_stride": False}


class MissingDependency(RuntimeError):
    """mmdet (with mmcv-lite and mmengine) is needed for this config and is not importable."""


# --------------------------------------------------------------------------------------------
# Config: burn-resnet's TOML with its defaults resolved.

def _fill(table, defaults, where):
    """`table` over `defaults`, rejecting unknown keys; also the keys whose default is None
    (required, or derived from others) that `table` lacks."""
    unknown = sorted(set(table) - set(defaults))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)} (burn-resnet rejects them too)")
    missing = [k for k, v in defaults.items() if v is None and k not in table]
    return {**defaults, **table}, missing


def parse_config(text, source="<config>"):
    """Parse a burn-resnet config TOML into a dict with every default resolved.

    Only what building needs is checked (burn-resnet's `validate` runs before `resnet bench`
    calls the baseline); unknown keys are rejected since they would silently change nothing."""
    raw = tomllib.loads(text)
    cfg, _ = _fill(raw, _DEFAULTS, source)
    if "depth" not in raw:
        raise ValueError(f"{source}: `depth` is required")
    kind = cfg["type"]
    if kind not in _BACKBONE_TYPES:
        raise ValueError(f"{source}: type {kind!r} is not one of {list(_BACKBONE_TYPES)}")
    if cfg["depth"] not in _DEPTHS[kind]:
        raise ValueError(f"{source}: {kind} has depths {list(_DEPTHS[kind])}, not {cfg['depth']}")
    if kind == "ResNeSt":
        for key, default in _RESNEST_DEFAULTS.items():
            if cfg[key] is None:
                cfg[key] = default
        if cfg["radix"] < 1 or cfg["reduction_factor"] < 1:
            raise ValueError(f"{source}: radix and reduction_factor must be at least 1")
    else:
        given = [key for key in _RESNEST_DEFAULTS if cfg[key] is not None]
        if given:
            verb = "is" if len(given) == 1 else "are"
            raise ValueError(f"{source}: {', '.join(given)} {verb} ResNeSt's; set type = \"ResNeSt\" "
                             "(burn-resnet rejects it too)")
    if kind == "Res2Net":
        if cfg["scales"] is None:
            cfg["scales"] = _RES2NET_SCALES
        if cfg["scales"] < 2:
            raise ValueError(f"{source}: scales = {cfg['scales']}: Res2Net needs at least 2")
    elif cfg["scales"] is not None:
        raise ValueError(f"{source}: scales is Res2Net's; set type = \"Res2Net\" (burn-resnet rejects it too)")
    if cfg["base_width"] is None:
        cfg["base_width"] = _BASE_WIDTH[kind]
    n = cfg["num_stages"]
    if cfg["stem_channels"] is None:
        cfg["stem_channels"] = cfg["base_channels"]
    resolved = {"strides": [1, 2, 2, 2][:n], "dilations": [1] * n, "out_indices": range(n), "stage_with_dcn": [False] * n}
    for key, default in resolved.items():
        cfg[key] = list(default if cfg[key] is None else cfg[key])
    cfg["out_indices"] = sorted(set(cfg["out_indices"]))

    norm = dict(cfg["norm_cfg"] or {"type": "BN"})
    kind = norm.pop("type", None)
    if kind not in _NORM_DEFAULTS:
        raise ValueError(f"{source}: norm_cfg.type {kind!r} is not one of {sorted(_NORM_DEFAULTS)}")
    norm, missing = _fill(norm, _NORM_DEFAULTS[kind], f"{source}: norm_cfg")
    if missing:
        raise ValueError(f"{source}: norm_cfg needs {', '.join(missing)}")
    cfg["norm_cfg"] = {"type": kind, **norm}

    plugins = []
    for i, entry in enumerate(cfg["plugins"]):
        entry, _ = _fill(entry, {"cfg": None, "position": None, "stages": None}, f"{source}: plugins[{i}]")
        plugin = dict(entry["cfg"] or {})
        kind = plugin.pop("type", None)
        if kind not in _PLUGIN_DEFAULTS:
            raise ValueError(f"{source}: plugins[{i}].cfg.type {kind!r} is not one of {sorted(_PLUGIN_DEFAULTS)}")
        plugin, missing = _fill(plugin, _PLUGIN_DEFAULTS[kind], f"{source}: plugins[{i}].cfg")
        if missing:
            raise ValueError(f"{source}: plugins[{i}].cfg needs {', '.join(missing)}")
        if entry["position"] not in ("after_conv1", "after_conv2", "after_conv3"):
            raise ValueError(f"{source}: plugins[{i}].position {entry['position']!r}")
        stages = entry["stages"]
        plugins.append({"cfg": {"type": kind, **plugin}, "position": entry["position"],
                        "stages": list(stages) if stages is not None else [True] * n})
    cfg["plugins"] = plugins

    if cfg["dcn"] is not None:
        dcn, missing = _fill(cfg["dcn"], _DCN_DEFAULTS, f"{source}: dcn")
        if missing or dcn["type"] not in ("DCN", "DCNv2"):
            raise ValueError(f"{source}: dcn.type must be \"DCN\" or \"DCNv2\"")
        cfg["dcn"] = dcn
    return cfg


def load_config(path):
    """`parse_config` of a file."""
    with open(path, "rb") as f:
        return parse_config(f.read().decode(), str(path))


def build(config_path):
    """Build the PyTorch network of a burn-resnet config file: `(model, info)` (module doc)."""
    return build_from_config(load_config(config_path))


def build_from_toml(text, source="<config>"):
    """`build` of a config given as TOML text."""
    return build_from_config(parse_config(text, source))


def build_from_config(cfg):
    """`build` of a parsed config: mmdet when importable, else torchvision where it suffices."""
    try:
        mm = _mmdet()
    except ImportError as error:
        if torchvision_compatible(cfg):
            return build_torchvision(cfg)
        raise MissingDependency(
            f"this config needs mmdetection's ResNet for its PyTorch baseline ({error}); install it "
            f"into this Python: pip install {MMDET_REQUIREMENT}") from error
    return build_mmdet(cfg, mm)


def count_parameters(model):
    """Every parameter's element count, trainable or frozen."""
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------
# Loading mmdet's backbone without compiled mmcv ops.

_MM = None


def _load_source(name, path):
    """Execute one mmdet source file as module `name` (once)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _mmdet():
    """mmdet's ResNet, ResNeXt, Res2Net, ResNeSt, their blocks and mmcv's plugin builder;
    ImportError if absent."""
    global _MM
    if _MM is not None:
        return _MM
    import mmdet
    from mmcv.cnn import build_plugin_layer
    from mmengine.registry import MODELS

    root = os.path.dirname(mmdet.__file__)
    # Empty packages stand in for mmdet.models & co, whose __init__ imports the detectors.
    for package in ("mmdet.models", "mmdet.models.layers", "mmdet.models.backbones"):
        if package not in sys.modules:
            stub = types.ModuleType(package)
            stub.__path__ = [os.path.join(root, *package.split(".")[1:])]
            sys.modules[package] = stub
    res_layer = _load_source("mmdet.models.layers.res_layer", os.path.join(root, "models", "layers", "res_layer.py"))
    if not hasattr(sys.modules["mmdet.models.layers"], "ResLayer"):
        sys.modules["mmdet.models.layers"].ResLayer = res_layer.ResLayer
    resnet = _load_source("mmdet.models.backbones.resnet", os.path.join(root, "models", "backbones", "resnet.py"))
    resnext = _load_source("mmdet.models.backbones.resnext", os.path.join(root, "models", "backbones", "resnext.py"))
    # res2net.py imports `.resnet`, loaded above.
    res2net = _load_source("mmdet.models.backbones.res2net", os.path.join(root, "models", "backbones", "res2net.py"))
    # resnest.py imports `..layers.ResLayer` (set above) and `.resnet`'s Bottleneck and ResNetV1d.
    resnest = _load_source("mmdet.models.backbones.resnest", os.path.join(root, "models", "backbones", "resnest.py"))

    MODELS.register_module(_SE_TYPE, module=SqueezeExcitation, force=True)
    MODELS.register_module(_FROZEN_BN_TYPE, module=FrozenBatchNorm2d, force=True)
    _MM = types.SimpleNamespace(version=mmdet.__version__, ResNet=resnet.ResNet, ResNeXt=resnext.ResNeXt,
                                Res2Net=res2net.Res2Net, ResNeSt=resnest.ResNeSt, BasicBlock=resnet.BasicBlock,
                                build_plugin_layer=build_plugin_layer)
    return _MM


# --------------------------------------------------------------------------------------------
# Modules mmcv lacks, as burn-resnet defines them.

_SE_TYPE = "BurnResNetSE"
_FROZEN_BN_TYPE = "BurnResNetFrozenBN"


def make_divisible(value, divisor=8):
    """timm's `make_divisible`: nearest multiple of `divisor`, at least `divisor`, never more
    than 10% below `value` (burn-resnet's SE width)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class SqueezeExcitation(nn.Module):
    """burn-resnet's `SE` plugin, timm's `SEModule` without its optional norm: global average
    pool → 1x1 conv (bias) → ReLU → 1x1 conv (bias) → sigmoid scaling each channel. mmcv has no
    such plugin; registered so mmdet's blocks build it from `cfg`."""
    _abbr_ = "se"

    def __init__(self, in_channels, rd_ratio=1.0 / 16.0):
        super().__init__()
        reduced = make_divisible(in_channels * rd_ratio, 8)
        self.fc1 = nn.Conv2d(in_channels, reduced, 1)
        self.fc2 = nn.Conv2d(reduced, in_channels, 1)

    def forward(self, x):
        scale = self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(scale)


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """burn-resnet's `FrozenBN`: a BatchNorm whose statistics and affine never change (always
    eval mode; mmcv's `build_norm_layer` gets `requires_grad=False`). Unlike torchvision's
    FrozenBatchNorm2d its weight and bias stay parameters, as they are in burn-resnet, so the
    parameter counts agree."""
    _abbr_ = "bn"

    def __init__(self, num_features, eps=1e-5):
        super().__init__(num_features, eps=eps)

    def train(self, mode=True):
        return super().train(False)


class WithStemOutput(nn.Module):
    """Returns the stem's activation (C1, the max-pool's input; burn-resnet's `stem_output`)
    ahead of the body's outputs. Delegates `train()` to the body, so mmdet's freezing holds."""

    def __init__(self, body, maxpool):
        super().__init__()
        self.body = body
        self._stem = None
        maxpool.register_forward_pre_hook(self._keep)

    def _keep(self, module, args):
        self._stem = args[0]

    def forward(self, x):
        outs = tuple(self.body(x))
        stem, self._stem = self._stem, None
        return (stem,) + outs


# --------------------------------------------------------------------------------------------
# mmdet.

def _mmdet_norm_cfg(norm):
    kind = norm["type"]
    if kind in ("BN", "SyncBN"):  # SyncBN on one process is BN (burn-resnet reads it so)
        return dict(type="BN", requires_grad=norm["requires_grad"], eps=norm["eps"], momentum=norm["momentum"])
    if kind == "GN":
        return dict(type="GN", num_groups=norm["num_groups"], requires_grad=norm["requires_grad"], eps=norm["eps"])
    return dict(type=_FROZEN_BN_TYPE, eps=norm["eps"], requires_grad=False)


def _toml(value):
    """A scalar as a config spells it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return f'"{value}"' if isinstance(value, str) else str(value)


def _mmcv_plugin_cfg(plugin, where, unmirrored):
    """burn-resnet's plugin `cfg` as mmcv's keyword arguments (postfix included: mmdet pops it)."""
    cfg = dict(plugin)
    kind = cfg.pop("type")
    if kind == "SE":
        return dict(type=_SE_TYPE, **cfg)
    if kind == "ContextBlock":
        cfg["fusion_types"] = tuple(cfg["fusion_types"])
    if kind == "GeneralizedAttention" and cfg["spatial_range"] >= 0:
        # mmcv precomputes the constraint map for 84x84 (256 ch) or 42x42 (512 ch) query grids
        # only, stored as a uint8 parameter; burn-resnet masks any size.
        unmirrored.append(f"{where}.spatial_range = {cfg['spatial_range']} (built with -1: mmcv supports "
                          "it only for 256/512 channels on fixed 84x84/42x42 grids)")
        cfg["spatial_range"] = -1
    return dict(type=kind, **cfg)


def build_mmdet(cfg, mm=None):
    """mmdet's `ResNet` (`ResNeXt` when groups > 1, `Res2Net` for type Res2Net, `ResNeSt` for
    type ResNeSt) for a parsed config; see the module doc."""
    mm = mm or _mmdet()
    unmirrored = []
    res2net = cfg["type"] == "Res2Net"
    resnest = cfg["type"] == "ResNeSt"
    bottleneck = cfg["depth"] in _BOTTLENECK_DEPTHS
    plugins = []
    for i, entry in enumerate(cfg["plugins"]):
        plugins.append(dict(cfg=_mmcv_plugin_cfg(entry["cfg"], f"plugins[{i}].cfg", unmirrored),
                            position=entry["position"], stages=tuple(entry["stages"])))
    kwargs = dict(
        depth=cfg["depth"], in_channels=cfg["in_channels"], stem_channels=cfg["stem_channels"],
        base_channels=cfg["base_channels"], num_stages=cfg["num_stages"], strides=tuple(cfg["strides"]),
        dilations=tuple(cfg["dilations"]), out_indices=tuple(cfg["out_indices"]), style=cfg["style"],
        deep_stem=cfg["deep_stem"], avg_down=cfg["avg_down"], frozen_stages=cfg["frozen_stages"],
        norm_cfg=_mmdet_norm_cfg(cfg["norm_cfg"]), norm_eval=cfg["norm_eval"], with_cp=cfg["with_cp"],
        zero_init_residual=cfg["zero_init_residual"],
        plugins=(plugins or None) if bottleneck else None)
    if res2net:
        for key, forced in _RES2NET_FORCED.items():
            if cfg[key] != forced:
                unmirrored.append(f"{key} = {_toml(cfg[key])} (mmdet's Res2Net always builds with "
                                  f"{key} = {_toml(forced)})")
        if cfg["stage_pool"] == "always":
            unmirrored.append('stage_pool = "always" (timm\'s Res2Net: mmdet\'s pools the last split of '
                              'strided first blocks only)')
        model = mm.Res2Net(scales=cfg["scales"], base_width=cfg["base_width"], **kwargs)
        builder = f"mmdet {mm.version} Res2Net"
    elif resnest:
        for key, forced in _RESNEST_FORCED.items():
            if kwargs.pop(key) != forced:
                unmirrored.append(f"{key} = {_toml(cfg[key])} (mmdet's ResNeSt is a ResNetV1d: always "
                                  f"{key} = {_toml(forced)})")
        model = mm.ResNeSt(groups=cfg["groups"], base_width=cfg["base_width"], radix=cfg["radix"],
                           reduction_factor=cfg["reduction_factor"], avg_down_stride=cfg["avg_down_stride"], **kwargs)
        builder = f"mmdet {mm.version} ResNeSt"
    elif cfg["groups"] > 1:
        model = mm.ResNeXt(groups=cfg["groups"], base_width=cfg["base_width"], **kwargs)
        builder = f"mmdet {mm.version} ResNeXt"
    else:
        model = mm.ResNet(**kwargs)
        builder = f"mmdet {mm.version} ResNet"

    extras = []
    if plugins and not bottleneck:
        _plug_basic_blocks(model, plugins, mm)
        extras.append("BasicBlock plugins at burn-resnet's hook points")
    if plugins and res2net and _replug_res2net_inner(model, plugins, mm):
        extras.append("Res2Net after_conv1/2 plugins at width*scales channels")
    if plugins and resnest and _replug_inner(model, plugins, mm, lambda block: block.conv2.channels):
        extras.append("ResNeSt after_conv1/2 plugins at the grouped width")
    if cfg["dcn"] is not None and any(cfg["stage_with_dcn"]):
        _deformable_conv2(model, cfg["dcn"], cfg["stage_with_dcn"])
        extras.append(f"{cfg['dcn']['type']} from tools/reference_dcn.py")
    if any(e["cfg"]["type"] == "SE" for e in cfg["plugins"]):
        extras.append("timm-style SE")
    if cfg["norm_cfg"]["type"] == "FrozenBN":
        extras.append("FrozenBN as an always-eval BatchNorm")
    if cfg["stem_output"]:
        model = WithStemOutput(model, model.maxpool)
    if extras:
        builder += " + " + ", ".join(extras)
    return model, {"builder": builder, "params": count_parameters(model), "unmirrored": unmirrored}


def _plug_basic_blocks(model, plugins, mm):
    """Give mmdet's BasicBlocks burn-resnet's plugins (mmdet asserts it has none): built by mmcv
    as in a Bottleneck, run by `_BasicBlockWithPlugins.forward`."""
    for stage, layer_name in enumerate(model.res_layers):
        chosen = [p for p in plugins if p["stages"][stage]]
        if not chosen:
            continue
        for block in getattr(model, layer_name):
            names = {}
            for position in ("after_conv1", "after_conv2"):
                names[position] = []
                for plugin in (p["cfg"] for p in chosen if p["position"] == position):
                    plugin = dict(plugin)
                    # Both hook points of a BasicBlock see `planes` channels (expansion 1).
                    name, layer = mm.build_plugin_layer(plugin, in_channels=block.conv2.out_channels,
                                                        postfix=plugin.pop("postfix", ""))
                    assert not hasattr(block, name), f"duplicate plugin {name}"
                    block.add_module(name, layer)
                    names[position].append(name)
            block.after_conv1_plugin_names = names["after_conv1"]
            block.after_conv2_plugin_names = names["after_conv2"]
            block.__class__ = _basic_block_with_plugins(mm.BasicBlock)


@functools.cache
def _basic_block_with_plugins(basic_block):
    """mmdet's BasicBlock with plugins after conv1 → norm1 → ReLU and after conv2 → norm2."""

    def forward(self, x):
        def inner(x):
            out = self.relu(self.norm1(self.conv1(x)))
            for name in self.after_conv1_plugin_names:
                out = getattr(self, name)(out)
            out = self.norm2(self.conv2(out))
            for name in self.after_conv2_plugin_names:
                out = getattr(self, name)(out)
            identity = x if self.downsample is None else self.downsample(x)
            return out + identity

        if self.with_cp and x.requires_grad:
            out = torch.utils.checkpoint.checkpoint(inner, x, use_reentrant=False)
        else:
            out = inner(x)
        return self.relu(out)

    return type("BasicBlockWithPlugins", (basic_block,), {"forward": forward})


def _replug_res2net_inner(model, plugins, mm):
    """Rebuild a Res2Net's after_conv1/after_conv2 plugins with the `width * scales` channels
    their input has (mmdet builds them with `planes`); whether any had to be."""
    return _replug_inner(model, plugins, mm, lambda block: block.width * block.scales)


def _replug_inner(model, plugins, mm, channels_of):
    """Rebuild the after_conv1/after_conv2 plugins of each block with the `channels_of(block)`
    channels their input has, where mmdet built them with `planes`; whether any had to be."""
    rebuilt = False
    for stage, layer_name in enumerate(model.res_layers):
        for position in ("after_conv1", "after_conv2"):
            chosen = [p["cfg"] for p in plugins if p["stages"][stage] and p["position"] == position]
            for block in getattr(model, layer_name) if chosen else []:
                channels = channels_of(block)
                if channels == block.planes:  # what mmdet built them with
                    continue
                names = getattr(block, f"{position}_plugin_names")
                assert len(names) == len(chosen), (names, chosen)
                for name, plugin in zip(names, chosen):
                    plugin = dict(plugin)
                    new_name, layer = mm.build_plugin_layer(plugin, in_channels=channels,
                                                            postfix=plugin.pop("postfix", ""))
                    assert new_name == name, (new_name, name)
                    setattr(block, name, layer)
                    rebuilt = True
    return rebuilt


def _deformable_conv2(model, dcn, stage_with_dcn):
    """Swap each selected Bottleneck's 3x3 `conv2` (a Bottle2neck's split convs `convs.i`, a
    ResNeSt block's split-attention conv `conv2.conv`) for mmcv's DCN/DCNv2 on torchvision ops."""
    if _TOOLS not in sys.path:
        sys.path.insert(0, _TOOLS)
    import reference_dcn
    pack = reference_dcn.ModulatedDeformConv2dPack if dcn["type"] == "DCNv2" else reference_dcn.DeformConv2dPack

    def deformable(conv):
        return pack(conv.in_channels, conv.out_channels, conv.kernel_size[0], stride=conv.stride[0],
                    padding=conv.padding[0], dilation=conv.dilation[0], groups=conv.groups,
                    deform_groups=dcn["deform_groups"])

    for layer_name, selected in zip(model.res_layers, stage_with_dcn):
        for block in getattr(model, layer_name) if selected else []:
            # Bottle2neck deletes its inherited conv2: the split convs take its place. A
            # ResNeSt block's conv2 is a SplitAttentionConv2d around the 3x3 conv `conv`.
            convs = block.convs if hasattr(block, "convs") else None
            # The module holding the 3x3 conv, and the conv's name there.
            owner, name = (block.conv2, "conv") if hasattr(block, "conv2") and hasattr(block.conv2, "rsoftmax") \
                else (block, "conv2")
            conv = convs[0] if convs is not None else getattr(owner, name)
            if dcn["fallback_on_stride"] and conv.stride[0] > 1:
                continue
            if convs is not None:
                for i, split in enumerate(convs):
                    convs[i] = deformable(split)
            else:
                setattr(owner, name, deformable(conv))


# --------------------------------------------------------------------------------------------
# torchvision fallback.

def torchvision_compatible(cfg):
    """Whether torchvision's ResNet/ResNeXt is exactly this config's network (never a Res2Net)."""
    return (cfg["type"] == "ResNet" and cfg["num_stages"] == 4 and cfg["in_channels"] == 3
            and cfg["base_channels"] == 64 and cfg["stem_channels"] == 64 and not cfg["deep_stem"] and not cfg["avg_down"]
            and cfg["style"] == "pytorch" and cfg["strides"] == [1, 2, 2, 2] and cfg["dilations"] == [1, 1, 1, 1]
            and cfg["norm_cfg"]["type"] in ("BN", "SyncBN") and not cfg["plugins"]
            and not (cfg["dcn"] is not None and any(cfg["stage_with_dcn"])))


class TorchvisionBody(nn.Module):
    """torchvision's ResNet without avgpool/fc, returning the selected stage outputs, trained
    as mmdet's ResNet is (`frozen_stages`, `norm_eval`, `with_cp`)."""

    def __init__(self, net, out_indices, frozen_stages=-1, norm_eval=False, with_cp=False):
        super().__init__()
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layers = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp

    def forward(self, x):
        x = self.stem(x)
        outs = []
        for i, layer in enumerate(self.layers):
            for block in layer:
                if self.with_cp and self.training and x.requires_grad:
                    x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
                else:
                    x = block(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)

    def train(self, mode=True):
        """mmdet's ResNet.train(): the stem and layer1..frozen_stages keep their norms in eval
        mode and get no gradients; `norm_eval` puts every BatchNorm in eval mode."""
        super().train(mode)
        frozen = ([self.stem] if self.frozen_stages >= 0 else []) + list(self.layers[:max(self.frozen_stages, 0)])
        for part in frozen:
            part.eval()
            for p in part.parameters():
                p.requires_grad_(False)
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self


def build_torchvision(cfg, builder=None):
    """torchvision's ResNet/ResNeXt body for a `torchvision_compatible` config."""
    import torchvision
    from torchvision.models import resnet as tv

    if not torchvision_compatible(cfg):
        raise ValueError("this config is not a torchvision ResNet")
    depth = cfg["depth"]
    norm = cfg["norm_cfg"]
    block = tv.Bottleneck if depth in _BOTTLENECK_DEPTHS else tv.BasicBlock
    norm_layer = functools.partial(nn.BatchNorm2d, eps=norm["eps"], momentum=norm["momentum"])
    net = tv.ResNet(block, list(_STAGE_BLOCKS[depth]), zero_init_residual=cfg["zero_init_residual"],
                    groups=cfg["groups"], width_per_group=cfg["base_width"] if cfg["groups"] > 1 else 64,
                    norm_layer=norm_layer)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.requires_grad_(norm["requires_grad"])
    model = TorchvisionBody(net, cfg["out_indices"], cfg["frozen_stages"], cfg["norm_eval"], cfg["with_cp"])
    if builder is None:
        name = f"resnext{depth}_{cfg['groups']}x{cfg['base_width']}d" if cfg["groups"] > 1 else f"resnet{depth}"
        builder = f"torchvision {torchvision.__version__} {name} body"
    if cfg["stem_output"]:
        model = WithStemOutput(model, model.stem[-1])
    return model, {"builder": builder, "params": count_parameters(model), "unmirrored": []}


def resnet50_body():
    """torchvision's ResNet-50 body (the baseline without `--config`)."""
    return build_torchvision(parse_config("depth = 50"), builder="torchvision resnet50 body")
