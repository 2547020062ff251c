"""A TCP proxy on loopback whose "network" can be cut and restored: for fault tests.

``CuttableProxy(upstream)`` listens on ``127.0.0.1:<free port>`` and forwards
every connection to ``upstream`` byte for byte. It runs an asyncio loop in a
daemon thread; ``cut()``/``restore()``/``close()`` are called from the test's
thread and return once the loop has done the work.

``cut()`` aborts every open connection on both sides with an RST
(``SO_LINGER`` 0): the peers see "connection reset", never a graceful end.
Until ``restore()``, connections that arrive are handled per ``new_during_cut``:

- ``"drop"`` (default): accepted but not answered and not forwarded; their
  bytes wait unread, like SYNs and segments lost on a dead link. A client that
  gives up closes its end; the ones still waiting at ``restore()`` are then
  connected upstream and forwarded, as TCP retransmission would deliver them
  once the link heals.
- ``"refuse"``: reset as soon as accepted (a host that actively rejects).
"""
from __future__ import annotations

import asyncio
import logging
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Optional

log = logging.getLogger(__name__)

_RST_LINGER = struct.pack("ii", 1, 0)
_CHUNK = 64 * 1024


def _abort(writer: Optional[asyncio.StreamWriter]) -> None:
    """Close with an RST: linger 0, then drop the socket without flushing."""
    if writer is None:
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST_LINGER)
        except OSError:
            pass
    writer.transport.abort()


@dataclass(eq=False)  # hashable by identity: kept in a set
class _Conn:
    client_reader: asyncio.StreamReader
    client_writer: asyncio.StreamWriter
    upstream_writer: Optional[asyncio.StreamWriter] = None
    tasks: list = field(default_factory=list)


@dataclass
class ProxyStats:
    accepted: int = 0        # client connections accepted (all of them)
    forwarded: int = 0       # ... that were connected upstream
    reset_by_cut: int = 0    # connections aborted by cut()
    dropped: int = 0         # arrived during a cut and were held ("drop")
    refused: int = 0         # arrived during a cut and were reset ("refuse")
    bytes_up: int = 0        # client → upstream
    bytes_down: int = 0      # upstream → client


class CuttableProxy:
    def __init__(self, upstream: str, *, new_during_cut: str = "drop") -> None:
        if new_during_cut not in ("drop", "refuse"):
            raise ValueError(f"new_during_cut must be 'drop' or 'refuse', got {new_during_cut!r}")
        host, _, port = upstream.rpartition(":")
        self.upstream = (host, int(port))
        self.new_during_cut = new_during_cut
        self.stats = ProxyStats()
        self._up = True
        self._conns: set[_Conn] = set()
        self._held: list[_Conn] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="cuttable-proxy", daemon=True)
        self._thread.start()
        self._server: asyncio.AbstractServer = self._call(
            asyncio.start_server(self._on_client, "127.0.0.1", 0))
        self.address = "127.0.0.1:%d" % self._server.sockets[0].getsockname()[1]

    # ------------------------------------------------------------ test-thread API
    @property
    def is_cut(self) -> bool:
        return not self._up

    def open_connections(self) -> int:
        """Connections currently forwarded (not held, not closed)."""
        return self._call(self._count())

    def cut(self) -> int:
        """Cut the link: RST every open connection; hold or refuse new ones. Returns how many were reset."""
        return self._call(self._cut())

    def restore(self) -> None:
        """Heal the link: forward held connections and every new one."""
        self._call(self._restore())

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._call(self._close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            if not self._thread.is_alive():
                self._loop.close()

    def __enter__(self) -> "CuttableProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, coro, timeout_s: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    # ------------------------------------------------------------ on the loop
    async def _count(self) -> int:
        return sum(1 for c in self._conns if c.upstream_writer is not None)

    async def _cut(self) -> int:
        self._up = False
        victims = list(self._conns)
        for conn in victims:
            self._kill(conn)
        self.stats.reset_by_cut += len(victims)
        log.info("proxy %s: link cut, %d connection(s) reset", self.address, len(victims))
        return len(victims)

    async def _restore(self) -> None:
        self._up = True
        held, self._held = self._held, []
        log.info("proxy %s: link restored, forwarding %d held connection(s)", self.address, len(held))
        for conn in held:
            asyncio.ensure_future(self._forward(conn))

    async def _close(self) -> None:
        self._server.close()
        for conn in list(self._conns) + self._held:
            self._kill(conn)
        self._held = []

    def _kill(self, conn: _Conn) -> None:
        current = asyncio.current_task()
        for t in conn.tasks:
            if t is not current:
                t.cancel()
        _abort(conn.client_writer)
        _abort(conn.upstream_writer)
        self._conns.discard(conn)

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.accepted += 1
        conn = _Conn(reader, writer)
        if self._up:
            await self._forward(conn)
        elif self.new_during_cut == "refuse":
            self.stats.refused += 1
            _abort(writer)
        else:
            self.stats.dropped += 1
            self._held.append(conn)  # nothing read, nothing answered until restore()

    async def _forward(self, conn: _Conn) -> None:
        if conn.client_writer.is_closing():
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            _abort(conn.client_writer)  # upstream down: the client sees a reset, as from a dead port
            return
        if not self._up:  # cut while we were connecting
            _abort(up_writer)
            _abort(conn.client_writer)
            return
        conn.upstream_writer = up_writer
        self._conns.add(conn)
        self.stats.forwarded += 1
        conn.tasks = [asyncio.ensure_future(self._pump(conn, conn.client_reader, up_writer, "bytes_up")),
                      asyncio.ensure_future(self._pump(conn, up_reader, conn.client_writer, "bytes_down"))]

    async def _pump(self, conn: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    counter: str) -> None:
        try:
            while True:
                data = await reader.read(_CHUNK)
                if not data:
                    break
                setattr(self.stats, counter, getattr(self.stats, counter) + len(data))
                writer.write(data)
                await writer.drain()
        except asyncio.CancelledError:
            return  # cut() or close(): the connection is already aborted
        except (ConnectionError, OSError):
            if conn in self._conns:  # a reset on one side is passed on as a reset
                self._kill(conn)
            return
        # One side closed: close the other one too (gracefully).
        if conn in self._conns:
            self._conns.discard(conn)
            for t in conn.tasks:
                if t is not asyncio.current_task():
                    t.cancel()
            for w in (conn.client_writer, conn.upstream_writer):
                if w is not None and not w.is_closing():
                    w.close()
