"""What a model file is, from its bytes: the one place that knows the formats' magic numbers.

``detect_format`` answers ``"tflite"`` or ``"onnx"`` for bytes or a path; :class:`ModelDigest`
hashes a model as its chunks stream past (an upload, a download) and tells its format from the
first bytes, so nothing has to hold the whole file. Core layer: standard library only.
"""
from __future__ import annotations

import hashlib
import os
from typing import Optional, Union

from fleetmeter._hashing import sha256_file

__all__ = ["FORMATS", "TFLITE_IDENTIFIER", "ORT_IDENTIFIER", "HEAD_BYTES", "is_tflite", "detect_format",
           "not_tflite_reason", "sha256_file", "ModelDigest"]

#: The formats a model file can be in.
FORMATS = ("onnx", "tflite")
#: The flatbuffer file identifier of a TFLite model, at bytes 4-8.
TFLITE_IDENTIFIER = b"TFL3"
#: The file identifier of an ONNX Runtime (ORT-format) model, at bytes 4-8.
ORT_IDENTIFIER = b"ORTM"
#: How many leading bytes tell the format.
HEAD_BYTES = 8

PathLike = Union[str, "os.PathLike[str]"]


def is_tflite(head: Union[bytes, bytearray, memoryview]) -> bool:
    """Whether ``head`` (a file's first bytes, or all of them) starts a TFLite flatbuffer."""
    return len(head) >= HEAD_BYTES and bytes(head[4:8]) == TFLITE_IDENTIFIER


def detect_format(source: Union[bytes, bytearray, memoryview, PathLike], name: Optional[str] = None) -> str:
    """``"tflite"`` for a TFL3 flatbuffer (or, failing the content, a ``.tflite`` name), else ``"onnx"``.

    ``source`` is the model's bytes (its first :data:`HEAD_BYTES` suffice) or a path, of which only the
    first bytes are read (``OSError`` if it cannot be). ``name``: the file name to fall back on; ``None``
    means the path's own, ``""`` lets the content alone decide.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        head = bytes(source[:HEAD_BYTES])
    else:
        with open(source, "rb") as fh:
            head = fh.read(HEAD_BYTES)
        name = os.fspath(source) if name is None else name
    if is_tflite(head) or (name or "").lower().endswith(".tflite"):
        return "tflite"
    return "onnx"


def not_tflite_reason(head: Union[bytes, bytearray, memoryview]) -> str:
    """Why bytes starting with ``head`` are not a TFLite model, for a message about a file that claims to be
    one (a ``.tflite`` name): ``not a valid TFLite model (...)``."""
    found = bytes(head[4:HEAD_BYTES])
    return (f"not a valid TFLite model (bytes 4-8 are {found!r}, not the {TFLITE_IDENTIFIER.decode()!r} file "
            "identifier: a damaged or truncated file, or another format under a .tflite name)")


class ModelDigest:
    """sha256, size and format of a model whose bytes arrive in chunks (``update`` each, in order)."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self._head = b""
        self.size_bytes = 0

    def update(self, chunk: bytes) -> None:
        self._digest.update(chunk)
        if len(self._head) < HEAD_BYTES:
            self._head += bytes(chunk[:HEAD_BYTES - len(self._head)])
        self.size_bytes += len(chunk)

    @property
    def sha256(self) -> str:
        """Hex sha256 of the bytes so far."""
        return self._digest.hexdigest()

    def format(self, name: Optional[str] = None) -> str:
        """:func:`detect_format` of the bytes so far."""
        return detect_format(self._head, name)
