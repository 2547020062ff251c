"""The layer kinds of an :class:`~.arch.Architecture`: frozen dataclasses.

Each layer has its options first, then the keyword-only ``name`` and
``inputs`` of :class:`_Layer` (see :mod:`.arch` for what they mean, the
logical layouts, and how to add a kind). Constructors check their own
options; shapes are checked when an ``Architecture`` is built. Everything here is re-exported by :mod:`.arch`.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import Any, Dict, Optional, Tuple, Union, get_args

import numpy as np

__all__ = [
    "ACTIVATIONS", "RESIZE_MODES", "ArchitectureError", "UnsupportedLayerError", "Shape", "Layer",
    "Input", "Conv2D", "MaxPool", "AvgPool", "GlobalAvgPool", "Dense", "Add", "Concat", "Flatten", "Reshape",
    "Softmax", "Activation", "BatchNorm", "Mul", "Scale", "Slice", "ChannelShuffle", "LayerNorm", "Attention",
    "Resize", "ConvTranspose2D", "PReLU", "Pad",
]

#: Fused / standalone activations both emitters support. "hardsigmoid" is
#: ``relu6(x + 3) / 6`` (MobileNetV3's), "swish" is ``x * sigmoid(x)`` and
#: "gelu" is the tanh approximation.
ACTIVATIONS = (None, "relu", "relu6", "sigmoid", "hardsigmoid", "hardswish", "swish", "gelu")

#: Interpolations of :class:`Resize`.
RESIZE_MODES = ("nearest", "bilinear")

Shape = Tuple[int, ...]
IntPair = Union[int, Tuple[int, int]]


class ArchitectureError(ValueError):
    """The description is inconsistent (bad shapes, names, parameters)."""


class UnsupportedLayerError(ArchitectureError):
    """An emitter has no translation for this layer kind or option."""


def _pair(value: IntPair, what: str) -> Tuple[int, int]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        pair = (int(value), int(value))
    else:
        try:
            a, b = value  # type: ignore[misc]
        except (TypeError, ValueError) as exc:
            raise ArchitectureError(f"{what} must be an int or a pair, got {value!r}") from exc
        pair = (int(a), int(b))
    if pair[0] < 1 or pair[1] < 1:
        raise ArchitectureError(f"{what} must be >= 1, got {value!r}")
    return pair


def _check_padding(padding: str) -> None:
    if padding not in ("same", "valid"):
        raise ArchitectureError(f"padding must be 'same' or 'valid', got {padding!r}")


def _check_activation(activation: Optional[str]) -> None:
    if activation not in ACTIVATIONS:
        raise ArchitectureError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


def _check_positive(value: int, what: str) -> None:
    if value < 1:
        raise ArchitectureError(f"{what} must be >= 1")


def _check_epsilon(layer: Any) -> None:
    if not layer.epsilon > 0:
        raise ArchitectureError("epsilon must be > 0")
    _set(layer, "epsilon", float(layer.epsilon))


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


# --------------------------------------------------------------------------
# Layers. Each is a frozen dataclass; ``name`` and ``inputs`` (keyword-only)
# may be left empty (Architecture fills them in).
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layer:
    """Base of the layer dataclasses (all but :class:`Input`): a kind's own
    options come first, then ``name`` and ``inputs``, both keyword-only. After
    ``__init__`` the kind's :meth:`_check` validates and normalizes its
    options, and ``inputs`` is stored as a tuple. A kind without options of
    its own is a plain subclass."""

    _: KW_ONLY
    name: str = ""
    inputs: Tuple[str, ...] = ()

    def _check(self) -> None:
        """Raise :class:`ArchitectureError` on a bad option; normalize the others (with :func:`_set`)."""

    def __post_init__(self) -> None:
        self._check()
        _set(self, "inputs", tuple(self.inputs))


@dataclass(frozen=True, init=False)
class Input:
    """A graph input: ``Input(h, w, c)`` for an image, ``Input(seq, dim)`` for
    a token sequence, ``Input(n)`` for a vector."""

    shape: Shape
    name: str

    def __init__(self, *dims: int, name: str = "input") -> None:
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = tuple(dims[0])
        if len(dims) not in (1, 2, 3) or any(int(d) < 1 for d in dims):
            raise ArchitectureError(f"Input takes (h, w, c), (seq, dim) or (features,), got {dims!r}")
        _set(self, "shape", tuple(int(d) for d in dims))
        _set(self, "name", name)

    @property
    def inputs(self) -> Tuple[str, ...]:
        return ()


@dataclass(frozen=True)
class Conv2D(_Layer):
    """2-D convolution; ``groups == in_ch`` makes it depthwise."""

    out_ch: int
    kernel: IntPair
    stride: IntPair = 1
    padding: str = "same"
    groups: int = 1
    dilation: IntPair = 1
    activation: Optional[str] = None
    bias: bool = True

    def _check(self) -> None:
        _set(self, "kernel", _pair(self.kernel, "kernel"))
        _set(self, "stride", _pair(self.stride, "stride"))
        _set(self, "dilation", _pair(self.dilation, "dilation"))
        _check_padding(self.padding)
        _check_activation(self.activation)
        if self.out_ch < 1 or self.groups < 1:
            raise ArchitectureError("out_ch and groups must be >= 1")
        if self.out_ch % self.groups:
            raise ArchitectureError(f"out_ch {self.out_ch} not divisible by groups {self.groups}")


@dataclass(frozen=True)
class _Pool(_Layer):
    """Base of the two pooling kinds."""

    kernel: IntPair
    stride: Optional[IntPair] = None  # default: the kernel size
    padding: str = "valid"

    def _check(self) -> None:
        _set(self, "kernel", _pair(self.kernel, "kernel"))
        _set(self, "stride", _pair(self.kernel if self.stride is None else self.stride, "stride"))
        _check_padding(self.padding)


class MaxPool(_Pool):
    """Max pooling over ``kernel`` windows of an ``(h, w, c)`` map."""


class AvgPool(_Pool):
    """Average pooling over ``kernel`` windows of an ``(h, w, c)`` map (padding never counted)."""


@dataclass(frozen=True)
class GlobalAvgPool(_Layer):
    """Mean over h and w: ``(h, w, c) -> (c,)``, or ``(1, 1, c)`` with keepdims."""

    keepdims: bool = False


@dataclass(frozen=True)
class Dense(_Layer):
    """Fully connected layer over the last axis: ``(n,) -> (units,)`` or
    ``(seq, n) -> (seq, units)``."""

    units: int
    activation: Optional[str] = None
    bias: bool = True

    def _check(self) -> None:
        _check_activation(self.activation)
        _check_positive(self.units, "units")


@dataclass(frozen=True)
class Add(_Layer):
    """Elementwise sum of exactly two same-shaped tensors (residual)."""

    activation: Optional[str] = None

    def _check(self) -> None:
        _check_activation(self.activation)


class Concat(_Layer):
    """Concatenation of two or more tensors along channels (the last axis)."""


class Flatten(_Layer):
    """``(h, w, c) -> (h*w*c,)`` in h, w, c order."""


@dataclass(frozen=True)
class Reshape(_Layer):
    """To ``shape`` (``(h, w, c)`` or ``(n,)``), elements in h, w, c order."""

    shape: Shape

    def _check(self) -> None:
        shape = tuple(int(d) for d in self.shape)
        if len(shape) not in (1, 3) or any(d < 1 for d in shape):
            raise ArchitectureError(f"Reshape target must be (h, w, c) or (n,), got {self.shape!r}")
        _set(self, "shape", shape)


class Softmax(_Layer):
    """Softmax over the last (channel / feature) axis."""


@dataclass(frozen=True)
class Activation(_Layer):
    """A standalone activation (any of :data:`ACTIVATIONS` but None)."""

    kind: str

    def _check(self) -> None:
        if self.kind is None:
            raise ArchitectureError("Activation needs a kind")
        _check_activation(self.kind)


@dataclass(frozen=True)
class BatchNorm(_Layer):
    """Inference batch normalization over the channel (last) axis of an
    ``(h, w, c)`` or ``(n,)`` tensor, then an optional activation. See the
    module docstring for how the emitters fold it."""

    epsilon: float = 1e-3
    activation: Optional[str] = None

    def _check(self) -> None:
        _check_activation(self.activation)
        _check_epsilon(self)


class Mul(_Layer):
    """Elementwise product of two tensors. The second may also be ``(1, 1, c)``
    against an ``(h, w, c)`` first (squeeze-and-excite gating)."""


@dataclass(frozen=True)
class Scale(_Layer):
    """Elementwise product with a constant scalar ``factor`` (NAS-Bench-201's ``none``
    edge is ``Scale(0.0)``: the zero it adds is computed, as the benchmark's networks do)."""

    factor: float

    def _check(self) -> None:
        factor = float(self.factor)
        if not np.isfinite(factor):
            raise ArchitectureError(f"Scale factor must be finite, got {self.factor!r}")
        _set(self, "factor", factor)


@dataclass(frozen=True)
class Slice(_Layer):
    """Elements ``[start, start + size)`` of the last (channel / feature) axis."""

    start: int
    size: int

    def _check(self) -> None:
        if self.start < 0 or self.size < 1:
            raise ArchitectureError(f"Slice needs start >= 0 and size >= 1, got {self.start}, {self.size}")


@dataclass(frozen=True)
class ChannelShuffle(_Layer):
    """ShuffleNet's channel shuffle of an ``(h, w, c)`` map: view the channels
    as ``(groups, c // groups)``, transpose, flatten back."""

    groups: int

    def _check(self) -> None:
        _check_positive(self.groups, "groups")


@dataclass(frozen=True)
class LayerNorm(_Layer):
    """Layer normalization over the last axis of ``(seq, dim)`` or ``(n,)``,
    with a learned scale (``gamma``) and shift (``beta``)."""

    epsilon: float = 1e-5

    def _check(self) -> None:
        _check_epsilon(self)


@dataclass(frozen=True)
class Attention(_Layer):
    """Scaled dot-product multi-head attention without projections.

    Reads ``(q, k, v)``, each ``(seq, dim)`` with ``dim % heads == 0``, and
    writes ``(seq, dim)``: per head ``softmax(q k^T / sqrt(dim / heads)) v``.
    Emitted as Reshape/Transpose/(Batch)MatMul/Softmax, as exporters do; the
    Q/K/V and output projections are ``Dense`` layers around it.
    """

    heads: int

    def _check(self) -> None:
        _check_positive(self.heads, "heads")


@dataclass(frozen=True)
class Resize(_Layer):
    """Upsampling of an ``(h, w, c)`` map by an integer ``scale`` to ``(h*scale, w*scale, c)``.

    ``"nearest"`` copies pixel ``floor(y / scale)`` (asymmetric coordinates:
    TF's ``half_pixel_centers=False``, PyTorch's ``nearest``); ``"bilinear"``
    interpolates with half-pixel centers, source ``(y + 0.5) / scale - 0.5``
    clamped to the map (TF's ``half_pixel_centers=True``, PyTorch's
    ``align_corners=False``). Both emitters compute the same numbers.
    """

    scale: int = 2
    mode: str = "nearest"

    def _check(self) -> None:
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, np.integer)) or self.scale < 1:
            raise ArchitectureError(f"Resize scale must be an int >= 1, got {self.scale!r}")
        _set(self, "scale", int(self.scale))
        if self.mode not in RESIZE_MODES:
            raise ArchitectureError(f"Resize mode must be one of {RESIZE_MODES}, got {self.mode!r}")


