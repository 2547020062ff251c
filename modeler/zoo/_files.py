"""Small file helpers shared by the emitters and generators."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from fleetmeter._hashing import sha256_file  # noqa: F401 - re-exported for the zoo

PathLike = Union[str, "os.PathLike[str]"]


def atomic_write(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and ``os.replace``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)


