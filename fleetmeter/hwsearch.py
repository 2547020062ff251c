"""Hardware-aware search: the best network of a space that fits budgets on several platforms, asking the fleet's
predictors instead of the devices and measuring only the finalists.

::

    import fleetmeter
    result = fleetmeter.search("nasbench201", "accuracy_cifar100", ["pixel:latency_ms<=12", "board:latency_ms<=30"],
                               objective_table="nb201.csv", trials=200, verify=3, storage="search.db")
    result["best"]["key"], result["verified"]

The loop (:func:`search`): an Optuna study (TPE, seeded; resumable: ``storage`` is an SQLite file on disk and a
second call with the same file and ``study_name`` continues up to ``trials``) proposes candidates of the
space; each is built (ONNX), its objective computed, and its costs predicted on every budgeted platform in one
``predict_batch`` stream per target (:class:`fleetmeter.optuna.FleetConstraints`, cached by sha256). The
*interval-aware rule*: a candidate is feasible when, for every budget, ``upper - risk * (upper - lower)`` of its
prediction interval is within the budget (``risk`` 0: the whole interval inside; 1: only its lower end); a
prediction without an interval compares its value. The feasible candidates, best objective first, are then
verified (``verify`` K > 0): measured on the fleet (a real sweep, :class:`SweepMeasure`), compared with the
budgets; one that breaks a budget when measured is reported and the next one is measured, until K pass or
the candidates run out.

Spaces (:func:`make_space`): every zoo family (its documented hyper-parameters are the search parameters, as
:func:`fleetmeter.optuna.suggest_architecture` suggests them) and ``nasbench201`` (six categorical parameters
``edge_ij``, one per cell edge, over its five ops). Objectives (:func:`make_objective`): ``params``, ``macs``,
a column of a table keyed by the NB201 arch string (``arch_str``), or any callable of a :class:`Candidate`.

The result (what ``fleetmeter search --json`` prints) is a JSON-ready dict: ``space``, ``objective``,
``direction``, ``risk``, ``budgets``, ``trials``, ``candidates`` (distinct networks predicted), ``feasible``,
``best`` (the best feasible by prediction), ``ranked`` (the feasible, best first, at most ``top``),
``verified`` (per measured candidate: predicted and measured per budget, whether each budget held, ``passed``),
``pick`` (the best one that passed), ``measurements_used`` (device measurements: one per candidate and
platform), ``measurements_if_all`` (the same for every candidate looked at) and, with ``pareto``, ``pareto``:
per budget, the candidates no other beats on both objective and that cost, and ``points``: every candidate
(its key, objective, parameters, predictions, compared costs, feasibility; ``fleetmeter report --search FILE``
draws them). Each record's ``predicted`` is ``{budget name: {value, lower, upper}}``; ``compared`` is the
number the rule compared with each budget.

This module talks to the controller only through the :class:`~fleetmeter.client.Client` (any object with its
``predict_batch``, and for verifying its sweep calls); building candidates needs the ``zoo`` extra and the
loop needs ``optuna``.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import logging
import math
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple, Union

from fleetmeter._extras import require
from fleetmeter.controller.platforms import RUNTIME_FOR_FORMAT
from fleetmeter.errors import InvalidArgument, Unavailable
from fleetmeter.optuna import BUDGET_TARGETS, Budget, FleetConstraints, suggest_architecture, tpe_sampler

log = logging.getLogger(__name__)

__all__ = ["Candidate", "Space", "Measure", "ZooSpace", "NasBench201Space", "make_space", "make_objective",
           "parse_budget", "TableObjective", "SweepMeasure", "search", "pareto_front", "NB201_SPACE"]

NB201_SPACE = "nasbench201"
#: A budget's target -> the :class:`FleetConstraints` keyword that budgets it.
_KEYWORD_OF_TARGET = {**{t: k for k, t in BUDGET_TARGETS.items()}, "memory_bytes": "memory_bytes"}
_BUDGET_RE = re.compile(r"^(?P<platform>.+):(?P<target>[a-z_]+)\s*<=\s*(?P<value>\S+)$")
#: A result row's column -> the budget target it measures.
_MEASURED_COLUMN = {"latency_ms": "median_ms", "energy_mj": "energy_mj_per_inference",
                    "peak_rss_bytes": "peak_rss_bytes"}
_RUNTIME_FORMAT = {runtime: fmt for fmt, runtime in RUNTIME_FOR_FORMAT.items()}  # the file a runtime runs
KEY_ATTR, INFO_ATTR, PREDICTED_ATTR = "fleetmeter.key", "fleetmeter.info", "fleetmeter.predicted"
SETUP_ATTR = "fleetmeter.search"


# ------------------------------------------------------------------ spaces
@dataclass
class Candidate:
    """One network of a space: ``key`` names it (the same network always has the same key), ``params`` are the
    search parameters that rebuild it (:meth:`Space.candidate`), ``info`` its figures (``parameters``,
    ``macs``, and ``arch`` for NB201), ``arch`` the zoo :class:`Architecture`."""

    key: str
    params: Dict[str, Any]
    info: Dict[str, Any]
    arch: Any = field(repr=False, default=None)

    @property
    def name(self) -> str:
        return f"{self.arch.family}-{hashlib.sha256(self.key.encode()).hexdigest()[:12]}"

    def model(self, fmt: str = "onnx") -> bytes:
        """The file of this network: ``onnx`` or ``tflite`` (float)."""
        if fmt == "onnx":
            from fleetmeter.modeler.zoo.onnx_emit import build_onnx, onnx_bytes

            return onnx_bytes(build_onnx(self.arch))
        if fmt == "tflite":
            from fleetmeter.modeler.zoo.tflite_emit import build_tflite

            return build_tflite(self.arch)
        raise InvalidArgument(f"no {fmt!r} file of a candidate: onnx or tflite")


def _from_arch(built, params: Mapping[str, Any], key: str, **info: Any) -> Candidate:
    return Candidate(key=key, params=dict(params), arch=built,
                     info={"parameters": built.param_count(), "macs": built.mac_count(), **info})


class _Fixed:
    """A trial-like object answering ``suggest_*`` from fixed parameters (rebuilds a candidate)."""

    number = 0

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.params = dict(params)

    def _get(self, name: str, *_: Any, **__: Any) -> Any:
        if name not in self.params:
            raise InvalidArgument(f"parameter {name!r} missing; got {sorted(self.params)}")
        return self.params[name]

    suggest_categorical = suggest_int = suggest_float = _get


class ZooSpace:
    """A zoo family; ``fixed`` pins hyper-parameters by name (``fleetmeter zoo families`` lists them)."""

    def __init__(self, family: str, fixed: Optional[Mapping[str, Any]] = None) -> None:
        from fleetmeter.modeler.zoo.families import get_family

        try:
            get_family(family)
        except KeyError as exc:
            raise InvalidArgument(f"--space: {exc.args[0]}; or {NB201_SPACE!r}") from None
        self.name, self.fixed = family, dict(fixed or {})

    def suggest(self, trial) -> Candidate:
        import json

        arch = suggest_architecture(trial, self.name, self.fixed, name=self.name)
        key = json.dumps(arch.hyperparameters, sort_keys=True, default=str)
        return _from_arch(arch, trial.params, key)

    def candidate(self, params: Mapping[str, Any]) -> Candidate:
        return self.suggest(_Fixed(params))


class NasBench201Space:
    """NAS-Bench-201's cell: one categorical parameter per edge (``edge_01``, ``edge_02``, ``edge_12``,
    ``edge_03``, ``edge_13``, ``edge_23``: node i feeds node j) over its five ops; the key is the arch string."""

    name = NB201_SPACE

    def __init__(self, fixed: Optional[Mapping[str, Any]] = None) -> None:
        from fleetmeter.modeler.zoo.fam_nasbench201 import EDGES, OPS

        self.edges = [f"edge_{i}{j}" for i, j in EDGES]
        self.ops = list(OPS)
        self.fixed = dict(fixed or {})
        unknown = sorted(set(self.fixed) - set(self.edges))
        if unknown:
            raise InvalidArgument(f"{NB201_SPACE} has no parameter(s) {unknown}; its parameters: {self.edges}")

    def suggest(self, trial) -> Candidate:
        from fleetmeter.modeler.zoo.fam_nasbench201 import build_nasbench201, format_arch

        ops = [self.fixed[e] if e in self.fixed else trial.suggest_categorical(e, self.ops) for e in self.edges]
        arch_str = format_arch(ops)
        arch = build_nasbench201(NB201_SPACE, {"arch": arch_str})
        return _from_arch(arch, dict(zip(self.edges, ops)), arch_str, arch=arch_str,
                          arch_index=arch.hyperparameters["arch_index"])

    def candidate(self, params: Mapping[str, Any]) -> Candidate:
        return self.suggest(_Fixed(params))


class Space(Protocol):
    """A search space: ``name``; ``suggest(trial)``, the candidate an Optuna trial's ``suggest_*`` calls pick (raise
    ``InvalidArgument``/``ArchitectureError`` for a combination that cannot be built: the trial fails, the search
    goes on); ``candidate(params)``, the same candidate again from the trial's parameters (deterministic)."""

    name: str

    def suggest(self, trial) -> Candidate: ...

    def candidate(self, params: Mapping[str, Any]) -> Candidate: ...


