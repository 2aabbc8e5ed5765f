"""Report plots: matplotlib figures rendered by Agg (Figure + FigureCanvasAgg, never pyplot, so no
display is needed and the caller's backend is untouched), embedded as base64 PNG.

Each builder returns a Plot; when the run has no data for it the Plot carries no image and a
sentence saying why, so the report can show the gap instead of an empty chart.
"""

from __future__ import annotations

import base64
import io
import math
import textwrap
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from segbench.report.tables import end_to_end_scope, fidelity_points, labelled, pareto_front, quality_axis
from segbench.results.labels import cell_label, option_text, resolution_text
from segbench.results.metrics import METRICS, footprint_mb, number
from segbench.results.runs import RunData, peak_memory, pixels
from segbench.results.schema import STAGES

STYLE = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 8,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
DPI = 100
WIDE_PX = 760
PANEL_SIZE = (6.4, 3.8)  # inches per model panel, legend beside it
MAX_ROWS = 60  # per-cell plots beyond this many cells become unreadable; the rest are left out with a note
# Past these a panel plot is unreadable (and slow: matplotlib lays out every legend entry): it draws the fastest
# models, and in each panel the fastest lines, and its note says how many cells it left to the CSV export.
MAX_PANELS = 6
MAX_SERIES = 8
CSV_HINT = "every cell's figures are in the CSV export (segbench report RUN --format csv)"
MIN_AGREEMENT_SPAN = 1.0  # percentage points: a narrower axis turns 99.99 vs 100 % into a cliff
STAGE_COLOURS = {"preprocess": "#8da0cb", "forward": "#fc8d62", "postprocess": "#66c2a5"}
Records = list[dict[str, Any]]


@dataclass(frozen=True)
class Plot:
    key: str
    title: str
    image_png: str | None  # base64; None when skipped
    note: str = ""

    @property
    def wide(self) -> bool:
        """Wider than half a page: the report gives it a row of its own (PNG width is bytes 16-19)."""
        if not self.image_png:
            return False
        header = base64.b64decode(self.image_png[:32])
        return int.from_bytes(header[16:20], "big") > WIDE_PX


def all_plots(run: RunData) -> list[Plot]:
    plottable, dropped = plottable_run(run)
    drawers = (latency_vs_resolution, fps_vs_batch, memory_vs_resolution, stage_breakdown, latency_distribution)
    return [_drawn_safely(draw, plottable, dropped) for draw in drawers]


def pareto_plot(run: RunData) -> Plot:
    plottable, dropped = plottable_run(run)
    return _drawn_safely(_pareto_plot, plottable, dropped)


def report_plots(run: RunData) -> tuple[list[Plot], Plot]:
    """all_plots and pareto_plot from one pass that leaves out unplottable values (the pass walks every sample)."""
    plottable, dropped = plottable_run(run)
    drawers = (latency_vs_resolution, fps_vs_batch, memory_vs_resolution, stage_breakdown, latency_distribution)
    return [_drawn_safely(draw, plottable, dropped) for draw in drawers], _drawn_safely(
        _pareto_plot, plottable, dropped
    )


# ---- values matplotlib cannot place ------------------------------------------------------------------

PLOTTABLE_LIMIT = 1e15  # beyond this a figure is a corrupt or sentinel value (1e308), and axis limits overflow


def _plottable(value: Any) -> tuple[Any, int]:
    """The value with every non-finite or absurd number replaced by None, and how many were replaced."""
    if isinstance(value, float) and not (math.isfinite(value) and abs(value) <= PLOTTABLE_LIMIT):
        return None, 1
    if isinstance(value, dict):
        pairs = [(key, _plottable(item)) for key, item in value.items()]
        return {key: item for key, (item, _) in pairs}, sum(count for _, (_, count) in pairs)
    if isinstance(value, list) and _all_plottable_numbers(value):
        return value, 0  # a list of samples: checked in one numpy pass, not one Python call per sample
    if isinstance(value, list):
        items = [_plottable(item) for item in value]
        return [item for item, _ in items], sum(count for _, count in items)
    return value, 0


