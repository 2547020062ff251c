"""Budgets on predicted costs as Optuna constraints: search for models that fit several devices at once.

::

    import optuna
    from fleetmeter import Client
    from fleetmeter.optuna import FleetConstraints, tpe_sampler

    budgets = FleetConstraints(Client(), ["rpi5", "jetson", "pixel"], latency_ms=20.0,
                               memory_bytes={"rpi5": 200e6})

    def objective(trial):
        path = build_candidate(trial)         # the model this trial proposes, as an .onnx/.tflite file
        budgets.evaluate(trial, path)         # predicts its costs; records them and the constraints
        return size_of(path)

    study = optuna.create_study(direction="maximize", sampler=tpe_sampler(budgets, seed=0))
    study.optimize(objective, n_trials=50)

The constraint values (the contract): one per :class:`Budget`, in :attr:`FleetConstraints.budgets` order,
``predicted / budget - 1``: ``<= 0`` fits, ``0.25`` is 25 % over. Relative, so that budgets in ms, mJ and
bytes weigh alike where Optuna adds violations up. :meth:`FleetConstraints.evaluate` stores them on the
trial as the user attribute ``fleetmeter.constraints`` (and each prediction as ``fleetmeter.<target>@<platform>``);
:meth:`FleetConstraints.constraints_func` reads them back from the finished trial, which is what the
``constraints_func`` of Optuna's ``TPESampler`` and ``NSGAIISampler`` expects. Optuna 5 deprecates
``constraints_func`` for ``Trial.set_constraint``: there ``evaluate`` also sets each value as a named
constraint, and :func:`tpe_sampler` leaves ``constraints_func`` out.

Predictions go through :meth:`fleetmeter.Client.predict_batch` (one stream per target, for every model not
yet asked) and are cached by the model's sha256, so a candidate built twice is asked once. A model that
cannot be predicted raises its :mod:`fleetmeter.errors` exception, naming the model (the trial fails and
Optuna logs why). Safe to share between the threads of ``study.optimize(n_jobs=...)``.

Optuna itself is an optional extra (``pip install 'fleetmeter[optuna]'``): only :func:`tpe_sampler` imports
it; the rest works on anything trial-like (``set_user_attr``, ``user_attrs``, ``number``).
"""
from __future__ import annotations

import hashlib
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from fleetmeter.errors import InvalidArgument
from fleetmeter._extras import require

__all__ = ["Budget", "FleetConstraints", "CONSTRAINTS_ATTR", "tpe_sampler", "suggest_architecture"]

#: The trial user attribute holding the constraint values.
CONSTRAINTS_ATTR = "fleetmeter.constraints"
#: Keyword of :class:`FleetConstraints` -> the predictor target it budgets.
BUDGET_TARGETS = {"latency_ms": "latency_ms", "energy_mj": "energy_mj", "memory_bytes": "peak_rss_bytes"}

BudgetArg = Union[None, float, Mapping[str, float]]
#: One prediction: ``(value, lower, upper)``, the interval's ends ``None`` when the predictor has none.
Interval = Tuple[float, Optional[float], Optional[float]]


@dataclass(frozen=True)
class Budget:
    """At most ``limit`` (in the target's unit: ms, mJ, bytes) of ``target`` predicted on ``platform``."""

    platform: str
    target: str
    limit: float

    @property
    def name(self) -> str:
        return f"{self.target}@{self.platform}"


def _budgets(platforms: Sequence[str], per_keyword: Mapping[str, BudgetArg]) -> Tuple[Budget, ...]:
    out = []
    for keyword, value in per_keyword.items():
        if value is None:
            continue
        limits = value if isinstance(value, Mapping) else {p: value for p in platforms}
        unknown = sorted(set(limits) - set(platforms))
        if unknown:
            raise InvalidArgument(f"{keyword}: budgets for {unknown}, which are not among the platforms "
                                  f"{list(platforms)}")
        for platform in platforms:
            if platform not in limits:
                continue
            limit = float(limits[platform])
            if not math.isfinite(limit) or limit <= 0:
                raise InvalidArgument(f"{keyword} budget for {platform!r} must be a positive number, "
                                      f"got {limits[platform]!r}")
            out.append(Budget(platform, BUDGET_TARGETS[keyword], limit))
    if not out:
        raise InvalidArgument("no budget: give latency_ms, energy_mj and/or memory_bytes")
    return tuple(out)


