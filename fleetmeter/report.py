"""``fleetmeter report``: one self-contained HTML page of what a fleet measured and how well it predicts.

The page has one section per question: latency per model across platforms (a
heatmap), the samples of each reading (box plots), predicted vs measured per
platform (the ±10 % band and each prediction's interval), held-out accuracy of
the predictors next to the baselines, the platforms' noise ceilings, the drift
canary's readings over time, and the fleet (devices, state, last seen, jobs).

Everything comes through the public :class:`~fleetmeter.client.Client`; a
figure whose data the controller does not have (no predictor trained, no
repeat pair, no reference reading yet) is replaced by a note saying so, never
by invented numbers. Figures are plotly's (why: docs/report.md); plotly.js is
inlined once in the page, so the file opens with no network. plotly is an
optional dependency: ``pip install 'fleetmeter[report]'``.

:func:`collect` reads the data (:class:`ReportData`), one function per figure
turns it into a :class:`Section`, and :func:`build_html` assembles the page;
:func:`write_report` does all three.
"""
from __future__ import annotations

import html
import math
import os
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from fleetmeter._cli_common import noise_ceiling_dict, result_rows
from fleetmeter._extras import require
from fleetmeter.errors import FleetmeterError, InvalidArgument

__all__ = ["ReportData", "Section", "collect", "build_html", "write_report", "require_plotly", "check_out_path",
           "outside_references", "model_labels", "load_search_result"]

#: Relative band drawn around the diagonal of predicted vs measured (and the accuracy figure's threshold).
BAND = 0.10
#: A reading's samples beyond this many are thinned (evenly, every k-th) in the box plots; the page says so.
MAX_SAMPLES_PER_READING = 400
TARGET = "latency_ms"
PLOT_CONFIG = {"displaylogo": False, "responsive": True}
#: Neutral text (plotly_white's default is blue-grey): colour on the page is data.
TEXT_COLOUR = "#222222"
STATE_COLOURS = {"idle": "#b7e4c7", "busy": "#ffd6a5", "offline": "#dee2e6", "suspended": "#ffadad"}


def require_plotly():
    """plotly's ``graph_objects`` module; :class:`FailedPrecondition` naming the extra when it is missing."""
    return require("plotly.graph_objects", "fleetmeter report")


# ------------------------------------------------------------------ data
@dataclass
class ReportData:
    """What the page shows, read from the controller by :func:`collect`.

    ``rows``: :func:`~fleetmeter._cli_common.result_rows` of the selected readings (a sweep's jobs and
    repeats; reference readings are in ``references``); ``samples_ms``: each reading's samples by
    measurement id; ``references``: the drift canary's readings (``platform``, ``finished_at_unix``,
    ``median_ms``, ``flags``); ``jobs``: per agent id, ``done`` and ``failed`` readings (every kind);
    ``accuracy``: :func:`~fleetmeter.predict_cli.eval_rows` per split name; ``predictions``: the serving
    predictor's :class:`~fleetmeter.client.Prediction` per (platform, model sha256); ``notes``: per section
    key, what could not be shown and why."""

    platforms: list
    devices: list
    rows: List[dict]
    samples_ms: Dict[str, List[float]]
    references: List[dict]
    jobs: Dict[str, Counter]
    predictors: list
    accuracy: Dict[str, List[dict]]
    predictions: Dict[Tuple[str, str], Any]
    controller: str = ""
    sweep_id: str = ""
    generated_unix: float = field(default_factory=time.time)
    notes: Dict[str, List[str]] = field(default_factory=lambda: defaultdict(list))
    #: A ``fleetmeter search --pareto --json`` result (``report --search FILE``), or None.
    search: Optional[dict] = None