def _all_plottable_numbers(values: list[Any]) -> bool:
    """Whether every item is a number no axis chokes on (None, text or nesting: False, for the per-item walk)."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return False
    return bool(array.size and np.isfinite(array).all() and np.abs(array).max() <= PLOTTABLE_LIMIT)


def plottable_run(run: RunData) -> tuple[RunData, int]:
    """The run with values no axis can hold (±inf, NaN, 1e308) left out, and how many were."""
    records, dropped = _plottable(run.records)
    return replace(run, records=records), dropped


def _drawn_safely(draw: Callable[[RunData], Plot], run: RunData, dropped: int) -> Plot:
    """A plot, with a sentence for values left out; a plot that still cannot be drawn is skipped with the reason."""
    left_out = (
        f" {dropped} value(s) that were not finite (±inf, NaN) or beyond {PLOTTABLE_LIMIT:g} are left out of the plots."
        if dropped
        else ""
    )
    try:
        plot = draw(run)
    except (ValueError, OverflowError, TypeError, ZeroDivisionError) as exc:
        name = draw.__name__.lstrip("_").replace("_", " ")
        return Plot(
            f"plot-{draw.__name__.lstrip('_')}",
            name,
            None,
            f"Skipped: this plot could not be drawn from these values ({type(exc).__name__}: "
            f"{str(exc)[:120]}).{left_out}",
        )
    return replace(plot, note=(plot.note + left_out).strip()) if left_out else plot


# ---- helpers ---------------------------------------------------------------------------------------


def _encode(figure: Figure) -> str:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _by_model(records: Records) -> dict[str, Records]:
    grouped: dict[str, Records] = {}
    for record in records:
        grouped.setdefault(record["model"], []).append(record)
    return dict(sorted(grouped.items()))


def _panels(models: list[str], title: str, draw: Callable[[Axes, str], None]) -> str:
    """One panel per model in a grid of up to two columns, encoded as PNG."""
    columns = min(2, len(models))
    rows = math.ceil(len(models) / columns)
    with matplotlib.rc_context(STYLE):
        figure = Figure(figsize=(PANEL_SIZE[0] * columns, PANEL_SIZE[1] * rows + 0.5), layout="constrained")
        axes = figure.subplots(rows, columns, squeeze=False)
        for index, model in enumerate(models):
            draw(axes[index // columns][index % columns], model)
        for spare in axes.flat[len(models) :]:
            spare.set_visible(False)
        figure.suptitle(title, fontsize=13, fontweight="bold")
        return _encode(figure)


def _resolution_axis(axis: Axes, records: Records) -> dict[tuple[int, int], int]:
    """Resolutions as evenly spaced categories, ordered by pixel count, labelled HxW."""
    ordered = sorted({tuple(r["resolution"]) for r in records}, key=lambda res: res[0] * res[1])
    axis.set_xticks(range(len(ordered)), [f"{h}x{w}" for h, w in ordered])
    axis.set_xlim(-0.4, len(ordered) - 0.6)
    return {resolution: position for position, resolution in enumerate(ordered)}


def _series(records: Records, key: Callable[[dict[str, Any]], str]) -> dict[str, Records]:
    """The records by line label: the MAX_SERIES fastest lines (by their fastest median), in first-seen order."""
    grouped: dict[str, Records] = {}
    for record in records:
        grouped.setdefault(key(record), []).append(record)
    return _fastest(grouped, MAX_SERIES, _record_median)


def _record_median(record: dict[str, Any]) -> float:
    value = number((record.get("latency_ms") or {}).get("median"))
    return value if value is not None else math.inf


def _fastest(groups: dict[Any, list[Any]], limit: int, speed: Callable[[Any], float]) -> dict[Any, list[Any]]:
    """The `limit` groups whose fastest member is fastest, in their own order; all of them up to `limit`."""
    if len(groups) <= limit:
        return groups
    kept = set(sorted(groups, key=lambda name: min(speed(item) for item in groups[name]))[:limit])
    return {name: items for name, items in groups.items() if name in kept}


def _shown_models(groups: dict[str, Records]) -> list[str]:
    """The models a panel plot draws: every one up to MAX_PANELS, past it the fastest (by their fastest cell)."""
    return list(_fastest(groups, MAX_PANELS, _record_median))


def _left_out(total: int, drawn: int, models: int) -> str:
    """The sentence a capped plot's note ends with; empty when it drew every cell."""
    if drawn >= total:
        return ""
    panels = f"the {MAX_PANELS} fastest of {models} models, " if models > MAX_PANELS else ""
    return (
        f" {total - drawn} of {total} cells are not drawn: this plot shows {panels}at most {MAX_SERIES} lines per "
        f"panel (the fastest); {CSV_HINT}."
    )


