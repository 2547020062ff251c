"""Inference runtimes behind one small seam: :class:`Runtime` and :class:`Session`.

The benchmark loop (:mod:`fleetmeter.agent.bench`) only ever talks to these
two protocols, so it can be tested with a fake, and a new back end needs
nothing but a class that honours them.

Back ends are imported lazily, inside functions: importing this module
never imports onnxruntime or LiteRT.  A missing back end raises
:class:`RuntimeMissingError` naming the extra to install.

Exception tree (everything a measurement can fail with)::

    RunFailure(Exception)                 .kind, .message (one line)
     └── RuntimeMissingError(RunFailure, ImportError)   kind "runtime_missing"

``RunFailure.kind`` is one of :data:`FAILURE_KINDS`:

``load_error``       the file is missing, corrupt or not a valid model
``unsupported_op``   the runtime has no kernel for an operator of the model
``out_of_memory``    an allocation failed
``invalid_input``    the inputs do not fit the model (shape, dtype, name)
``runtime_error``    anything else that failed while running
``runtime_missing``  the runtime / execution provider / delegate is absent

:func:`classify_failure` turns any exception raised by a back end into a
``RunFailure``.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple, runtime_checkable

import numpy as np

from fleetmeter.modelfile import HEAD_BYTES, ORT_IDENTIFIER, is_tflite

__all__ = [
    "FAILURE_KINDS",
    "RUNTIME_NAMES",
    "InputSpec",
    "LiteRtRuntime",
    "OnnxRuntime",
    "RunFailure",
    "Runtime",
    "RuntimeMissingError",
    "Session",
    "classify_failure",
    "describe_runtimes",
    "get_runtime",
    "make_inputs",
    "runtime_for_model",
]

logger = logging.getLogger(__name__)

FAILURE_KINDS = (
    "load_error",
    "unsupported_op",
    "out_of_memory",
    "invalid_input",
    "runtime_error",
    "runtime_missing",
)
RUNTIME_NAMES = ("onnxruntime", "litert")

_MAX_MESSAGE_CHARS = 400


# --------------------------------------------------------------------------
# Errors


class RunFailure(Exception):
    """A model could not be loaded or run here.

    Attributes:
        kind: one of :data:`FAILURE_KINDS`.
        message: one human-readable line (e.g. names the missing operator).
    """

    def __init__(self, kind: str, message: str) -> None:
        if kind not in FAILURE_KINDS:
            raise ValueError(f"unknown failure kind {kind!r}; expected one of {FAILURE_KINDS}")
        self.kind = kind
        self.message = _one_line(message)
        super().__init__(self.message)


class RuntimeMissingError(RunFailure, ImportError):
    """The requested runtime is not installed; the message names the extra."""

    def __init__(self, message: str) -> None:
        super().__init__("runtime_missing", message)


def _one_line(text: str) -> str:
    text = re.sub(r"^\s*\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*", "", str(text))
    text = " ".join(text.split())
    if len(text) > _MAX_MESSAGE_CHARS:
        text = text[: _MAX_MESSAGE_CHARS - 3] + "..."
    return text


# onnxruntime: "Fatal error: com.example:NoSuchOp(-1) is not a registered function/op"
_ORT_UNREGISTERED = re.compile(r"(?P<domain>[\w.\-]*):(?P<op>\w+)\(-?\d+\) is not a registered function/op")
# onnxruntime: 'In Node, ("n", NoSuchOp, "", -1) : ... Error No Op registered for NoSuchOp'
_ORT_NODE_TUPLE = re.compile(r'In Node, \("[^"]*", (?P<op>\w+), "(?P<domain>[^"]*)", -?\d+\)')
_ORT_NO_OP = re.compile(r"No Op registered for (?P<op>\w+)(?: with domain_version of (?P<ver>\d+))?")
# onnxruntime NOT_IMPLEMENTED: "Could not find an implementation for Foo(13) node with name 'n'"
_ORT_NO_KERNEL = re.compile(
    r"Could not find an implementation for (?P<op>\w+)\((?P<ver>\d+)\)(?: node with name '(?P<node>[^']*)')?"
)
# TFLite
_TFL_BUILTIN = re.compile(r"Didn't find op for builtin opcode '(?P<op>\w+)' version '(?P<ver>\d+)'")
_TFL_CUSTOM = re.compile(r"Encountered unresolved custom op: (?P<op>[^\s.]+)")

_OOM = re.compile(
    r"bad_alloc|out of memory|\bOOM\b|failed to allocate|cannot allocate memory|\bENOMEM\b",
    re.IGNORECASE,
)


def _unsupported_op(text: str) -> Optional[str]:
    """The operator named by a runtime's "no kernel for this op" error, or None."""
    m = _ORT_UNREGISTERED.search(text)
    if m:
        return f"{m['op']} (domain {m['domain'] or 'ai.onnx'})"
    m = _ORT_NO_OP.search(text)
    if m:
        node = _ORT_NODE_TUPLE.search(text)
        domain = node["domain"] if node and node["op"] == m["op"] else ""
        detail = f"domain {domain or 'ai.onnx'}"
        if m["ver"]:
            detail += f", opset {m['ver']}"
        return f"{m['op']} ({detail})"
    m = _ORT_NO_KERNEL.search(text)
    if m:
        node = f", node '{m['node']}'" if m["node"] else ""
        return f"{m['op']} (version {m['ver']}{node}; no kernel for these input types)"
    m = _TFL_BUILTIN.search(text)
    if m:
        return f"{m['op']} (builtin, version {m['ver']})"
    m = _TFL_CUSTOM.search(text)
    if m:
        return f"{m['op']} (custom op)"
    return None


