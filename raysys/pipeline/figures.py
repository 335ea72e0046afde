"""Report figures: one PNG per run, several panels, from a run's ``result.json`` data.

Two layers, so the data is testable without drawing: :func:`method_panels` turns the result
into :class:`Panel` data (pure), :func:`draw_panels` draws them with matplotlib's Agg canvas
(imported lazily; no pyplot, so no global backend state) and writes a sidecar JSON beside the
PNG listing the panel titles actually drawn and their numbers.

Panels read structured data only: each row's ``tags`` (``beta``, ``best_of``, ``iteration``,
``branch``; written by the recipe), ``maj_k`` / ``maj_acc``, and ``extra["test_time"]`` round
tables; never row names or section headings. Which panels a figure has is the recipe's layout
(``result["layout"]["panels"]``, from its record); without one, every panel with data.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from raysys.grading.metrics import wilson_interval

TT_MODES = ("last", "majority")      # "pass" is an upper bound, not a decoder: left off the plot


@dataclass
class Series:
    """One line (or the bars) of a panel: accuracies in [0, 1] with their 95% interval."""

    label: str
    x: list[Any]
    y: list[float]
    lo: list[float]
    hi: list[float]
    notes: list[str] = field(default_factory=list)    # a text per point (e.g. round number)


@dataclass
class Panel:
    """One axes: ``kind`` is ``bar`` (categorical x, one series) or ``line`` (numeric x)."""

    title: str
    kind: str
    xlabel: str
    ylabel: str
    series: list[Series]


def row_interval(correct: int, n: int) -> tuple[float, float, float]:
    """Accuracy and its Wilson 95% interval; ``(0, 0, 0)`` for a row with no problems."""
    if n <= 0:
        return 0.0, 0.0, 0.0
    lo, hi = wilson_interval(correct, n)
    return correct / n, lo, hi


def _series(label: str, points: Sequence[tuple[Any, int, int]], notes: Sequence[str] = ()) -> Series:
    """A series from ``(x, correct, n)`` points."""
    accs = [row_interval(c, n) for _, c, n in points]
    return Series(label, [x for x, _, _ in points], [a[0] for a in accs], [a[1] for a in accs],
                  [a[2] for a in accs], list(notes))


def accuracy_bars(evals: Sequence[Mapping[str, Any]]) -> Panel:
    """Greedy accuracy of every row, with Wilson 95% whiskers."""
    pts = [(str(r["model"]), int(r["correct"]), int(r["n"])) for r in evals]
    return Panel("Greedy accuracy (95% CI)", "bar", "model", "accuracy (%)", [_series("greedy", pts)])


def _tag(row: Mapping[str, Any], name: str) -> Any:
    return (row.get("tags") or {}).get(name)


def beta_panel(evals: Sequence[Mapping[str, Any]]) -> Panel | None:
    """Greedy accuracy against the rows' ``beta`` tag (0: plain decoding). None without a row
    guided by a beta above 0."""
    pts = [(float(_tag(r, "beta")), int(r["correct"]), int(r["n"])) for r in evals
           if _tag(r, "beta") is not None]
    if not any(b > 0 for b, _, _ in pts):
        return None
    return Panel("Accuracy vs beta", "line", "beta (0 = plain)", "accuracy (%)",
                 [_series("guided greedy", sorted(pts))])


def k_panel(evals: Sequence[Mapping[str, Any]]) -> Panel | None:
    """Greedy (k=1) against maj@k per decoder, and best-of-k rows (``best_of`` tag). None when
    neither exists."""
    series = []
    for r in evals:
        n, name = int(r["n"]), str(r["model"])
        if r.get("maj_acc") is not None and r.get("maj_k"):
            maj = round(float(r["maj_acc"]) * n)
            series.append(_series(f"{name} maj@k", [(1, int(r["correct"]), n), (int(r["maj_k"]), maj, n)]))
        elif _tag(r, "best_of") is not None:
            series.append(_series(name, [(int(_tag(r, "best_of")), int(r["correct"]), n)]))
    if not series:
        return None
    return Panel("Accuracy vs k (k=1: greedy)", "line", "k (samples)", "accuracy (%)", series)


def iteration_panel(evals: Sequence[Mapping[str, Any]]) -> Panel | None:
    """Accuracy per iteration (``iteration`` tag) for each ``branch``; a row of iteration 0
    without a branch (the model every branch starts from) begins each branch's line."""
    by_branch: dict[str, list[tuple[int, int, int]]] = {}
    start = None
    for r in evals:
        t, branch = _tag(r, "iteration"), _tag(r, "branch")
        if t is None:
            continue
        pt = (int(t), int(r["correct"]), int(r["n"]))
        if branch is None:
            start = pt if int(t) == 0 else start
        else:
            by_branch.setdefault(str(branch), []).append(pt)
    if not by_branch:
        return None
    series = [_series(b, ([start] if start else []) + sorted(pts)) for b, pts in by_branch.items()]
    return Panel("Accuracy per iteration", "line", "iteration (0 = starting model)",
                 "accuracy (%)", series)


