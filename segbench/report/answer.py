"""The answer to "which configuration should I deploy?": first in every report.

With targets (the suite's `targets:` block, or `segbench report --target-fps …`), every cell gets a
verdict, and per model the answer names the best configuration that meets every target, the
runner-up, or the nearest miss and what it misses by. Without targets it names the fastest and the
lightest configuration per model, end to end, and says how to add targets. Its first line names the device
the speeds were measured on and what of the suite's target card was only emulated (its memory budget).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from segbench.measure.quantiles import samples_needed, time_needed_text
from segbench.report.search import search_note
from segbench.report.summary import reliability_text
from segbench.report.tables import identity, sort_cells
from segbench.results.devices import measured_on_line
from segbench.results.labels import option_text, resolution_text
from segbench.results.metrics import MEMORY_FIGURES, METRICS, deploy_pass, headline_memory, number
from segbench.results.runs import RunData
from segbench.suite.targets import STATUSES, Targets, Verdict, describe, targets_from_suite, verdict

HOW_TO = (
    "Add a `targets:` block to the suite (for example `targets: {fps: 30, max_latency_ms: 50, memory: rtx3060, "
    "min_agreement: 99}`) or pass them to the report (`segbench report RUN --target-fps 30 --max-latency-ms 50 "
    "--hardware rtx3060 --min-agreement 99`) to get a verdict per configuration."
)
FPS_SENTENCE = (
    "FPS here is end to end (preprocess + forward + postprocess; the sustained camera rate for a stream cell), "
    "not the forward pass alone: batch / the median end-to-end call of the sequential pipeline, which targets judge. "
    "Beside it, images / wall time of the end-to-end pass (throughput, slow calls and gaps included); the forward-only "
    "FPS is batch / its synchronous latency (one request at a time), not the device's back-to-back throughput."
)
PERCENTILE_SENTENCE = (
    f"A percentile is shown with its n, and only where n supports it: p90 from {samples_needed('p90')} samples, p95 "
    f"from {samples_needed('p95')}, p99 from {samples_needed('p99')} (n ≥ 1 / (1 − q), so at least one sample lies "
    "beyond it); with fewer it is withheld, and a target on it is unknown. The first call (cold, once) is shown apart "
    "and is not one of the end-to-end samples."
)


@dataclass(frozen=True)
class ModelAnswer:
    model: str
    lines: tuple[str, ...]


@dataclass(frozen=True)
class Answer:
    targets: Targets | None
    models: tuple[ModelAnswer, ...]
    table: pd.DataFrame  # one row per cell: identity, the figures the targets judge, verdict and detail
    verdicts: dict[str, Verdict] = field(default_factory=dict)  # by cell id
    # The first line: the device every speed was measured on, and what of the suite's target card was only emulated.
    measured_on: str = ""
    # How many cells' figures are flagged contended, drifted or undersampled, and what to do; "" when none is.
    reliability: str = ""
    # A search run: cells measured and pruned, device-seconds against the exhaustive estimate; "" otherwise.
    search: str = ""

    @property
    def has_targets(self) -> bool:
        return self.targets is not None and not self.targets.empty

    @property
    def target_text(self) -> str:
        return describe(self.targets) if self.targets is not None and self.has_targets else ""

    @property
    def counts(self) -> dict[str, int]:
        found = dict.fromkeys(STATUSES, 0)
        for item in self.verdicts.values():
            found[item.status] += 1
        return found

    @property
    def missed(self) -> bool:
        return self.counts["misses"] > 0


def run_targets(run: RunData, overrides: dict[str, Any] | None = None) -> Targets | None:
    """The suite's targets with command-line overrides applied; None when neither sets any."""
    stored = targets_from_suite(run.suite)
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    if stored is None and not given:
        return None
    merged = (stored or Targets()).merged(**given)
    return None if merged.empty else merged


def cell_text(record: dict[str, Any]) -> str:
    return f"{resolution_text(record)} batch {record['batch_size']} {option_text(record)}"


def _memory_text(record: dict[str, Any]) -> str:
    peak, figure = headline_memory(record)
    if peak is None:
        return ""
    footprint = METRICS["footprint_mb"].value(record)
    own = f"footprint {footprint:,.0f} MiB, " if footprint is not None else ""
    return f"{own}peak {peak:,.0f} MiB ({MEMORY_FIGURES.get(figure, figure)})"


def figures_text(record: dict[str, Any], percentile: str = "p99") -> str:
    """The figures a deployment chooses by, all from this one cell."""
    parts = []
    achieved, forward = METRICS["achieved_fps"].value(record), METRICS["fps"].value(record)
    if achieved is not None:
        kind = "sustained" if record.get("stream") else "end to end"
        basis = "" if record.get("stream") else _offline_fps_basis(record, forward)
        parts.append(f"{achieved:.1f} FPS {kind}{basis}")
    first_call = METRICS["first_call_ms"].value(record)
    if first_call is not None:
        parts.append(f"first call {METRICS['first_call_ms'].show(first_call)}")
    latency = _latency_text(record, percentile)
    if latency:
        parts.append(latency)
    memory = _memory_text(record)
    if memory:
        parts.append(memory)
    parts.extend(_quality_texts(record))
    return ", ".join(parts)


