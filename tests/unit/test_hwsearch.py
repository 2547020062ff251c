"""fleetmeter.hwsearch's logic on a synthetic space whose costs are known, with the controller replaced by an
object answering ``predict_batch`` from those costs and the fleet by a measuring function: the search finds the
known feasible optimum, budgets on several platforms combine, the interval-aware rule rejects a candidate whose
interval crosses a budget, verification reports a candidate that breaks a budget when measured and measures the
next, and a search kept in an SQLite file resumes where it stopped. (The same loop on a real controller with
real agents and predictors: tests/integration/test_search_e2e.py.)"""
from __future__ import annotations

import json

import pytest

pytest.importorskip("optuna")

from fleetmeter import hwsearch  # noqa: E402
from fleetmeter.client import Prediction  # noqa: E402
from fleetmeter.errors import InvalidArgument  # noqa: E402
from fleetmeter.hwsearch import Candidate, pareto_front, parse_budget, search  # noqa: E402
from fleetmeter.optuna import Budget  # noqa: E402

FAST, SLOW = "laptop-8c-aaaaaa/onnxruntime-1.20/cpu/t1", "phone-4c-bbbbbb/litert-1.0/cpu/t1"
SIDE = 6  # x, y in 0..5: 36 networks


class GridCandidate(Candidate):
    def model(self, fmt: str = "onnx") -> bytes:
        return self.key.encode()


class GridSpace:
    """Networks ``(x, y)``; the objective is ``x + y``; costs are in :func:`costs`."""

    name = "grid"

    def suggest(self, trial) -> Candidate:
        x, y = trial.suggest_int("x", 0, SIDE - 1), trial.suggest_int("y", 0, SIDE - 1)
        return GridCandidate(key=f"{x},{y}", params={"x": x, "y": y}, info={"x": x, "y": y})

    def candidate(self, params) -> Candidate:
        x, y = params["x"], params["y"]
        return GridCandidate(key=f"{x},{y}", params=dict(params), info={"x": x, "y": y})


def costs(key: str) -> dict:
    """Latency of network ``x,y``: on FAST ``1 + x``, on SLOW ``1 + 2 y``; energy on SLOW ``x + y``."""
    x, y = map(int, key.split(","))
    return {("latency_ms", FAST): 1.0 + x, ("latency_ms", SLOW): 1.0 + 2.0 * y, ("energy_mj", SLOW): float(x + y)}


class Predictor:
    """``predict_batch`` from :func:`costs`, each prediction with the interval ``value * (1 -/+ spread)``
    (``spread`` per key: a candidate of uncertain cost); records what was asked."""

    def __init__(self, spread=None) -> None:
        self.spread = spread or {}
        self.asked = []

    def predict_batch(self, models, platforms, targets, *, shapes=None):
        for data in models:
            key = data.decode()
            self.asked.append(key)
            s = self.spread.get(key, 0.1)
            yield [Prediction(platform=p, target=t, value=costs(key)[(t, p)], lower=costs(key)[(t, p)] * (1 - s),
                              upper=costs(key)[(t, p)] * (1 + s), unit="ms", predictor_version=1, interval_level=0.9)
                   for p in platforms for t in targets]


def objective(c: Candidate) -> float:
    return float(c.info["x"] + c.info["y"])


def _search(budgets, predictor=None, **kw):
    return search(GridSpace(), objective, budgets, client=predictor or Predictor(), **{"trials": 60, **kw})


def test_finds_the_known_feasible_optimum():
    """FAST <= 4.5 ms with the 10 % interval inside means 1 + x <= 4.5 / 1.1, x <= 3; SLOW <= 9 ms means
    (1 + 2y) * 1.1 <= 9, y <= 3: the best feasible network is 3,3 (objective 6), and nothing better fits."""
    r = _search([f"{FAST}:latency_ms<=4.5", f"{SLOW}:latency_ms<=9"])
    assert r["best"]["key"] == "3,3" and r["best"]["objective"] == 6.0
    feasible = {c["key"] for c in r["ranked"]}
    assert all(int(k.split(",")[0]) <= 3 and int(k.split(",")[1]) <= 3 for k in feasible)
    assert r["measurements_used"] == 0 and r["verified"] == [] and r["pick"] is None