def _ci_errors(records: Records) -> list[list[float]] | None:
    """Distances from each median to its 95 % interval's bounds, for error bars; None when a cell has no interval."""
    below, above = [], []
    for record in records:
        latency = record.get("latency_ms") or {}
        interval = latency.get("ci95")
        if not (
            isinstance(interval, list) and len(interval) == 2 and all(isinstance(v, (int, float)) for v in interval)
        ):
            return None
        below.append(max(0.0, latency["median"] - interval[0]))
        above.append(max(0.0, interval[1] - latency["median"]))
    return [below, above]


def _legend(axis: Axes) -> None:
    """Beside the panel, never over the data (constrained layout makes room for it)."""
    if axis.get_legend_handles_labels()[0]:
        axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def _log_if_wide(values: Iterable[float], axis: Axes, which: str = "y", ratio: float = 30.0) -> None:
    """A log scale when values span more than `ratio`, ticked 1-2-5 with plain numbers (not 10^n)."""
    values = [v for v in values if v and v > 0]
    if not values or max(values) / min(values) <= ratio:
        return
    target = axis.yaxis if which == "y" else axis.xaxis
    (axis.set_yscale if which == "y" else axis.set_xscale)("log")
    target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    target.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    target.set_minor_formatter(NullFormatter())


# ---- the plots -------------------------------------------------------------------------------------


def latency_vs_resolution(run: RunData) -> Plot:
    key, title = "plot-latency-resolution", "Latency vs resolution"
    models = {m: rs for m, rs in _by_model(run.ok).items() if len({tuple(r["resolution"]) for r in rs}) > 1}
    if not models:
        resolutions = sorted({resolution_text(r) for r in run.ok})
        why = f"every model ran at one resolution ({', '.join(resolutions)})" if resolutions else "no cell finished ok"
        return Plot(key, title, None, f"Skipped: {why}, so there is no trend to draw; the leaderboard has the figures.")

    drawn: Records = []

    def draw(axis: Axes, model: str) -> None:
        batch = min(r["batch_size"] for r in models[model])
        here = [r for r in models[model] if r["batch_size"] == batch]
        shown = _series(here, option_text)
        here = [r for series in shown.values() for r in series]
        drawn.extend(here)
        positions = _resolution_axis(axis, here)
        for label, series in shown.items():
            series = sorted(series, key=pixels)
            medians = [r["latency_ms"]["median"] for r in series]
            axis.errorbar(
                [positions[tuple(r["resolution"])] for r in series],
                medians,
                yerr=_ci_errors(series),
                marker="o",
                capsize=3,
                label=label,
            )
        _log_if_wide([r["latency_ms"]["median"] for r in here], axis, "y")
        axis.set(title=f"{model} (batch {batch})", xlabel="input resolution (H x W)", ylabel="median latency (ms)")
        _legend(axis)

    image = _panels(_shown_models(models), title, draw)
    eligible = sum(1 for rs in models.values() for r in rs if r["batch_size"] == min(x["batch_size"] for x in rs))
    note = (
        "Median forward latency at each model's smallest batch, with its 95 % bootstrap interval as error bars; "
        "one line per precision / backend." + _left_out(eligible, len(drawn), len(models))
    )
    return Plot(key, title, image, note)


def fps_vs_batch(run: RunData) -> Plot:
    key, title = "plot-fps-batch", "Throughput vs batch size"
    models = {m: rs for m, rs in _by_model(run.ok).items() if len({r["batch_size"] for r in rs}) > 1}
    if not models:
        return Plot(key, title, None, "Skipped: every model ran at a single batch size, so there is no batch trend.")

    drawn: Records = []

    def draw(axis: Axes, model: str) -> None:
        shown = _series(models[model], lambda r: f"{resolution_text(r)} {option_text(r)}")
        here = [r for series in shown.values() for r in series]
        drawn.extend(here)
        for label, series in shown.items():
            series = sorted(series, key=lambda r: r["batch_size"])
            (line,) = axis.plot(
                [r["batch_size"] for r in series], [r["fps"] for r in series], marker="o", label=f"{label} (forward)"
            )
            end_to_end = [
                (r["batch_size"], r["end_to_end_fps"])
                for r in series
                if isinstance(r.get("end_to_end_fps"), (int, float))
            ]
            if end_to_end:
                axis.plot(
                    *zip(*end_to_end), marker="s", linestyle="--", color=line.get_color(), label=f"{label} (end to end)"
                )
        batches = sorted({r["batch_size"] for r in here})
        if batches[-1] / batches[0] >= 4:
            axis.set_xscale("log", base=2)
        axis.set_xticks(batches, [str(b) for b in batches])
        axis.minorticks_off()
        axis.set(title=model, xlabel="batch size (images)", ylabel="throughput (images/s)")
        axis.set_ylim(bottom=0)
        _legend(axis)

    image = _panels(_shown_models(models), title, draw)
    note = (
        "Images per second: solid lines from the median forward latency (batch × 1000 / median ms), dashed lines end "
        "to end (preprocess + forward + postprocess); one colour per resolution and precision / backend."
        + _left_out(sum(len(rs) for rs in models.values()), len(drawn), len(models))
    )
    return Plot(key, title, image, note)


