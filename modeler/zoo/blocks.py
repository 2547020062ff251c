"""Building blocks shared by the zoo's families: a small graph builder and the
usual CNN blocks (conv-BN-act, squeeze-excite, inverted residual, classifier).

Every block names its layers under a prefix (``stage2.block1.dw``), so two
samples that differ in one block differ only there, and weights (seeded by
layer name) of the unchanged layers stay the same.
"""

from __future__ import annotations

from typing import Any, List, Mapping, Optional, Tuple

from .arch import Add, Architecture, BatchNorm, Conv2D, Dense, GlobalAvgPool, Input, Mul
from .sampling import make_divisible

__all__ = ["Net", "conv_bn", "squeeze_excite", "inverted_residual", "classifier", "spatial_after"]


class Net:
    """Accumulates named layers; ``x`` is the most recent tensor. Shapes are
    checked once, by the :class:`~.arch.Architecture` that :meth:`finish` builds."""

    def __init__(self, *input_shape: int) -> None:
        first = Input(*input_shape)
        self.layers: List[Any] = [first]
        self.x = first.name

    def add(self, layer: Any) -> str:
        if not layer.name:
            raise ValueError("zoo blocks name every layer")
        self.layers.append(layer)
        self.x = layer.name
        return layer.name

    def finish(self, name: str, family: str, hyperparameters: Mapping[str, Any]) -> Architecture:
        return Architecture(name, family, tuple(self.layers), dict(hyperparameters))


def conv_bn(net: Net, x: str, out_ch: int, kernel: int, name: str, *, stride: int = 1, groups: int = 1,
            activation: Optional[str] = "relu", batch_norm: bool = True) -> str:
    """Conv2D (no bias) + BatchNorm + activation; with ``batch_norm=False`` a biased conv."""
    if not batch_norm:
        return net.add(Conv2D(out_ch, kernel, stride, groups=groups, activation=activation, name=name, inputs=(x,)))
    net.add(Conv2D(out_ch, kernel, stride, groups=groups, bias=False, name=f"{name}.conv", inputs=(x,)))
    return net.add(BatchNorm(activation=activation, name=name))


def squeeze_excite(net: Net, x: str, channels: int, reduced: int, name: str, *, activation: str = "relu",
                   gate: str = "sigmoid") -> str:
    """Squeeze-and-excite: global pool, 1x1 reduce, 1x1 expand with a gate, scale ``x``."""
    net.add(GlobalAvgPool(keepdims=True, name=f"{name}.pool", inputs=(x,)))
    net.add(Conv2D(reduced, 1, activation=activation, name=f"{name}.reduce"))
    net.add(Conv2D(channels, 1, activation=gate, name=f"{name}.expand"))
    return net.add(Mul(name=name, inputs=(x, f"{name}.expand")))


def inverted_residual(net: Net, x: str, in_ch: int, out_ch: int, name: str, *, expand: float, kernel: int,
                      stride: int, activation: str = "relu6", se_channels: int = 0, se_activation: str = "relu",
                      se_gate: str = "sigmoid", divisor: int = 8) -> Tuple[str, int]:
    """MobileNetV2's inverted residual (MBConv): 1x1 expand, depthwise, optional
    squeeze-excite, linear 1x1 project, and a skip when shapes allow.
    Returns ``(tensor, out_ch)``."""
    hidden = make_divisible(in_ch * expand, divisor) if expand != 1 else in_ch
    y = x
    if hidden != in_ch:
        y = conv_bn(net, y, hidden, 1, f"{name}.expand", activation=activation)
    y = conv_bn(net, y, hidden, kernel, f"{name}.dw", stride=stride, groups=hidden, activation=activation)
    if se_channels:
        y = squeeze_excite(net, y, hidden, se_channels, f"{name}.se", activation=se_activation, gate=se_gate)
    y = conv_bn(net, y, out_ch, 1, f"{name}.project", activation=None)
    if stride == 1 and in_ch == out_ch:
        y = net.add(Add(name=f"{name}.add", inputs=(x, y)))
    return y, out_ch


def classifier(net: Net, x: str, num_classes: int, *, hidden: int = 0, activation: str = "relu") -> str:
    """Global average pool, an optional hidden dense layer, logits."""
    net.add(GlobalAvgPool(name="pool", inputs=(x,)))
    if hidden:
        net.add(Dense(hidden, activation=activation, name="fc"))
    return net.add(Dense(num_classes, name="logits"))


def spatial_after(size: int, strides: int) -> int:
    """Feature-map size after ``strides`` stride-2 stages with SAME padding."""
    for _ in range(strides):
        size = -(-size // 2)
    return size