def test_budgets_on_several_platforms_combine():
    """Every candidate looked at is called feasible exactly when all three budgets hold for its upper bound."""
    budgets = [f"{FAST}:latency_ms<=5", f"{SLOW}:latency_ms<=12", f"{SLOW}:energy_mj<=6"]
    r = _search(budgets, pareto=True, top=100)
    limits = {(b.target, b.platform): b.limit for b in map(parse_budget, budgets)}
    for point in r["points"]:
        fits = all(v * 1.1 <= limits[k] for k, v in costs(point["key"]).items())
        assert point["feasible"] == fits, point
    assert {c["key"] for c in r["ranked"]} == {p["key"] for p in r["points"] if p["feasible"]}
    assert 0 < r["feasible"] < r["candidates"]
    only_fast = _search(budgets[:1])
    assert only_fast["best"]["objective"] > r["best"]["objective"], "a second platform's budget must bind"


def test_the_interval_rule_rejects_a_crossing_candidate():
    """5,5's value is inside every budget but its interval (+-50 %) crosses FAST's: rejected at risk 0 (the whole
    interval must fit), accepted at risk 1 (only its lower end must); 4,5 fits either way."""
    spread = {"5,5": 0.5}
    budgets = [f"{FAST}:latency_ms<=7", f"{SLOW}:latency_ms<=12.5"]
    strict = _search(budgets, Predictor(spread))
    assert strict["best"]["key"] in ("4,5", "5,4") and strict["best"]["objective"] == 9.0
    assert "5,5" not in {c["key"] for c in strict["ranked"]}
    loose = _search(budgets, Predictor(spread), risk=1.0)
    assert loose["best"]["key"] == "5,5" and loose["best"]["compared"][f"latency_ms@{FAST}"] == pytest.approx(3.0)
    half = _search(budgets, Predictor(spread), risk=0.5)  # the middle of the interval: the value, 6 ms
    assert half["best"]["compared"][f"latency_ms@{FAST}"] == pytest.approx(6.0)
    with pytest.raises(InvalidArgument, match="risk must be a number from 0"):
        _search(budgets, risk=1.5)


def test_verify_reports_a_broken_budget_and_measures_the_next():
    """The measured latency of 3,3 on SLOW is twice its prediction: it is reported as breaking that budget, and the
    next candidates are measured until two pass."""
    measured_batches = []

    def measure(candidates, budgets):
        measured_batches.append([c.key for c in candidates])
        out = []
        for c in candidates:
            truth = costs(c.key)
            if c.key == "3,3":
                truth[("latency_ms", SLOW)] *= 2
            out.append({b.name: truth[(b.target, b.platform)] for b in budgets})
        return out

    r = _search([f"{FAST}:latency_ms<=4.5", f"{SLOW}:latency_ms<=9"], verify=2, measure=measure)
    assert r["verified"][0]["key"] == "3,3" and not r["verified"][0]["passed"]
    assert r["verified"][0]["held"] == {f"latency_ms@{FAST}": True, f"latency_ms@{SLOW}": False}
    assert r["verified"][0]["measured"][f"latency_ms@{SLOW}"] == 14.0
    assert r["verified"][0]["predicted"][f"latency_ms@{SLOW}"]["value"] == 7.0
    assert [v["passed"] for v in r["verified"]] == [False, True, True]
    assert measured_batches[0] == ["3,3", r["verified"][1]["key"]] and len(measured_batches[1]) == 1
    assert r["pick"]["key"] == r["verified"][1]["key"] and r["pick"]["objective"] == 5.0
    assert r["measurements_used"] == 3 * 2, "three candidates on two platforms"
    assert r["measurements_if_all"] == r["candidates"] * 2


def test_verify_stops_when_the_candidates_run_out():
    def measure(candidates, budgets):
        return [{b.name: None for b in budgets} for _ in candidates]  # every run failed

    r = _search([f"{FAST}:latency_ms<=2.5"], verify=3, measure=measure, trials=30)
    assert len(r["verified"]) == r["feasible"] and not any(v["passed"] for v in r["verified"]) and r["pick"] is None