def _select_platforms(platforms: list, wanted: Sequence[str], sweep=None) -> list:
    """The platforms asked for (exact ids or unique prefixes), else the sweep's, else all."""
    if not wanted:
        if sweep is not None:
            return [p for p in platforms if p.platform_id in set(sweep.platform_ids)]
        return list(platforms)
    ids = [p.platform_id for p in platforms]
    chosen = []
    for w in wanted:
        matches = [i for i in ids if i == w] or [i for i in ids if i.startswith(w)]
        if len(matches) != 1:
            what = "no platform" if not matches else f"{len(matches)} platforms ({', '.join(matches)})"
            raise InvalidArgument(f"--platform {w!r} matches {what}; give a platform id or a unique prefix "
                                  f"(`fleetmeter platforms` lists them)")
        chosen.append(matches[0])
    return [p for p in platforms if p.platform_id in set(chosen)]


def _quiet(text: str) -> None:
    pass


def _say_to_stderr(text: str) -> None:
    print(f"report: {text}", file=sys.stderr, flush=True)


def collect(client, sweep_id: str = "", platforms: Sequence[str] = (),
            say: Optional[Callable[[str], None]] = _say_to_stderr) -> ReportData:
    """Read everything the page shows from the controller ``client`` speaks to (a
    :class:`~fleetmeter.client.Client`). ``sweep_id``: only that sweep's readings (and, without
    ``platforms``, its platforms); ``platforms``: ids or unique prefixes. ``say``: progress lines (None: quiet)."""
    from fleetmeter.predict_cli import eval_rows

    say = say or _quiet
    sweep = client.get_sweep(sweep_id) if sweep_id else None
    selected = _select_platforms(client.list_platforms(), platforms, sweep)
    ids = {p.platform_id for p in selected}
    say(f"reading the measurements{' of sweep ' + sweep_id if sweep_id else ''} ...")
    readings = client.list_measurements(sweep_id=sweep_id, include_samples=True)
    everything = client.list_measurements() if sweep_id else readings
    mine = [m for m in readings if m.platform_id in ids and m.job_kind != "reference"]
    jobs: Dict[str, Counter] = defaultdict(Counter)
    for m in everything:
        jobs[m.agent_id]["failed" if m.failure_kind else "done"] += 1
    predictors = [p for p in client.list_predictors(targets=[TARGET]) if p.platform in ids]
    data = ReportData(
        platforms=selected, devices=client.list_devices(), rows=result_rows(mine, client.list_models()),
        samples_ms={m.measurement_id: list(m.samples_ms) for m in mine}, jobs=jobs, predictors=predictors,
        references=[{"platform": m.platform_id, "finished_at_unix": m.finished_at_unix,
                     "median_ms": m.latency_ms.median, "flags": list(m.flags)}
                    for m in everything if m.job_kind == "reference" and m.platform_id in ids and not m.failure_kind],
        accuracy={split: eval_rows(predictors, split, selected) for split in ("random", "family")},
        predictions={}, controller=getattr(client, "address", ""), sweep_id=sweep_id)
    _predict_measured(client, data, say)
    return data


def _predict_measured(client, data: ReportData, say: Callable[[str], None]) -> None:
    """Ask the serving predictor of each platform for every model measured there (by sha256: the
    controller has the models); a model it cannot predict becomes a note."""
    from fleetmeter._term import ProgressBar

    served = {p.platform for p in data.predictors}
    wanted: Dict[str, set] = defaultdict(set)
    for r in data.rows:
        if not r["failure_kind"] and r["platform"] in served:
            wanted[r["model_sha256"]].add(r["platform"])
    if not wanted:
        return
    say(f"asking the predictors about {len(wanted)} measured model(s) ...")
    names = model_labels(data.rows)
    bar = ProgressBar(len(wanted), stream=sys.stderr) if say is not _quiet else None
    for i, (sha, platform_ids) in enumerate(sorted(wanted.items()), 1):
        try:
            for p in client.predict_sha256(sha, sorted(platform_ids), [TARGET]):
                data.predictions[(p.platform, sha)] = p
        except FleetmeterError as exc:
            data.notes["predicted"].append(f"no prediction for {names[sha]}: {type(exc).__name__}: {exc}")
        if bar is not None:
            bar.update(i, final=i == len(wanted))


# ------------------------------------------------------------------ figures
@dataclass
class Section:
    """One part of the page: a title, what the figure shows, notes on what is missing, and the figure
    (None when there is nothing to draw: the notes say why)."""

    key: str
    title: str
    caption: str
    figure: Any = None
    notes: List[str] = field(default_factory=list)


