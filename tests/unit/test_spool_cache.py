"""Device-side durable state (agent/spool.py, agent/cache.py) and the controller's blob store
(fleetmeter/blobs.py), on real files under tmp_path. Downloads are fake iterables: no network.

Each test says what would be wrong if it failed.
"""
from __future__ import annotations

import hashlib
import os

import pytest

from fleetmeter.agent import spool as spool_module
from fleetmeter.agent.cache import HashMismatch, ModelCache
from fleetmeter.agent.spool import Spool
from fleetmeter.blobs import BlobStore, sha256_file


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------ Spool

def test_spool_put_items_remove_round_trip(tmp_path):
    """Fails if a spooled result is lost, altered, or not dropped once acknowledged."""
    spool = Spool(tmp_path / "spool")
    spool.put("m-1", b"\x00first")
    spool.put("m-2", b"second")
    assert dict(spool.items()) == {"m-1": b"\x00first", "m-2": b"second"}
    assert len(spool) == 2
    assert spool.remove("m-1") is True
    assert spool.remove("m-1") is False  # a second ack for the same id is harmless
    assert spool.items() == [("m-2", b"second")]
    spool.put("m-2", b"second, rewritten")  # same id again replaces, never duplicates
    assert spool.items() == [("m-2", b"second, rewritten")]


def test_spool_items_are_oldest_first(tmp_path):
    """Fails if results are re-sent in name order (or any order but age): mtimes, not names, decide."""
    spool = Spool(tmp_path)
    spool.put("zzz", b"old")
    spool.put("aaa", b"new")
    os.utime(tmp_path / "zzz.pb", (1000, 1000))
    os.utime(tmp_path / "aaa.pb", (2000, 2000))
    assert [mid for mid, _ in spool.items()] == ["zzz", "aaa"]
    os.utime(tmp_path / "zzz.pb", (3000, 3000))
    assert [mid for mid, _ in spool.items()] == ["aaa", "zzz"]


def test_spool_cleans_leftover_temp_files(tmp_path):
    """Fails if half-written results from a killed agent are re-sent as results, counted, or left to pile up."""
    spool = Spool(tmp_path)
    spool.put("m-1", b"ok")
    (tmp_path / ".tmp-abc123").write_bytes(b"half a resu")
    assert len(spool) == 1
    assert spool.items() == [("m-1", b"ok")]
    Spool(tmp_path)  # the next agent start cleans what a crash left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m-1.pb"]


@pytest.mark.parametrize("bad", ["", "a/b", "../escape", ".hidden", ".tmp-x"])
def test_spool_rejects_bad_ids_and_leaves_nothing(tmp_path, bad):
    """Fails if an id could write outside the spool, hide a file, or pose as a temp file, or if a rejected
    put leaves its temp file behind."""
    spool = Spool(tmp_path)
    with pytest.raises(ValueError):
        spool.put(bad, b"x")
    with pytest.raises(ValueError):
        spool.remove(bad)
    assert list(tmp_path.iterdir()) == []


def test_spool_survives_an_agent_restart(tmp_path):
    """Fails if results spooled before a restart are not there for the new agent process to re-send."""
    Spool(tmp_path / "spool").put("m-1", b"payload")
    again = Spool(tmp_path / "spool")
    assert again.items() == [("m-1", b"payload")]


def test_items_during_a_concurrent_put_does_not_lose_the_result(tmp_path, monkeypatch):
    """Fails if a reconnect's ``items()`` (connection thread) can destroy a result the job thread is writing
    in ``put()``. We run ``items()`` exactly at put's fsync, deterministically, as that other thread would."""
    spool = Spool(tmp_path)
    real_fsync = os.fsync
    ran = []

    def fsync_with_reconnect(fd):
        if not ran:
            ran.append(spool.items())  # the reconnect's scan, in between write and rename
        return real_fsync(fd)

    monkeypatch.setattr(spool_module.os, "fsync", fsync_with_reconnect)
    spool.put("m-1", b"a measurement")
    monkeypatch.undo()
    assert spool.items() == [("m-1", b"a measurement")]


# ------------------------------------------------------------------ ModelCache

class Downloader:
    """``open_chunks(offset)``: serves ``data[offset:]`` in chunks, optionally cut after ``cut_after`` chunks."""

    def __init__(self, data: bytes, chunk_bytes: int = 10, cut_after: int | None = None) -> None:
        self.data, self.chunk_bytes, self.cut_after = data, chunk_bytes, cut_after
        self.offsets: list[int] = []

    def __call__(self, offset: int):
        self.offsets.append(offset)
        for i, start in enumerate(range(offset, len(self.data), self.chunk_bytes)):
            if self.cut_after is not None and i == self.cut_after:
                raise ConnectionError("connection cut")
            yield self.data[start:start + self.chunk_bytes]


def test_fetch_downloads_verifies_and_caches(tmp_path):
    """Fails if a fetched model is not the verified bytes, or a cached model is downloaded again."""
    data = os.urandom(95)
    cache = ModelCache(tmp_path, max_bytes=1000)
    first = Downloader(data)
    path = cache.fetch(sha(data), len(data), first)
    assert path.read_bytes() == data and first.offsets == [0]
    assert cache.cached() == [sha(data)]

    def must_not_download(offset):
        raise AssertionError("a cached model was downloaded again")

    assert cache.fetch(sha(data), len(data), must_not_download) == path
    assert cache.get(sha(data)) == path