class Measure(Protocol):
    """Verification: per candidate, ``{budget name: measured value}`` on every budget (``None``: no reading,
    e.g. the run failed), in the budget's unit. :class:`SweepMeasure` measures on the fleet."""

    def __call__(self, candidates: Sequence[Candidate], budgets: Sequence[Budget]) -> List[Dict[str, Any]]: ...


def make_space(name: str, fixed: Optional[Mapping[str, Any]] = None) -> Space:
    """``nasbench201`` or a zoo family's name."""
    return NasBench201Space(fixed) if name == NB201_SPACE else ZooSpace(name, fixed)


# ------------------------------------------------------------------ objectives
class TableObjective:
    """A column of a CSV table (``.gz`` accepted) with one row per NB201 network, keyed by ``arch_str``: the
    recorded accuracy of each candidate, say."""

    def __init__(self, path: Union[str, Path], column: str) -> None:
        path = Path(path)
        if not path.is_file():
            raise InvalidArgument(f"--objective-table: no such file: {path}")
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", newline="") as fh:
            reader = csv.DictReader(fh)
            fields = reader.fieldnames or []
            if "arch_str" not in fields or column not in fields:
                raise InvalidArgument(f"--objective-table {path}: needs columns 'arch_str' and {column!r} "
                                      f"(--objective-column); it has {fields}")
            self.values = {row["arch_str"]: float(row[column]) for row in reader}
        self.path, self.column = path, column

    def __call__(self, candidate: Candidate) -> float:
        arch = candidate.info.get("arch")
        if arch is None:
            raise InvalidArgument(f"--objective-table keys rows by NB201 arch string: use --space {NB201_SPACE}")
        if arch not in self.values:
            raise InvalidArgument(f"{self.path}: no row for {arch}")
        return self.values[arch]