def test_resume_continues_a_stopped_search(tmp_path):
    """A search of 12 trials in a file, then the same call with 30: the first 12 trials are kept as they were,
    18 more are run, and no network predicted before is asked again."""
    db = tmp_path / "search.db"
    budgets = [f"{FAST}:latency_ms<=4.5", f"{SLOW}:latency_ms<=9"]
    first = Predictor()
    stopped = _search(budgets, first, trials=12, storage=db, seed=5)
    assert stopped["trials"] == 12 and db.is_file()
    second = Predictor()
    resumed = _search(budgets, second, trials=30, storage=db, seed=5)
    assert resumed["trials"] == 30
    assert not set(second.asked) & set(first.asked), "predictions of the stopped run come from the file"
    assert resumed["candidates"] == len(set(first.asked)) + len(set(second.asked))
    import optuna

    study = optuna.load_study(study_name="fleetmeter-search", storage=f"sqlite:///{db}")
    assert len(study.trials) == 30
    again = _search(budgets, Predictor(), trials=30, storage=db, seed=5)
    assert again["trials"] == 30 and again["candidates"] == resumed["candidates"], "nothing left to do"
    with pytest.raises(InvalidArgument, match="give another --study-name or --storage"):
        _search(budgets[:1], Predictor(), trials=40, storage=db)


def test_pareto_front():
    pts = [{"key": k, "objective": o, "compared": {"c": c}} for k, o, c in
           (("a", 1, 1.0), ("b", 3, 2.0), ("c", 2, 3.0), ("d", 5, 4.0), ("e", 5, 5.0))]
    assert [p["key"] for p in pareto_front(pts, "c")] == ["a", "b", "d"]
    assert [p["key"] for p in pareto_front(pts, "c", maximize=False)] == ["a"]


def test_budget_and_objective_errors(tmp_path):
    assert parse_budget("rpi5:latency_ms<=20") == Budget("rpi5", "latency_ms", 20.0)
    assert parse_budget("a/b/c:memory_bytes <= 2e8") == Budget("a/b/c", "peak_rss_bytes", 2e8)
    for bad, match in (("rpi5-latency<=3", "expected PLATFORM:TARGET<=VALUE"), ("p:speed<=3", "unknown target"),
                       ("p:latency_ms<=fast", "not a number")):
        with pytest.raises(InvalidArgument, match=match):
            parse_budget(bad)
    with pytest.raises(InvalidArgument, match="no budget"):
        _search([])
    with pytest.raises(InvalidArgument, match="two --budget values"):
        _search([f"{FAST}:latency_ms<=3", f"{FAST}:latency_ms<=4"])
    with pytest.raises(InvalidArgument, match="must be a positive number"):
        _search([f"{FAST}:latency_ms<=0"])
    table = tmp_path / "t.csv"
    table.write_text("arch_str,accuracy\n|none~0|+|none~0|none~1|+|none~0|none~1|none~2|,1.5\n")
    with pytest.raises(InvalidArgument, match=r"needs columns 'arch_str' and 'acc'"):
        hwsearch.make_objective(None, table, "acc")
    with pytest.raises(InvalidArgument, match="go together"):
        hwsearch.make_objective(None, table, None)
    with pytest.raises(InvalidArgument, match="--objective 'speed': give params, macs, or a table column"):
        hwsearch.make_objective("speed")
    with pytest.raises(InvalidArgument, match="no --objective: give params"):
        hwsearch.make_objective(None)
    label, score = hwsearch.make_objective(None, table, "accuracy")
    assert label == "accuracy"
    with pytest.raises(InvalidArgument, match="use --space nasbench201"):
        score(GridSpace().candidate({"x": 1, "y": 1}))
    with pytest.raises(InvalidArgument, match="unknown family 'nope'"):
        hwsearch.make_space("nope")