def test_hash_mismatch_raises_and_caches_nothing(tmp_path):
    """Fails if corrupt bytes are cached under the hash they do not have, or their partial file stays
    (the next fetch would 'resume' onto garbage)."""
    data, wrong = b"the real model", b"something else"
    cache = ModelCache(tmp_path, max_bytes=1000)
    with pytest.raises(HashMismatch):
        cache.fetch(sha(data), len(data), Downloader(wrong))
    assert cache.cached() == [] and cache.get(sha(data)) is None
    assert cache.partial_size(sha(data)) == 0
    assert list(tmp_path.iterdir()) == []


def test_cut_download_resumes_from_the_partial_size(tmp_path):
    """Fails if a cut transfer starts over from 0 (or from a wrong offset), or the stitched file is wrong."""
    data = os.urandom(100)
    cache = ModelCache(tmp_path, max_bytes=1000)
    with pytest.raises(ConnectionError):
        cache.fetch(sha(data), len(data), Downloader(data, chunk_bytes=10, cut_after=3))
    assert cache.partial_size(sha(data)) == 30
    assert cache.cached() == []  # nothing half-done is visible as cached
    resumed = Downloader(data, chunk_bytes=10)
    path = cache.fetch(sha(data), len(data), resumed)
    assert resumed.offsets == [30]
    assert path.read_bytes() == data
    assert cache.partial_size(sha(data)) == 0


def test_partial_larger_than_the_model_restarts_from_zero(tmp_path):
    """Fails if a stale partial longer than the model is resumed (the file could never hash right)."""
    data = os.urandom(40)
    cache = ModelCache(tmp_path, max_bytes=1000)
    (tmp_path / f".partial-{sha(data)}").write_bytes(b"x" * 50)
    fresh = Downloader(data)
    assert cache.fetch(sha(data), len(data), fresh).read_bytes() == data
    assert fresh.offsets == [0]


def test_lru_eviction_keeps_the_bound_and_evicts_least_recently_used(tmp_path):
    """Fails if the cache outgrows max_bytes, or evicts a recently used model instead of the stalest one."""
    cache = ModelCache(tmp_path, max_bytes=130)
    blobs = {name: os.urandom(40) for name in "ABCD"}
    for name in "ABC":
        cache.fetch(sha(blobs[name]), 40, Downloader(blobs[name]))
    for name, mtime in (("A", 1000), ("B", 2000), ("C", 3000)):  # written A, B, C: A is the oldest...
        os.utime(cache.path(sha(blobs[name])), (mtime, mtime))
    assert cache.get(sha(blobs["A"])) is not None  # ...but A was just used: now B is the stalest
    cache.fetch(sha(blobs["D"]), 40, Downloader(blobs["D"]))
    assert set(cache.cached()) == {sha(blobs[n]) for n in "ACD"}
    assert sum(cache.path(s).stat().st_size for s in cache.cached()) <= 130

    big = os.urandom(120)  # needs all but nothing: evicts every older model
    cache.fetch(sha(big), len(big), Downloader(big))
    assert cache.cached() == [sha(big)]


def test_cache_needs_a_positive_bound(tmp_path):
    """Fails if an unbounded/zero cache is accepted (it would evict everything or fill the disk)."""
    with pytest.raises(ValueError):
        ModelCache(tmp_path, max_bytes=0)


# ------------------------------------------------------------------ BlobStore

def _stage(blobs: BlobStore, data: bytes):
    f, staged = blobs.staging_file()
    with f:
        f.write(data)
    return staged


def test_blob_adopt_checks_the_hash(tmp_path):
    """Fails if an upload whose bytes do not match its claimed sha256 is stored, or its staging file leaks."""
    blobs = BlobStore(tmp_path)
    data = b"model bytes"
    staged = _stage(blobs, b"other bytes")
    with pytest.raises(ValueError):
        blobs.adopt(staged, sha(data))
    assert not staged.exists() and not blobs.has(sha(data))

    staged = _stage(blobs, data)
    dest = blobs.adopt(staged, sha(data))
    assert not staged.exists()
    assert dest == tmp_path / sha(data)[:2] / sha(data)
    assert blobs.has(sha(data)) and blobs.size_bytes(sha(data)) == len(data) and sha256_file(dest) == sha(data)


def test_blob_read_chunks_from_an_offset(tmp_path):
    """Fails if a resumed model download (FetchModel with an offset) sends the wrong bytes."""
    blobs = BlobStore(tmp_path)
    data = bytes(range(10))
    blobs.adopt(_stage(blobs, data), sha(data))
    assert list(blobs.read_chunks(sha(data), offset=4, chunk_bytes=3)) == [data[4:7], data[7:10]]
    assert b"".join(blobs.read_chunks(sha(data))) == data
    assert list(blobs.read_chunks(sha(data), offset=len(data))) == []


def test_blob_paths_only_for_sha256(tmp_path):
    """Fails if a non-digest (e.g. a path) can address a file in the store."""
    blobs = BlobStore(tmp_path)
    assert blobs.has("../../etc/passwd") is False
    with pytest.raises(ValueError):
        blobs.path("A" * 64)  # upper-case is not the canonical digest


def test_model_larger_than_the_cache_bound_is_refused_clearly(tmp_path):
    """Fails if a model bigger than the whole cache is stored anyway (breaking the bound) or fails obscurely."""
    from fleetmeter.agent.cache import CacheTooSmall

    data = b"x" * 100
    cache = ModelCache(tmp_path, max_bytes=50)
    with pytest.raises(CacheTooSmall, match="--cache-mb"):
        cache.fetch(hashlib.sha256(data).hexdigest(), len(data), Downloader(data))
    assert cache.cached() == []