#: Each section's title and caption, in page order (the figure functions below fill them in).
SECTION_TEXT = {
    "latency": ("Latency per model across platforms",
                "Median latency (ms) of each model on each platform: the median of its readings' medians when "
                "it was measured more than once. The colour scale is logarithmic."),
    "samples": ("Distribution of each reading's samples",
                "One box per reading (median, quartiles, whiskers to 1.5 IQR, points beyond) of its per-run "
                "latencies, one panel per platform; a model measured again (a repeat sample) has one box per "
                "reading."),
    "predicted": ("Predicted vs measured",
                  f"Per platform, the serving predictor's latency for each measured model against the measured "
                  f"median (log-log). The dashed lines are the ±{BAND:.0%} band around the diagonal; error bars "
                  "are the prediction interval (its level is in the hover). A predictor is trained on the "
                  "platform's measured models, so these points include its training data: the held-out "
                  "accuracy is the next section's."),
    "accuracy": ("Accuracy of the predictors vs the baselines",
                 f"Share of held-out models predicted within ±{BAND:.0%} (recorded when each predictor was "
                 "trained, on models it did not see), per method, next to the platform's noise ceiling at "
                 "training (the share of repeat pairs that agree within ±10 %: no predictor can do better)."),
    "noise": ("Noise ceilings",
              "Share of repeat pairs (the same model measured twice on the platform, repeat samples and "
              "reference readings included) whose medians agree within ±5 % and ±10 %, now. Above each bar: "
              "the number of pairs."),
    "drift": ("Drift over time",
              "The drift canary's readings of each platform's reference model: each median relative to the "
              "median of all the platform's reference readings (0 % = typical). Crosses are readings flagged "
              "unstable or disturbed."),
    "search": ("Hardware-aware search: objective vs cost",
               "From the search result given with --search: per budget, every candidate the search looked at, "
               "its objective against the cost the budget compares (the prediction interval's end allowed by "
               "--risk); the line is the Pareto front (no other candidate has a better objective at a lower "
               "cost), the dashed line the budget, the stars the verified candidates at their measured cost "
               "(green held every budget, red broke one)."),
    "fleet": ("Fleet",
              "Every device the controller knows: its state, when it was last seen, and the readings it "
              "delivered (all kinds: sweeps, repeats, reference readings)."),
}


def _section(key: str) -> Section:
    title, caption = SECTION_TEXT[key]
    return Section(key, title, caption)