def make_objective(name: Optional[str], table: Optional[Union[str, Path]] = None,
                   column: Optional[str] = None) -> Tuple[str, Callable[[Candidate], float]]:
    """``(label, objective)``: ``params``, ``macs``, or ``column`` of ``table``."""
    if table is not None or column is not None:
        if table is None or column is None:
            raise InvalidArgument("--objective-table and --objective-column go together")
        if name not in (None, "table", column):
            raise InvalidArgument(f"--objective {name!r} and --objective-table: give one")
        return column, TableObjective(table, column)
    if name in ("params", "macs"):
        figure = "parameters" if name == "params" else "macs"
        return name, lambda c: float(c.info[figure])
    what = "no --objective" if name is None else f"--objective {name!r}"
    raise InvalidArgument(f"{what}: give params, macs, or a table column (--objective-table FILE "
                          "--objective-column COL)")


# ------------------------------------------------------------------ budgets
def parse_budget(text: str) -> Budget:
    """``PLATFORM:TARGET<=VALUE`` (TARGET: latency_ms, energy_mj, peak_rss_bytes or memory_bytes)."""
    m = _BUDGET_RE.match(str(text).strip())
    if not m:
        raise InvalidArgument(f"--budget {text!r}: expected PLATFORM:TARGET<=VALUE, e.g. rpi5:latency_ms<=20")
    target = m["target"]
    if target not in _KEYWORD_OF_TARGET:
        raise InvalidArgument(f"--budget {text!r}: unknown target {target!r}; one of "
                              f"{', '.join(sorted(_KEYWORD_OF_TARGET))}")
    try:
        value = float(m["value"])
    except ValueError:
        raise InvalidArgument(f"--budget {text!r}: {m['value']!r} is not a number") from None
    return Budget(m["platform"], BUDGET_TARGETS[_KEYWORD_OF_TARGET[target]], value)