def _read(model: Any) -> Tuple[bytes, str]:
    """``(content, label)`` of a model path or the file's bytes."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
        return data, hashlib.sha256(data).hexdigest()[:12]
    if isinstance(model, (str, os.PathLike)):
        if not Path(model).is_file():
            raise InvalidArgument(f"model file not found: {model}")
        return Path(model).read_bytes(), os.fspath(model)
    raise InvalidArgument(f"model must be a path or bytes, got {type(model).__name__}")


class FleetConstraints:
    """Budgets on predicted latency, energy and peak memory on one or more platforms, as Optuna constraints.

    ``platforms``: platform ids (or unique prefixes) of the controller ``client`` talks to. Each of
    ``latency_ms``, ``energy_mj`` and ``memory_bytes`` (peak resident memory) is one number for every
    platform or ``{platform: number}`` for some; each platform and target budgeted needs a trained
    predictor. ``shapes``: the input shapes to predict at (``Client.predict``'s). ``use_upper``: compare
    the upper end of the prediction's interval (where the predictor has one) instead of its value, a
    margin for the predictor's error. ``risk`` (0..1, the interval-aware rule; overrides ``use_upper``):
    compare ``upper - risk * (upper - lower)``, i.e. at most that share of the interval may cross the
    budget: 0 is the upper end, 1 the lower; a prediction without an interval compares its value. See
    the module docstring for the values' contract.
    """

    def __init__(self, client, platforms: Union[str, Sequence[str]], *, latency_ms: BudgetArg = None,
                 energy_mj: BudgetArg = None, memory_bytes: BudgetArg = None,
                 shapes: Optional[Mapping[str, Sequence[int]]] = None, use_upper: bool = False,
                 risk: Optional[float] = None) -> None:
        self.client = client
        self.platforms = [platforms] if isinstance(platforms, str) else list(platforms)
        if not self.platforms:
            raise InvalidArgument("no platform: name at least one platform id")
        self.budgets = _budgets(self.platforms, {"latency_ms": latency_ms, "energy_mj": energy_mj,
                                                 "memory_bytes": memory_bytes})
        self.shapes = shapes
        if risk is not None and not (isinstance(risk, (int, float)) and 0.0 <= risk <= 1.0):
            raise InvalidArgument(f"risk must be a number from 0 (the interval's upper end stays inside the "
                                  f"budget) to 1 (its lower end does), got {risk!r}")
        self.risk = 0.0 if risk is None and use_upper else risk
        self._cache: Dict[str, Dict[str, Interval]] = {}
        self._lock = threading.Lock()

    @property
    def names(self) -> List[str]:
        """The constraints' names (``target@platform``), in the order of their values."""
        return [b.name for b in self.budgets]

    def predict(self, models: Sequence[Any]) -> List[Dict[str, float]]:
        """Per model (a path or the file's bytes), ``{target@platform: predicted value}`` of every budget, the
        value each budget compares (see ``risk``); models not asked before go to the controller together, one
        ``predict_batch`` stream per target."""
        return [{name: self.compared(interval) for name, interval in one.items()}
                for one in self.intervals(models)]

    def compared(self, interval: "Interval") -> float:
        """The number a budget compares for one prediction ``(value, lower, upper)`` (see ``risk``)."""
        value, lower, upper = interval
        if self.risk is None or upper is None:
            return value
        return upper - self.risk * (upper - (lower if lower is not None else value))

    def intervals(self, models: Sequence[Any]) -> List[Dict[str, "Interval"]]:
        """Per model, ``{target@platform: (value, lower, upper)}`` (``lower``/``upper`` ``None`` when the
        predictor has no interval); cached by the file's sha256, like :meth:`predict`."""
        read = [_read(m) for m in models]
        shas = [hashlib.sha256(data).hexdigest() for data, _ in read]
        with self._lock:
            missing = {sha: r for sha, r in zip(shas, read) if sha not in self._cache}
        if missing:
            fresh = self._ask(missing)
            with self._lock:
                self._cache.update(fresh)
        with self._lock:
            return [dict(self._cache[sha]) for sha in shas]

    def _ask(self, models: Dict[str, Tuple[bytes, str]]) -> Dict[str, Dict[str, "Interval"]]:
        out: Dict[str, Dict[str, Interval]] = {sha: {} for sha in models}
        for target in dict.fromkeys(b.target for b in self.budgets):
            budgets = [b for b in self.budgets if b.target == target]
            answers = self.client.predict_batch([data for data, _ in models.values()],
                                                [b.platform for b in budgets], [target], shapes=self.shapes)
            for (sha, (_, label)), answer in zip(models.items(), answers):
                if isinstance(answer, Exception):
                    raise type(answer)(f"{label}: {answer}") from answer
                for b in budgets:
                    out[sha][b.name] = self._pick(answer, b)
        return out

    def _pick(self, predictions, budget: Budget) -> "Interval":
        matches = ([p for p in predictions if p.platform == budget.platform]
                   or [p for p in predictions if p.platform.startswith(budget.platform)])
        if len(matches) != 1:
            raise InvalidArgument(f"{len(matches)} {budget.target} predictions for platform {budget.platform!r} "
                                  f"(got {sorted(p.platform for p in predictions)}); name it by its full id")
        p = matches[0]
        return (p.value, p.lower, p.upper)

    def values(self, predicted: Mapping[str, float]) -> List[float]:
        """The constraint values of one model's predictions: ``predicted / budget - 1`` per budget."""
        return [predicted[b.name] / b.limit - 1.0 for b in self.budgets]

    def record(self, trial, predicted: Mapping[str, float]) -> List[float]:
        """Store ``predicted`` and its constraint values on ``trial`` (see the module docstring); the values."""
        values = self.values(predicted)
        for name, value in predicted.items():
            trial.set_user_attr(f"fleetmeter.{name}", value)
        trial.set_user_attr(CONSTRAINTS_ATTR, values)
        if hasattr(trial, "set_constraint"):  # Optuna >= 5
            for budget, value in zip(self.budgets, values):
                trial.set_constraint(budget.name, value)
        return values

    def evaluate(self, trial, model: Any) -> List[float]:
        """Predict ``model`` (the trial's candidate: a path or the file's bytes) and :meth:`record` it on ``trial``."""
        (predicted,) = self.predict([model])
        return self.record(trial, predicted)

    def evaluate_batch(self, trials: Sequence[Any], models: Sequence[Any]) -> List[List[float]]:
        """:meth:`evaluate` for trials asked together (ask-and-tell), their models predicted over one stream."""
        if len(trials) != len(models):
            raise InvalidArgument(f"{len(trials)} trials but {len(models)} models")
        return [self.record(t, p) for t, p in zip(trials, self.predict(models))]

    def constraints_func(self, trial) -> List[float]:
        """Optuna's ``constraints_func``: the values :meth:`evaluate` stored on the (finished) ``trial``; a
        trial that never got that far counts as over every budget (``inf``)."""
        values = trial.user_attrs.get(CONSTRAINTS_ATTR)
        return [float(v) for v in values] if values is not None else [math.inf] * len(self.budgets)

    def feasible(self, trial) -> bool:
        """Whether ``trial``'s model fits every budget."""
        return all(v <= 0 for v in self.constraints_func(trial))


def tpe_sampler(constraints: FleetConstraints, **kwargs: Any):
    """An Optuna ``TPESampler(**kwargs)`` that sees ``constraints``: through ``constraints_func`` before
    Optuna 5, through the named constraints :meth:`FleetConstraints.evaluate` sets from Optuna 5 on."""
    optuna = require("optuna", "fleetmeter.optuna.tpe_sampler")
    if not hasattr(optuna.trial.Trial, "set_constraint"):
        kwargs.setdefault("constraints_func", constraints.constraints_func)
    return optuna.samplers.TPESampler(**kwargs)


class _TrialDraws:
    """A zoo :class:`~fleetmeter.modeler.zoo.sampling.Sampler` whose draws the trial suggests: the k-th draw
    of ``name`` (per-stage values) is the parameter ``name`` (k = 0) or ``name.k``; ``fixed`` pins some."""

    def __init__(self, trial, ranges: Mapping[str, Any], fixed: Mapping[str, Any]) -> None:
        self.trial, self.ranges, self.fixed = trial, ranges, fixed
        self.counts: Dict[str, int] = {}

    def _key(self, name: str) -> str:
        k = self.counts.get(name, 0)
        self.counts[name] = k + 1
        return name if k == 0 else f"{name}.{k}"

    def uniform(self) -> float:
        return self.trial.suggest_float(self._key("uniform"), 0.0, 1.0)

    def draw(self, name: str) -> Any:
        from fleetmeter.modeler.zoo.sampling import Choice, IntRange

        key = self._key(name)
        if name in self.fixed:
            return self.fixed[name]
        spec = self.ranges[name]
        if isinstance(spec, Choice):
            return self.trial.suggest_categorical(key, list(spec.values))
        if isinstance(spec, IntRange):
            return self.trial.suggest_int(key, spec.low, spec.high)
        return self.trial.suggest_float(key, spec.low, spec.high, step=spec.step)

    def draws(self, name: str, n: int) -> list:
        return [self.draw(name) for _ in range(n)]


def suggest_architecture(trial, family: str, fixed: Optional[Mapping[str, Any]] = None, name: Optional[str] = None):
    """An architecture of the zoo ``family`` (``fleetmeter zoo families`` lists them and their ranges) whose
    hyper-parameters ``trial`` suggests from the family's documented ranges; ``fixed`` pins some by name.
    The family's own size limits (for sampling a zoo) do not apply: the budgets decide. Needs the
    ``zoo`` extra."""
    from fleetmeter.modeler.zoo.families import get_family

    try:
        fam = get_family(family)
    except KeyError as exc:
        raise InvalidArgument(str(exc.args[0])) from None
    fixed = dict(fixed or {})
    unknown = sorted(set(fixed) - set(fam.ranges))
    if unknown:
        raise InvalidArgument(f"{family} has no hyper-parameter(s) {unknown}; its ranges: {sorted(fam.ranges)}")
    hp = fam.sample_hyperparameters(_TrialDraws(trial, fam.ranges, fixed))
    return fam.build(name or f"{family}-trial{trial.number}", hp)
