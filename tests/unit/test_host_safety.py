"""What the CLI prints and where the controller's local Ray goes, without Ray or a network.

- ``_term.table`` shows control characters escaped, so a device, model or platform name cannot carry
  terminal escape sequences (or newlines) onto an operator's screen.
- ``cli._print_json`` never prints NaN/Infinity, which strict JSON parsers reject.
- The node ip Ray gets from ``--listen`` / ``--ray-node-ip``, the temp dir it gets from the data dir (or
  the private fallback when that path is too long for Ray's unix sockets), and the data dir's modes.
"""
from __future__ import annotations

import json
import math
import os
import stat
import tempfile
from pathlib import Path

import pytest

from fleetmeter._term import escape_control, table
from fleetmeter.cli import _print_json
from fleetmeter.controller.engine import MAX_RAY_TEMP_DIR_BYTES, RayEngine, choose_ray_temp_dir, is_loopback
from fleetmeter.controller.server import ControllerConfig, make_private_data_dir


# ------------------------------------------------------------------ tables
def test_table_escapes_control_characters_in_every_cell():
    out = table(["NAME", "LABELS"], [("evil\x1b[2J\x1b]0;pwned\x07", "a=b\nc"), ("tab\there\r", None),
                                     ("ok", 3)])
    assert not any(ch in out for ch in "\x1b\x07\r\t")
    assert out.count("\n") == 4  # header, rule, three rows: the newline in a label did not add a line
    assert "evil\\x1b[2J\\x1b]0;pwned\\x07" in out and "a=b\\nc" in out and "tab\\there\\r" in out


def test_escape_leaves_printable_text_alone_and_escapes_c1_and_bidi():
    assert escape_control("résumé 漢字 😀 C:\\models") == "résumé 漢字 😀 C:\\models"
    assert escape_control("a\x9bb\x7f") == "a\\x9bb\\x7f"
    assert escape_control("name\u202egpj.exe") == "name\\u202egpj.exe"


def test_table_columns_line_up_after_escaping():
    lines = table(["A", "B"], [("x\x1b", "1"), ("longer", "2")]).splitlines()
    assert lines[2].rindex("1") == lines[3].rindex("2") == lines[0].index("B")


# ------------------------------------------------------------------ json
def test_print_json_has_no_nan_or_infinity(capsys):
    _print_json({"median": math.nan, "max": math.inf, "min": -math.inf, "ok": 1.5,
                 "rows": [{"x": float("nan")}, (math.inf, 2)], "name": "dev\x1b"})
    text = capsys.readouterr().out
    assert "NaN" not in text and "Infinity" not in text
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert data == {"median": None, "max": None, "min": None, "ok": 1.5, "rows": [{"x": None}, [None, 2]],
                    "name": "dev\x1b"}  # names stay exact in JSON (escaped by json itself)


# ------------------------------------------------------------------ Ray's node ip and temp dir
@pytest.mark.parametrize("listen, node_ip, expected", [
    ("127.0.0.1:50051", None, "127.0.0.1"),
    ("localhost:50051", None, "127.0.0.1"),
    ("[::1]:50051", None, "::1"),
    ("10.1.2.3:0", None, "10.1.2.3"),
    ("0.0.0.0:50051", None, None),
    ("[::]:50051", None, None),
    ("0.0.0.0:50051", "127.0.0.1", "127.0.0.1"),
    ("127.0.0.1:50051", "10.1.2.3", "10.1.2.3"),
    ("127.0.0.1:50051", "0.0.0.0", None),
])
def test_ray_node_ip_follows_listen_unless_set(listen, node_ip, expected):
    assert ControllerConfig(listen=listen, ray_node_ip=node_ip).ray_node_ip_to_use() == expected


def test_ray_node_ip_must_be_an_address():
    with pytest.raises(ValueError, match="--ray-node-ip"):
        ControllerConfig(ray_node_ip="not an address")


def test_is_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("10.0.0.1") and not is_loopback("0.0.0.0") and not is_loopback("myhost")


def test_short_temp_root_is_used_as_is(monkeypatch):
    short = Path(tempfile.mkdtemp(prefix="fmu-", dir="/tmp"))
    try:
        monkeypatch.chdir(short)
        assert choose_ray_temp_dir(Path("r")) == (short / "r", None, None)  # relative: made absolute
        assert not (short / "r").exists()  # nothing created
    finally:
        short.rmdir()


def test_long_temp_root_falls_back_to_a_private_folder(tmp_path):
    root = tmp_path / ("y" * MAX_RAY_TEMP_DIR_BYTES) / "ray"
    temp_dir, fallback, why = choose_ray_temp_dir(root)
    try:
        assert fallback is not None and temp_dir.parent == fallback and fallback.name.startswith("fm-ray-")
        assert stat.S_IMODE(fallback.stat().st_mode) == 0o700  # Ray makes temp_dir itself world-writable
        assert len(str(temp_dir).encode()) <= MAX_RAY_TEMP_DIR_BYTES and "unix socket" in why
        # Ray's longest socket path under it still fits in sun_path (107 bytes on Linux).
        longest = f"{temp_dir}/session_2026-12-31_23-59-59_999999_4194304/sockets/plasma_store.99"
        assert len(longest.encode()) <= 107
    finally:
        fallback.rmdir()


def test_engine_after_shutdown_refuses_calls_without_touching_ray():
    from fleetmeter.errors import Unavailable

    engine = RayEngine(None)
    engine.shutdown()  # never started: nothing to stop, and no Ray is started by it
    with pytest.raises(Unavailable):
        engine.start()
    with pytest.raises(Unavailable):
        engine.parallelism()


# ------------------------------------------------------------------ data dir modes
def test_data_dir_is_made_private(tmp_path):
    d = tmp_path / "new" / "data"
    old = os.umask(0o022)
    try:
        make_private_data_dir(d)
    finally:
        os.umask(old)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE((d / "fleetmeter.sqlite").stat().st_mode) == 0o600


def test_a_wider_data_dir_is_tightened_with_a_warning(tmp_path, caplog):
    d = tmp_path / "data"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    (d / "fleetmeter.sqlite").write_bytes(b"")
    os.chmod(d / "fleetmeter.sqlite", 0o644)
    (d / "fleetmeter.sqlite-wal").write_bytes(b"")
    os.chmod(d / "fleetmeter.sqlite-wal", 0o644)
    make_private_data_dir(d)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE((d / "fleetmeter.sqlite").stat().st_mode) == 0o600
    assert stat.S_IMODE((d / "fleetmeter.sqlite-wal").stat().st_mode) == 0o600
    assert "mode 0755); made it 0700" in caplog.text and "mode 0644); made it 0600" in caplog.text