FOOTPRINT = METRICS["footprint_mb"]


def memory_series(records: Records) -> dict[str, list[tuple[tuple[int, int], float]]]:
    """What the memory plot draws for one model: per precision / backend and batch, (resolution, footprint MiB) by
    pixel count. The footprint is the tables' (metrics.footprint_mb), so the plot and the footprint column agree."""
    points: dict[str, list[tuple[tuple[int, int], float]]] = {}
    for label, series in _series(records, lambda r: f"{option_text(r)} b{r['batch_size']}").items():
        measured = [(tuple(r["resolution"]), footprint_mb(r)) for r in sorted(series, key=pixels)]
        kept = [(resolution, value) for resolution, value in measured if value is not None]
        if kept:
            points[label] = kept  # type: ignore[assignment]
    return points


def memory_vs_resolution(run: RunData) -> Plot:
    key, title = "plot-memory-resolution", "Memory footprint vs resolution"
    measured = [r for r in run.ok if footprint_mb(r) is not None]
    if not measured:
        return Plot(key, title, None, "Skipped: no cell recorded a peak-memory figure with its baseline.")
    trends = {model for model, rs in _by_model(measured).items() if len({tuple(r["resolution"]) for r in rs}) > 1}
    if not trends:
        return Plot(
            key,
            title,
            None,
            "Skipped: every model ran at one resolution, so each panel would hold a single point; the leaderboard has "
            "the figures.",
        )
    measured = [r for r in measured if r["model"] in trends]
    figures = sorted({peak_memory(r)[1] for r in measured})
    capacity, budget = run.device_memory(), run.budget()
    top = max(footprint_mb(r) or 0.0 for r in measured)
    notes = []

    drawn: Records = []

    def draw(axis: Axes, model: str) -> None:
        here = [r for r in measured if r["model"] == model]
        series = memory_series(here)
        here = [r for r in here if f"{option_text(r)} b{r['batch_size']}" in series]
        drawn.extend(here)
        positions = _resolution_axis(axis, here)
        for label, points in series.items():
            axis.plot(
                [positions[resolution] for resolution, _ in points], [v for _, v in points], marker="o", label=label
            )
        if capacity and capacity[0] <= 4 * max(footprint_mb(r) or 0.0 for r in here):
            axis.axhline(
                capacity[0],
                color="black",
                linestyle="--",
                linewidth=1.2,
                label=f"{capacity[1]} ({capacity[0] / 1024:.3g} GiB)",
            )
        if budget:
            axis.axhline(
                budget[0],
                color="crimson",
                linestyle=":",
                linewidth=1.5,
                label=f"{budget[1]} ({budget[0] / 1024:.3g} GiB)",
            )
        axis.set(
            title=model, xlabel="input resolution (H x W)", ylabel=f"{FOOTPRINT.label[0].upper()}{FOOTPRINT.label[1:]}"
        )
        axis.set_ylim(bottom=0)
        _legend(axis)

    if capacity and capacity[0] > 4 * top:
        notes.append(
            f"{capacity[1]} ({capacity[0] / 1024:.3g} GiB) is far above every footprint, so its line is not drawn."
        )
    image = _panels(_shown_models(_by_model(measured)), title, draw)
    if len(drawn) < len(measured):
        notes.append(_left_out(len(measured), len(drawn), len(trends)).strip())
    single = sorted({r["model"] for r in run.ok if footprint_mb(r) is not None} - trends)
    if single:
        notes.append(f"Left out (one resolution each): {', '.join(single)}.")
    baselines = [b for r in measured for b in [number((r.get("memory_mb") or {}).get("baseline"))] if b is not None]
    on_top = (
        f" The process also holds its baseline ({min(baselines):.0f}–{max(baselines):.0f} MiB) on top."
        if baselines
        else ""
    )
    note = (
        f"Footprint: {FOOTPRINT.help} ({', '.join(figures)}), the leaderboard's footprint column; one line per "
        f"precision / backend and batch.{on_top} " + " ".join(notes)
    )
    return Plot(key, title, image, note.strip())