def _quality_texts(record: dict[str, Any]) -> list[str]:
    """What the configuration costs in accuracy: mIoU against the labels and its change vs fp32 eager where the run
    had a dataset, else pixel agreement with fp32 eager."""
    miou, delta = METRICS["miou_gt_pct"].value(record), METRICS["miou_delta_pts"].value(record)
    if miou is not None:
        lost = "" if delta is None else f" ({delta:+.2f} pts vs fp32 eager)"
        return [f"mIoU {miou:.2f} %{lost}"]
    agreement = METRICS["pixel_agreement_pct"].value(record)
    return [] if agreement is None else [f"pixel agreement {agreement:.2f} %"]


def _offline_fps_basis(record: dict[str, Any], forward: float | None) -> str:
    """What an offline cell's FPS rests on: 1 / the median end-to-end call (what targets judge), beside the images
    its end-to-end pass delivered per second of wall time and the forward alone."""
    throughput = METRICS["end_to_end_throughput_fps"].value(record)
    basis = ["1 / median call"]
    if throughput is not None:
        basis.append(f"{throughput:.1f} images / wall time")
    if forward is not None:
        basis.append(f"{forward:.1f} forward only")
    return f" ({'; '.join(basis)})"


def _latency_text(record: dict[str, Any], percentile: str) -> str:
    """'latency p99 12.3 ms (n = 240)', or where n cannot support it 'latency p99 withheld (n = 2, p99 needs ≥ 100; at
    55 ms each that is ≥ 5.5 s: raise timing.max_time_s / min_iters)'."""
    latency = METRICS[f"latency_{percentile}_ms"]
    value, n = latency.value(record), METRICS["latency_n"].value(record)
    if value is not None:
        return f"{latency.name} {latency.show(value)}" + (f" (n = {n:.0f})" if n is not None else "")
    if n is None or METRICS["latency_p50_ms"].value(record) is None:
        return ""  # nothing was measured to withhold
    needed, timed = samples_needed(percentile), deploy_pass(record)
    advice = time_needed_text(needed, timed.sample_ms(record), timed.setting)
    return f"{latency.name} withheld (n = {n:.0f}, {percentile} needs ≥ {needed}; {advice})"


def _memory(record: dict[str, Any]) -> float | None:
    """The model's footprint, or the headline peak where no baseline was recorded."""
    footprint = METRICS["footprint_mb"].value(record)
    return footprint if footprint is not None else headline_memory(record)[0]