def _constraints(client, budgets: Sequence[Union[str, Budget]], risk: float) -> FleetConstraints:
    parsed = [b if isinstance(b, Budget) else parse_budget(b) for b in budgets]
    if not parsed:
        raise InvalidArgument("no budget: give at least one --budget PLATFORM:TARGET<=VALUE")
    platforms = list(dict.fromkeys(b.platform for b in parsed))
    per_keyword: Dict[str, Dict[str, float]] = {}
    for b in parsed:
        limits = per_keyword.setdefault(_KEYWORD_OF_TARGET[b.target], {})
        if b.platform in limits:
            raise InvalidArgument(f"two --budget values for {b.target} on {b.platform!r}")
        limits[b.platform] = b.limit
    return FleetConstraints(client, platforms, risk=risk, **per_keyword)


# ------------------------------------------------------------------ verification
class SweepMeasure:
    """Measures candidates on the fleet: uploads each one's file (ONNX for onnxruntime platforms, TFLite for
    LiteRT), runs one sweep on the budgeted platforms, waits for it and reads its results (the median of a
    candidate's readings on a platform; readings flagged ``disturbed`` only when it has no other). ``settings`` and
    ``reading``: the sweep's ``BenchSettings`` and ``ReadingSettings`` (default: the controller's)."""

    def __init__(self, client, settings=None, say: Callable[[str], None] = lambda _: None,
                 timeout_s: float = 6 * 3600.0, reading=None) -> None:
        self.client, self.settings, self.say, self.timeout_s = client, settings, say, timeout_s
        self.reading = reading

    def _platforms(self, budgets: Sequence[Budget]) -> Dict[str, Any]:
        known = self.client.list_platforms()
        out = {}
        for name in dict.fromkeys(b.platform for b in budgets):
            matches = [p for p in known if p.platform_id == name] or [p for p in known
                                                                      if p.platform_id.startswith(name)]
            if len(matches) != 1:
                raise InvalidArgument(f"--budget platform {name!r} matches {len(matches)} platforms; "
                                      "give an id or unique prefix (`fleetmeter platforms` lists them)")
            out[name] = matches[0]
        return out

    def __call__(self, candidates: Sequence[Candidate], budgets: Sequence[Budget]) -> List[Dict[str, Any]]:
        from fleetmeter.frames import fetch_result_rows
        from fleetmeter.v1 import fleet_pb2

        platforms = self._platforms(budgets)
        formats = sorted({_RUNTIME_FORMAT.get(p.runtime, "onnx") for p in platforms.values()})
        shas: List[Dict[str, str]] = []
        with tempfile.TemporaryDirectory(prefix="fleetmeter-search-") as tmp:
            for c in candidates:
                shas.append({})
                for fmt in formats:
                    path = Path(tmp) / f"{c.name}.{fmt}"
                    path.write_bytes(c.model(fmt))
                    shas[-1][fmt] = self.client.upload_model(path).model.sha256
        spec = fleet_pb2.SweepSpec(name="fleetmeter search: verify",
                                   models=sorted({s for one in shas for s in one.values()}), repeat_sample=-1.0,
                                   platforms=fleet_pb2.PlatformSelector(
                                       platform_ids=sorted({p.platform_id for p in platforms.values()})))
        if self.settings is not None:
            spec.settings.CopyFrom(self.settings)
        if self.reading is not None:
            spec.reading.CopyFrom(self.reading)
        sweep = self.client.submit_sweep(spec)
        self.say(f"verifying {len(candidates)} candidate(s): sweep {sweep.sweep_id}, {sweep.progress.total} jobs")
        self._wait(sweep.sweep_id)
        rows = fetch_result_rows(self.client, sweep=sweep.sweep_id)
        return [self._measured(one, platforms, budgets, rows) for one in shas]

    def _wait(self, sweep_id: str) -> None:
        """Until the sweep is over; a watch the network drops is started again (DeadlineExceeded after
        ``timeout_s``)."""
        deadline = time.monotonic() + self.timeout_s

        def over(progress) -> bool:
            return progress.state in ("done", "cancelled") and progress.leased == 0

        while not over(self.client.get_sweep(sweep_id).progress):
            try:
                for progress in self.client.watch_sweep(sweep_id, timeout_s=max(1.0, deadline - time.monotonic())):
                    if over(progress):
                        return
            except Unavailable as exc:
                log.info("watching sweep %s: %s; watching again", sweep_id, exc)

    @staticmethod
    def _measured(shas: Mapping[str, str], platforms: Mapping[str, Any], budgets: Sequence[Budget],
                  rows: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for b in budgets:
            p = platforms[b.platform]
            sha = shas[_RUNTIME_FORMAT.get(p.runtime, "onnx")]
            mine = [r for r in rows if r["model_sha256"] == sha and r["platform"] == p.platform_id
                    and not r["failure_kind"] and r[_MEASURED_COLUMN[b.target]] is not None]
            clean = [r for r in mine if "disturbed" not in r["flags"]] or mine
            out[b.name] = float(statistics.median(r[_MEASURED_COLUMN[b.target]] for r in clean)) if clean else None
        return out


def _verify(ranked: List[Dict[str, Any]], k: int, space: Space, fc: FleetConstraints, measure,
            say: Callable[[str], None]) -> Tuple[List[Dict[str, Any]], int]:
    """Measure the best of ``ranked`` until ``k`` pass every budget or none is left; ``(verified, measurements)``."""
    verified: List[Dict[str, Any]] = []
    queue, passed, used = list(ranked), 0, 0
    while passed < k and queue:
        take, queue = queue[:k - passed], queue[k - passed:]
        measured = measure([space.candidate(r["params"]) for r in take], fc.budgets)
        used += len(take) * len({b.platform for b in fc.budgets})
        for r, m in zip(take, measured):
            held = {b.name: m.get(b.name) is not None and m[b.name] <= b.limit for b in fc.budgets}
            ok = all(held.values())
            passed += ok
            verified.append({"key": r["key"], "objective": r["objective"], "params": r["params"],
                             "predicted": r["predicted"], "measured": dict(m), "held": held, "passed": ok})
            if not ok:
                broke = [f"{b.name} measured {_fmt(m.get(b.name))} > {b.limit:g}" for b in fc.budgets
                         if not held[b.name]]
                say(f"  {r['key']}: breaks a budget when measured ({'; '.join(broke)}); verifying the next one")
    return verified, used


def _fmt(value: Optional[float]) -> str:
    return "nothing (the run failed)" if value is None else f"{value:.4g}"


# ------------------------------------------------------------------ the loop
def pareto_front(points: Sequence[Dict[str, Any]], cost: str, maximize: bool = True) -> List[Dict[str, Any]]:
    """The points (each with ``objective`` and ``compared[cost]``) no other point beats on both the objective
    and ``cost`` (lower is better); sorted by cost."""
    sign = 1.0 if maximize else -1.0
    ordered = sorted(points, key=lambda p: (p["compared"][cost], -sign * p["objective"]))
    front, best = [], -math.inf
    for p in ordered:
        if sign * p["objective"] > best:
            front.append(p)
            best = sign * p["objective"]
    return front


def _study(fc: FleetConstraints, space: Space, direction: str, storage: Optional[Union[str, Path]],
           study_name: str, seed: int):
    """A new study, or the one called ``study_name`` in ``storage``; InvalidArgument when that one searched another
    space, direction or budgets (its predictions would not answer this search)."""
    optuna = require("optuna", "fleetmeter search")
    url = None
    if storage is not None:
        text = str(storage)
        url = text if "://" in text else f"sqlite:///{Path(text).resolve()}"
    study = optuna.create_study(direction=direction, sampler=tpe_sampler(fc, seed=seed), storage=url,
                                study_name=study_name, load_if_exists=storage is not None)
    setup = {"space": space.name, "direction": direction, "budgets": [[b.name, b.limit] for b in fc.budgets]}
    before = study.user_attrs.get(SETUP_ATTR)
    if before is None:
        study.set_user_attr(SETUP_ATTR, setup)
    elif before != setup:
        raise InvalidArgument(f"study {study_name!r} in {storage} was a search of {before}, not {setup}: give "
                              "another --study-name or --storage to start a new one")
    return study


def _evaluate(study, space: Space, objective, fc: FleetConstraints, asked: list, known: Dict[str, Any]) -> None:
    """Build, score and predict the trials ``asked`` together; tell the study. ``known``: key -> predictions of
    candidates seen before (a repeat is not built again)."""
    from fleetmeter.modeler.zoo.arch import ArchitectureError

    optuna = require("optuna", "fleetmeter search")
    built = []
    for trial in asked:
        try:
            cand = space.suggest(trial)
            built.append((trial, cand, objective(cand)))
        except (ArchitectureError, InvalidArgument, ValueError) as exc:
            trial.set_user_attr("error", str(exc))
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            log.info("trial %d: %s", trial.number, exc)
    fresh = {c.key: c for _, c, _ in built if c.key not in known}
    if fresh:
        for key, intervals in zip(fresh, fc.intervals([c.model() for c in fresh.values()])):
            known[key] = intervals
    for trial, cand, value in built:
        trial.set_user_attr(KEY_ATTR, cand.key)
        trial.set_user_attr(INFO_ATTR, cand.info)
        trial.set_user_attr(PREDICTED_ATTR, {n: list(v) for n, v in known[cand.key].items()})
        fc.record(trial, {n: fc.compared(v) for n, v in known[cand.key].items()})
        study.tell(trial, value)


def _candidates(study, fc: FleetConstraints) -> List[Dict[str, Any]]:
    """One record per distinct candidate of the study's finished trials."""
    optuna = require("optuna", "fleetmeter search")
    out: Dict[str, Dict[str, Any]] = {}
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        key = t.user_attrs.get(KEY_ATTR)
        if key is None or key in out:
            continue
        predicted = {n: dict(zip(("value", "lower", "upper"), v)) for n, v in t.user_attrs[PREDICTED_ATTR].items()}
        compared = {n: fc.compared(tuple(v)) for n, v in t.user_attrs[PREDICTED_ATTR].items()}
        out[key] = {"key": key, "trial": t.number, "objective": t.value, "params": t.params,
                    "info": t.user_attrs.get(INFO_ATTR, {}), "predicted": predicted, "compared": compared,
                    "feasible": fc.feasible(t)}
    return list(out.values())


def search(space: Union[str, Space], objective: Union[str, Callable[[Candidate], float], None],
           budgets: Sequence[Union[str, Budget]], *, client=None, trials: int = 100, verify: int = 0,
           risk: float = 0.0, direction: str = "maximize", objective_table: Optional[Union[str, Path]] = None,
           objective_column: Optional[str] = None, storage: Optional[Union[str, Path]] = None,
           study_name: str = "fleetmeter-search", seed: int = 0, batch: int = 8, pareto: bool = False,
           fixed: Optional[Mapping[str, Any]] = None, measure: Optional[Measure] = None, top: int = 20,
           progress: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Search ``space`` for the best ``objective`` within ``budgets`` (see the module docstring).

    ``space``: a name (:func:`make_space`) or a space object; ``objective``: ``params``, ``macs``, ``None`` with
    ``objective_table``/``objective_column``, or a callable of a :class:`Candidate`; ``budgets``:
    ``"PLATFORM:TARGET<=VALUE"`` strings or :class:`~fleetmeter.optuna.Budget`; ``client``: a
    :class:`~fleetmeter.client.Client` (default: one from the environment); ``measure``: how verification
    measures (default :class:`SweepMeasure` on ``client``); ``progress``: called with one line per step."""
    if trials < 1 or batch < 1 or verify < 0:
        raise InvalidArgument("--trials and --batch must be at least 1, --verify at least 0")
    if direction not in ("maximize", "minimize"):
        raise InvalidArgument(f"direction must be 'maximize' or 'minimize', got {direction!r}")
    say = progress or (lambda _: None)
    space = make_space(space, fixed) if isinstance(space, str) else space
    label, score = ((getattr(objective, "__name__", "objective"), objective) if callable(objective)
                    else make_objective(objective, objective_table, objective_column))
    if client is None:
        from fleetmeter.client import _shared_client

        client = _shared_client()
    fc = _constraints(client, budgets, risk)
    study = _study(fc, space, direction, storage, study_name, seed)
    known: Dict[str, Any] = {}
    for r in _candidates(study, fc):
        known[r["key"]] = {n: (p["value"], p["lower"], p["upper"]) for n, p in r["predicted"].items()}
    if study.trials:
        say(f"resuming study {study_name!r}: {len(study.trials)} trial(s) done")
    while len(study.trials) < trials:
        asked = [study.ask() for _ in range(min(batch, trials - len(study.trials)))]
        _evaluate(study, space, score, fc, asked, known)
        say(_progress_line(study, fc, trials, len(known)))
    return _result(study, space, fc, label, direction, risk, verify, measure or SweepMeasure(client, say=say),
                   pareto, top, say)


def _progress_line(study, fc: FleetConstraints, trials: int, distinct: int) -> str:
    feasible = [r for r in _candidates(study, fc) if r["feasible"]]
    maximize = study.direction.name == "MAXIMIZE"
    best = (max if maximize else min)(feasible, key=lambda r: r["objective"]) if feasible else None
    tail = f", best {best['objective']:.6g} ({best['key']})" if best else ""
    return f"search: {len(study.trials)}/{trials} trials, {distinct} networks, {len(feasible)} within budgets{tail}"


def _result(study, space: Space, fc: FleetConstraints, label: str, direction: str, risk: float, verify: int,
            measure, pareto: bool, top: int, say: Callable[[str], None]) -> Dict[str, Any]:
    records = _candidates(study, fc)
    maximize = direction == "maximize"
    ranked = sorted((r for r in records if r["feasible"]), key=lambda r: r["objective"], reverse=maximize)
    verified, used = _verify(ranked, verify, space, fc, measure, say) if verify else ([], 0)
    picks = [v for v in verified if v["passed"]]
    out: Dict[str, Any] = {
        "space": space.name, "objective": label, "direction": direction, "risk": risk,
        "budgets": [{"platform": b.platform, "target": b.target, "limit": b.limit, "name": b.name}
                    for b in fc.budgets],
        "trials": len(study.trials), "candidates": len(records), "feasible": len(ranked),
        "best": ranked[0] if ranked else None, "ranked": ranked[:top], "verify": verify, "verified": verified,
        "pick": picks[0] if picks else None, "measurements_used": used,
        "measurements_if_all": len(records) * len({b.platform for b in fc.budgets}),
    }
    if pareto:
        out["pareto"] = {b.name: pareto_front(records, b.name, maximize) for b in fc.budgets}
        out["points"] = [{k: r[k] for k in ("key", "objective", "params", "predicted", "compared", "feasible")}
                         for r in records]
    return out


def say_to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


__all__ += ["say_to_stderr"]
