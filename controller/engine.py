"""The one place that calls ``ray.*``.

``RayEngine`` starts (or joins) Ray, places the controller's long-lived state
in restartable actors, and fans CPU work out as Ray tasks. ``LocalEngine``
has the same interface and runs everything in-process, so the rest of the
controller can be unit-tested without Ray.

Errors raised inside an actor method or a task come back as the original
fleetmeter exception (not wrapped in ``RayTaskError``), so the gRPC layer
maps them to status codes in one place.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Optional, Sequence

log = logging.getLogger(__name__)


class ActorRef:
    """A handle to one actor: ``await ref.call("method", *args)``."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        ref = getattr(self._handle, method).remote(*args, **kwargs)
        try:
            return await ref
        except Exception as exc:  # noqa: BLE001 - unwrapped and re-raised
            raise _unwrap(exc) from None


def _unwrap(exc: BaseException) -> BaseException:
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


class RayEngine:
    """Ray, started locally (the embedded default) or joined at ``address``."""

    def __init__(self, address: Optional[str] = None, *, num_cpus: Optional[int] = None) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self._started_here = False

    def start(self) -> None:
        import ray

        if ray.is_initialized():
            return
        kwargs: dict = {"ignore_reinit_error": True, "include_dashboard": False,
                        "logging_level": logging.WARNING, "log_to_driver": False}
        if self.address:
            kwargs["address"] = self.address
        else:
            if self.num_cpus is not None:
                kwargs["num_cpus"] = self.num_cpus
        log.info("starting Ray (%s)", self.address or "local")
        ray.init(**kwargs)
        self._started_here = True

    def shutdown(self) -> None:
        import ray

        if self._started_here and ray.is_initialized():
            ray.shutdown()

    def actor(self, cls: type, *args: Any, name: Optional[str] = None, **kwargs: Any) -> ActorRef:
        """A restartable actor pinned to this node (it owns files in the local data dir)."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        node_id = ray.get_runtime_context().get_node_id()
        options = {"max_restarts": 3, "max_concurrency": 1, "num_cpus": 0,
                   "scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)}
        if name:
            options["name"] = name
        handle = ray.remote(cls).options(**options).remote(*args, **kwargs)
        return ActorRef(handle)

    def parallelism(self) -> int:
        """How many one-CPU tasks the cluster runs at once."""
        import ray

        return max(1, int(ray.cluster_resources().get("CPU", 1)))

    async def map(self, fn: Callable, items: Sequence[Any]) -> list[Any]:
        """Run ``fn(item)`` for every item as Ray tasks; results in order."""
        import ray

        remote = ray.remote(fn).options(max_retries=1)
        refs = [remote.remote(item) for item in items]
        try:
            return list(await asyncio.gather(*refs))
        except Exception as exc:  # noqa: BLE001
            raise _unwrap(exc) from None


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
