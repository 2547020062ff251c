"""Shape arithmetic shared by the zoo's emitters and the feature extractors.

A leaf module (standard library only), so that ``features_tflite`` and
``zoo.arch`` can both use it without one importing the other.
"""
from __future__ import annotations

from typing import Tuple

__all__ = ["same_padding"]


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> Tuple[int, int]:
    """TensorFlow SAME padding along one axis: (before, after); the odd pixel goes after."""
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2