def classify_failure(exc: BaseException, phase: str) -> RunFailure:
    """Map an exception raised while benchmarking to a :class:`RunFailure`.

    ``phase`` says what was being done: ``"load"`` (reading / parsing /
    preparing the model), ``"inputs"`` (building input tensors) or
    ``"run"`` (inference).  A ``RunFailure`` is returned unchanged.
    """
    if isinstance(exc, RunFailure):
        return exc
    text = str(exc) or type(exc).__name__
    type_name = type(exc).__name__
    op = _unsupported_op(text)
    if op is not None:
        return RunFailure("unsupported_op", f"unsupported op: {op}")
    if type_name == "NotImplemented":  # onnxruntime's NOT_IMPLEMENTED status
        return RunFailure("unsupported_op", f"unsupported op: {_one_line(text)}")
    if isinstance(exc, MemoryError) or _OOM.search(text):
        return RunFailure("out_of_memory", f"out of memory: {_one_line(text) or 'MemoryError'}")
    if isinstance(exc, (FileNotFoundError, IsADirectoryError)) or type_name == "NoSuchFile":
        return RunFailure("load_error", f"cannot read model file: {_one_line(text)}")
    if phase == "load":
        return RunFailure("load_error", f"cannot load model: {_one_line(text)}")
    if phase == "inputs" or type_name == "InvalidArgument":
        return RunFailure("invalid_input", f"invalid input: {_one_line(text)}")
    if phase == "run" and isinstance(exc, (ValueError, KeyError, TypeError)):
        # LiteRT reports shape / dtype mismatches in set_tensor as ValueError.
        return RunFailure("invalid_input", f"invalid input: {_one_line(text)}")
    return RunFailure("runtime_error", f"{type_name}: {_one_line(text)}")


# --------------------------------------------------------------------------
# The seam


@dataclass(frozen=True)
class InputSpec:
    """One declared model input.

    ``shape`` holds ``None`` for every dynamic (symbolic / unknown) dimension;
    ``dtype`` is a numpy dtype (``object`` when the runtime's type has no
    numpy equivalent that fleetmeter can generate, e.g. strings).
    """

    name: str
    shape: Tuple[Optional[int], ...]
    dtype: np.dtype

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("InputSpec.name must be a non-empty string")
        shape = tuple(None if d is None or int(d) < 0 else int(d) for d in self.shape)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "dtype", np.dtype(self.dtype))


