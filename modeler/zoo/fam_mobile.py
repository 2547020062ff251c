"""Mobile CNN families: MobileNetV1/V2/V3, ShuffleNetV2, MnasNet/ProxylessNAS, EfficientNet.

Depthwise convolutions run at a fraction of dense convolutions' speed on a
CPU, so these families get a smaller MAC budget (:data:`MOBILE_MAX_MACS`).
Layer layouts follow the papers; kernel sizes and expansion ratios are drawn
per stage or per block, as neural-architecture-search spaces do.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping

from .arch import Add, Architecture, ChannelShuffle, Concat, MaxPool, Slice
from .blocks import Net, classifier, conv_bn, inverted_residual, squeeze_excite
from .sampling import INPUT_SIZE, NUM_CLASSES, Choice, Family, IntRange, Sampler, Uniform, make_divisible, stem_kind

__all__ = ["MOBILE_MAX_MACS", "MOBILENETV1", "MOBILENETV2", "MOBILENETV3", "SHUFFLENETV2", "MNASNET", "EFFICIENTNET"]

#: MAC budget of the depthwise-heavy families (about 30 ms on one core).
MOBILE_MAX_MACS = 400_000_000

_WIDTH_MULT = Uniform(0.25, 1.0, 0.125, help="times every channel count (rounded to multiples of 8)")


def _stem_stride(hp: Mapping[str, Any]) -> int:
    return 2 if hp["stem"] == "imagenet" else 1


def _stem_hp(input_size: int, width_mult: float, stem_channels: int) -> Dict[str, Any]:
    """The input and stem hyper-parameters of a width-multiplied network."""
    return {"input_size": input_size, "stem": stem_kind(input_size), "width_mult": width_mult,
            "stem_width": make_divisible(stem_channels * width_mult)}


def _head(net: Net, x: str, name: str, family: str, hp: Mapping[str, Any], width: int, activation: str = "relu",
          hidden: int = 0) -> Architecture:
    """The end of a mobile network: a 1x1 conv to ``width`` channels, the classifier (with a ``hidden``-unit
    dense layer when set), and the finished architecture."""
    x = conv_bn(net, x, width, 1, "head", activation=activation)
    classifier(net, x, hp["num_classes"], hidden=hidden, activation=activation)
    return net.finish(name, family, hp)


# ------------------------------------------------------------------ MobileNetV1
_V1_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2))  # then 512 x middle, 1024/2, 1024/1
_V1_RANGES = {
    "input_size": INPUT_SIZE,
    "width_mult": _WIDTH_MULT,
    "middle_blocks": IntRange(1, 5, help="depthwise-separable 512-channel blocks at 1/16 resolution (paper: 5)"),
    "kernel": Choice((3, 5), weights=(3, 1), help="depthwise kernel, per block"),
    "num_classes": NUM_CLASSES,
}


def _v1_sample(s: Sampler) -> Dict[str, Any]:
    input_size, width_mult = s.draw("input_size"), s.draw("width_mult")
    middle = s.draw("middle_blocks")
    blocks = list(_V1_BLOCKS) + [(512, 1)] * middle + [(1024, 2), (1024, 1)]
    kernels = s.draws("kernel", len(blocks))
    return {
        **_stem_hp(input_size, width_mult, 32),
        "middle_blocks": middle,
        # [out_ch, stride, kernel] per depthwise-separable block
        "blocks": [[make_divisible(c * width_mult), st, k] for (c, st), k in zip(blocks, kernels)],
        "num_classes": s.draw("num_classes"),
    }


def _v1_build(name: str, hp: Mapping[str, Any]) -> Architecture:
    net = Net(hp["input_size"], hp["input_size"], 3)
    x = conv_bn(net, net.x, hp["stem_width"], 3, "stem", stride=_stem_stride(hp), activation="relu6")
    channels = hp["stem_width"]
    for i, (out_ch, stride, kernel) in enumerate(hp["blocks"]):
        x = conv_bn(net, x, channels, kernel, f"block{i + 1}.dw", stride=stride, groups=channels, activation="relu6")
        x = conv_bn(net, x, out_ch, 1, f"block{i + 1}.pw", activation="relu6")
        channels = out_ch
    classifier(net, x, hp["num_classes"])
    return net.finish(name, "mobilenetv1", hp)


MOBILENETV1 = Family("mobilenetv1", "MobileNetV1 (Howard et al. 2017): depthwise-separable conv blocks",
                     _V1_RANGES, _v1_sample, _v1_build, max_macs=MOBILE_MAX_MACS)


# ------------------------------------------------------------------ MobileNetV2
# (out_ch, default depth, first stride) of the 7 bottleneck stages; stage 1 has expansion 1.
_V2_STAGES = ((16, 1, 1), (24, 2, 2), (32, 3, 2), (64, 4, 2), (96, 3, 1), (160, 3, 2), (320, 1, 1))
_V2_RANGES = {
    "input_size": INPUT_SIZE,
    "width_mult": _WIDTH_MULT,
    "expansion": Choice((2, 3, 4, 6), weights=(1, 1, 1, 3), help="expansion ratio, per stage 2-7 (paper: 6)"),
    "depth": IntRange(1, 4, help="blocks, per stage 2-6 (paper: 2, 3, 4, 3, 3)"),
    "kernel": Choice((3, 5), weights=(3, 1), help="depthwise kernel, per stage"),
    "num_classes": NUM_CLASSES,
}


def _v2_sample(s: Sampler) -> Dict[str, Any]:
    input_size, width_mult = s.draw("input_size"), s.draw("width_mult")
    stages = []
    for i, (c, _, stride) in enumerate(_V2_STAGES):
        expansion, depth, kernel = s.draw("expansion"), s.draw("depth"), s.draw("kernel")
        if i == 0:
            expansion, depth = 1, 1
        elif i == len(_V2_STAGES) - 1:
            depth = 1
        stages.append([make_divisible(c * width_mult), depth, stride, expansion, kernel])
    return {
        **_stem_hp(input_size, width_mult, 32),
        "stages": stages,  # [out_ch, depth, first stride, expansion, kernel]
        "last_width": make_divisible(1280 * max(1.0, width_mult)),
        "num_classes": s.draw("num_classes"),
    }


def _mbconv_build(name: str, family: str, hp: Mapping[str, Any], activation: str, se_ratio: float = 0.0
                  ) -> Architecture:
    """MobileNetV2 and EfficientNet: a stem, ``hp["stages"]`` of MBConv blocks
    (``[out_ch, depth, first stride, expansion, kernel]``; squeeze-excite
    ``se_ratio`` times a block's input width, none at 0), a 1x1 head conv and
    the classifier, with ``activation`` throughout."""
    net = Net(hp["input_size"], hp["input_size"], 3)
    x = conv_bn(net, net.x, hp["stem_width"], 3, "stem", stride=_stem_stride(hp), activation=activation)
    channels = hp["stem_width"]
    for si, (out_ch, depth, stride, expansion, kernel) in enumerate(hp["stages"]):
        for bi in range(depth):
            se = max(1, int(channels * se_ratio)) if se_ratio else 0
            x, channels = inverted_residual(net, x, channels, out_ch, f"stage{si + 1}.block{bi + 1}",
                                            expand=expansion, kernel=kernel, stride=stride if bi == 0 else 1,
                                            activation=activation, se_channels=se, se_activation=activation)
    return _head(net, x, name, family, hp, hp["last_width"], activation)


def _v2_build(name: str, hp: Mapping[str, Any]) -> Architecture:
    return _mbconv_build(name, "mobilenetv2", hp, "relu6")


MOBILENETV2 = Family("mobilenetv2", "MobileNetV2 (Sandler et al. 2018): inverted residuals with linear bottlenecks",
                     _V2_RANGES, _v2_sample, _v2_build, max_macs=MOBILE_MAX_MACS)


# ------------------------------------------------------------------ MobileNetV3
# (kernel, expansion size, out_ch, squeeze-excite, activation, stride) from the paper's tables.
_V3_LARGE = ((3, 16, 16, False, "relu", 1), (3, 64, 24, False, "relu", 2), (3, 72, 24, False, "relu", 1),
             (5, 72, 40, True, "relu", 2), (5, 120, 40, True, "relu", 1), (5, 120, 40, True, "relu", 1),
             (3, 240, 80, False, "hardswish", 2), (3, 200, 80, False, "hardswish", 1),
             (3, 184, 80, False, "hardswish", 1), (3, 184, 80, False, "hardswish", 1),
             (3, 480, 112, True, "hardswish", 1), (3, 672, 112, True, "hardswish", 1),
             (5, 672, 160, True, "hardswish", 2), (5, 960, 160, True, "hardswish", 1),
             (5, 960, 160, True, "hardswish", 1))
_V3_SMALL = ((3, 16, 16, True, "relu", 2), (3, 72, 24, False, "relu", 2), (3, 88, 24, False, "relu", 1),
             (5, 96, 40, True, "hardswish", 2), (5, 240, 40, True, "hardswish", 1),
             (5, 240, 40, True, "hardswish", 1), (5, 120, 48, True, "hardswish", 1),
             (5, 144, 48, True, "hardswish", 1), (5, 288, 96, True, "hardswish", 2),
             (5, 576, 96, True, "hardswish", 1), (5, 576, 96, True, "hardswish", 1))
_V3_HEAD = {"large": (960, 1280), "small": (576, 1024)}
_V3_RANGES = {
    "input_size": INPUT_SIZE,
    "variant": Choice(("large", "small"), help="the paper's block table"),
    "width_mult": _WIDTH_MULT,
    "kernel": Choice((3, 5), help="depthwise kernel, per block"),
    "expansion": Choice((0.0, 3.0, 4.0, 6.0), weights=(2, 1, 1, 1),
                        help="expansion ratio per block; 0 keeps the paper's expansion size"),
    "num_classes": NUM_CLASSES,
}


def _v3_sample(s: Sampler) -> Dict[str, Any]:
    input_size, variant, width_mult = s.draw("input_size"), s.draw("variant"), s.draw("width_mult")
    table = _V3_LARGE if variant == "large" else _V3_SMALL
    blocks = []
    in_ch = make_divisible(16 * width_mult)
    for i, (_, exp_size, c, se, act, stride) in enumerate(table):
        kernel, ratio = s.draw("kernel"), s.draw("expansion")
        hidden = make_divisible(exp_size * width_mult) if ratio == 0 or i == 0 else make_divisible(in_ch * ratio)
        out_ch = make_divisible(c * width_mult)
        blocks.append([out_ch, hidden, kernel, stride, se, act])
        in_ch = out_ch
    last_conv, last_fc = _V3_HEAD[variant]
    return {
        **_stem_hp(input_size, width_mult, 16),
        "variant": variant,
        "blocks": blocks,  # [out_ch, hidden (expanded) channels, kernel, stride, squeeze-excite, activation]
        "last_conv": make_divisible(last_conv * width_mult),
        "last_fc": last_fc,
        "num_classes": s.draw("num_classes"),
    }


def _v3_build(name: str, hp: Mapping[str, Any]) -> Architecture:
    net = Net(hp["input_size"], hp["input_size"], 3)
    x = conv_bn(net, net.x, hp["stem_width"], 3, "stem", stride=_stem_stride(hp), activation="hardswish")
    channels = hp["stem_width"]
    for i, (out_ch, hidden, kernel, stride, se, act) in enumerate(hp["blocks"]):
        p = f"block{i + 1}"
        y = x
        if hidden != channels:
            y = conv_bn(net, y, hidden, 1, f"{p}.expand", activation=act)
        y = conv_bn(net, y, hidden, kernel, f"{p}.dw", stride=stride, groups=hidden, activation=act)
        if se:
            y = squeeze_excite(net, y, hidden, make_divisible(hidden / 4), f"{p}.se", gate="hardsigmoid")
        y = conv_bn(net, y, out_ch, 1, f"{p}.project", activation=None)
        if stride == 1 and channels == out_ch:
            y = net.add(Add(name=f"{p}.add", inputs=(x, y)))
        x, channels = y, out_ch
    return _head(net, x, name, "mobilenetv3", hp, hp["last_conv"], "hardswish", hidden=hp["last_fc"])


MOBILENETV3 = Family("mobilenetv3", "MobileNetV3 (Howard et al. 2019): large/small tables with hard-swish, "
                                    "hard-sigmoid squeeze-excite",
                     _V3_RANGES, _v3_sample, _v3_build, max_macs=MOBILE_MAX_MACS)


# ------------------------------------------------------------------ ShuffleNetV2
_SHUFFLE_WIDTHS = {0.5: (48, 96, 192, 1024), 1.0: (116, 232, 464, 1024), 1.5: (176, 352, 704, 1024),
                   2.0: (244, 488, 976, 2048)}
_SHUFFLE_RANGES = {
    "input_size": INPUT_SIZE,
    "width": Choice((0.5, 1.0, 1.5, 2.0), weights=(3, 3, 2, 1), help="the paper's channel tables (0.5x-2x)"),
    "depth": IntRange(1, 8, help="units per stage, 3 stages (paper: 4, 8, 4)"),
    "kernel": Choice((3, 5, 7), weights=(3, 1, 1), help="depthwise kernel, per stage"),
    "num_classes": NUM_CLASSES,
}


def _shuffle_sample(s: Sampler) -> Dict[str, Any]:
    input_size, width = s.draw("input_size"), s.draw("width")
    *stage_widths, last = _SHUFFLE_WIDTHS[width]
    stages = [[c, s.draw("depth"), s.draw("kernel")] for c in stage_widths]
    return {"input_size": input_size, "stem": stem_kind(input_size), "width": width,
            "stages": stages,  # [out_ch, units, kernel]
            "last_width": last, "num_classes": s.draw("num_classes")}


def _shuffle_build(name: str, hp: Mapping[str, Any]) -> Architecture:
    net = Net(hp["input_size"], hp["input_size"], 3)
    x = conv_bn(net, net.x, 24, 3, "stem", stride=_stem_stride(hp))
    if hp["stem"] == "imagenet":
        x = net.add(MaxPool(3, 2, padding="same", name="stem_pool", inputs=(x,)))
    channels = 24
    for si, (out_ch, units, kernel) in enumerate(hp["stages"]):
        half = out_ch // 2
        for ui in range(units):
            p = f"stage{si + 2}.unit{ui + 1}"
            if ui == 0:  # stride 2: both branches see the whole input
                left = conv_bn(net, x, channels, kernel, f"{p}.left_dw", stride=2, groups=channels, activation=None)
                left = conv_bn(net, left, out_ch - half, 1, f"{p}.left_pw")
                right = x
            else:  # stride 1: channel split
                left = net.add(Slice(0, half, name=f"{p}.split_left", inputs=(x,)))
                right = net.add(Slice(half, out_ch - half, name=f"{p}.split_right", inputs=(x,)))
            stride = 2 if ui == 0 else 1
            right = conv_bn(net, right, half, 1, f"{p}.right_pw1")
            right = conv_bn(net, right, half, kernel, f"{p}.right_dw", stride=stride, groups=half, activation=None)
            right = conv_bn(net, right, half, 1, f"{p}.right_pw2")
            net.add(Concat(name=f"{p}.concat", inputs=(left, right)))
            x = net.add(ChannelShuffle(2, name=f"{p}.shuffle"))
            channels = out_ch
    return _head(net, x, name, "shufflenetv2", hp, hp["last_width"])


SHUFFLENETV2 = Family("shufflenetv2", "ShuffleNetV2 (Ma et al. 2018): channel split, depthwise branch, concat and "
                                      "channel shuffle",
                      _SHUFFLE_RANGES, _shuffle_sample, _shuffle_build, max_macs=MOBILE_MAX_MACS)


# ------------------------------------------------------------------ MnasNet / ProxylessNAS
_MNAS_STAGES = ((24, 2), (40, 2), (80, 2), (112, 1), (160, 2), (320, 1))  # (out_ch, first stride)
_MNAS_RANGES = {
    "input_size": INPUT_SIZE,
    "width_mult": _WIDTH_MULT,
    "depth": IntRange(1, 4, help="MBConv blocks, per stage (6 stages; MnasNet-A1: 2, 3, 4, 2, 3, 1)"),
    "kernel": Choice((3, 5, 7), help="depthwise kernel, per block (the NAS search space)"),
    "expansion": Choice((3, 6), help="expansion ratio, per block"),
    "se": Choice((False, True), weights=(2, 1), help="squeeze-excite in a stage (ProxylessNAS: never)"),
    "num_classes": NUM_CLASSES,
}


def _mnas_sample(s: Sampler) -> Dict[str, Any]:
    input_size, width_mult = s.draw("input_size"), s.draw("width_mult")
    stages = []
    for c, stride in _MNAS_STAGES:
        depth, se = s.draw("depth"), s.draw("se")
        blocks = [[s.draw("kernel"), s.draw("expansion")] for _ in range(depth)]
        stages.append({"out_ch": make_divisible(c * width_mult), "stride": stride, "se": se, "blocks": blocks})
    return {**_stem_hp(input_size, width_mult, 32), "sep_width": make_divisible(16 * width_mult),
            "stages": stages,  # blocks: [kernel, expansion]
            "last_width": 1280, "num_classes": s.draw("num_classes")}


def _mnas_build(name: str, hp: Mapping[str, Any]) -> Architecture:
    net = Net(hp["input_size"], hp["input_size"], 3)
    x = conv_bn(net, net.x, hp["stem_width"], 3, "stem", stride=_stem_stride(hp))
    x = conv_bn(net, x, hp["stem_width"], 3, "sep.dw", groups=hp["stem_width"])
    x = conv_bn(net, x, hp["sep_width"], 1, "sep.pw", activation=None)
    channels = hp["sep_width"]
    for si, stage in enumerate(hp["stages"]):
        for bi, (kernel, expansion) in enumerate(stage["blocks"]):
            se = max(8, make_divisible(channels * expansion / 4)) if stage["se"] else 0
            x, channels = inverted_residual(net, x, channels, stage["out_ch"], f"stage{si + 1}.block{bi + 1}",
                                            expand=expansion, kernel=kernel,
                                            stride=stage["stride"] if bi == 0 else 1, activation="relu",
                                            se_channels=se)
    return _head(net, x, name, "mnasnet", hp, hp["last_width"])


MNASNET = Family("mnasnet", "MnasNet / ProxylessNAS-style: MBConv blocks with per-block kernel (3/5/7) and "
                            "expansion (3/6), optional squeeze-excite per stage",
                 _MNAS_RANGES, _mnas_sample, _mnas_build, max_macs=MOBILE_MAX_MACS)


# ------------------------------------------------------------------ EfficientNet
# B0: (expansion, kernel, out_ch, depth, first stride)
_B0 = ((1, 3, 16, 1, 1), (6, 3, 24, 2, 2), (6, 5, 40, 2, 2), (6, 3, 80, 3, 2), (6, 5, 112, 3, 1),
       (6, 5, 192, 4, 2), (6, 3, 320, 1, 1))
_ALPHA, _BETA, _GAMMA = 1.2, 1.1, 1.15  # depth, width, resolution bases of compound scaling
_EFFICIENT_RANGES = {
    "phi": Choice((0.0, 0.5, 1.0, 1.5, 2.0), weights=(3, 2, 2, 1, 1),
                  help="compound coefficient: depth x1.2^phi, width x1.1^phi, resolution x1.15^phi"),
    "base_resolution": Choice((32, 48, 64, 96, 128, 160, 192), weights=(1, 2, 3, 3, 3, 2, 1),
                              help="input side before compound scaling (result capped at 224)"),
    "base_width": Uniform(0.25, 1.0, 0.125, help="times B0's channels, before compound scaling"),
    "kernel": Choice((3, 5), help="depthwise kernel, per stage (B0: 3, 3, 5, 3, 5, 5, 3)"),
    "se_ratio": Choice((0.0, 0.25), weights=(1, 3), help="squeeze-excite width / block input width"),
    "num_classes": NUM_CLASSES,
}


def _efficient_sample(s: Sampler) -> Dict[str, Any]:
    phi, base_resolution, base_width = s.draw("phi"), s.draw("base_resolution"), s.draw("base_width")
    width = base_width * _BETA ** phi
    stages: List[list] = []
    for expansion, _, c, depth, stride in _B0:
        stages.append([make_divisible(c * width), int(math.ceil(depth * _ALPHA ** phi)), stride, expansion,
                       s.draw("kernel")])
    return {
        "phi": phi,
        "base_resolution": base_resolution,
        "base_width": base_width,
        "input_size": min(224, make_divisible(base_resolution * _GAMMA ** phi, 8)),
        "stem": "imagenet" if base_resolution >= 96 else "cifar",
        "stem_width": make_divisible(32 * width),
        "stages": stages,  # [out_ch, depth, first stride, expansion, kernel]
        "se_ratio": s.draw("se_ratio"),
        "last_width": make_divisible(1280 * max(1.0, width)),
        "num_classes": s.draw("num_classes"),
    }


def _efficient_build(name: str, hp: Mapping[str, Any]) -> Architecture:
    return _mbconv_build(name, "efficientnet", hp, "swish", hp["se_ratio"])


EFFICIENTNET = Family("efficientnet", "EfficientNet (Tan & Le 2019): B0's MBConv-SE blocks with swish, "
                                      "compound-scaled in depth, width and resolution",
                      _EFFICIENT_RANGES, _efficient_sample, _efficient_build, max_macs=MOBILE_MAX_MACS)