def _by_speed(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fastest end to end first; a tie goes to the smaller footprint."""

    def key(record: dict[str, Any]) -> tuple[float, float]:
        fps, memory = METRICS["achieved_fps"].value(record), _memory(record)
        return (-(fps if fps is not None else -1.0), memory if memory is not None else float("inf"))

    return sorted(records, key=key)


def _lightest(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    valued = [record for record in records if _memory(record) is not None]
    return min(valued, key=lambda record: _memory(record) or 0.0) if valued else None


def _without_targets(model: str, records: list[dict[str, Any]], ok: list[dict[str, Any]]) -> ModelAnswer:
    if not ok:
        statuses = sorted({str(r.get("status")) for r in records})
        return ModelAnswer(
            model, (f"No configuration finished ok ({', '.join(statuses)}); the cells that did not finish say why.",)
        )
    fastest = _by_speed(ok)[0]
    lines = [f"Fastest: {cell_text(fastest)}: {figures_text(fastest)}."]
    lightest = _lightest(ok)
    if lightest is not None and lightest is not fastest:
        lines.append(f"Lightest: {cell_text(lightest)}: {figures_text(lightest)}.")
    elif lightest is fastest:
        lines.append("It is also the lightest.")
    return ModelAnswer(model, tuple(lines))


def _with_targets(
    model: str, records: list[dict[str, Any]], verdicts: dict[str, Verdict], percentile: str
) -> ModelAnswer:
    meets = _by_speed([r for r in records if verdicts[r["cell_id"]].status == "meets"])
    borderline = _by_speed([r for r in records if verdicts[r["cell_id"]].status == "borderline"])
    if meets:
        lines = [f"Best: {cell_text(meets[0])}: {figures_text(meets[0], percentile)}."]
        if len(meets) > 1:
            lines.append(f"Runner-up: {cell_text(meets[1])}: {figures_text(meets[1], percentile)}.")
        lines.append(f"{len(meets)} of {len(records)} configurations meet every target.")
        if borderline:
            lines.append(f"{len(borderline)} more are borderline (their intervals straddle a target).")
        return ModelAnswer(model, tuple(lines))
    if borderline:
        first = verdicts[borderline[0]["cell_id"]]
        return ModelAnswer(
            model,
            (
                f"Borderline: no configuration clearly meets every target. Nearest: {cell_text(borderline[0])}: "
                f"{first.text}.",
                f"Its figures: {figures_text(borderline[0], percentile)}.",
            ),
        )
    misses = [r for r in records if verdicts[r["cell_id"]].status == "misses" and r.get("status") == "ok"]
    if misses:
        nearest = min(misses, key=lambda r: verdicts[r["cell_id"]].shortfall)
        return ModelAnswer(
            model,
            (
                f"No configuration meets every target. Nearest miss: {cell_text(nearest)}: "
                f"{verdicts[nearest['cell_id']].text}.",
                f"Its figures: {figures_text(nearest, percentile)}.",
            ),
        )
    oom = [r for r in records if r.get("status") == "oom"]
    if oom and len(oom) == len(records):
        return ModelAnswer(
            model, (f"No configuration fits: every one ran out of memory ({', '.join(cell_text(r) for r in oom)}).",)
        )
    unknown = [r for r in records if verdicts[r["cell_id"]].status == "unknown"]
    reason = verdicts[unknown[0]["cell_id"]].text if unknown else "every configuration failed"
    return ModelAnswer(model, (f"No verdict: no configuration could be judged against every target ({reason}).",))


def capacity_text(record: dict[str, Any]) -> str | None:
    """'fast-scnn 360x640 fp32 / eager, batched: 3 cameras at 30 FPS with p99 ≤ 100 ms on this CPU (…)', for a
    capacity cell; None for any other."""
    capacity = record.get("capacity")
    if not isinstance(capacity, dict):
        return None
    where = "this CPU" if str(record.get("device", "")).startswith("cpu") else f"this {record.get('device')}"
    head = f"{record['model']} {resolution_text(record)} {option_text(record)}"
    bound = f"{capacity.get('percentile', 'p99')} ≤ {number(capacity.get('latency_bound_ms')) or 0:g} ms"
    fps = f"{number(capacity.get('camera_fps')) or 0:g} FPS"
    if capacity.get("max_cameras") is None:
        why = capacity.get("max_cameras_why")
        return f"{head}: no number of cameras at {fps} kept up with {bound} on {where}: {why}"
    cameras = int(capacity["max_cameras"])
    return (
        f"{head}, {capacity.get('policy')}: {cameras} camera{'s' if cameras != 1 else ''} at {fps} with {bound} on "
        f"{where} ({capacity.get('how')})"
    )


def _with_capacity(found: ModelAnswer, ok: list[dict[str, Any]]) -> ModelAnswer:
    """The model's answer, plus the capacity cell that serves the most cameras."""
    capacity = [r for r in ok if isinstance(r.get("capacity"), dict)]
    if not capacity:
        return found
    best = max(capacity, key=lambda r: number(r["capacity"].get("max_cameras")) or 0)
    return replace(found, lines=(*found.lines, f"Most cameras: {capacity_text(best)}."))


def answer(run: RunData, targets: Targets | None = None) -> Answer:
    """Verdicts per cell and the answer per model; `targets` defaults to the suite's."""
    targets = targets if targets is not None else run_targets(run)
    if targets is not None and targets.empty:
        targets = None
    records = sort_cells([r for r in run.records if r.get("status") != "pruned"])  # a search's pruned: never measured
    percentile = targets.latency_percentile if targets else "p99"
    verdicts = {r["cell_id"]: verdict(r, targets) for r in records} if targets else {}
    models = sorted({r["model"] for r in records})
    answers = []
    for model in models:
        mine = [r for r in records if r["model"] == model]
        ok = [r for r in mine if r.get("status") == "ok"]
        found = _with_targets(model, mine, verdicts, percentile) if targets else _without_targets(model, mine, ok)
        answers.append(_with_capacity(found, ok))
    return Answer(
        targets,
        tuple(answers),
        _table(records if targets else [r for r in records if r.get("status") == "ok"], verdicts, percentile),
        verdicts,
        measured_on_line(records, run.meta, run.suite.get("hardware") or run.meta.get("hardware_target")),
        reliability_text(records) or "",
        search_note(run),
    )


def _table(records: list[dict[str, Any]], verdicts: dict[str, Verdict], percentile: str) -> pd.DataFrame:
    rows = []
    for record in records:
        row: dict[str, Any] = {**identity(record), "status": record.get("status")}
        for key in (
            "achieved_fps",
            "fps",
            f"latency_{percentile}_ms",
            "latency_n",
            "footprint_mb",
            "peak_mb",
            "pixel_agreement_pct",
            "miou_gt_pct",
            "miou_delta_pts",
        ):
            row[key] = METRICS[key].value(record)
        if verdicts:
            judged = verdicts[record["cell_id"]]
            row.update(verdict=judged.status, detail=judged.text)
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    optional = (
        "footprint_mb",
        "pixel_agreement_pct",
        "miou_gt_pct",
        "miou_delta_pts",
        f"latency_{percentile}_ms",
        "latency_n",
        "card",
        "options",
    )
    return frame.drop(columns=[c for c in optional if c in frame and (frame[c].isna().all() or (frame[c] == "").all())])
