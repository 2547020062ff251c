"""The device's model cache: files by sha256, bounded in size, least recently used evicted first.

Downloads land in ``.partial-<sha256>`` and resume from its size after a cut
transfer; a finished download is hash-checked before it is renamed into the
cache, so a cached file is always the model it claims to be.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Iterable, Optional

from fleetmeter._hashing import sha256_file

log = logging.getLogger(__name__)

DEFAULT_CACHE_BYTES = 4 * 1024 ** 3


class HashMismatch(Exception):
    pass


class CacheTooSmall(OSError):
    """The model alone is larger than the cache's size bound."""


class ModelCache:
    def __init__(self, root: str | Path, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if max_bytes <= 0:
            raise ValueError("the model cache needs a positive size bound")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes

    def path(self, sha256: str) -> Path:
        return self.root / sha256

    def get(self, sha256: str) -> Optional[Path]:
        p = self.path(sha256)
        if p.is_file():
            os.utime(p)  # mtime = last use, for LRU
            return p
        return None

    def partial_size(self, sha256: str) -> int:
        p = self.root / f".partial-{sha256}"
        return p.stat().st_size if p.exists() else 0

    def fetch(self, sha256: str, size_bytes: int, open_chunks: Callable[[int], Iterable[bytes]]) -> Path:
        """The cached file for ``sha256``, downloading it with ``open_chunks(offset)`` if needed.

        ``open_chunks`` may raise mid-way (a cut connection): the partial file stays
        and the next call resumes from its end.
        """
        hit = self.get(sha256)
        if hit is not None:
            return hit
        if size_bytes > self.max_bytes:
            raise CacheTooSmall(f"the model ({size_bytes} bytes) is larger than the model cache bound "
                                f"({self.max_bytes} bytes); raise --cache-mb")
        self.make_room(size_bytes)
        partial = self.root / f".partial-{sha256}"
        offset = self.partial_size(sha256)
        if size_bytes and offset > size_bytes:
            partial.unlink()
            offset = 0
        if offset:
            log.info("resuming download of %s at %d/%d bytes", sha256[:12], offset, size_bytes)
        with open(partial, "ab") as f:
            for data in open_chunks(offset):
                f.write(data)
        actual = sha256_file(partial)
        if actual != sha256:
            partial.unlink()
            raise HashMismatch(f"downloaded model hashes to {actual}, expected {sha256}")
        dest = self.path(sha256)
        os.replace(partial, dest)
        return dest

    def make_room(self, incoming_bytes: int) -> None:
        files = sorted((p for p in self.root.iterdir() if p.is_file() and not p.name.startswith(".")),
                       key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        while files and total + incoming_bytes > self.max_bytes:
            victim = files.pop(0)
            total -= victim.stat().st_size
            log.info("model cache full: evicting %s", victim.name[:12])
            victim.unlink(missing_ok=True)

    def cached(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_file() and not p.name.startswith("."))