def test_nasbench201_space_and_table_objective(tmp_path):
    """The NB201 space's six edge parameters rebuild the same network; the table objective reads its row."""
    optuna = pytest.importorskip("optuna")
    pytest.importorskip("onnx")
    space = hwsearch.make_space("nasbench201")
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3)).ask()
    cand = space.suggest(trial)
    assert sorted(trial.params) == sorted(space.edges) and len(space.edges) == 6
    again = space.candidate(cand.params)
    assert again.key == cand.key and again.info == cand.info and cand.info["arch"] == cand.key
    assert cand.info["parameters"] > 0 and cand.info["macs"] > 0
    table = tmp_path / "t.csv"
    table.write_text(f"arch_str,accuracy_cifar100\n\"{cand.key}\",71.25\n")
    assert hwsearch.make_objective(None, table, "accuracy_cifar100")[1](cand) == 71.25
    json.dumps(cand.info)


def test_the_report_draws_the_front_and_the_verified_candidates(tmp_path):
    """``fleetmeter report --search FILE``'s section: one panel per budget, every candidate looked at (feasible and
    not), the front as the result gives it, the verified candidates at their measured cost, the budget's line."""
    pytest.importorskip("plotly")
    from fleetmeter import report

    def measure(candidates, budgets):
        return [{b.name: costs(c.key)[(b.target, b.platform)] * (3 if c.key == "3,3" else 1) for b in budgets}
                for c in candidates]

    budgets = [f"{FAST}:latency_ms<=4.5", f"{SLOW}:latency_ms<=9"]
    r = _search(budgets, verify=1, measure=measure, pareto=True)
    path = tmp_path / "result.json"
    path.write_text(json.dumps(r))
    loaded = report.load_search_result(path)
    data = report.ReportData(platforms=[], devices=[], rows=[], samples_ms={}, references=[], jobs={}, predictors=[],
                             accuracy={}, predictions={}, search=loaded)
    s = report.search_section(data, report.require_plotly())
    assert s.figure is not None and len(s.figure.layout.annotations) == 2  # the two panels' titles
    by_name = {}
    for trace in s.figure.data:
        by_name.setdefault(trace.name, []).append(trace)
    name = f"latency_ms@{SLOW}"
    feasible, over = by_name["within every budget"][1], by_name["over a budget"][1]
    assert len(feasible.x) + len(over.x) == r["candidates"] and len(feasible.x) == r["feasible"]
    assert list(by_name["Pareto front"][1].x) == [p["compared"][name] for p in r["pareto"][name]]
    broke = by_name["verified, broke a budget"][1]
    assert list(broke.text) == ["3,3"] and list(broke.x) == [21.0]
    assert list(by_name["verified, held"][1].text) == [r["pick"]["key"]]
    assert [shape.x0 for shape in s.figure.layout.shapes] == [4.5, 9]
    page = report.build_html(data)
    assert 'id="fig-search"' in page and report.outside_references(page) == []
    empty = report.search_section(report.ReportData([], [], [], {}, [], {}, [], {}, {}), report.require_plotly())
    assert empty.figure is None and "fleetmeter report --search RESULT.json" in empty.notes[0]
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(InvalidArgument, match="--search .*bad.json: not a search result"):
        report.load_search_result(tmp_path / "bad.json")


def test_the_cli_text_output(capsys):
    """``fleetmeter search`` without --json: the candidates within budgets, each verified one predicted vs measured,
    the pick and the measurements it took, the front."""
    from fleetmeter.search_cli import _print_result, parse_fixed

    def measure(candidates, budgets):
        return [{b.name: costs(c.key)[(b.target, b.platform)] * (3 if c.key == "3,3" else 1) for b in budgets}
                for c in candidates]

    r = _search([f"{FAST}:latency_ms<=4.5", f"{SLOW}:latency_ms<=9"], verify=1, measure=measure, pareto=True)
    _print_result(r)
    out = capsys.readouterr().out
    assert f"grid: 60 trials, {r['candidates']} networks predicted, {r['feasible']} within every budget" in out
    assert f"verified 3,3: BROKE A BUDGET  latency_ms@{FAST}: predicted 4 measured 12 OVER" in out
    assert f"pick: {r['pick']['key']} (objective 5); 4 device measurement(s) instead of {r['candidates'] * 2}" in out
    assert f"pareto latency_ms@{SLOW}: " in out
    assert parse_fixed(["input_size=96", "stem=cifar"]) == {"input_size": 96, "stem": "cifar"}
    with pytest.raises(InvalidArgument, match="expected NAME=VALUE"):
        parse_fixed(["input_size"])
