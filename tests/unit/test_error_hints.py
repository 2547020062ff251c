"""Errors that point the right way (issue 12): a damaged ``.tflite``, a mistyped model path, a shell glob after
``--model``, and the hint on a failed connection. Over real gRPC and the CLI: tests/integration/test_housekeeping.py
and tests/integration/test_tls.py."""
from __future__ import annotations

import argparse
import os

import pytest

from fleetmeter._rpc import connection_hint
from fleetmeter.errors import InvalidArgument
from fleetmeter.modeler.builtin import get_builtin_model
from fleetmeter.modelfile import not_tflite_reason
from fleetmeter.sweepspec import add_sweep_arguments, spec_from_args

GARBAGE = bytes(range(256)) * 8


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_sweep_arguments(parser)
    return parser.parse_args(list(argv))


# ------------------------------------------------------------------ a damaged .tflite
def test_garbage_named_tflite_is_not_a_valid_tflite_model():
    """Fails if a damaged .tflite is reported as a failed ONNX parse (the user would look for the wrong
    problem), or if garbage named .onnx stops being reported as it was."""
    from fleetmeter.controller.inspect_model import inspect_model_bytes

    with pytest.raises(InvalidArgument, match=r"^net\.tflite: not a valid TFLite model \(bytes 4-8 are .*'TFL3'"):
        inspect_model_bytes((GARBAGE, "net.tflite"))
    with pytest.raises(InvalidArgument, match=r"^junk\.onnx: not a valid ONNX or TFLite model"):
        inspect_model_bytes((GARBAGE, "junk.onnx"))


def test_a_real_tflite_still_inspects_under_any_name(tmp_path):
    """Fails if the name now overrides the content: a TFLite flatbuffer is TFLite whatever it is called."""
    from fleetmeter.controller.inspect_model import inspect_model_file

    data = get_builtin_model("tiny_mlp", "tflite").path.read_bytes()
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    assert inspect_model_file((str(path), "model"))["format"] == "tflite"
    truncated = tmp_path / "cut.tflite"
    truncated.write_bytes(data[:6])
    with pytest.raises(InvalidArgument, match="not a valid TFLite model"):
        inspect_model_file((str(truncated), "cut.tflite"))


def test_not_tflite_reason_shows_the_bytes_found():
    assert "b'ONNX'" in not_tflite_reason(b"\x08\x07\x12\x00ONNX") and "'TFL3'" in not_tflite_reason(b"")


# ------------------------------------------------------------------ model references
def test_a_shell_glob_after_model_is_taken_whole():
    """`--model *.onnx` reaches argparse as several words: fails if any of them lands elsewhere (the sweep
    file positional, or 'unrecognized arguments')."""
    args = _parse("--model", "a.onnx", "b.onnx", "c.onnx", "--model", "d.tflite", "--threads", "1")
    assert (args.model, args.file, args.threads) == (["a.onnx", "b.onnx", "c.onnx", "d.tflite"], None, [1])


def test_a_sweep_file_after_model_is_pointed_out(tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("models: [x]\n")
    with pytest.raises(InvalidArgument, match=r"sweep\.yaml is a sweep file, not a model.*put the sweep file first"):
        spec_from_args(_parse("--model", "a.onnx", str(sweep)), upload=lambda p: "x", known_names=lambda: ["a.onnx"])


@pytest.mark.parametrize("ref", ["modles/net.onnx", "./net.onnx", "net.tflite", os.path.join("a", "b")])
def test_a_mistyped_path_says_no_such_file(ref):
    """Fails if a path that does not exist goes to the controller as a model name (its answer, 'unknown
    model: upload it first', sends the user the wrong way)."""
    with pytest.raises(InvalidArgument, match=rf"^no such file: {ref}; "):
        spec_from_args(_parse("--model", ref), upload=lambda p: "x", known_names=lambda: ["other.onnx"])


def test_a_file_name_that_is_an_uploaded_models_name_is_accepted():
    """Uploads are named after their file: fails if such a name is refused because no file of that name is
    here, or if names are asked for when no reference looks like a path."""
    asked = []
    spec = spec_from_args(_parse("--model", "net.onnx", "--model", "3f2a9c1b"), upload=lambda p: "x",
                          known_names=lambda: asked.append(1) or ["net.onnx"])
    assert list(spec.models) == ["net.onnx", "3f2a9c1b"] and asked == [1]
    spec_from_args(_parse("--model", "3f2a9c1b", "--model", "resnet"), known_names=lambda: asked.append(2) or [])
    assert asked == [1]


def test_a_missing_path_in_a_sweep_file_names_its_folder(tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("models: [models/net.onnx]\n")
    with pytest.raises(InvalidArgument, match=rf"no such file: models/net.onnx \(relative to {tmp_path}"):
        spec_from_args(_parse(str(sweep)), upload=lambda p: "x", known_names=lambda: [])


# ------------------------------------------------------------------ connection hints
PLAIN_AT_TLS = ("failed to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:40293: "
                "Socket closed")
TLS_AT_PLAIN = ("failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:33615: Tls handshake "
                "failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:100000f7:SSL routines:OPENSSL_internal:"
                "WRONG_VERSION_NUMBER")


def test_connection_hints_depend_on_whether_tls_was_used():
    """gRPC's details as a plain-text and a TLS client get them at the wrong kind of port: fails if the hint
    is missing, or tells a client that already uses TLS to pass --tls-ca."""
    assert "--tls-ca" in connection_hint(PLAIN_AT_TLS, tls=False) and "FLEETMETER_TLS_CA" in \
        connection_hint(PLAIN_AT_TLS, tls=False)
    assert connection_hint(PLAIN_AT_TLS, tls=True) == "" and connection_hint(PLAIN_AT_TLS, tls=None) == ""
    assert "may not be using TLS" in connection_hint(TLS_AT_PLAIN, tls=True)
    assert connection_hint(TLS_AT_PLAIN, tls=False) == ""
    assert "FLEETMETER_CONTROLLER" in connection_hint("ipv4:127.0.0.1:1: Connection refused", tls=None)