def _utc(unix: float) -> str:
    return datetime.fromtimestamp(unix, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _tick(platform_id: str) -> str:
    """A platform id as an axis label: one line per part."""
    return html.escape(platform_id).replace("/", "/<br>")


def _by_platform(items: Iterable[dict]) -> Dict[str, List[dict]]:
    """Records (with a ``platform`` key) grouped by platform, each group in the order given."""
    out: Dict[str, List[dict]] = defaultdict(list)
    for r in items:
        out[r["platform"]].append(r)
    return out


def model_labels(rows: Iterable[dict]) -> Dict[str, str]:
    """Model sha256 → its name, with the sha256's first 8 digits added where two models share a name (an
    axis would merge them)."""
    names = {r["model_sha256"]: r["model"] for r in rows}
    shared = {n for n, k in Counter(names.values()).items() if k > 1}
    return {sha: f"{n} [{sha[:8]}]" if n in shared else n for sha, n in names.items()}


def _ok_medians(data: ReportData) -> Dict[Tuple[str, str], List[float]]:
    """(model sha256, platform) → the medians of its successful readings."""
    out: Dict[Tuple[str, str], List[float]] = defaultdict(list)
    for r in data.rows:
        if not r["failure_kind"]:
            out[(r["model_sha256"], r["platform"])].append(r["median_ms"])
    return out


def latency_section(data: ReportData, go) -> Section:
    s = _section("latency")
    medians = _ok_medians(data)
    failed = {(r["model_sha256"], r["platform"]): r["failure_kind"] for r in data.rows if r["failure_kind"]}
    names = model_labels(data.rows)
    models = sorted(names, key=lambda sha: names[sha])
    platforms = [p.platform_id for p in data.platforms if any(r["platform"] == p.platform_id for r in data.rows)]
    if not models:
        s.notes.append("no readings for the selected sweep and platforms")
        return s
    z, text = [], []
    for sha in models:
        cells = [statistics.median(medians[(sha, p)]) if (sha, p) in medians else None for p in platforms]
        z.append([math.log10(v) if v else None for v in cells])
        text.append([f"{v:.3g} ms" if v else (f"failed: {failed[(sha, p)]}" if (sha, p) in failed else "")
                     for v, p in zip(cells, platforms)])
    finite = [v for row in z for v in row if v is not None]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    ticks = [lo + (hi - lo) * k / 4 for k in range(5)]
    s.figure = go.Figure(go.Heatmap(
        z=z, x=[_tick(p) for p in platforms], y=[names[sha] for sha in models], text=text,
        texttemplate="%{text}", hovertemplate="%{y}<br>%{x}<br>%{text}<extra></extra>", colorscale="Viridis",
        colorbar=dict(title="median ms", tickvals=ticks, ticktext=[f"{10 ** t:.3g}" for t in ticks])))
    s.figure.update_layout(height=max(320, 120 + 28 * len(models)), xaxis_title="platform", yaxis_title="model")
    if failed:
        s.notes.append(f"{len(failed)} model/platform pair(s) failed; their cells say how")
    return s


def _thin(samples: List[float]) -> List[float]:
    step = max(1, math.ceil(len(samples) / MAX_SAMPLES_PER_READING))
    return samples[::step]


def samples_section(data: ReportData, go) -> Section:
    from plotly.subplots import make_subplots

    s = _section("samples")
    by_platform = _by_platform(r for r in data.rows
                               if not r["failure_kind"] and data.samples_ms.get(r["measurement_id"]))
    panels = [p.platform_id for p in data.platforms if by_platform.get(p.platform_id)]
    if not panels:
        s.notes.append("no reading with samples for the selected sweep and platforms")
        return s
    s.figure = make_subplots(rows=len(panels), cols=1, subplot_titles=[html.escape(p) for p in panels],
                             vertical_spacing=min(0.12, 0.5 / len(panels)))
    thinned, names = 0, model_labels(data.rows)
    for i, pid in enumerate(panels, 1):
        xs, ys, seen = [], [], Counter()
        for r in sorted(by_platform[pid], key=lambda r: (names[r["model_sha256"]], r["measurement_id"])):
            name = names[r["model_sha256"]]
            seen[name] += 1
            label = name + (f" ({seen[name]})" if seen[name] > 1 else "")
            samples = data.samples_ms[r["measurement_id"]]
            thinned += len(samples) > MAX_SAMPLES_PER_READING
            kept = _thin(samples)
            xs += [label] * len(kept)
            ys += kept
        s.figure.add_trace(go.Box(x=xs, y=ys, name=pid, boxpoints="outliers", marker_size=3, showlegend=False),
                           row=i, col=1)
        s.figure.update_yaxes(type="log", title_text="ms", row=i, col=1)
    s.figure.update_layout(height=120 + 360 * len(panels))
    if thinned:
        s.notes.append(f"{thinned} reading(s) have more than {MAX_SAMPLES_PER_READING} samples: every k-th "
                       "is drawn so that the page stays small")
    return s


def _band_traces(go, lo: float, hi: float, showlegend: bool) -> list:
    """The diagonal and the ±BAND lines over [lo, hi]."""
    xs = [lo, hi]
    return [go.Scatter(x=xs, y=[x * f for x in xs], mode="lines", name=name, legendgroup=name,
                       showlegend=showlegend and f != 1 - BAND, hoverinfo="skip",
                       line=dict(color=colour, dash=dash, width=1))
            for f, name, colour, dash in ((1.0, "measured = predicted", "#555555", "solid"),
                                          (1.0 + BAND, f"±{BAND:.0%} band", "#e76f51", "dash"),
                                          (1.0 - BAND, f"±{BAND:.0%} band", "#e76f51", "dash"))]


def _predicted_points(data: ReportData, pid: str) -> List[Tuple[str, float, Any]]:
    """(model name, measured median ms, prediction) of each model measured on ``pid`` and predicted."""
    medians = _ok_medians(data)
    names = model_labels(data.rows)
    return sorted((names[sha], statistics.median(medians[(sha, p)]), pred)
                  for (p, sha), pred in data.predictions.items() if p == pid and (sha, p) in medians)


def predicted_section(data: ReportData, go) -> Section:
    from plotly.subplots import make_subplots

    s = _section("predicted")
    s.notes += data.notes.get("predicted", [])
    served = {p.platform for p in data.predictors}
    panels = []
    for p in data.platforms:
        points = _predicted_points(data, p.platform_id)
        if p.platform_id not in served:
            s.notes.append(f"no predictor trained for {p.platform_id} (`fleetmeter train`)")
        elif not points:
            s.notes.append(f"no measured model of this selection could be predicted on {p.platform_id}")
        else:
            panels.append((p.platform_id, points))
    if not panels:
        return s
    titles = [f"{html.escape(pid)}: {sum(abs(pr.value / m - 1) <= BAND for _, m, pr in pts)}/{len(pts)} "
              f"within ±{BAND:.0%}" for pid, pts in panels]
    s.figure = make_subplots(rows=len(panels), cols=1, subplot_titles=titles,
                             vertical_spacing=min(0.12, 0.5 / len(panels)))
    for i, (pid, points) in enumerate(panels, 1):
        values = [v for _, m, pr in points for v in (m, pr.value, pr.lower, pr.upper) if v]
        for trace in _band_traces(go, min(values) / 1.2, max(values) * 1.2, showlegend=i == 1):
            s.figure.add_trace(trace, row=i, col=1)
        s.figure.add_trace(go.Scatter(
            x=[m for _, m, _ in points], y=[pr.value for _, _, pr in points], mode="markers", showlegend=False,
            name=pid, marker=dict(size=9, color="#1d3557"),
            text=[f"{html.escape(n)}<br>interval {pr.interval_level:.0%}, v{pr.predictor_version} {pr.method}"
                  for n, _, pr in points],
            hovertemplate="%{text}<br>measured %{x:.3g} ms<br>predicted %{y:.3g} ms<extra></extra>",
            error_y=dict(type="data", symmetric=False,
                         array=[(pr.upper - pr.value) if pr.upper is not None else 0 for _, _, pr in points],
                         arrayminus=[(pr.value - pr.lower) if pr.lower is not None else 0 for _, _, pr in points])),
            row=i, col=1)
        s.figure.update_xaxes(type="log", title_text="measured ms", row=i, col=1)
        s.figure.update_yaxes(type="log", title_text="predicted ms", row=i, col=1)
    s.figure.update_layout(height=120 + 420 * len(panels))
    return s


def _percent(share: Optional[float]) -> float:
    """A share as a percentage; NaN (plotly draws nothing) when it is unknown."""
    return float("nan") if share is None else 100.0 * share


def accuracy_section(data: ReportData, go) -> Section:
    from plotly.subplots import make_subplots

    from fleetmeter.predict_cli import METHODS

    s = _section("accuracy")
    if not data.predictors:
        s.notes.append("no predictor trained for the selected platforms (`fleetmeter train`)")
        return s
    titles = {"random": "random 80/20 split", "family": "leave-one-family-out"}
    splits = [k for k in ("random", "family") if any(r["methods"] for r in data.accuracy.get(k, []))]
    if "family" not in splits:
        s.notes.append("no leave-one-family-out evaluation recorded (trained with --no-family-split, or one family)")
    if not splits:
        s.notes.append("the predictors record no held-out evaluation")
        return s
    s.figure = make_subplots(rows=1, cols=len(splits), subplot_titles=[titles[k] for k in splits], shared_yaxes=True)
    colours = ["#1d3557", "#457b9d", "#2a9d8f", "#8ab17d", "#e9c46a", "#e76f51"]
    for col, split in enumerate(splits, 1):
        rows = data.accuracy[split]
        x = [_tick(r["platform"]) for r in rows]
        for (name, label), colour in zip(METHODS, colours):
            y = [_percent((r["methods"].get(name) or {}).get("acc_10")) for r in rows]
            if any(not math.isnan(v) for v in y):
                s.figure.add_trace(go.Bar(x=x, y=y, name=label, legendgroup=name, showlegend=col == 1,
                                          marker_color=colour, hovertemplate="%{y:.0f}%<extra>" + label + "</extra>"),
                                   row=1, col=col)
        ceiling = [_percent((r["noise_ceiling"] or {}).get("share_within_10")) for r in rows]
        s.figure.add_trace(go.Scatter(x=x, y=ceiling, mode="markers", name="noise ceiling at training",
                                      legendgroup="ceiling", showlegend=col == 1,
                                      marker=dict(symbol="line-ew-open", size=40, color="#d62828", line_width=3)),
                           row=1, col=col)
    s.figure.update_layout(barmode="group", height=480, yaxis_title=f"% within ±{BAND:.0%}")
    s.figure.update_yaxes(range=[0, 105])
    return s


def noise_section(data: ReportData, go) -> Section:
    s = _section("noise")
    ceilings = [(p.platform_id, noise_ceiling_dict(p)) for p in data.platforms]
    for pid, c in ceilings:
        if not c["pairs"]:
            s.notes.append(f"no repeat pair yet on {pid} (a sweep's repeat_sample re-measures some models)")
    shown = [(pid, c) for pid, c in ceilings if c["pairs"]]
    if not shown:
        return s
    x = [_tick(pid) for pid, _ in shown]
    s.figure = go.Figure([go.Bar(x=x, y=[100 * c[key] for _, c in shown], name=label, marker_color=colour,
                                 text=[f"{c['pairs']} pairs" for _, c in shown], textposition="outside")
                          for key, label, colour in (("within_5", "within ±5 %", "#457b9d"),
                                                     ("within_10", "within ±10 %", "#2a9d8f"))])
    s.figure.update_layout(barmode="group", height=440, yaxis=dict(title="% of repeat pairs", range=[0, 115]))
    return s


def drift_section(data: ReportData, go) -> Section:
    s = _section("drift")
    by_platform = _by_platform(sorted(data.references, key=lambda r: r["finished_at_unix"]))
    traces = []
    for p in data.platforms:
        refs = by_platform.get(p.platform_id, [])
        if not refs:
            s.notes.append(f"no reference reading yet for {p.platform_id} (the canary is off or has not run)")
            continue
        if len(refs) == 1:
            s.notes.append(f"one reference reading so far for {p.platform_id}: drift shows from the second on")
        typical = statistics.median(r["median_ms"] for r in refs)
        traces.append(go.Scatter(
            x=[_utc(r["finished_at_unix"]) for r in refs], y=[100 * (r["median_ms"] / typical - 1) for r in refs],
            mode="lines+markers", name=p.platform_id, showlegend=True,
            marker=dict(size=12, symbol=["x" if r["flags"] else "circle" for r in refs]),
            text=[f"{r['median_ms']:.3g} ms {' '.join(r['flags'])}" for r in refs],
            hovertemplate="%{x}<br>%{y:+.1f}%<br>%{text}<extra>" + html.escape(p.platform_id) + "</extra>"))
    if traces:
        s.figure = go.Figure(traces)
        s.figure.update_layout(height=440, xaxis_title="time (UTC)", yaxis_title="drift (%)",
                               legend=dict(orientation="h", y=-0.25))
    return s


def fleet_section(data: ReportData, go) -> Section:
    s = _section("fleet")
    if not data.devices:
        s.notes.append("no device has enrolled yet")
        return s
    devices = sorted(data.devices, key=lambda d: d.name)
    columns = {"device": [d.name for d in devices], "agent id": [d.agent_id for d in devices],
               "state": [d.state + (f" ({d.suspended_reason})" if d.suspended_reason else "") for d in devices],
               "last seen (UTC)": [_utc(d.last_seen_unix) if d.last_seen_unix else "-" for d in devices],
               "jobs done": [data.jobs.get(d.agent_id, Counter())["done"] for d in devices],
               "failed": [data.jobs.get(d.agent_id, Counter())["failed"] for d in devices],
               "platforms": ["<br>".join(map(html.escape, d.platform_ids)) for d in devices]}
    fill = [STATE_COLOURS.get(d.state, "#ffffff") for d in devices]
    s.figure = go.Figure(go.Table(
        columnwidth=[2, 3, 2, 3, 1, 1, 6],
        header=dict(values=[f"<b>{c}</b>" for c in columns], fill_color="#1d3557", font=dict(color="white")),
        cells=dict(values=[[html.escape(str(v)) if k != "platforms" else v for v in vals]
                           for k, vals in columns.items()],
                   fill_color=[fill] * len(columns), align="left", height=26)))
    s.figure.update_layout(height=140 + 60 * len(devices))
    return s


def _search_traces(go, result: dict, budget: dict, showlegend: bool) -> list:
    name, points = budget["name"], result.get("points") or []
    front = (result.get("pareto") or {}).get(name, [])
    traces = []
    for feasible in (True, False):
        chosen = [p for p in points if p["feasible"] == feasible]
        traces.append(go.Scatter(x=[p["compared"][name] for p in chosen], y=[p["objective"] for p in chosen],
                                 mode="markers", name="within every budget" if feasible else "over a budget",
                                 legendgroup=str(feasible), showlegend=showlegend, text=[p["key"] for p in chosen],
                                 marker=dict(color="#4c78a8" if feasible else "#bbbbbb", size=7),
                                 hovertemplate="%{text}<br>cost %{x:.4g}<br>objective %{y:.6g}<extra></extra>"))
    traces.append(go.Scatter(x=[p["compared"][name] for p in front], y=[p["objective"] for p in front],
                             mode="lines", line=dict(color="#222222", shape="hv"), name="Pareto front",
                             legendgroup="front", showlegend=showlegend, hoverinfo="skip"))
    for passed in (True, False):
        chosen = [v for v in result.get("verified") or [] if v["passed"] == passed
                  and v["measured"].get(name) is not None]
        traces.append(go.Scatter(x=[v["measured"][name] for v in chosen], y=[v["objective"] for v in chosen],
                                 mode="markers", name="verified, held" if passed else "verified, broke a budget",
                                 legendgroup=f"v{passed}", showlegend=showlegend, text=[v["key"] for v in chosen],
                                 marker=dict(symbol="star", size=14, color="#2ca02c" if passed else "#d62728"),
                                 hovertemplate="%{text}<br>measured %{x:.4g}<extra></extra>"))
    return traces


def search_section(data: ReportData, go) -> Section:
    from plotly.subplots import make_subplots

    s = _section("search")
    result = data.search
    if not result:
        s.notes.append("no search result given (fleetmeter search --pareto --json > RESULT.json, then "
                       "fleetmeter report --search RESULT.json)")
        return s
    budgets = result["budgets"]
    s.caption = (f"{result['space']}, objective {result['objective']} ({result['direction']}), "
                 f"{result['candidates']} candidates, risk {result['risk']:g}. " + s.caption)
    s.figure = make_subplots(rows=1, cols=len(budgets), subplot_titles=[html.escape(b["name"]) for b in budgets])
    for i, b in enumerate(budgets, 1):
        for trace in _search_traces(go, result, b, showlegend=i == 1):
            s.figure.add_trace(trace, row=1, col=i)
        s.figure.add_vline(x=b["limit"], line_dash="dash", line_color="#d62728", row=1, col=i)
        s.figure.update_xaxes(title_text=b["target"], row=1, col=i)
    s.figure.update_yaxes(title_text=result["objective"], row=1, col=1)
    s.figure.update_layout(height=460, legend=dict(orientation="h", y=-0.25))
    return s


def load_search_result(path: str | os.PathLike) -> dict:
    """A ``fleetmeter search --pareto --json`` result file; InvalidArgument naming the flag when it is not one."""
    import json

    try:
        result = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"--search {path}: not a readable JSON file ({exc})") from None
    if not isinstance(result, dict) or "budgets" not in result or "points" not in result:
        raise InvalidArgument(f"--search {path}: not a search result with its points; write one with "
                              "fleetmeter search ... --pareto --json > FILE")
    return result


