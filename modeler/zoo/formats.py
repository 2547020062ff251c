"""The file formats a zoo is emitted in, and how ``--formats`` is parsed.

A leaf of the zoo (standard library only): ``families`` lists the formats and
``build`` writes them, and neither needs the other for that.
"""
from __future__ import annotations

from typing import Sequence, Tuple, Union

__all__ = ["FORMATS", "FILE_SUFFIX", "QUANTIZATION", "parse_formats"]

FORMATS = ("onnx", "tflite", "tflite-int8")
#: File name suffix of each format (``NAME`` + suffix).
FILE_SUFFIX = {"onnx": ".onnx", "tflite": ".tflite", "tflite-int8": ".int8.tflite"}
#: Numeric precision of each format's weights and activations, as recorded in the index.
QUANTIZATION = {"onnx": "float32", "tflite": "float32", "tflite-int8": "int8"}


def parse_formats(text: Union[str, Sequence[str]]) -> Tuple[str, ...]:
    """``"onnx,tflite-int8"`` -> ``("onnx", "tflite-int8")``; ValueError on an unknown or empty list."""
    items = [f.strip() for f in (text.split(",") if isinstance(text, str) else text) if f.strip()]
    unknown = [f for f in items if f not in FORMATS]
    if unknown or not items:
        raise ValueError(f"formats must be a comma-separated subset of {', '.join(FORMATS)}; got {text!r}")
    return tuple(dict.fromkeys(items))
