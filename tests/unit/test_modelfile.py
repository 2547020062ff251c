"""fleetmeter/modelfile.py: the one place that tells a model's format from its bytes."""
from __future__ import annotations

import hashlib

from fleetmeter.modelfile import ModelDigest, detect_format, is_tflite

TFLITE_HEAD = b"\x1c\x00\x00\x00TFL3" + b"\x00" * 24
ONNX_HEAD = b"\x08\x07\x12\x04test" + b"\x00" * 24


def test_content_decides_then_the_name():
    assert detect_format(TFLITE_HEAD) == "tflite" and is_tflite(TFLITE_HEAD)
    assert detect_format(ONNX_HEAD) == "onnx" and not is_tflite(ONNX_HEAD)
    assert detect_format(ONNX_HEAD, "model.TFLITE") == "tflite"  # content unknown to it: the name decides
    assert detect_format(b"TFL3") == "onnx"  # too short to carry the identifier at bytes 4-8


def test_a_path_reads_only_the_head_and_falls_back_on_its_own_name(tmp_path):
    (tmp_path / "a.bin").write_bytes(TFLITE_HEAD)
    (tmp_path / "b.tflite").write_bytes(ONNX_HEAD)
    assert detect_format(tmp_path / "a.bin") == "tflite"
    assert detect_format(tmp_path / "b.tflite") == "tflite"
    assert detect_format(tmp_path / "b.tflite", name="") == "onnx"  # content alone


def test_streaming_digest_matches_the_whole_file_whatever_the_chunking():
    data = TFLITE_HEAD * 1000
    digest = ModelDigest()
    for chunk in (data[:3], data[3:5], data[5:4097], data[4097:]):  # the identifier straddles chunks
        digest.update(chunk)
    assert digest.sha256 == hashlib.sha256(data).hexdigest()
    assert digest.size_bytes == len(data) and digest.format() == "tflite"