SECTIONS = (latency_section, samples_section, predicted_section, accuracy_section, noise_section, drift_section,
            search_section, fleet_section)


# ------------------------------------------------------------------ page
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #1b1b1b; }
h1 { margin-bottom: 0.2em; } .meta { color: #555; } section { margin-top: 2.5em; }
.caption { color: #333; } .notes { color: #8a4b08; } .plot { width: 100%; }
"""


def build_html(data: ReportData) -> str:
    """The whole page: plotly.js inlined once, then one section per figure."""
    go = require_plotly()
    from plotly.offline import get_plotlyjs

    sections = [make(data, go) for make in SECTIONS]
    parts = []
    for s in sections:
        parts.append(f'<section id="{s.key}"><h2>{html.escape(s.title)}</h2>'
                     f'<p class="caption">{html.escape(s.caption)}</p>')
        if s.notes:
            parts.append('<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in s.notes) + "</ul>")
        if s.figure is not None:
            s.figure.update_layout(template="plotly_white", font=dict(color=TEXT_COLOUR), margin=dict(t=60, b=60))
            div = s.figure.to_html(full_html=False, include_plotlyjs=False, config=PLOT_CONFIG, div_id=f"fig-{s.key}")
            parts.append(f'<div class="plot">{div}</div>')
        parts.append("</section>")
    ok = sum(1 for r in data.rows if not r["failure_kind"])
    meta = (f"controller {html.escape(data.controller or '-')} · "
            f"{'sweep ' + html.escape(data.sweep_id) if data.sweep_id else 'all sweeps'} · "
            f"{len(data.platforms)} platform(s) · {ok} reading(s), {len(data.rows) - ok} failed · "
            f"{len(data.predictors)} predictor(s) · generated {_utc(data.generated_unix)} UTC")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>fleetmeter report</title>"
            f"<style>{_STYLE}</style><script>{get_plotlyjs()}</script></head><body>"
            f"<h1>fleetmeter report</h1><p class=\"meta\">{meta}</p>" + "".join(parts) + "</body></html>\n")


class _References(HTMLParser):
    """Every ``src``/``href`` attribute of a page's tags (a script's text is data, not tags)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: List[str] = []

    def handle_starttag(self, tag: str, attrs) -> None:
        self.found += [value for name, value in attrs if name in ("src", "href") and value]


def outside_references(page: str) -> List[str]:
    """The ``src``/``href`` values of ``page`` that would need the network (an http(s) or protocol-relative
    address); empty for a page that opens offline."""
    parser = _References()
    parser.feed(page)
    parser.close()
    return [v for v in parser.found if v.strip().lower().startswith(("http:", "https:", "//"))]


def check_out_path(out: str | os.PathLike) -> Path:
    """``out`` as a Path; :class:`InvalidArgument` (naming ``--out``) when its folder does not exist."""
    out = Path(out)
    if not out.parent.is_dir() or out.is_dir():
        raise InvalidArgument(f"--out {out}: {'is a folder' if out.is_dir() else 'its folder does not exist'}; "
                              "give the path of the HTML file to write")
    return out


def write_report(client, out: str | os.PathLike, sweep_id: str = "", platforms: Sequence[str] = (),
                 quiet: bool = False, search: Optional[dict] = None) -> ReportData:
    """Collect, build and write the page to ``out`` (atomically); returns what it showed. ``search``: a
    search result (:func:`load_search_result`) to draw."""
    require_plotly()
    out = check_out_path(out)
    data = collect(client, sweep_id, platforms, say=_quiet if quiet else _say_to_stderr)
    data.search = search
    page = build_html(data)
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".html", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
        os.chmod(tmp, 0o644)  # a page to share, not a secret (mkstemp makes it 0600)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return data