@runtime_checkable
class Session(Protocol):
    """A model loaded by a :class:`Runtime`, ready to run.

    Contract:

    * ``inputs``: the declared inputs, in model order.
    * ``provider``: the execution provider / delegate actually in use.
    * ``config``: JSON-ready record of what the runtime was configured with
      (thread counts, execution mode, providers...).
    * ``run(feeds)``: one synchronous inference; returns only once the
      outputs are computed, and discards them.  ``feeds`` maps every input
      name to an array of the input's dtype.  When a feed's shape differs
      from the shape the session is prepared for, ``run`` re-prepares
      (resizes, reallocates) first, so the first call at a new shape pays
      for that.  Failures raise: a :class:`RunFailure`, or any exception
      that :func:`classify_failure` maps.
    * ``bind(feeds)`` (optional): prepare these inputs once and return a
      zero-argument callable that runs one inference on them. The timed loop
      calls that, so per-run work a plain timing loop would not do (LiteRT's
      copy of the inputs into the interpreter) stays out of the samples.
      Sessions without it are timed through ``run(feeds)``.
    * ``close()``: releases the model; idempotent.

    A session is driven by one thread at a time.
    """

    inputs: List[InputSpec]
    provider: str
    config: Dict[str, Any]

    def run(self, feeds: Mapping[str, np.ndarray]) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class Runtime(Protocol):
    """An inference runtime installed here (onnxruntime, LiteRT...).

    Contract:

    * ``name``: the fleetmeter runtime name (one of :data:`RUNTIME_NAMES`).
    * ``version``: the runtime's own version string.
    * ``providers()``: the execution providers / delegates usable here;
      the first is the default.
    * ``load(model_path, threads, provider=None)``: loads and prepares the
      model for inference with ``threads`` intra-op threads, using the
      default provider when ``provider`` is None.  Raises
      :class:`RunFailure` (``runtime_missing`` for an absent provider) or
      any exception that :func:`classify_failure` maps with phase "load".
    """

    name: str
    version: str

    def providers(self) -> List[str]: ...

    def load(self, model_path: str, threads: int, provider: Optional[str] = None) -> Session: ...


# --------------------------------------------------------------------------
# onnxruntime

_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}
_ORT_CPU = "CPUExecutionProvider"


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise RuntimeMissingError(
            "onnxruntime is not installed here; pip install 'fleetmeter[onnx]'"
        ) from exc
    return onnxruntime


def _ort_dim(dim: Any) -> Optional[int]:
    return dim if isinstance(dim, int) and dim >= 0 else None


class _OnnxSession:
    def __init__(self, session: Any, provider: str, config: Dict[str, Any]) -> None:
        self._session = session
        self.provider = provider
        self.config = config
        self.inputs = [
            InputSpec(
                name=arg.name,
                shape=tuple(_ort_dim(d) for d in (arg.shape or [])),
                dtype=np.dtype(_ORT_DTYPES.get(arg.type, object)),
            )
            for arg in session.get_inputs()
        ]

    def run(self, feeds: Mapping[str, np.ndarray]) -> None:
        self._session.run(None, feeds)

    def bind(self, feeds: Mapping[str, np.ndarray]):
        session, feeds = self._session, dict(feeds)
        return lambda: session.run(None, feeds)

    def end_profiling(self) -> str:
        """Path of the profile written since load (only for sessions loaded with ``profile_dir``)."""
        return self._session.end_profiling()

    def close(self) -> None:
        self._session = None


