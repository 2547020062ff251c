"""Classic CNN families: ResNet, VGG, SqueezeNet, DenseNet, GoogLeNet/Inception.

Each family is a :class:`~.sampling.Family`: documented ranges, a sampler
that records every drawn and derived value, and a pure ``build``. Widths are
scaled down from the papers' (``width_mult``) so that a typical sample runs in
milliseconds on one laptop core; inputs below 96 px get a CIFAR-style stem.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Mapping

from .arch import Add, Architecture, AvgPool, BatchNorm, Concat, Conv2D, Dense, Flatten, GlobalAvgPool, MaxPool
from .blocks import Net, classifier, conv_bn
from .sampling import (INPUT_SIZE, NUM_CLASSES, Choice, Family, IntRange, Sampler, Uniform, make_divisible,
                       scale_channels, stem_kind)

__all__ = ["RESNET", "VGG", "SQUEEZENET", "DENSENET", "GOOGLENET"]


def _imagenet_stem(net: Net, width: int, *, batch_norm: bool = True) -> str:
    """7x7/2 conv + 3x3/2 max-pool (1/4 resolution)."""
    x = conv_bn(net, net.x, width, 7, "stem", stride=2, batch_norm=batch_norm)
    return net.add(MaxPool(3, 2, padding="same", name="stem_pool", inputs=(x,)))


# ------------------------------------------------------------------ ResNet
_RESNET_BASE = (64, 128, 256, 512)
_RESNET_RANGES = {
    "input_size": INPUT_SIZE,
    "block": Choice(("basic", "bottleneck"), help="basic: two 3x3; bottleneck: 1x1-3x3-1x1 with 4x expansion"),
    "width_mult": Uniform(0.25, 1.0, 0.125, help="times the stage widths 64/128/256/512"),
    "depth": IntRange(1, 6, help="blocks per stage (4 stages, each drawn)"),
    "num_classes": NUM_CLASSES,
}


def _resnet_sample(s: Sampler) -> Dict[str, Any]:
    input_size = s.draw("input_size")
    width_mult = s.draw("width_mult")
    return {
        "input_size": input_size,
        "stem": stem_kind(input_size),
        "block": s.draw("block"),
        "width_mult": width_mult,
        "widths": scale_channels(_RESNET_BASE, width_mult),
        "depths": s.draws("depth", 4),
        "num_classes": s.draw("num_classes"),
    }


def _resnet_build(name: str, hp: Mapping[str, Any]) -> Architecture:
    net = Net(hp["input_size"], hp["input_size"], 3)
    stem_width = hp["widths"][0]
    if hp["stem"] == "imagenet":
        x = _imagenet_stem(net, stem_width)
    else:
        x = conv_bn(net, net.x, stem_width, 3, "stem")
    channels = stem_width
    bottleneck = hp["block"] == "bottleneck"
    for si, (width, depth) in enumerate(zip(hp["widths"], hp["depths"])):
        out_ch = width * 4 if bottleneck else width
        for bi in range(depth):
            p = f"stage{si + 1}.block{bi + 1}"
            stride = 2 if bi == 0 and si > 0 else 1
            if bottleneck:
                y = conv_bn(net, x, width, 1, f"{p}.conv1")
                y = conv_bn(net, y, width, 3, f"{p}.conv2", stride=stride)
                y = conv_bn(net, y, out_ch, 1, f"{p}.conv3", activation=None)
            else:
                y = conv_bn(net, x, width, 3, f"{p}.conv1", stride=stride)
                y = conv_bn(net, y, out_ch, 3, f"{p}.conv2", activation=None)
            shortcut = x
            if stride != 1 or channels != out_ch:
                shortcut = conv_bn(net, x, out_ch, 1, f"{p}.proj", stride=stride, activation=None)
            x = net.add(Add(activation="relu", name=f"{p}.add", inputs=(y, shortcut)))
            channels = out_ch
    classifier(net, x, hp["num_classes"])
    return net.finish(name, "resnet", hp)


RESNET = Family("resnet", "ResNet (He et al. 2016): basic or bottleneck residual blocks in 4 stages",
                _RESNET_RANGES, _resnet_sample, _resnet_build)


# ------------------------------------------------------------------ VGG
_VGG_BASE = (64, 128, 256, 512, 512)
_VGG_RANGES = {
    "input_size": INPUT_SIZE,
    "width_mult": Uniform(0.125, 0.5, 0.0625, help="times the stage widths 64/128/256/512/512"),
    "convs": IntRange(1, 3, help="3x3 convs per stage (5 stages, each drawn; VGG11-19 span 1-4)"),
    "batch_norm": Choice((False, True), help="BatchNorm after each conv (folded at emission)"),
    "head": Choice(("flatten", "gap"), weights=(1, 2), help="flatten the last map, or global-average-pool it"),
    "fc_units": Choice((128, 256, 512, 1024), help="width of the hidden dense layers"),
    "fc_layers": IntRange(0, 2, help="hidden dense layers before the logits"),
    "num_classes": NUM_CLASSES,
}


def _vgg_sample(s: Sampler) -> Dict[str, Any]:
    width_mult = s.draw("width_mult")
    return {
        "input_size": s.draw("input_size"),
        "width_mult": width_mult,
        "widths": scale_channels(_VGG_BASE, width_mult),
        "convs": s.draws("convs", 5),
        "batch_norm": s.draw("batch_norm"),
        "head": s.draw("head"),
        "fc_units": s.draw("fc_units"),
        "fc_layers": s.draw("fc_layers"),
        "num_classes": s.draw("num_classes"),
    }


def _vgg_build(name: str, hp: Mapping[str, Any]) -> Architecture:
    net = Net(hp["input_size"], hp["input_size"], 3)
    x = net.x
    size = hp["input_size"]
    for si, (width, convs) in enumerate(zip(hp["widths"], hp["convs"])):
        for ci in range(convs):
            x = conv_bn(net, x, width, 3, f"stage{si + 1}.conv{ci + 1}", batch_norm=hp["batch_norm"])
        if size >= 2:  # a 1x1 map has nothing left to pool
            x = net.add(MaxPool(2, name=f"stage{si + 1}.pool", inputs=(x,)))
            size //= 2
    if hp["head"] == "flatten":
        x = net.add(Flatten(name="flatten", inputs=(x,)))
        for i in range(hp["fc_layers"]):
            x = net.add(Dense(hp["fc_units"], activation="relu", name=f"fc{i + 1}", inputs=(x,)))
        net.add(Dense(hp["num_classes"], name="logits", inputs=(x,)))
    else:
        classifier(net, x, hp["num_classes"], hidden=hp["fc_units"] if hp["fc_layers"] else 0)
    return net.finish(name, "vgg", hp)


VGG = Family("vgg", "VGG (Simonyan & Zisserman 2015): stacks of 3x3 convs and 2x2 max-pools, dense head",
             _VGG_RANGES, _vgg_sample, _vgg_build)


# ------------------------------------------------------------------ SqueezeNet
_SQUEEZENET_RANGES = {
    "input_size": INPUT_SIZE,
    "version": Choice(("1.0", "1.1"), help="1.0: 7x7/2 stem (96), pools after fires 3, 7; 1.1: 3x3/2 stem (64), "
                                          "pools after fires 2, 4"),
    "base_e": Choice((32, 64, 96, 128), help="expand filters of the first fire module"),
    "incr_e": Choice((16, 32, 64, 96, 128), help="expand filters added every `freq` fires"),
    "freq": IntRange(1, 3, help="fires between increments"),
    "pct_3x3": Choice((0.25, 0.5, 0.75), help="share of 3x3 filters among the expand filters"),
    "squeeze_ratio": Choice((0.125, 0.25, 0.5), help="squeeze filters / expand filters"),
    "bypass": Choice(("none", "simple"), help="residual Add around fires whose in/out widths match"),
    "num_classes": NUM_CLASSES,
}
_FIRES = 8


def _squeezenet_sample(s: Sampler) -> Dict[str, Any]:
    hp = {key: s.draw(key) for key in ("input_size", "version", "base_e", "incr_e", "freq", "pct_3x3",
                                       "squeeze_ratio", "bypass", "num_classes")}
    fires = []
    for i in range(_FIRES):
        e = hp["base_e"] + hp["incr_e"] * (i // hp["freq"])
        e3 = max(8, make_divisible(e * hp["pct_3x3"], 8))
        fires.append([max(8, make_divisible(e * hp["squeeze_ratio"], 8)), max(8, e - e3), e3])
    hp["fires"] = fires  # [squeeze, expand 1x1, expand 3x3] per fire
    return hp


def _squeezenet_build(name: str, hp: Mapping[str, Any]) -> Architecture:
    net = Net(hp["input_size"], hp["input_size"], 3)
    v10 = hp["version"] == "1.0"
    x = net.add(Conv2D(96 if v10 else 64, 7 if v10 else 3, 2, activation="relu", name="stem"))
    x = net.add(MaxPool(3, 2, padding="same", name="stem_pool", inputs=(x,)))
    pool_after = (2, 6) if v10 else (1, 3)  # 0-based fire indices
    channels = 96 if v10 else 64
    for i, (squeeze, e1, e3) in enumerate(hp["fires"]):
        p = f"fire{i + 1}"
        net.add(Conv2D(squeeze, 1, activation="relu", name=f"{p}.squeeze", inputs=(x,)))
        net.add(Conv2D(e1, 1, activation="relu", name=f"{p}.expand1x1", inputs=(f"{p}.squeeze",)))
        net.add(Conv2D(e3, 3, activation="relu", name=f"{p}.expand3x3", inputs=(f"{p}.squeeze",)))
        y = net.add(Concat(name=f"{p}.concat", inputs=(f"{p}.expand1x1", f"{p}.expand3x3")))
        if hp["bypass"] == "simple" and channels == e1 + e3:
            y = net.add(Add(name=f"{p}.bypass", inputs=(x, y)))
        x, channels = y, e1 + e3
        if i in pool_after:
            x = net.add(MaxPool(3, 2, padding="same", name=f"{p}.pool", inputs=(x,)))
    net.add(Conv2D(hp["num_classes"], 1, activation="relu", name="classifier", inputs=(x,)))
    net.add(GlobalAvgPool(name="logits"))
    return net.finish(name, "squeezenet", hp)


SQUEEZENET = Family("squeezenet", "SqueezeNet (Iandola et al. 2016) over the paper's metaparameters "
                                  "(base_e, incr_e, freq, pct_3x3, squeeze_ratio)",
                    _SQUEEZENET_RANGES, _squeezenet_sample, _squeezenet_build)


# ------------------------------------------------------------------ DenseNet
_DENSENET_RANGES = {
    "input_size": INPUT_SIZE,
    "growth_rate": Choice((8, 12, 16, 24, 32), help="channels each layer adds (k)"),
    "blocks": IntRange(3, 4, help="dense blocks"),
    "depth": IntRange(2, 12, help="layers per dense block (each drawn)"),
    "bottleneck": Choice((True, False), weights=(3, 1), help="DenseNet-B: a 1x1 conv to 4k before each 3x3"),
    "compression": Choice((0.5, 1.0), weights=(3, 1), help="DenseNet-C: transition keeps this share of channels"),
    "num_classes": NUM_CLASSES,
}


def _densenet_sample(s: Sampler) -> Dict[str, Any]:
    input_size = s.draw("input_size")
    hp = {"input_size": input_size, "stem": stem_kind(input_size), "growth_rate": s.draw("growth_rate")}
    blocks = s.draw("blocks")
    hp["depths"] = s.draws("depth", 4)[:blocks]
    hp["bottleneck"] = s.draw("bottleneck")
    hp["compression"] = s.draw("compression")
    hp["num_classes"] = s.draw("num_classes")
    return hp


def _densenet_build(name: str, hp: Mapping[str, Any]) -> Architecture:
    net = Net(hp["input_size"], hp["input_size"], 3)
    k = hp["growth_rate"]
    channels = 2 * k
    if hp["stem"] == "imagenet":
        x = _imagenet_stem(net, channels)
    else:
        x = net.add(Conv2D(channels, 3, bias=False, name="stem"))
    for bi, depth in enumerate(hp["depths"]):
        for li in range(depth):
            p = f"block{bi + 1}.layer{li + 1}"
            y = net.add(BatchNorm(activation="relu", name=f"{p}.norm", inputs=(x,)))  # pre-activation
            if hp["bottleneck"]:
                y = conv_bn(net, y, 4 * k, 1, f"{p}.bottleneck")
            y = net.add(Conv2D(k, 3, bias=False, name=f"{p}.conv", inputs=(y,)))
            x = net.add(Concat(name=f"{p}.concat", inputs=(x, y)))
            channels += k
        if bi + 1 < len(hp["depths"]):
            p = f"transition{bi + 1}"
            channels = int(math.floor(channels * hp["compression"]))
            y = net.add(BatchNorm(activation="relu", name=f"{p}.norm", inputs=(x,)))
            y = net.add(Conv2D(channels, 1, bias=False, name=f"{p}.conv", inputs=(y,)))
            x = net.add(AvgPool(2, 2, padding="same", name=f"{p}.pool", inputs=(y,)))
    x = net.add(BatchNorm(activation="relu", name="final_norm", inputs=(x,)))
    classifier(net, x, hp["num_classes"])
    return net.finish(name, "densenet", hp)


DENSENET = Family("densenet", "DenseNet (Huang et al. 2017): BN-ReLU-conv layers concatenated within blocks, "
                              "1x1 conv + 2x2 average-pool transitions",
                  _DENSENET_RANGES, _densenet_sample, _densenet_build, max_macs=350_000_000)


# ------------------------------------------------------------------ GoogLeNet / Inception
# Inception v1 modules: 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool projection.
_INCEPTION_TABLE = {
    3: ((64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64)),
    4: ((192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
        (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128)),
    5: ((256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128)),
}
_GOOGLENET_RANGES = {
    "input_size": INPUT_SIZE,
    "width_mult": Uniform(0.25, 1.0, 0.125, help="times every channel count of Inception v1"),
    "stage3_modules": IntRange(1, 2, help="inception modules at 1/8 resolution"),
    "stage4_modules": IntRange(1, 5, help="inception modules at 1/16 resolution"),
    "stage5_modules": IntRange(1, 2, help="inception modules at 1/32 resolution"),
    "factorize_5x5": Choice((False, True), help="Inception v2: two 3x3 convs instead of the 5x5"),
    "batch_norm": Choice((False, True), help="BN-Inception: BatchNorm after each conv"),
    "num_classes": NUM_CLASSES,
}


def _googlenet_sample(s: Sampler) -> Dict[str, Any]:
    input_size = s.draw("input_size")
    width_mult = s.draw("width_mult")
    modules = []
    for stage in (3, 4, 5):
        n = s.draw(f"stage{stage}_modules")
        modules.append([scale_channels(row, width_mult) for row in _INCEPTION_TABLE[stage][:n]])
    return {
        "input_size": input_size,
        "stem": stem_kind(input_size),
        "width_mult": width_mult,
        "modules": modules,  # per stage, per module: [1x1, 3x3red, 3x3, 5x5red, 5x5, pool_proj]
        "factorize_5x5": s.draw("factorize_5x5"),
        "batch_norm": s.draw("batch_norm"),
        "num_classes": s.draw("num_classes"),
    }


def _googlenet_build(name: str, hp: Mapping[str, Any]) -> Architecture:
    net = Net(hp["input_size"], hp["input_size"], 3)
    bn = hp["batch_norm"]
    stem_1, stem_2 = make_divisible(64 * hp["width_mult"]), make_divisible(192 * hp["width_mult"])
    if hp["stem"] == "imagenet":
        x = _imagenet_stem(net, stem_1, batch_norm=bn)
        x = conv_bn(net, x, stem_1, 1, "stem_reduce", batch_norm=bn)
        x = conv_bn(net, x, stem_2, 3, "stem_3x3", batch_norm=bn)
        x = net.add(MaxPool(3, 2, padding="same", name="stem_pool2", inputs=(x,)))
    else:
        x = conv_bn(net, net.x, stem_2, 3, "stem", batch_norm=bn)
    for si, stage in enumerate(hp["modules"]):
        if si > 0:
            x = net.add(MaxPool(3, 2, padding="same", name=f"stage{si + 3}.pool", inputs=(x,)))
        for mi, (c1, r3, c3, r5, c5, pp) in enumerate(stage):
            p = f"inception{si + 3}{'abcde'[mi]}"
            b1 = conv_bn(net, x, c1, 1, f"{p}.b1", batch_norm=bn)
            b2 = conv_bn(net, conv_bn(net, x, r3, 1, f"{p}.b2_reduce", batch_norm=bn), c3, 3, f"{p}.b2",
                         batch_norm=bn)
            b3 = conv_bn(net, x, r5, 1, f"{p}.b3_reduce", batch_norm=bn)
            if hp["factorize_5x5"]:
                b3 = conv_bn(net, conv_bn(net, b3, c5, 3, f"{p}.b3a", batch_norm=bn), c5, 3, f"{p}.b3",
                             batch_norm=bn)
            else:
                b3 = conv_bn(net, b3, c5, 5, f"{p}.b3", batch_norm=bn)
            pooled = net.add(MaxPool(3, 1, padding="same", name=f"{p}.b4_pool", inputs=(x,)))
            b4 = conv_bn(net, pooled, pp, 1, f"{p}.b4", batch_norm=bn)
            x = net.add(Concat(name=f"{p}.concat", inputs=(b1, b2, b3, b4)))
    classifier(net, x, hp["num_classes"])
    return net.finish(name, "googlenet", hp)


GOOGLENET = Family("googlenet", "GoogLeNet / Inception v1-v2: four-branch inception modules (1x1, 3x3, 5x5 or "
                                "two 3x3, pool projection) in three stages",
                   _GOOGLENET_RANGES, _googlenet_sample, _googlenet_build)