def stage_breakdown(run: RunData) -> Plot:
    key, title = "plot-stages", "Stage breakdown"
    cells = [
        r for r in run.ok if all(((r.get("stages_ms") or {}).get(s) or {}).get("median") is not None for s in STAGES)
    ]
    if not cells:
        return Plot(key, title, None, "Skipped: no cell recorded per-stage timings.")
    shown = cells[:MAX_ROWS]
    with matplotlib.rc_context(STYLE):
        figure = Figure(figsize=(10, 1.2 + 0.32 * len(shown)), layout="constrained")
        axis = figure.subplots()
        labels = [cell_label(r) for r in shown]
        left = [0.0] * len(shown)
        totals = [sum(r["stages_ms"][s]["median"] for s in STAGES) for r in shown]
        for stage in STAGES:
            shares = [r["stages_ms"][stage]["median"] / total * 100 if total else 0 for r, total in zip(shown, totals)]
            axis.barh(labels, shares, left=left, color=STAGE_COLOURS[stage], label=stage, height=0.7)
            left = [a + b for a, b in zip(left, shares)]
        for row, total in enumerate(totals):
            axis.text(101, row, f"{total:,.0f} ms" if total >= 100 else f"{total:.3g} ms", va="center", fontsize=8)
        axis.invert_yaxis()
        axis.set_xlim(0, 112)
        axis.set(xlabel="share of the summed stage medians (%)", title=f"{title}: preprocess / forward / postprocess")
        axis.grid(axis="y", visible=False)
        figure.legend(loc="outside lower center", ncol=3, frameon=False)
        image = _encode(figure)
    left_out = f" {len(cells) - len(shown)} more cells are left out; {CSV_HINT}." if len(cells) > len(shown) else ""
    return Plot(
        key,
        title,
        image,
        "Each bar is one cell; the number at its end is the sum of the three stage medians." + left_out + " "
        + " ".join(end_to_end_scope(run)),
    )


def latency_distribution(run: RunData) -> Plot:
    key, title = "plot-latency-distribution", "Latency distribution per cell"
    cells = [r for r in run.ok if r.get("samples_ms")]
    if not cells:
        return Plot(key, title, None, "Skipped: no cell kept its latency samples.")
    shown = cells[:MAX_ROWS]
    with matplotlib.rc_context(STYLE):
        figure = Figure(figsize=(10, 1.2 + 0.32 * len(shown)), layout="constrained")
        axis = figure.subplots()
        axis.boxplot(
            [r["samples_ms"] for r in shown],
            orientation="horizontal",
            tick_labels=[f"{cell_label(r)} (n={len(r['samples_ms'])})" for r in shown],
            widths=0.6,
            showfliers=True,
            flierprops={"markersize": 3, "alpha": 0.5},
        )
        axis.invert_yaxis()
        _log_if_wide([v for r in shown for v in r["samples_ms"]], axis, "x")
        axis.set(xlabel="forward latency per iteration (ms)", title=f"{title} (every kept sample)")
        axis.grid(axis="y", visible=False)
        image = _encode(figure)
    left_out = f" {len(cells) - len(shown)} more cells are left out; {CSV_HINT}." if len(cells) > len(shown) else ""
    return Plot(
        key,
        title,
        image,
        "Box: middle half of the samples, line: median, whiskers: 1.5 × IQR, dots: outliers." + left_out,
    )