class OnnxRuntime:
    """onnxruntime, CPU execution provider unless another is requested.

    Sessions use ``intra_op_num_threads=threads``, ``inter_op_num_threads=1``,
    sequential execution and all graph optimizations; the session's
    ``config`` records exactly that.  A non-CPU provider is followed by the
    CPU provider, which runs the nodes the first one cannot.
    """

    name = "onnxruntime"

    def __init__(self) -> None:
        self._ort = _import_onnxruntime()
        self.version: str = str(self._ort.__version__)

    def providers(self) -> List[str]:
        available = list(self._ort.get_available_providers())
        # CPU first: it is the default.
        return [_ORT_CPU] + [p for p in available if p != _ORT_CPU]

    def _resolve_provider(self, provider: Optional[str]) -> str:
        if provider is None:
            return _ORT_CPU
        wanted = provider.lower()
        for candidate in self._ort.get_all_providers():
            low = candidate.lower()
            if wanted in (low, low.replace("executionprovider", "")):
                if candidate not in self._ort.get_available_providers():
                    raise RunFailure(
                        "runtime_missing",
                        f"onnxruntime execution provider {candidate} is not available here "
                        f"(available: {', '.join(self.providers())})",
                    )
                return candidate
        raise RunFailure(
            "runtime_missing",
            f"unknown onnxruntime execution provider {provider!r} "
            f"(available: {', '.join(self.providers())})",
        )

    def load(self, model_path: str, threads: int, provider: Optional[str] = None,
             profile_dir: Optional[str] = None) -> _OnnxSession:
        """``profile_dir``: record onnxruntime's per-node profile there (for a separate profiled pass only:
        profiling slows every run, so it never touches latency measurements)."""
        ort = self._ort
        chosen = self._resolve_provider(provider)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # onnxruntime logs to stderr on its own; its errors come back to us as
        # exceptions (reported as failure messages), so keep it to fatal
        # unless this module's logger is at debug level.
        opts.log_severity_level = 1 if logger.isEnabledFor(logging.DEBUG) else 4
        if profile_dir is not None:
            opts.enable_profiling = True
            opts.profile_file_prefix = os.path.join(profile_dir, "ort-profile")
        providers = [chosen] if chosen == _ORT_CPU else [chosen, _ORT_CPU]
        session = ort.InferenceSession(os.fspath(model_path), sess_options=opts, providers=providers)
        config = {
            "providers": list(session.get_providers()),
            "intra_op_num_threads": int(threads),
            "inter_op_num_threads": 1,
            "execution_mode": "sequential",
            "graph_optimization_level": "all",
        }
        return _OnnxSession(session, chosen, config)


# --------------------------------------------------------------------------
# LiteRT (TFLite)

_LITERT_PROVIDERS = ("xnnpack", "cpu")


def _import_tflite_interpreter() -> Tuple[Any, str, str]:
    """(interpreter module, distribution name, version)."""
    try:
        import ai_edge_litert
        from ai_edge_litert import interpreter as module

        return module, "ai_edge_litert", str(getattr(ai_edge_litert, "__version__", "unknown"))
    except ImportError:
        pass
    try:
        import tflite_runtime
        from tflite_runtime import interpreter as module

        return module, "tflite_runtime", str(getattr(tflite_runtime, "__version__", "unknown"))
    except ImportError as exc:
        raise RuntimeMissingError(
            "LiteRT is not installed here; pip install 'fleetmeter[tflite]' "
            "(or pip install tflite-runtime)"
        ) from exc


class _LiteRtSession:
    """``interpreter`` is allocated at the model's own input shapes; ``make_interpreter()`` makes another,
    unallocated one of the same model and settings, used when the feeds come at other shapes."""

    def __init__(self, interpreter: Any, provider: str, config: Dict[str, Any],
                 make_interpreter: Callable[[], Any]) -> None:
        self._interp = interpreter
        self._make_interpreter = make_interpreter
        self.provider = provider
        self.config = config
        details = interpreter.get_input_details()
        self._index = {d["name"]: int(d["index"]) for d in details}
        self._current_shape = {d["name"]: tuple(int(x) for x in d["shape"]) for d in details}
        self.inputs = []
        for d in details:
            signature = d.get("shape_signature")
            dims = signature if signature is not None and len(signature) else d["shape"]
            self.inputs.append(InputSpec(d["name"], tuple(int(x) for x in dims), np.dtype(d["dtype"])))

    def bind(self, feeds: Mapping[str, np.ndarray]):
        """Resize/allocate and copy the inputs in once; each call is then just ``invoke()``."""
        self._set_inputs(feeds)
        return self._interp.invoke

    def run(self, feeds: Mapping[str, np.ndarray]) -> None:
        self._set_inputs(feeds)
        self._interp.invoke()

    def _set_inputs(self, feeds: Mapping[str, np.ndarray]) -> None:
        shapes = {name: tuple(int(d) for d in feeds[name].shape) for name in self._index}
        if shapes != self._current_shape:
            self._interp = self._resized(shapes)
            self._current_shape = shapes
        for name, index in self._index.items():
            self._interp.set_tensor(index, feeds[name])

    def _resized(self, shapes: Mapping[str, Tuple[int, ...]]) -> Any:
        """A fresh interpreter, its inputs resized to ``shapes`` *before* its first ``allocate_tensors()``.

        Resizing an allocated interpreter makes XNNPACK reshape a runtime it planned for the old
        shapes, which can fail ("failed to reshape runtimeNode") where one planned for the new
        shapes from the start runs (issue 12).
        """
        self._interp = None  # release the old arena (and an external delegate) before the new one
        interp = self._make_interpreter()
        for name, index in self._index.items():
            interp.resize_tensor_input(index, list(shapes[name]), strict=False)
        interp.allocate_tensors()
        return interp

    def close(self) -> None:
        self._interp = None


