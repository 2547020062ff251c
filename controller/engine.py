"""The one place that calls ``ray.*``.

``RayEngine`` starts (or joins) Ray, places the controller's long-lived state
in restartable actors, and fans CPU work out as Ray tasks. ``LocalEngine``
has the same interface and runs everything in-process, so the rest of the
controller can be unit-tested without Ray.

Errors raised inside an actor method or a task come back as the original
fleetmeter exception (not wrapped in ``RayTaskError``), so the gRPC layer
maps them to status codes in one place.

Where a local Ray listens and keeps its files (``RayEngine(node_ip=...,
temp_root=...)``):

- ``node_ip`` is the address Ray advertises. Ray 2.x binds its gRPC servers
  (GCS, raylet, object manager, every worker) to loopback only when that
  address is loopback, and to every interface otherwise. ``ray.init`` turns a
  loopback ``_node_ip_address`` into the host's routable address unless Ray
  believes it is single-node (``ray_constants.ENABLE_RAY_CLUSTER``, what
  ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` sets), so for a loopback node ip that
  switch is off while ``ray.init`` runs. After start the address Ray really
  took is checked and a difference is logged.
- ``temp_root`` holds Ray's session directory (logs, port files and its unix
  sockets). A unix socket path has at most 107 bytes and Ray puts sockets
  about 67 bytes below the temp dir, so a ``temp_root`` longer than
  :data:`MAX_RAY_TEMP_DIR_BYTES` is replaced by a short private directory
  (``tempfile.mkdtemp(prefix="fm-ray-")``), logged. At shutdown the engine
  removes what it created there: this session's directory and, if it made
  them, the ``session_latest`` link, the fallback directory and an emptied
  ``temp_root``.
- A :meth:`RayEngine.map` whose tasks cannot run because no alive Ray node has CPUs (every worker died, or none
  joined yet) waits ``no_worker_timeout_s`` for one (an autoscaler's time to add a node), then cancels its tasks
  and raises :class:`~fleetmeter.errors.FailedPrecondition` saying so, instead of waiting forever.
- After :meth:`RayEngine.shutdown` every call raises
  :class:`~fleetmeter.errors.Unavailable` instead of reaching Ray (whose
  ``.remote()`` would otherwise quietly start a second, default Ray).
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from fleetmeter.errors import FailedPrecondition, Unavailable

log = logging.getLogger(__name__)

# Ray's unix sockets sit at <temp dir>/session_<YYYY-MM-DD_HH-MM-SS_ffffff>_<pid>/sockets/plasma_store[.N]:
# 67 bytes below the temp dir at most (7-digit pid, 2-digit suffix). sun_path holds 108 bytes on Linux (104 on
# macOS) including the final NUL.
_SOCKET_PATH_MAX_BYTES = (104 if sys.platform == "darwin" else 108) - 1
_SOCKET_TAIL = "/session_YYYY-MM-DD_hh-mm-ss_ffffff_PPPPPPP/sockets/plasma_store.NN"
#: The longest temp dir whose Ray sockets still fit in a unix socket path.
MAX_RAY_TEMP_DIR_BYTES = _SOCKET_PATH_MAX_BYTES - len(_SOCKET_TAIL)

#: How long :meth:`RayEngine.map` waits while no alive Ray node has CPUs before it fails (0: forever). Long enough
#: for an autoscaler to add a node.
DEFAULT_NO_WORKER_TIMEOUT_S = 300.0
#: CPUs each :meth:`RayEngine.map` task asks Ray for; a node with fewer cannot run one.
TASK_CPUS = 1.0


class ActorRef:
    """A handle to one actor: ``await ref.call("method", *args)``.

    ``closed`` (if given) says the engine has shut down: a call then raises
    :class:`~fleetmeter.errors.Unavailable` and never touches Ray."""

    def __init__(self, handle: Any, closed: Optional[Callable[[], bool]] = None) -> None:
        self._handle = handle
        self._closed = closed

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self._closed is not None and self._closed():
            raise Unavailable(f"cannot call {method}: the controller is shutting down")
        ref = getattr(self._handle, method).remote(*args, **kwargs)
        try:
            return await ref
        except Exception as exc:  # noqa: BLE001 - unwrapped and re-raised
            raise _unwrap(exc) from None


def _unwrap(exc: BaseException) -> BaseException:
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def is_loopback(address: str) -> bool:
    """``127.0.0.0/8``, ``::1`` or ``localhost``."""
    if address.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def choose_ray_temp_dir(temp_root: Path) -> tuple[Path, Optional[Path], Optional[str]]:
    """Where a local Ray keeps its session files: ``(dir, fallback, why)``.

    ``temp_root`` (made absolute) when its Ray sockets fit in a unix socket path: ``(temp_root, None, None)``;
    nothing is created. Otherwise a new private directory ``fallback`` (0700, in ``$TMPDIR`` or ``/tmp``) and
    ``dir = fallback/r`` inside it, because Ray makes its temp dir world-writable; ``why`` says why. The caller
    removes ``fallback``.
    """
    root = Path(os.path.abspath(temp_root))
    if len(str(root).encode()) <= MAX_RAY_TEMP_DIR_BYTES:
        return root, None, None
    why = (f"{root} is {len(str(root).encode())} bytes, longer than the {MAX_RAY_TEMP_DIR_BYTES} that leave room "
           f"for Ray's unix socket paths ({_SOCKET_PATH_MAX_BYTES} bytes at most)")
    for parent in (None, "/tmp"):
        fallback = Path(tempfile.mkdtemp(prefix="fm-ray-", dir=parent))
        if len(str(fallback / "r").encode()) <= MAX_RAY_TEMP_DIR_BYTES or parent == "/tmp":
            return fallback / "r", fallback, why
        fallback.rmdir()  # $TMPDIR itself is too long: try /tmp
    raise AssertionError("unreachable")


class RayEngine:
    """Ray, started locally (the embedded default) or joined at ``address``.

    ``node_ip``: the address Ray advertises and, when loopback, the only one it listens on (None: Ray's choice,
    every interface). ``temp_root``: where a local Ray keeps its session files (None: Ray's default,
    ``/tmp/ray``); unused when joining a cluster, whose nodes chose theirs. ``no_worker_timeout_s``: how long
    :meth:`map` waits while no alive node has CPUs for its tasks before it cancels them and fails (0: forever).
    """

    def __init__(self, address: Optional[str] = None, *, num_cpus: Optional[int] = None,
                 node_ip: Optional[str] = None, temp_root: Optional[Path] = None,
                 no_worker_timeout_s: float = DEFAULT_NO_WORKER_TIMEOUT_S) -> None:
        if not no_worker_timeout_s >= 0:
            raise ValueError(f"no_worker_timeout_s must be >= 0 (0: wait forever), got {no_worker_timeout_s}")
        self.address = address
        self.no_worker_timeout_s = float(no_worker_timeout_s)
        self.num_cpus = num_cpus
        self.node_ip = node_ip
        self.temp_root = Path(temp_root) if temp_root is not None else None
        self.session_dir: Optional[Path] = None
        self._started_here = False
        self._closed = False
        self._temp_dir: Optional[Path] = None      # Ray's temp dir for this start (None: Ray's default)
        self._fallback: Optional[Path] = None      # a private temp dir made because temp_root was too long
        self._made_temp_dir = False                # temp_root did not exist before
        #: Ray node id -> how many :meth:`map` tasks ran there (also logged after each map).
        self.task_nodes: Counter = Counter()

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable("the controller is shutting down")

    def start(self) -> None:
        import ray

        self._check_open()
        if ray.is_initialized():
            return
        kwargs: dict = {"ignore_reinit_error": True, "include_dashboard": False,
                        "logging_level": logging.WARNING, "log_to_driver": False}
        if self.node_ip:
            kwargs["_node_ip_address"] = self.node_ip
        if self.address:
            kwargs["address"] = self.address
        else:
            if self.num_cpus is not None:
                kwargs["num_cpus"] = self.num_cpus
            if self.temp_root is not None:
                kwargs["_temp_dir"] = str(self._prepare_temp_dir())
        log.info("starting Ray (%s; node ip %s; files in %s)", self.address or "local", self.node_ip or "Ray's choice",
                 kwargs.get("_temp_dir", "Ray's default temp dir"))
        try:
            self._init(ray, kwargs)
        except ConnectionError as exc:
            self._remove_temp_dir()
            if self.address and self.node_ip and is_loopback(self.node_ip):
                raise ConnectionError(f"{exc}; this node joined as {self.node_ip}: if the cluster knows it by "
                                      "another address, set that (fleetmeter controller --ray-node-ip ADDR; "
                                      "0.0.0.0: Ray's choice)") from exc
            raise
        except BaseException:
            self._remove_temp_dir()
            raise
        self._started_here = True
        self._after_start(ray)

    def _init(self, ray: Any, kwargs: dict) -> None:
        """``ray.init``, keeping a loopback node ip loopback and the process's SIGTERM handler.

        ``ray.init`` makes SIGTERM call ``sys.exit()`` from its first lines on; where a handler is already
        installed (run_controller's clean stop) Ray is kept from replacing it, so a SIGTERM during the
        seconds Ray takes to start is answered like any other."""
        from ray._private import ray_constants
        from ray._private import utils as ray_utils

        main = threading.current_thread() is threading.main_thread()
        sigterm = signal.getsignal(signal.SIGTERM) if main else None
        keep_sigterm = main and sigterm not in (None, signal.SIG_DFL)
        set_sigterm_handler = getattr(ray_utils, "set_sigterm_handler", None)
        single_node = bool(self.node_ip) and is_loopback(self.node_ip) \
            and hasattr(ray_constants, "ENABLE_RAY_CLUSTER")
        before = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
        if single_node:
            ray_constants.ENABLE_RAY_CLUSTER = False
        if keep_sigterm and set_sigterm_handler is not None:
            ray_utils.set_sigterm_handler = lambda handler: None
        try:
            ray.init(**kwargs)
        finally:
            if single_node:
                ray_constants.ENABLE_RAY_CLUSTER = before
            if keep_sigterm:
                if set_sigterm_handler is not None:
                    ray_utils.set_sigterm_handler = set_sigterm_handler
                signal.signal(signal.SIGTERM, sigterm)

    def _after_start(self, ray: Any) -> None:
        """Note this session's directory (in a temp dir of our own) and check the node ip Ray took."""
        if self._temp_dir is not None:  # a temp dir of our own: its session_latest is this session
            latest = self._temp_dir / "session_latest"
            if latest.is_symlink():
                self.session_dir = Path(os.path.realpath(latest))
                log.info("Ray session files in %s", self.session_dir)
        try:
            taken = ray.util.get_node_ip_address()
        except Exception:  # noqa: BLE001 - only for the log line
            log.debug("cannot read Ray's node ip", exc_info=True)
            return
        if self.node_ip and is_loopback(self.node_ip) and not is_loopback(taken):
            log.warning("Ray took node ip %s instead of %s: its ports listen on every interface", taken, self.node_ip)

    def _prepare_temp_dir(self) -> Path:
        temp_dir, fallback, why = choose_ray_temp_dir(self.temp_root)
        if fallback is not None:
            log.info("Ray keeps its files in %s instead of %s: %s; removed at shutdown", fallback,
                     self.temp_root, why)
            self._fallback = fallback
        elif not temp_dir.exists():
            temp_dir.mkdir(mode=0o700, parents=True)
            self._made_temp_dir = True
        self._temp_dir = temp_dir
        return temp_dir

    def shutdown(self) -> None:
        """Stop the local Ray (or leave the cluster) and remove the session files this engine created.

        Idempotent. Afterwards every call raises :class:`~fleetmeter.errors.Unavailable`."""
        self._closed = True
        if self._started_here:
            import ray

            self._started_here = False
            if ray.is_initialized():
                log.info("stopping Ray" if not self.address else "leaving the Ray cluster")
                ray.shutdown()
                log.info("Ray stopped" if not self.address else "left the Ray cluster")
        self._remove_temp_dir()

    def _remove_temp_dir(self) -> None:
        """What this engine created for Ray's files: the private fallback directory (all of it), or this
        session's directory, its ``session_latest`` link and the temp dir itself if we made it and it is now
        empty. Never another session's files."""
        temp_dir, self._temp_dir = self._temp_dir, None
        session, self.session_dir = self.session_dir, None
        if temp_dir is None:
            return
        if self._fallback is not None:
            fallback, self._fallback = self._fallback, None
            shutil.rmtree(fallback, ignore_errors=True)
            return
        if session is not None and session.parent == Path(os.path.realpath(temp_dir)):
            latest = temp_dir / "session_latest"
            if latest.is_symlink() and Path(os.path.realpath(latest)) == session:
                latest.unlink()
            shutil.rmtree(session, ignore_errors=True)
        if self._made_temp_dir:
            self._made_temp_dir = False
            try:
                temp_dir.rmdir()
            except OSError:  # not empty: files of other sessions stay
                pass

    def actor(self, cls: type, *args: Any, name: Optional[str] = None, **kwargs: Any) -> ActorRef:
        """A restartable actor pinned to this node (it owns files in the local data dir)."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self._check_open()
        node_id = ray.get_runtime_context().get_node_id()
        options = {"max_restarts": -1, "max_concurrency": 1, "num_cpus": 0,
                   "scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)}
        if name:
            options["name"] = name
        handle = ray.remote(cls).options(**options).remote(*args, **kwargs)
        return ActorRef(handle, closed=lambda: self._closed)

    def parallelism(self) -> int:
        """How many one-CPU tasks the cluster runs at once."""
        import ray

        self._check_open()
        return max(1, int(ray.cluster_resources().get("CPU", 1)))

    async def map(self, fn: Callable, items: Sequence[Any]) -> list[Any]:
        """Run ``fn(item)`` for every item as Ray tasks; results in order. ``fn``, ``item`` and the result travel
        through Ray's object store (never a path: the task may run on another machine); a task whose node dies is
        retried once on another node, then its error is raised. When no alive node has the CPUs a task needs for
        ``no_worker_timeout_s``, the tasks are cancelled and :class:`~fleetmeter.errors.FailedPrecondition` is
        raised. Where each task ran is counted in :attr:`task_nodes` and logged (at INFO when a node other than
        this process's took part)."""
        import ray

        self._check_open()
        if not items:
            return []
        remote = ray.remote(_on_node).options(max_retries=1, num_cpus=TASK_CPUS)
        refs = [remote.remote(fn, item) for item in items]
        try:
            done = list(await self._gather_watching_workers(ray, refs, getattr(fn, "__name__", str(fn))))
        except _lost_task_errors(ray) as exc:
            raise Unavailable(f"a Ray task of {getattr(fn, '__name__', fn)} was lost twice ({type(exc).__name__}): "
                              "a node or worker of the Ray cluster died; run it again") from exc
        except Exception as exc:  # noqa: BLE001
            raise _unwrap(exc) from None
        ran_on = Counter(node for node, _ in done)
        self.task_nodes.update(ran_on)
        here = set(ran_on) == {ray.get_runtime_context().get_node_id()}  # INFO only where another node took part
        log.log(logging.DEBUG if here else logging.INFO, "%d Ray task(s) of %s ran on node(s) %s", len(done),
                getattr(fn, "__name__", fn), ", ".join(f"{node}({n})" for node, n in sorted(ran_on.items())))
        return [result for _, result in done]

    async def _gather_watching_workers(self, ray: Any, refs: list, what: str) -> list:
        """The results of ``refs``; meanwhile, every few seconds, a look at the cluster's nodes. When none alive has
        :data:`TASK_CPUS` CPUs for ``no_worker_timeout_s``: the unfinished tasks are cancelled and
        :class:`~fleetmeter.errors.FailedPrecondition` is raised. Ray's own errors pass through."""
        gathered = asyncio.gather(*refs)
        timeout_s = self.no_worker_timeout_s
        if not timeout_s:
            return await gathered
        loop = asyncio.get_running_loop()
        period_s = min(5.0, max(0.5, timeout_s / 5))
        last_seen_s = time.monotonic()
        give_up = False
        try:
            while not give_up:
                finished, _ = await asyncio.wait({gathered}, timeout=period_s)
                if finished:
                    return gathered.result()
                nodes = await loop.run_in_executor(None, _cluster_nodes, ray)
                last_seen_s, give_up = no_worker_verdict(nodes, time.monotonic(), last_seen_s, timeout_s)
        finally:
            if not gathered.done():  # given up, or the caller was cancelled: nobody waits for these any more
                gathered.cancel()
                gathered.add_done_callback(_retrieve)  # a cancelled gather ends in a CancelledError nobody reads
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        for ref in refs:
            try:
                ray.cancel(ref)
            except Exception:  # noqa: BLE001 - best effort: the error below is what matters
                log.debug("cannot cancel Ray task %s", ref, exc_info=True)
        message = (f"no Ray node with CPUs has been alive for {timeout_s:g} s: {len(refs) - len(ready)} of "
                   f"{len(refs)} Ray task(s) of {what} could not run and were cancelled; start Ray worker nodes "
                   "(ray start --address HEAD:PORT --num-cpus N) or check the cluster (ray status), then run "
                   "again (an autoscaler that needs longer to add a node: raise the controller's "
                   "--no-worker-timeout-s)")
        log.error("%s", message)
        raise FailedPrecondition(message)


def no_worker_verdict(nodes: Iterable[Mapping[str, Any]], now_s: float, last_seen_s: float, timeout_s: float,
                      cpus_needed: float = TASK_CPUS) -> tuple[float, bool]:
    """One look at the cluster while tasks wait: ``(last_seen_s, give_up)``.

    ``nodes`` are ``ray.nodes()`` entries (``"Alive"``; ``"Resources"``, the node's total resources). When one is
    alive with at least ``cpus_needed`` CPUs, ``last_seen_s`` becomes ``now_s``; ``give_up`` is true once
    ``timeout_s`` (> 0) has passed since ``last_seen_s`` (the caller starts it at the wait's start). Seconds on
    one monotonic clock."""
    if any(n.get("Alive") and float((n.get("Resources") or {}).get("CPU", 0)) >= cpus_needed for n in nodes):
        return now_s, False
    return last_seen_s, now_s - last_seen_s >= timeout_s


def _retrieve(future: asyncio.Future) -> None:
    """Read a finished future's outcome, so that asyncio does not log it as never retrieved."""
    if not future.cancelled():
        future.exception()


def _cluster_nodes(ray: Any) -> list:
    """``ray.nodes()``; none (as if no node were alive) when the cluster cannot be asked."""
    try:
        return ray.nodes()
    except Exception as exc:  # noqa: BLE001 - an unreachable cluster runs no task either
        log.warning("cannot list the Ray cluster's nodes: %s", exc)
        return []


def _lost_task_errors(ray: Any) -> tuple:
    """Ray's errors for a task lost with its node or worker process (not an error of the task itself)."""
    names = ("NodeDiedError", "WorkerCrashedError", "ObjectLostError", "OwnerDiedError", "LocalRayletDiedError")
    return tuple(getattr(ray.exceptions, n) for n in names if hasattr(ray.exceptions, n))


def _on_node(fn: Callable, item: Any) -> tuple:
    """``(id of the Ray node this task runs on, fn(item))``: what :meth:`RayEngine.map` logs as where it ran."""
    import ray

    return ray.get_runtime_context().get_node_id(), fn(item)


class LocalActorRef(ActorRef):
    """In-process stand-in for tests: methods run directly, one at a time."""

    def __init__(self, obj: Any) -> None:
        super().__init__(obj)
        self._lock = asyncio.Lock()

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        async with self._lock:
            return getattr(self._handle, method)(*args, **kwargs)


class LocalEngine:
    """Same interface as :class:`RayEngine`, no Ray: for unit tests and debugging."""

    def start(self) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def actor(self, cls: type, *args: Any, name: Optional[str] = None, **kwargs: Any) -> ActorRef:
        return LocalActorRef(cls(*args, **kwargs))

    def parallelism(self) -> int:
        return 1

    async def map(self, fn: Callable, items: Sequence[Any]) -> list[Any]:
        return [fn(item) for item in items]
