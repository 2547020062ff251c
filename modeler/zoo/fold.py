"""Fold inference batch normalization into the convolution before it.

Both emitters call :func:`fold_batchnorm` before they translate layers, so an
ONNX file and a TFLite file of one description hold the same folded weights
(computed once, in float64, then rounded to float32). This is what the TFLite
converter does, and what onnxruntime's graph optimizer does at load time, so
the emitted files match what deployed models look like.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Tuple

import numpy as np

from .arch import Architecture, BatchNorm, Conv2D, Weights

__all__ = ["fold_batchnorm", "batchnorm_scale_shift"]


def batchnorm_scale_shift(weights: Dict[str, np.ndarray], epsilon: float) -> Tuple[np.ndarray, np.ndarray]:
    """``(scale, shift)`` with ``bn(x) == x * scale + shift``, computed in float64."""
    gamma = weights["gamma"].astype(np.float64)
    variance = weights["variance"].astype(np.float64)
    scale = gamma / np.sqrt(variance + epsilon)
    shift = weights["beta"].astype(np.float64) - weights["mean"].astype(np.float64) * scale
    return scale, shift


def _foldable(arch: Architecture) -> Dict[str, str]:
    """Conv name -> BatchNorm name for every pair that can be folded."""
    readers: Dict[str, int] = {}
    for layer in arch.layers:
        for ref in layer.inputs:
            readers[ref] = readers.get(ref, 0) + 1
    by_name = {layer.name: layer for layer in arch.layers}
    pairs = {}
    for layer in arch.layers:
        if not isinstance(layer, BatchNorm):
            continue
        source = by_name[layer.inputs[0]]
        if (isinstance(source, Conv2D) and source.activation is None and readers[source.name] == 1
                and source.name not in arch.outputs):
            pairs[source.name] = layer.name
    return pairs


def fold_batchnorm(arch: Architecture, weights: Weights) -> Tuple[Architecture, Weights]:
    """Return ``(arch, weights)`` with each foldable ``Conv2D -> BatchNorm`` pair merged.

    A pair is foldable when the conv has no activation and the BatchNorm is
    its only reader. The merged conv takes the BatchNorm's name (so readers of
    the BatchNorm's tensor are unchanged), its activation, and a bias. Other
    layers and their weights are passed through; with nothing to fold the
    inputs are returned as they are.
    """
    pairs = _foldable(arch)
    if not pairs:
        return arch, weights
    folded_by_bn = {bn: conv for conv, bn in pairs.items()}
    by_name = {layer.name: layer for layer in arch.layers}
    layers: List = []
    new_weights: Weights = {}
    for layer in arch.layers:
        if layer.name in pairs:
            continue
        if layer.name in folded_by_bn:
            conv = by_name[folded_by_bn[layer.name]]
            layers.append(dataclasses.replace(conv, name=layer.name, inputs=conv.inputs, bias=True,
                                              activation=layer.activation))
            scale, shift = batchnorm_scale_shift(weights[layer.name], layer.epsilon)
            cw = weights[conv.name]
            kernel = cw["kernel"].astype(np.float64) * scale[:, None, None, None]
            bias = cw["bias"].astype(np.float64) if "bias" in cw else np.zeros_like(scale)
            new_weights[layer.name] = {"kernel": kernel.astype(np.float32),
                                       "bias": (bias * scale + shift).astype(np.float32)}
            continue
        layers.append(layer)
        if layer.name in weights:
            new_weights[layer.name] = weights[layer.name]
    folded = Architecture(arch.name, arch.family, tuple(layers), arch.hyperparameters, arch.outputs)
    return folded, new_weights