class LiteRtRuntime:
    """LiteRT (``ai_edge_litert``), falling back to ``tflite_runtime``.

    Providers: ``"xnnpack"`` (default: builtin kernels plus the XNNPACK
    default delegate), ``"cpu"`` (builtin kernels, no default delegate) and
    ``"delegate:/path/to/libdelegate.so"`` (an external delegate, e.g. GPU).
    Interpreters use ``num_threads=threads``; tensors are allocated at load, at the model's own
    input shapes. Feeds of other shapes (``--shape``) get a new interpreter resized before it
    allocates (:meth:`_LiteRtSession._resized`).
    """

    name = "litert"

    def __init__(self) -> None:
        self._module, self.module_name, self.version = _import_tflite_interpreter()

    def providers(self) -> List[str]:
        return list(_LITERT_PROVIDERS)

    def load(self, model_path: str, threads: int, provider: Optional[str] = None) -> _LiteRtSession:
        chosen = provider or "xnnpack"
        kwargs: Dict[str, Any] = {"model_path": os.fspath(model_path), "num_threads": int(threads)}
        if chosen == "cpu":
            resolver = getattr(self._module, "OpResolverType", None)
            if resolver is None:
                raise RunFailure("runtime_missing", f"{self.module_name} cannot disable the default delegate")
            kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        elif chosen != "xnnpack" and not chosen.startswith("delegate:"):
            raise RunFailure(
                "runtime_missing",
                f"unknown LiteRT provider {provider!r} (use xnnpack, cpu or delegate:/path/lib.so)",
            )

        def make_interpreter() -> Any:  # an external delegate instance serves one interpreter: a new one each
            if chosen.startswith("delegate:"):
                kwargs["experimental_delegates"] = [self._load_delegate(chosen[len("delegate:"):])]
            return self._module.Interpreter(**kwargs)

        interpreter = make_interpreter()
        interpreter.allocate_tensors()
        config = {
            "module": self.module_name,
            "num_threads": int(threads),
            "delegate": chosen,
        }
        return _LiteRtSession(interpreter, chosen, config, make_interpreter)

    def _load_delegate(self, path: str) -> Any:
        try:
            return self._module.load_delegate(path)
        except (ValueError, OSError) as exc:
            raise RunFailure("runtime_missing", f"cannot load LiteRT delegate {path}: {exc}") from exc


# --------------------------------------------------------------------------
# Discovery

_RUNTIME_CLASSES = {"onnxruntime": OnnxRuntime, "litert": LiteRtRuntime}


def get_runtime(name: str) -> Runtime:
    """The runtime called ``name`` (``"onnxruntime"`` or ``"litert"``).

    Raises:
        ValueError: unknown name.
        RuntimeMissingError: the runtime is not installed here.
    """
    try:
        cls = _RUNTIME_CLASSES[name]
    except KeyError:
        raise ValueError(f"unknown runtime {name!r}; expected one of {', '.join(RUNTIME_NAMES)}") from None
    return cls()


def runtime_for_model(path: "os.PathLike[str] | str") -> str:
    """Which runtime runs the model file at ``path``, from content then name.

    TFLite flatbuffers carry the ``TFL3`` identifier (bytes 4-8); ORT-format
    files ``ORTM``; ONNX protobufs start with field 1 (``ir_version``, byte
    0x08).  Failing that, the extension decides (``.tflite``/``.lite``,
    ``.onnx``/``.ort``).

    Raises:
        OSError: the file cannot be read.
        ValueError: neither content nor name tells.
    """
    with open(path, "rb") as fh:
        head = fh.read(HEAD_BYTES)
    if is_tflite(head):
        return "litert"
    if head[4:8] == ORT_IDENTIFIER:
        return "onnxruntime"
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext in (".tflite", ".lite"):
        return "litert"
    if ext in (".onnx", ".ort"):
        return "onnxruntime"
    if head[:1] == b"\x08":
        return "onnxruntime"
    raise ValueError(
        f"cannot tell which runtime runs {os.fspath(path)}: not a TFLite flatbuffer and not an "
        f"ONNX file; name the runtime ({', '.join(RUNTIME_NAMES)})"
    )