def rounds_panel(tables: Mapping[str, Sequence[Mapping[str, float]]]) -> Panel | None:
    """Test-time critique -> refine: accuracy after each round against cumulative tokens."""
    series = []
    for gate, table in tables.items():
        for mode in TT_MODES:
            if not table or mode not in table[0]:
                continue
            series.append(Series(f"{gate}-gated, {mode}", [float(r["tokens_total"]) for r in table],
                                 [float(r[mode]) for r in table], [float(r[f"{mode}_lo"]) for r in table],
                                 [float(r[f"{mode}_hi"]) for r in table],
                                 # round labels once per gate: the modes share their x
                                 [f"r{int(r['round'])}" for r in table] if mode == TT_MODES[0] else []))
    if not series:
        return None
    return Panel("Test-time rounds: accuracy vs tokens", "line", "tokens generated (cumulative)",
                 "accuracy (%)", series)


def round_tables(result: Mapping[str, Any]) -> dict[str, list[dict[str, float]]]:
    """Per gate, the test-time round table the recipe stored in ``extra["test_time"]``."""
    stored = (result.get("extra") or {}).get("test_time") or {}
    return {str(g): list(t) for g, t in stored.items()}


# The panels a recipe's record may name (its layout's ``panels``), each a function of the
# result returning None when the result has no data for it.
PANELS: dict[str, Callable[[Mapping[str, Any]], Panel | None]] = {
    "beta": lambda result: beta_panel(result.get("evals") or []),
    "k": lambda result: k_panel(result.get("evals") or []),
    "iterations": lambda result: iteration_panel(result.get("evals") or []),
    "rounds": lambda result: rounds_panel(round_tables(result)),
}


def method_panels(result: Mapping[str, Any]) -> list[Panel]:
    """The panels of a run's figure: the accuracy bars, then the panels its layout names (every
    panel with data when it names none)."""
    evals = result.get("evals") or []
    names = (result.get("layout") or {}).get("panels")
    panels = [accuracy_bars(evals)] + [PANELS[n](result) for n in (PANELS if names is None else names)]
    return [p for p in panels if p is not None]


def _draw(ax: Any, panel: Panel) -> None:
    ax.set_title(panel.title)
    ax.set_xlabel(panel.xlabel)
    ax.set_ylabel(panel.ylabel)
    top = max([hi for s in panel.series for hi in s.hi] + [0.05])
    ax.set_ylim(0, min(105.0, 100 * top * 1.15 + 2))    # zoom on small accuracies, whiskers kept
    ax.grid(axis="y", alpha=0.3)
    xs = [float(x) for s in panel.series for x in s.x] if panel.kind == "line" else []
    # series sharing an x (k=3 for every decoder) get a small sideways shift so whiskers show
    step = 0.012 * ((max(xs) - min(xs)) or 1.0) if xs else 0.0
    for i, s in enumerate(panel.series):
        y = [100 * v for v in s.y]
        err = [[100 * (v - lo) for v, lo in zip(s.y, s.lo)], [100 * (hi - v) for v, hi in zip(s.y, s.hi)]]
        if panel.kind == "bar":
            ax.bar(range(len(y)), y, yerr=err, capsize=4, color="tab:blue", alpha=0.8)
            ax.set_xticks(range(len(y)), [str(x) for x in s.x], rotation=30, ha="right", fontsize=8)
            for i, v in enumerate(y):
                ax.annotate(f"{v:.1f}", (i, v), textcoords="offset points", xytext=(6, 2), fontsize=7)
        else:
            x_at = [float(x) + step * (i - (len(panel.series) - 1) / 2) for x in s.x]
            ax.errorbar(x_at, y, yerr=err, marker="o", capsize=3, label=s.label)
            for x, v, note in zip(x_at, y, s.notes):
                ax.annotate(note, (x, v), textcoords="offset points", xytext=(3, 4), fontsize=7)
    if panel.kind == "line":
        from matplotlib.ticker import MaxNLocator

        if all(float(x).is_integer() for x in xs):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))   # iterations, k, tokens
        ax.legend(fontsize=7)


def draw_panels(panels: Sequence[Panel], png: str | Path, *, suptitle: str = "") -> dict[str, Any]:
    """Draw the panels side by side into ``png``; writes ``<png stem>.json`` beside it with the
    drawn axes' titles and the panel data. Returns that sidecar's content."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not panels:
        raise ValueError(f"{png}: no panels to draw")
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(5.2 * len(panels), 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels):
        _draw(ax, panel)
    if suptitle:
        fig.suptitle(suptitle)
    tmp = png.with_name(png.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=110)
    tmp.replace(png)      # atomic: a reader never sees half a PNG
    side = {"png": png.name, "panels": [ax.get_title() for ax in fig.axes],
            "data": [asdict(p) for p in panels]}
    from raysys.data.io import atomic_write_text
    atomic_write_text(png.with_suffix(".json"), json.dumps(side, indent=1))
    return side


def write_method_figure(result: Mapping[str, Any], figures_dir: str | Path) -> Path:
    """``figures_dir/<method>.png`` (+ sidecar JSON) for a run's result (the recipe's name
    names the file); returns the PNG path."""
    method = str(result.get("method") or "run")
    png = Path(figures_dir) / f"{method}.png"
    draw_panels(method_panels(result), png, suptitle=str(result.get("title") or ""))
    return png