@dataclass(frozen=True)
class ConvTranspose2D(_Layer):
    """Transposed 2-D convolution (no groups, no fused activation: follow it with one).

    ``padding="same"`` gives ``(h*stride, w*stride)`` (TensorFlow's SAME for
    ``conv2d_transpose``: the padding of the forward conv from that size, the
    extra row/column after; needs ``kernel >= stride``); ``"valid"`` gives
    ``((h-1)*stride + kernel, ...)``. The kernel is ``(in_ch, out_ch, kh, kw)``
    (ONNX/PyTorch order; see :mod:`.arch`).
    """

    out_ch: int
    kernel: IntPair = 2
    stride: IntPair = 2
    padding: str = "same"
    bias: bool = True

    def _check(self) -> None:
        _set(self, "kernel", _pair(self.kernel, "kernel"))
        _set(self, "stride", _pair(self.stride, "stride"))
        _check_padding(self.padding)
        _check_positive(self.out_ch, "out_ch")
        if self.padding == "same" and (self.kernel[0] < self.stride[0] or self.kernel[1] < self.stride[1]):
            raise ArchitectureError(f"ConvTranspose2D with padding='same' needs kernel >= stride, got kernel "
                                    f"{self.kernel}, stride {self.stride}")


class PReLU(_Layer):
    """Parametric ReLU, ``max(x, 0) + alpha * min(x, 0)``, with one learned ``alpha``
    per channel (last axis)."""


@dataclass(frozen=True)
class Pad(_Layer):
    """Zero padding of an ``(h, w, c)`` map: ``top``/``bottom`` rows, ``left``/``right`` columns."""

    top: int = 0
    left: int = 0
    bottom: int = 0
    right: int = 0

    def _check(self) -> None:
        amounts = (self.top, self.left, self.bottom, self.right)
        if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0 for v in amounts):
            raise ArchitectureError(f"Pad amounts must be ints >= 0, got {amounts}")
        for key, value in zip(("top", "left", "bottom", "right"), amounts):
            _set(self, key, int(value))


Layer = Union[
    Input, Conv2D, MaxPool, AvgPool, GlobalAvgPool, Dense, Add, Concat, Flatten, Reshape, Softmax, Activation,
    BatchNorm, Mul, Scale, Slice, ChannelShuffle, LayerNorm, Attention, Resize, ConvTranspose2D, PReLU, Pad,
]
#: Every layer kind by class name (what ``Architecture.to_dict`` writes as ``"type"``).
_LAYER_TYPES: Dict[str, type] = {cls.__name__: cls for cls in get_args(Layer)}
