"""Content addresses: every model file is known by the sha256 of its bytes."""
from __future__ import annotations

import hashlib
import os
from typing import Union

CHUNK_BYTES = 1 << 20


def sha256_file(path: Union[str, "os.PathLike[str]"]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()
