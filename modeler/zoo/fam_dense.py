"""Dense-prediction and detection families: U-Net-style segmenters and single-shot detectors.

What real on-device vision models run and the classifier families lack:
upsampling (``Resize`` nearest / bilinear, ``ConvTranspose2D``), PReLU,
explicit ``Pad`` before VALID strided convolutions (what PyTorch models look
like after conversion to TFLite), skip concatenations across resolutions and
few-channel layers at high resolution (MediaPipe's selfie / pose / face
models, MTCNN, PP-OCR's DB text detector, BlazeFace).

* ``unet``: an encoder of stride-2 levels, a decoder that upsamples back to
  the stem's resolution merging each encoder level (concat, U-Net; or add,
  FPN / MediaPipe selfie), a per-pixel head at the input's resolution.
  Output ``(input_size, input_size, num_classes)``.
* ``detector``: a BlazeFace / SSD-style backbone (BlazeBlocks: depthwise
  plus pointwise with a residual, max-pool skip on stride 2), an optional
  top-down path over the coarsest scales, and per-scale class and box(+
  landmark) heads, flattened and concatenated into one vector, as detectors
  reshape their anchors. Output ``(anchor outputs,)``.

Input sides are multiples of 32 from 64 to 256; every size the decoder
meets matches its encoder level (levels are lowered until they divide).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

from .arch import (
    Activation,
    Add,
    Architecture,
    BatchNorm,
    Concat,
    Conv2D,
    ConvTranspose2D,
    Flatten,
    MaxPool,
    Pad,
    PReLU,
    Resize,
)
from .blocks import Net
from .sampling import Choice, Family, IntRange, Sampler, make_divisible

__all__ = ["UNET", "DETECTOR", "DENSE_INPUT_SIZE", "UNET_MAX_MACS"]

#: Square input side of the dense families (multiples of 32, 64-256 px, like MediaPipe's and MTCNN's inputs).
DENSE_INPUT_SIZE = Choice((64, 96, 128, 160, 192, 224, 256), weights=(2, 2, 3, 2, 2, 2, 3),
                          help="square input side in pixels")
_ACTIVATION = Choice(("prelu", "relu", "relu6", "hardswish"), weights=(3, 2, 1, 1),
                     help="activation after each conv (prelu: a learned slope per channel)")
_CONV_PADDING = Choice(("same", "explicit"),
                       help="stride-2 convs: SAME padding, or a Pad of kernel//2 on every side then a VALID conv "
                            "(PyTorch's padding, as its models look after conversion to TFLite)")
_MAX_WIDTH = 256
#: MAC budget of the U-Nets: their few-channel, high-resolution layers are memory-bound and run several
#: times slower per MAC than the classifiers' (about 30 ms on one core).
UNET_MAX_MACS = 400_000_000


def _act(net: Net, x: str, activation: Optional[str], name: str) -> str:
    """``x`` after ``activation`` (a PReLU layer for "prelu"; nothing for None)."""
    if activation is None:
        return x
    if activation == "prelu":
        return net.add(PReLU(name=name, inputs=(x,)))
    return net.add(Activation(activation, name=name, inputs=(x,)))


def _conv(net: Net, x: str, out_ch: int, kernel: int, name: str, *, activation: Optional[str], stride: int = 1,
          groups: int = 1, padding: str = "same") -> str:
    """Conv (no bias) + BatchNorm (folded at emission) + activation, writing tensor ``name``.

    With ``padding="explicit"`` and ``stride > 1``: a ``Pad`` of ``kernel // 2``
    on every side, then a VALID conv (the same output size as SAME).
    """
    conv_padding = "same"
    if padding == "explicit" and stride > 1:
        p = kernel // 2
        x = net.add(Pad(p, p, p, p, name=f"{name}.pad", inputs=(x,)))
        conv_padding = "valid"
    net.add(Conv2D(out_ch, kernel, stride, padding=conv_padding, groups=groups, bias=False, name=f"{name}.conv",
                   inputs=(x,)))
    if activation == "prelu":
        return _act(net, net.add(BatchNorm(name=f"{name}.bn")), activation, name)
    return net.add(BatchNorm(activation=activation, name=name))


def _widths(base: int, growth: float, n: int) -> List[int]:
    return [min(make_divisible(base * growth ** i, 8), _MAX_WIDTH) for i in range(n)]


def _max_levels(input_size: int, stem_stride: int, wanted: int) -> int:
    """``wanted`` lowered until ``stem_stride * 2**levels`` divides the input side."""
    levels = wanted
    while levels > 1 and input_size % (stem_stride * 2 ** levels):
        levels -= 1
    return levels


def _block(net: Net, x: str, in_ch: int, out_ch: int, kind: str, name: str, activation: str) -> str:
    """One stride-1 block: "conv" (3x3), "separable" (depthwise 3x3 + 1x1) or "residual" (two 3x3 + skip)."""
    if kind == "conv":
        return _conv(net, x, out_ch, 3, name, activation=activation)
    if kind == "separable":
        y = _conv(net, x, in_ch, 3, f"{name}.dw", groups=in_ch, activation=activation)
        return _conv(net, y, out_ch, 1, f"{name}.pw", activation=activation)
    y = _conv(net, x, out_ch, 3, f"{name}.conv1", activation=activation)
    y = _conv(net, y, out_ch, 3, f"{name}.conv2", activation=None)
    skip = x if in_ch == out_ch else _conv(net, x, out_ch, 1, f"{name}.proj", activation=None)
    return _merge_add(net, y, skip, activation, name)


def _merge_add(net: Net, a: str, b: str, activation: Optional[str], name: str) -> str:
    """``Add`` of ``a`` and ``b`` then ``activation`` (fused into the add unless it is PReLU)."""
    if activation != "prelu":
        return net.add(Add(activation=activation, name=name, inputs=(a, b)))
    return _act(net, net.add(Add(name=f"{name}.add", inputs=(a, b))), activation, name)


def _upsample(net: Net, x: str, out_ch: int, how: str, name: str, activation: Optional[str],
              transpose_kernel: int) -> str:
    """x2: ``Resize`` (channels kept, no activation), or ``ConvTranspose2D`` to ``out_ch`` then ``activation``."""
    if how == "transpose":
        y = net.add(ConvTranspose2D(out_ch, transpose_kernel, 2, name=f"{name}.deconv" if activation else name,
                                    inputs=(x,)))
        return _act(net, y, activation, name)
    return net.add(Resize(2, how, name=name, inputs=(x,)))


# ------------------------------------------------------------------ U-Net
_UNET_RANGES = {
    "input_size": DENSE_INPUT_SIZE,
    "stem": Choice(("strided", "full_res"), weights=(2, 1),
                   help="strided: 3x3/2 stem (MediaPipe); full_res: 3x3/1 at the input's resolution (MTCNN, U-Net)"),
    "stem_width": Choice((8, 12, 16, 24, 32), help="channels of the stem: few channels at high resolution"),
    "levels": IntRange(2, 5, help="stride-2 encoder levels (lowered until the input side divides)"),
    "base_width": Choice((16, 24, 32, 48, 64), help="channels of the first encoder level"),
    "growth": Choice((1.5, 2.0), help=f"channel growth per level (capped at {_MAX_WIDTH})"),
    "depth": IntRange(1, 3, help="blocks per encoder level (each drawn)"),
    "block": Choice(("conv", "separable", "residual"),
                    help="conv: 3x3; separable: depthwise 3x3 + 1x1; residual: two 3x3 and a skip"),
    "downsample": Choice(("conv", "maxpool"), help="stride-2 3x3 conv, or 2x2 max-pool, at each level"),
    "conv_padding": _CONV_PADDING,
    "activation": _ACTIVATION,
    "upsample": Choice(("nearest", "bilinear", "transpose"),
                       help="decoder x2: Resize nearest / bilinear, or a transposed conv"),
    "transpose_kernel": Choice((2, 3, 4), help="kernel of the transposed convs (stride 2, SAME)"),
    "skip": Choice(("concat", "add"), weights=(3, 2),
                   help="merge with the encoder level: concat (U-Net) or a 1x1 lateral and add (FPN)"),
    "decoder_ratio": Choice((0.5, 1.0), help="decoder channels / encoder channels at each level"),
    "num_classes": Choice((1, 2, 4, 21), weights=(3, 2, 1, 1), help="output channels (masks, classes, heat-maps)"),
    "output_activation": Choice(("sigmoid", "none"), help="sigmoid on the output map, or logits"),
}


def _unet_sample(s: Sampler) -> Dict[str, Any]:
    hp = {key: s.draw(key) for key in ("input_size", "stem", "stem_width", "levels", "base_width", "growth")}
    stem_stride = 2 if hp["stem"] == "strided" else 1
    hp["levels"] = _max_levels(hp["input_size"], stem_stride, hp["levels"])
    hp["widths"] = _widths(hp["base_width"], hp["growth"], hp["levels"])
    hp["depths"] = s.draws("depth", 5)[:hp["levels"]]
    for key in ("block", "downsample", "conv_padding", "activation", "upsample", "transpose_kernel", "skip",
                "decoder_ratio", "num_classes", "output_activation"):
        hp[key] = s.draw(key)
    hp["decoder_widths"] = [hp["stem_width"]] + [make_divisible(w * hp["decoder_ratio"], 8) for w in hp["widths"]]
    return hp


def _unet_build(name: str, hp: Mapping[str, Any]) -> Architecture:
    size, act, pad = hp["input_size"], hp["activation"], hp["conv_padding"]
    net = Net(size, size, 3)
    stem_stride = 2 if hp["stem"] == "strided" else 1
    x = _conv(net, net.x, hp["stem_width"], 3, "stem", stride=stem_stride, activation=act, padding=pad)
    skips, ch = [(x, hp["stem_width"])], hp["stem_width"]
    for i, (width, depth) in enumerate(zip(hp["widths"], hp["depths"])):
        p = f"enc{i + 1}"
        if hp["downsample"] == "conv":
            x = _conv(net, x, width, 3, f"{p}.down", stride=2, activation=act, padding=pad)
            ch = width
        else:
            x = net.add(MaxPool(2, 2, padding="same", name=f"{p}.pool", inputs=(x,)))
        for b in range(depth):
            x = _block(net, x, ch, width, hp["block"], f"{p}.block{b + 1}", act)
            ch = width
        skips.append((x, ch))
    dec = hp["decoder_widths"]
    for i in reversed(range(len(skips) - 1)):  # from the deepest level up to the stem
        p = f"dec{i}"
        skip, skip_ch = skips[i]
        out_ch = dec[i]
        if hp["skip"] == "add":
            if hp["upsample"] != "transpose":
                x = _conv(net, x, out_ch, 1, f"{p}.reduce", activation=None)
            up = _upsample(net, x, out_ch, hp["upsample"], f"{p}.up", None, hp["transpose_kernel"])
            lateral = _conv(net, skip, out_ch, 1, f"{p}.lateral", activation=None)
            x = _merge_add(net, up, lateral, act, f"{p}.merge")
            merged_ch = out_ch
        else:
            up = _upsample(net, x, out_ch, hp["upsample"], f"{p}.up", act, hp["transpose_kernel"])
            up_ch = out_ch if hp["upsample"] == "transpose" else ch
            x = net.add(Concat(name=f"{p}.concat", inputs=(up, skip)))
            merged_ch = up_ch + skip_ch
        x = _block(net, x, merged_ch, out_ch, "separable" if hp["block"] == "separable" else "conv",
                   f"{p}.refine", act)
        ch = out_ch
    classes = hp["num_classes"]
    sigmoid = hp["output_activation"] == "sigmoid"
    if stem_stride == 1:
        x = net.add(Conv2D(classes, 1, activation="sigmoid" if sigmoid else None, name="head", inputs=(x,)))
    else:
        x = net.add(Conv2D(classes, 1, name="head.logits", inputs=(x,)))
        x = _upsample(net, x, classes, hp["upsample"], "head.up" if sigmoid else "head", None,
                      hp["transpose_kernel"])
        if sigmoid:
            x = net.add(Activation("sigmoid", name="head", inputs=(x,)))
    return net.finish(name, "unet", hp)


UNET = Family("unet", "U-Net / FPN segmenter (MediaPipe selfie, PP-OCR DB, MTCNN-like stems): stride-2 encoder, "
                      "decoder upsampling by Resize or transposed conv with concat or add skips, PReLU, explicit "
                      "Pad, per-pixel head at the input's resolution",
              _UNET_RANGES, _unet_sample, _unet_build, max_macs=UNET_MAX_MACS)


# ------------------------------------------------------------------ detector
_DETECTOR_RANGES = {
    "input_size": DENSE_INPUT_SIZE,
    "stem_width": Choice((8, 16, 24, 32), help="channels of the stride-2 stem"),
    "stem_kernel": Choice((3, 5), help="stem kernel (BlazeFace: 5)"),
    "stages": IntRange(3, 5, help="stride-2 stages after the stem (lowered until the input side divides)"),
    "base_width": Choice((16, 24, 32, 48), help="channels of the first stage"),
    "growth": Choice((1.5, 2.0), help=f"channel growth per stage (capped at {_MAX_WIDTH})"),
    "depth": IntRange(1, 4, help="blocks per stage, the first with stride 2 (each drawn)"),
    "block": Choice(("blaze", "conv"), weights=(3, 1),
                    help="blaze: depthwise kxk + 1x1 with a residual (max-pool + 1x1 skip on stride 2); "
                         "conv: 3x3 conv"),
    "dw_kernel": Choice((3, 5), help="depthwise kernel of the blaze blocks"),
    "conv_padding": _CONV_PADDING,
    "activation": Choice(("prelu", "relu", "relu6"), weights=(3, 2, 1), help="activation after each block"),
    "head_levels": IntRange(1, 3, help="coarsest scales that get heads"),
    "fpn": Choice(("none", "add", "concat"),
                  help="top-down path over the head scales: none, upsample + add, or upsample + concat + 1x1"),
    "upsample": Choice(("nearest", "bilinear", "transpose"),
                       help="x2 upsampling of the top-down path: Resize, or a 2x2/2 transposed conv"),
    "anchors": Choice((1, 2, 3, 6), help="anchors per position of each head scale"),
    "num_classes": Choice((1, 2, 20), weights=(3, 1, 1), help="class scores per anchor"),
    "landmarks": Choice((0, 4, 6, 7), help="2-D keypoints per anchor, regressed with the 4 box coordinates"),
}


def _detector_sample(s: Sampler) -> Dict[str, Any]:
    hp = {key: s.draw(key) for key in ("input_size", "stem_width", "stem_kernel", "stages", "base_width", "growth")}
    hp["stages"] = _max_levels(hp["input_size"], 2, hp["stages"])
    hp["widths"] = _widths(hp["base_width"], hp["growth"], hp["stages"])
    hp["depths"] = s.draws("depth", 5)[:hp["stages"]]
    for key in ("block", "dw_kernel", "conv_padding", "activation", "head_levels", "fpn", "upsample", "anchors",
                "num_classes", "landmarks"):
        hp[key] = s.draw(key)
    hp["head_levels"] = min(hp["head_levels"], hp["stages"])
    return hp


def _blaze_block(net: Net, x: str, in_ch: int, out_ch: int, stride: int, hp: Mapping[str, Any], name: str) -> str:
    act, k = hp["activation"], hp["dw_kernel"]
    if hp["block"] == "conv":
        return _conv(net, x, out_ch, 3, name, stride=stride, activation=act, padding=hp["conv_padding"])
    y = _conv(net, x, in_ch, k, f"{name}.dw", stride=stride, groups=in_ch, activation=None,
              padding=hp["conv_padding"])
    y = _conv(net, y, out_ch, 1, f"{name}.pw", activation=None)
    skip = x
    if stride > 1:
        skip = net.add(MaxPool(2, 2, padding="same", name=f"{name}.skip_pool", inputs=(x,)))
    if in_ch != out_ch:
        skip = _conv(net, skip, out_ch, 1, f"{name}.skip_proj", activation=None)
    return _merge_add(net, y, skip, act, name)


def _detector_build(name: str, hp: Mapping[str, Any]) -> Architecture:
    size, act = hp["input_size"], hp["activation"]
    net = Net(size, size, 3)
    x = _conv(net, net.x, hp["stem_width"], hp["stem_kernel"], "stem", stride=2, activation=act,
              padding=hp["conv_padding"])
    ch, scales = hp["stem_width"], []
    for si, (width, depth) in enumerate(zip(hp["widths"], hp["depths"])):
        for b in range(depth):
            x = _blaze_block(net, x, ch, width, 2 if b == 0 else 1, hp, f"stage{si + 1}.block{b + 1}")
            ch = width
        scales.append((x, ch))
    heads = scales[-hp["head_levels"]:]
    if hp["fpn"] != "none" and len(heads) > 1:
        top, top_ch = heads[-1]
        merged = [heads[-1]]
        for i in reversed(range(len(heads) - 1)):
            p = f"fpn{i}"
            feat, feat_ch = heads[i]
            how = hp["upsample"]
            if hp["fpn"] == "add":
                if how != "transpose" and top_ch != feat_ch:
                    top = _conv(net, top, feat_ch, 1, f"{p}.reduce", activation=None)
                up = _upsample(net, top, feat_ch, how, f"{p}.up", None, 2)
                top = _merge_add(net, up, feat, act, f"{p}.merge")
            else:
                up = _upsample(net, top, feat_ch, how, f"{p}.up", act, 2)
                net.add(Concat(name=f"{p}.concat", inputs=(up, feat)))
                top = _conv(net, f"{p}.concat", feat_ch, 1, f"{p}.fuse", activation=act)
            top_ch = feat_ch
            merged.insert(0, (top, top_ch))
        heads = merged
    outputs = []
    per_anchor_box = 4 + 2 * hp["landmarks"]
    for i, (feat, _) in enumerate(heads):
        for role, per_anchor in (("cls", hp["num_classes"]), ("box", per_anchor_box)):
            p = f"head{i}.{role}"
            net.add(Conv2D(hp["anchors"] * per_anchor, 3, name=p, inputs=(feat,)))
            outputs.append(net.add(Flatten(name=f"{p}.flat", inputs=(p,))))
    net.add(Concat(name="detections", inputs=tuple(outputs)))
    return net.finish(name, "detector", hp)


DETECTOR = Family("detector", "Single-shot detector / landmark regressor (BlazeFace, MTCNN, SSD-lite): BlazeBlock "
                              "backbone with PReLU and explicit Pad, optional top-down path (Resize or transposed "
                              "conv, add or concat), per-scale class and box+landmark heads concatenated",
                  _DETECTOR_RANGES, _detector_sample, _detector_build)
