"""Model files on disk, content-addressed by sha256 (``blobs/ab/abcdef...``).

Writes go to a temporary file in the same folder and are renamed into place
only after the hash matched, so a reader never sees half a model.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

from fleetmeter._hashing import sha256_file

CHUNK_BYTES = 1024 * 1024


def is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


class BlobStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        if not is_sha256(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        return is_sha256(sha256) and self.path(sha256).is_file()

    def size_bytes(self, sha256: str) -> int:
        return self.path(sha256).stat().st_size

    def staging_file(self) -> tuple[BinaryIO, Path]:
        """An open temporary file inside the store (same filesystem, so adoption is a rename)."""
        fd, name = tempfile.mkstemp(prefix=".upload-", dir=self.root)
        return os.fdopen(fd, "wb"), Path(name)

    def adopt(self, staged: Path, sha256: str) -> Path:
        """Move a staged file into place after checking its hash; the staged file is gone afterwards."""
        return self.adopt_hashed(staged, sha256, check=True)

    def adopt_hashed(self, staged: Path, sha256: str, check: bool = False) -> Path:
        """Move a staged file into place under ``sha256``, which the caller computed from the very bytes it
        wrote there (an upload hashed as it streamed), or which is checked first with ``check``; the staged
        file is gone afterwards."""
        try:
            if check:
                actual = sha256_file(staged)
                if actual != sha256:
                    raise ValueError(f"content hash {actual} does not match {sha256}")
            dest = self.path(sha256)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, dest)
            return dest
        finally:
            staged.unlink(missing_ok=True)

    def read_chunks(self, sha256: str, offset: int = 0, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        with open(self.path(sha256), "rb") as f:
            f.seek(offset)
            while True:
                data = f.read(chunk_bytes)
                if not data:
                    return
                yield data


    def remove(self, sha256: str) -> bool:
        """Delete the file stored under ``sha256``; ``False`` when there was none. A reader that opened it
        before keeps reading it (POSIX unlink)."""
        try:
            self.path(sha256).unlink()
        except FileNotFoundError:
            return False
        return True