def describe_runtimes() -> List[Dict[str, Any]]:
    """``{"name", "version", "providers"}`` for every runtime importable here.

    A missing or broken runtime is left out (and logged); this never raises.
    """
    found: List[Dict[str, Any]] = []
    for name in RUNTIME_NAMES:
        try:
            runtime = get_runtime(name)
            entry = {"name": runtime.name, "version": runtime.version, "providers": runtime.providers()}
        except RuntimeMissingError as exc:
            logger.debug("runtime %s not available: %s", name, exc.message)
            continue
        except Exception:  # a broken install must not break the device probe
            logger.warning("runtime %s is installed but unusable", name, exc_info=True)
            continue
        module_name = getattr(runtime, "module_name", None)
        if module_name:
            entry["module"] = module_name
        found.append(entry)
    return found


# --------------------------------------------------------------------------
# Inputs

_INT_HIGH = 10  # generated integers lie in [0, _INT_HIGH)


def _check_names(kind: str, given: Mapping[str, Any], inputs: Sequence[InputSpec]) -> None:
    valid = [spec.name for spec in inputs]
    unknown = [name for name in given if name not in valid]
    if unknown:
        raise ValueError(
            f"unknown input {', '.join(map(repr, unknown))} in {kind}; "
            f"the model's inputs are: {', '.join(valid) or '(none)'}"
        )


def _resolve_shape(spec: InputSpec, override: Optional[Sequence[int]]) -> Tuple[int, ...]:
    if override is None:
        return tuple(1 if d is None else d for d in spec.shape)
    shape = tuple(int(d) for d in override)
    if spec.shape and len(shape) != len(spec.shape):
        raise ValueError(
            f"shape {'x'.join(map(str, shape))} for input {spec.name!r} has rank {len(shape)}, "
            f"the model declares rank {len(spec.shape)} "
            f"({'x'.join('?' if d is None else str(d) for d in spec.shape)})"
        )
    if any(d < 1 for d in shape):
        raise ValueError(f"shape for input {spec.name!r} must have positive dimensions, got {shape}")
    return shape


def make_inputs(
    inputs: Sequence[InputSpec],
    shapes: Optional[Mapping[str, Sequence[int]]] = None,
    fills: Optional[Mapping[str, float]] = None,
    seed: int = 0,
) -> Dict[str, np.ndarray]:
    """Fixed-seed input tensors for ``inputs``.

    * Shape: ``shapes[name]`` when given (same rank as declared), else the
      declared shape with every dynamic dimension set to 1.
    * Data: floats uniform in [0, 1); integers uniform in [0, 10); bools
      fair coin flips; ``fills[name]`` makes that input a constant instead.
    * The same ``seed`` gives the same arrays (one generator, drawn in
      input order).

    Raises:
        ValueError: a name in ``shapes``/``fills`` is not an input (the
            message lists the valid ones), a bad shape, or a dtype that
            cannot be generated (strings...).
    """
    shapes = dict(shapes or {})
    fills = dict(fills or {})
    _check_names("shapes", shapes, inputs)
    _check_names("fills", fills, inputs)
    rng = np.random.default_rng(seed)
    feeds: Dict[str, np.ndarray] = {}
    for spec in inputs:
        shape = _resolve_shape(spec, shapes.get(spec.name))
        dtype = spec.dtype
        if dtype.kind not in "fiub":
            raise ValueError(
                f"input {spec.name!r} has dtype {dtype}, which fleetmeter cannot generate"
            )
        if spec.name in fills:
            value = fills[spec.name]
            feeds[spec.name] = np.full(shape, bool(value) if dtype.kind == "b" else value, dtype=dtype)
        elif dtype.kind == "f":
            feeds[spec.name] = rng.random(shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[spec.name] = rng.random(shape) < 0.5
        else:
            feeds[spec.name] = rng.integers(0, _INT_HIGH, size=shape).astype(dtype)
    return feeds
