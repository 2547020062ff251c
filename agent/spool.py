"""Results the controller has not acknowledged yet, kept on the device's disk.

A result is written (fsync'd, then renamed into place) *before* it is sent,
and removed only when the controller's ack arrives, so killing the agent at
any moment after a measurement finished loses nothing: on the next connection
every spooled result is sent again (the controller stores each
``measurement_id`` once).
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

SUFFIX = ".pb"


class Spool:
    """A folder of serialized results, one file per measurement id. Thread-safe for distinct ids."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        for leftover in self.root.glob(".tmp-*"):  # a put() cut short by a crash; never a live one
            leftover.unlink(missing_ok=True)

    def _path(self, measurement_id: str) -> Path:
        if not measurement_id or "/" in measurement_id or measurement_id.startswith("."):
            raise ValueError(f"bad measurement id {measurement_id!r}")
        return self.root / (measurement_id + SUFFIX)

    def put(self, measurement_id: str, payload: bytes) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path(measurement_id))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(self.root)

    def remove(self, measurement_id: str) -> bool:
        try:
            self._path(measurement_id).unlink()
            return True
        except FileNotFoundError:
            return False

    def items(self) -> list[tuple[str, bytes]]:
        """Every spooled result, oldest first (a put() in progress is not visible until it is complete)."""
        out = []
        for p in sorted(self.root.glob("*" + SUFFIX), key=lambda p: (p.stat().st_mtime, p.name)):
            if not p.name.startswith("."):
                try:
                    out.append((p.name[: -len(SUFFIX)], p.read_bytes()))
                except FileNotFoundError:  # acked and removed meanwhile
                    continue
        return out

    def __len__(self) -> int:
        return sum(1 for p in self.root.iterdir() if p.name.endswith(SUFFIX) and not p.name.startswith("."))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