def _pareto_plot(run: RunData) -> Plot:
    quality, quality_label = quality_axis(run)
    key, title = "plot-pareto", f"Latency vs {quality} (Pareto front)"
    groups: dict[Any, list[dict[str, Any]]] = {}
    for point in fidelity_points(run):
        groups.setdefault(point["group"], []).append(point)
    points = [
        p for group in groups.values() if len(group) > 1 for p in group
    ]  # a lone reference has nothing to trade off
    if not (run.has_fidelity or labelled(run)) or not points:
        return Plot(key, title, None, "Skipped: this run has no fidelity or accuracy data.")
    front = pareto_front(run)
    by_model: dict[str, list[dict[str, Any]]] = {}
    for point in points:
        by_model.setdefault(point["record"]["model"], []).append(point)
    models = list(_fastest(dict(sorted(by_model.items())), MAX_PANELS, lambda p: p["median_ms"]))
    drawn: list[dict[str, Any]] = []

    def draw(axis: Axes, model: str) -> None:
        shown = _series_points(by_model[model])
        here = [p for group in shown.values() for p in group]
        drawn.extend(here)
        front_points: list[dict[str, Any]] = []
        for label, group in shown.items():
            group = sorted(group, key=lambda p: p["median_ms"])
            line = axis.scatter(
                [p["median_ms"] for p in group], [p["quality"] * 100 for p in group], label=label, s=30
            )
            on_front = [p for p in group if p["record"]["cell_id"] in front]
            if len(on_front) > 1:
                axis.plot(
                    [p["median_ms"] for p in on_front],
                    [p["quality"] * 100 for p in on_front],
                    drawstyle="steps-post",
                    color=line.get_facecolor()[0],
                    linewidth=1,
                )
            front_points.extend(on_front)  # labelling every point would pile labels on top of each other
        _log_if_wide([p["median_ms"] for p in here], axis, "x")
        lowest, highest = (fn(p["quality"] for p in here) * 100 for fn in (min, max))
        # Agreement tops out at 100 % (the reference), so the axis ends there; mIoU ends a little above its best.
        ceiling = 100.0 if quality == "pixel agreement" else highest
        margin = max(0.02, (ceiling - lowest) * 0.1)
        bottom = min(lowest - margin, ceiling - MIN_AGREEMENT_SPAN)  # never narrower than one percentage point
        top = ceiling + margin
        axis.set_ylim(bottom, top)
        decimals = max(0, math.ceil(-math.log10((top - bottom) / 10)))  # about ten steps of the axis tell apart
        axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.{decimals}f}"))
        labels, shared = _point_labels([p["record"] for p in front_points])
        _place_labels(axis, [(p["median_ms"], p["quality"] * 100, text) for p, text in zip(front_points, labels)])
        axis.set(title=f"{model}\n{shared}" if shared else model, xlabel="median end-to-end latency (ms)")
        axis.set_ylabel(quality_label)
        _legend(axis)

    note = (
        "Each point is a precision / backend at one resolution and batch; the labelled points joined by the step line "
        f"are the Pareto front, the options no other beats on both speed and {quality}."
    )
    image = _panels(models, title, draw)
    return Plot(key, title, image, note + _left_out(len(points), len(drawn), len(by_model)))


MAX_LABEL_CHARS = 28  # a point label wraps past this (a panel is about 45 characters of 7 pt text wide)


def _point_labels(records: Records) -> tuple[list[str], str]:
    """Each point's label: precision / backend, plus the options and weights tag only where the panel's points differ
    in it; a tag they all share is returned once, for the panel's title (it made every label longer than the panel)."""
    full = [option_text(record) for record in records]
    short = [f"{record['precision']} / {record['backend']}" for record in records]
    tags = {text[len(head) :].strip() for text, head in zip(full, short)}
    if len(tags) == 1:
        return short, textwrap.shorten(next(iter(tags)), 60, placeholder="…")
    return [textwrap.fill(text, MAX_LABEL_CHARS) for text in full], ""


def _place_labels(axis: Axes, points: list[tuple[float, float, str]]) -> None:
    """Labels toward the panel's inside (left of a point in its right half, below one near its top), clipped to the
    panel: none reaches the legend beside it."""
    axis.get_xlim()  # settles the autoscaled limits the fractions below are taken in
    to_fraction = axis.transScale + axis.transLimits
    for x, y, text in points:
        across, up = to_fraction.transform((x, y))
        right, top = across > 0.5, up > 0.75
        axis.annotate(
            text,
            (x, y),
            fontsize=7,
            xytext=(-3 if right else 3, -3 if top else 3),
            textcoords="offset points",
            ha="right" if right else "left",
            va="top" if top else "bottom",
            annotation_clip=True,
            clip_on=True,
        )


def _series_points(points: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for point in points:
        record = point["record"]
        grouped.setdefault(f"{resolution_text(record)} b{record['batch_size']}", []).append(point)
    return _fastest(grouped, MAX_SERIES, lambda p: p["median_ms"])
