"""Small parametrised CNN/MLP generators and the built-in demo models.

Each generator returns an :class:`~.arch.Architecture` whose ``family`` and
``hyperparameters`` say how it was made; the later model zoo samples these
hyperparameters. :func:`builtin_architectures` lists the fixed, tiny instances
shipped with fleetmeter (see :mod:`fleetmeter.modeler.builtin`).
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

from .arch import (Activation, Add, Architecture, AvgPool, Concat, Conv2D, Dense, Flatten, GlobalAvgPool, Input,
                   MaxPool, Reshape, Softmax)

__all__ = [
    "convnet",
    "mobilenet_v1",
    "resnet",
    "squeezenet",
    "mlp",
    "dilated_convnet",
    "builtin_architectures",
    "BUILTIN_SEED",
]

#: Seed of the built-in models' weights.
BUILTIN_SEED = 0


def convnet(name: str = "convnet", *, input_size: int = 32, in_ch: int = 3, widths: Sequence[int] = (16, 32, 32),
            dense_units: int = 64, num_classes: int = 10) -> Architecture:
    """VGG-style stack: [3x3 conv + ReLU + 2x2 max-pool] per width, flatten, MLP head."""
    layers: List = [Input(input_size, input_size, in_ch)]
    for i, width in enumerate(widths):
        layers += [Conv2D(width, 3, activation="relu", name=f"conv{i + 1}"), MaxPool(2, name=f"pool{i + 1}")]
    layers += [Flatten(name="flatten"), Dense(dense_units, activation="relu", name="fc1"),
               Dense(num_classes, name="logits"), Softmax(name="probs")]
    hp = {"input_size": input_size, "in_ch": in_ch, "widths": list(widths), "dense_units": dense_units,
          "num_classes": num_classes}
    return Architecture(name, "convnet", tuple(layers), hp)


def mobilenet_v1(name: str = "mobilenet_v1", *, input_size: int = 64, in_ch: int = 3, stem_width: int = 16,
                 blocks: Sequence[Tuple[int, int]] = ((32, 1), (64, 2), (64, 1), (128, 2)), num_classes: int = 10
                 ) -> Architecture:
    """MobileNetV1: a strided stem, then depthwise-separable blocks ``(out_ch, stride)``."""
    layers: List = [
        Input(input_size, input_size, in_ch),
        Conv2D(stem_width, 3, stride=2, activation="relu6", name="stem"),
    ]
    channels = stem_width
    for i, (out_ch, stride) in enumerate(blocks):
        layers += [
            Conv2D(channels, 3, stride=stride, groups=channels, activation="relu6", name=f"block{i + 1}.dw"),
            Conv2D(out_ch, 1, activation="relu6", name=f"block{i + 1}.pw"),
        ]
        channels = out_ch
    layers += [GlobalAvgPool(name="gap"), Dense(num_classes, name="logits"), Softmax(name="probs")]
    hp = {"input_size": input_size, "in_ch": in_ch, "stem_width": stem_width,
          "blocks": [list(b) for b in blocks], "num_classes": num_classes}
    return Architecture(name, "mobilenet_v1", tuple(layers), hp)


def resnet(name: str = "resnet", *, input_size: int = 32, in_ch: int = 3, stem_width: int = 16,
           stages: Sequence[Tuple[int, int]] = ((16, 1), (32, 2)), blocks_per_stage: int = 2, num_classes: int = 10
           ) -> Architecture:
    """ResNet with basic blocks; ``stages`` are ``(width, first stride)``.

    A block whose stride or width changes uses a 1x1 projection shortcut.
    """
    layers: List = [Input(input_size, input_size, in_ch), Conv2D(stem_width, 3, activation="relu", name="stem")]
    x, channels = "stem", stem_width
    for s, (width, first_stride) in enumerate(stages):
        for b in range(blocks_per_stage):
            stride = first_stride if b == 0 else 1
            p = f"stage{s + 1}.block{b + 1}"
            layers += [
                Conv2D(width, 3, stride=stride, activation="relu", name=f"{p}.conv1", inputs=(x,)),
                Conv2D(width, 3, name=f"{p}.conv2"),
            ]
            shortcut = x
            if stride != 1 or width != channels:
                layers.append(Conv2D(width, 1, stride=stride, name=f"{p}.proj", inputs=(x,)))
                shortcut = f"{p}.proj"
            layers.append(Add(activation="relu", name=f"{p}.add", inputs=(f"{p}.conv2", shortcut)))
            x, channels = f"{p}.add", width
    layers += [GlobalAvgPool(name="gap"), Dense(num_classes, name="logits"), Softmax(name="probs")]
    hp = {"input_size": input_size, "in_ch": in_ch, "stem_width": stem_width,
          "stages": [list(st) for st in stages], "blocks_per_stage": blocks_per_stage, "num_classes": num_classes}
    return Architecture(name, "resnet", tuple(layers), hp)


def squeezenet(name: str = "squeezenet", *, input_size: int = 64, in_ch: int = 3, stem_width: int = 32,
               fires: Sequence[Tuple[int, int, bool]] = ((8, 16, False), (8, 16, True), (16, 32, False)),
               num_classes: int = 10) -> Architecture:
    """SqueezeNet: fire modules ``(squeeze, expand, pool_after)``; expand 1x1 and 3x3 are concatenated."""
    layers: List = [
        Input(input_size, input_size, in_ch),
        Conv2D(stem_width, 3, stride=2, activation="relu", name="stem"),
        MaxPool(3, 2, padding="same", name="stem_pool"),
    ]
    x = "stem_pool"
    for i, (squeeze, expand, pool_after) in enumerate(fires):
        p = f"fire{i + 1}"
        layers += [
            Conv2D(squeeze, 1, activation="relu", name=f"{p}.squeeze", inputs=(x,)),
            Conv2D(expand, 1, activation="relu", name=f"{p}.expand1x1", inputs=(f"{p}.squeeze",)),
            Conv2D(expand, 3, activation="relu", name=f"{p}.expand3x3", inputs=(f"{p}.squeeze",)),
            Concat(name=f"{p}.concat", inputs=(f"{p}.expand1x1", f"{p}.expand3x3")),
        ]
        x = f"{p}.concat"
        if pool_after:
            layers.append(MaxPool(3, 2, padding="same", name=f"{p}.pool"))
            x = f"{p}.pool"
    layers += [
        Conv2D(num_classes, 1, activation="relu", name="classifier", inputs=(x,)),
        GlobalAvgPool(name="gap"),
        Softmax(name="probs"),
    ]
    hp = {"input_size": input_size, "in_ch": in_ch, "stem_width": stem_width,
          "fires": [list(f) for f in fires], "num_classes": num_classes}
    return Architecture(name, "squeezenet", tuple(layers), hp)


def mlp(name: str = "mlp", *, in_features: int = 256, hidden: Sequence[int] = (256, 256, 128), num_classes: int = 10
        ) -> Architecture:
    """Multi-layer perceptron on a vector input."""
    layers: List = [Input(in_features)]
    for i, units in enumerate(hidden):
        layers.append(Dense(units, activation="relu", name=f"fc{i + 1}"))
    layers += [Dense(num_classes, name="logits"), Softmax(name="probs")]
    hp = {"in_features": in_features, "hidden": list(hidden), "num_classes": num_classes}
    return Architecture(name, "mlp", tuple(layers), hp)


def dilated_convnet(name: str = "dilated_convnet", *, input_size: int = 32, in_ch: int = 3, width: int = 16,
                    dilation: int = 2, groups: int = 4, num_classes: int = 10) -> Architecture:
    """A grab-bag of less common options: bias-free and dilated convs, average
    pooling, depth multiplier 2, grouped 1x1 conv, standalone ReLU6, reshape."""
    layers: List = [
        Input(input_size, input_size, in_ch),
        Conv2D(width, 3, activation="relu", bias=False, name="conv1"),
        Conv2D(width, 3, dilation=dilation, activation="relu", name="dilated"),
        AvgPool(2, name="pool1"),
        Conv2D(2 * width, 3, groups=width, name="dw_x2"),
        Activation("relu6", name="dw_relu6"),
        Conv2D(2 * width, 1, groups=groups, activation="relu", name="group_pw"),
        AvgPool(3, 1, padding="same", name="smooth"),
        GlobalAvgPool(keepdims=True, name="gap"),
        Reshape((2 * width,), name="squeeze"),
        Dense(num_classes, name="logits"),
        Softmax(name="probs"),
    ]
    hp = {"input_size": input_size, "in_ch": in_ch, "width": width, "dilation": dilation, "groups": groups,
          "num_classes": num_classes}
    return Architecture(name, "dilated_convnet", tuple(layers), hp)


def builtin_architectures() -> Tuple[Architecture, ...]:
    """The built-in demo models, in index order (each ships as ONNX and TFLite)."""
    return (
        convnet("tiny_convnet", input_size=48),
        mobilenet_v1("tiny_depthwise"),
        resnet("tiny_resnet"),
        squeezenet("tiny_squeeze"),
        mlp("tiny_mlp"),
        dilated_convnet("tiny_dilated"),
    )
