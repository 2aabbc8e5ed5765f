"""Expectations: claims a suite makes about its results, checked against what was measured.

    expectations:
      - claim: YOLOv8n-seg at 640 runs in about 10 ms on an RTX 3060
        source: the seed glossary
        model: yolov8n-seg
        resolution: 640
        batch_size: 1
        metric: latency_ms.median
        approx: 10
        tolerance: 0.3           # relative: 7-13 ms confirms it
      - claim: INT8 lowers VRAM
        model: yolov8n-seg
        precision: int8
        metric: peak_memory_mb
        lower_than: {precision: fp32}

Every verdict carries its reason (VERDICTS says what each word means). A claim is about the suite's card
(`hardware:`), or about no particular card when the suite names none. Its speed (latency, FPS, energy: every
figure but memory and what the model computes) is judged only on cells measured on that card; measured on
another card it is untested. A memory claim is also judged under the card's emulated budget on a bigger GPU, and
says so ("confirmed (emulated)"). Where several cells match a claim's axes, it is judged on the median cell, never
the best one, and the reason says how many matched and how many of them agree.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from segbench.results.devices import Card, emulated_budget, ran_on, target_card
from segbench.results.labels import axes_label
from segbench.results.metrics import Metric, UnknownMetricError, get_metric
from segbench.results.metrics import metric_value as named_value
from segbench.suite.axes import Rule, rule_matches

Verdict = Literal["confirmed", "refuted", "untested"]
VERDICTS: dict[str, str] = {
    "confirmed": "the cell it was judged on meets the claim",
    "refuted": "the cell it was judged on contradicts the claim",
    "untested": (
        "nothing here can test it: no matching cell, matching cells that did not finish, a figure not recorded, "
        "or a speed measured on another card than the one the claim is about"
    ),
}
EMULATED = "(emulated): a memory claim about a card, judged under that card's budget emulated on a bigger GPU"
CardDependence = Literal["memory", "speed", "none"]
AXES = ("model", "resolution", "batch_size", "precision", "backend")
SAME_VARIANT = ("options", "weights", "hardware", "scenario")  # a relative claim's reference cell shares these
# What the model computes is the same on any card: params, FLOPs, agreement with fp32, accuracy.
CARD_FREE = frozenset(
    {
        "params_m",
        "gflops",
        "pixel_agreement_pct",
        "miou_vs_fp32_pct",
        "max_abs_logit_diff",
        "miou_gt_pct",
        "pixel_accuracy_gt_pct",
        "mean_accuracy_gt_pct",
        "miou_delta_pts",
        "pixel_accuracy_delta_pts",
        "quantized_share_pct",
    }
)


class Expectation(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    claim: Annotated[str, Field(min_length=1)]
    source: str = ""
    model: str | None = None
    resolution: Any = None
    batch_size: int | None = None
    precision: str | None = None
    backend: str | None = None
    metric: str = "median_ms"  # a key of the metric catalogue (segbench/metrics.py), its record path or an alias
    approx: float | None = None
    tolerance: Annotated[float, Field(gt=0)] = 0.25  # relative, for approx
    between: tuple[float, float] | None = None
    at_most: float | None = None
    at_least: float | None = None
    lower_than: dict[str, Any] | None = None  # axes that pick the reference cell, e.g. {precision: fp32}
    higher_than: dict[str, Any] | None = None

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        try:
            get_metric(value)
        except UnknownMetricError as exc:
            raise ValueError(str(exc)) from None  # the suite loader turns it into one line with the field path
        return value

    @model_validator(mode="after")
    def _one_test(self) -> Expectation:
        tests = [self.approx, self.between, self.at_most, self.at_least, self.lower_than, self.higher_than]
        if sum(test is not None for test in tests) != 1:
            raise ValueError("give exactly one of approx, between, at_most, at_least, lower_than, higher_than")
        return self

    def axes(self) -> dict[str, Any]:
        return {axis: getattr(self, axis) for axis in AXES if getattr(self, axis) is not None}


def metric_value(record: dict[str, Any], metric: str) -> float | None:
    """The value of a catalogue metric in one record (None when the record has none); a record path gives the stored
    value."""
    return named_value(record, metric)


class _Axes:
    """A record's axes, shaped like a CellSpec for rule matching."""

    def __init__(self, record: dict[str, Any]) -> None:
        self.model, self.batch_size = record["model"], record["batch_size"]
        self.resolution = tuple(record["resolution"])
        self.precision, self.backend = record["precision"], record["backend"]


def _matches(record: dict[str, Any], axes: dict[str, Any]) -> bool:
    return rule_matches(Rule(**axes), _Axes(record))


def card_dependence(metric: Metric) -> CardDependence:
    """How a figure depends on the card: memory can be emulated on a bigger card, what the model computes does not
    depend on it, and every other figure (latency, FPS, energy, clocks) is the measuring card's own."""
    if metric.unit == "MiB" or metric.key == "memory_saving_pct":
        return "memory"
    return "none" if metric.key in CARD_FREE else "speed"


def _valued(records: list[dict[str, Any]], name: str) -> list[tuple[dict[str, Any], float]]:
    return [(record, value) for record, value in ((r, named_value(r, name)) for r in records) if value is not None]


def _median(valued: list[tuple[dict[str, Any], float]], metric: Metric) -> tuple[dict[str, Any], float]:
    """The matching cell at the median (of an even count, the worse of the two middle cells): never the best of
    several, which would favour the claim by picking a winner."""
    ranked = sorted(valued, key=lambda pair: pair[1])
    middle = (len(ranked) - 1) // 2
    if len(ranked) % 2 == 0 and metric.better == "lower":
        middle += 1  # the slower of the two middle cells
    return ranked[middle]


def _reference(
    expectation: Expectation, record: dict[str, Any], records: list[dict[str, Any]], metric: Metric
) -> float | None:
    """The figure of the cell a relative claim compares with: the judged cell's axes with the claim's overrides, and
    the same options, weights and card."""
    reference_axes = expectation.lower_than or expectation.higher_than or {}
    same_cell = {axis: record[axis] for axis in AXES} | reference_axes
    alike = [
        r
        for r in records
        if r.get("status") == "ok"
        and _matches(r, same_cell)
        and all(r.get(key) == record.get(key) for key in SAME_VARIANT)
    ]
    valued = _valued(alike, expectation.metric)
    return _median(valued, metric)[1] if valued else None


def _judge(
    expectation: Expectation, record: dict[str, Any], measured: float, records: list[dict[str, Any]], metric: Metric
) -> tuple[Verdict, str] | None:
    """Verdict and expected text for one cell; None when a relative claim finds no reference cell."""
    reference = None
    if expectation.lower_than is not None or expectation.higher_than is not None:
        reference = _reference(expectation, record, records, metric)
        if reference is None:
            return None
    return _verdict(expectation, measured, reference)


def _verdict(expectation: Expectation, measured: float, reference: float | None) -> tuple[Verdict, str]:
    e = expectation
    if e.approx is not None:
        low, high = e.approx * (1 - e.tolerance), e.approx * (1 + e.tolerance)
        return (
            "confirmed" if low <= measured <= high else "refuted"
        ), f"≈ {e.approx:g} (±{e.tolerance:.0%}: {low:g}–{high:g})"
    if e.between is not None:
        return (
            "confirmed" if e.between[0] <= measured <= e.between[1] else "refuted"
        ), f"between {e.between[0]:g} and {e.between[1]:g}"
    if e.at_most is not None:
        return ("confirmed" if measured <= e.at_most else "refuted"), f"≤ {e.at_most:g}"
    if e.at_least is not None:
        return ("confirmed" if measured >= e.at_least else "refuted"), f"≥ {e.at_least:g}"
    assert reference is not None
    if e.lower_than is not None:
        return ("confirmed" if measured < reference else "refuted"), f"< {reference:.4g} (reference cell)"
    return ("confirmed" if measured > reference else "refuted"), f"> {reference:.4g} (reference cell)"


def _card_filter(
    card: Card,
    metric: Metric,
    valued: list[tuple[dict[str, Any], float]],
    meta: dict[str, Any] | None,
) -> tuple[list[tuple[dict[str, Any], float]], str, bool]:
    """The cells that can test a claim about `card`, where they were measured, and whether their memory was
    emulated. No cells: the text says why the claim is untested."""
    on_card = [(r, v) for r, v in valued if card.is_device(ran_on(r, meta))]
    if on_card:
        return on_card, f"measured on {ran_on(on_card[0][0], meta)}, the card the claim is about", False
    devices = ", ".join(dict.fromkeys(ran_on(r, meta) for r, _ in valued))
    dependence = card_dependence(metric)
    if dependence == "none":
        return valued, f"measured on {devices}; this figure does not depend on the card", False
    if dependence == "memory":
        emulated = [(r, v) for r, v in valued if (emulated_budget(r) or {}).get("target") == card.name]
        if emulated:
            return emulated, f"under an emulated {card.title} budget, measured on {devices}", True
        budget = valued[0][0].get("budget")
        why = budget["note"] if isinstance(budget, dict) and budget.get("note") else "the run set no budget"
        return (
            [],
            f"measured on {devices}; the claim is about the {card.title}, whose memory was not emulated ({why})",
            False,
        )
    elsewhere = _median(valued, metric)[1]
    return (
        [],
        f"measured on {devices} ({metric.show(elsewhere)} there); the claim is about the {card.title}, and only its "
        "memory is emulated: this figure depends on the card",
        False,
    )


def _selection(count: int, agreeing: int, verdict: Verdict, low: float, high: float) -> str:
    """How the judged cell was picked, for the verdict's reason."""
    if count == 1:
        return "judged on the one matching cell"
    return (
        f"judged on 1 of {count} matching cells: the median ({low:.4g}–{high:.4g} across them); "
        f"{agreeing} of {count} would be {verdict}"
    )


def evaluate(
    expectation: Expectation,
    records: list[dict[str, Any]],
    meta: dict[str, Any] | None = None,
    card: Card | None = None,
) -> dict[str, Any]:
    """One row of the expectations table: claim, expected, measured, verdict, the cell it came from and the reason.

    `meta` (the run's meta.json) names the device each record ran on; `card` is the card the claim is about (the
    suite's `hardware:`). A speed measured on another card leaves the claim untested; memory under that card's
    emulated budget is judged and says so (`emulated`)."""
    row: dict[str, Any] = {
        "claim": expectation.claim,
        "source": expectation.source,
        "metric": expectation.metric,
        "measured": None,
        "expected": None,
        "verdict": "untested",
        "emulated": False,
        "cell": None,
        "measured_on": None,
        "claim_card": card.title if card is not None else None,
        "matching_cells": 0,
        "reason": None,
    }
    matching = [r for r in records if _matches(r, expectation.axes())]
    finished = [r for r in matching if r.get("status") == "ok"]
    if not finished:
        statuses = sorted({str(r.get("status")) for r in matching})
        row["reason"] = (
            f"matching cells ended {', '.join(statuses)}"
            if matching
            else "no cell of this run matches the claim's axes"
        )
        return row
    metric = get_metric(expectation.metric)
    valued = _valued(finished, expectation.metric)
    if not valued:
        row["reason"] = f"metric '{expectation.metric}' was not recorded: {metric.missing_reason(finished[0])}"
        return row
    if card is None:
        devices = ", ".join(dict.fromkeys(ran_on(r, meta) for r, _ in valued))
        where, emulated = f"measured on {devices}; the claim names no card", False
    else:
        valued, where, emulated = _card_filter(card, metric, valued, meta)
        if not valued:
            row["reason"] = where
            return row
    judged = [(r, v, _judge(expectation, r, v, records, metric)) for r, v in valued]
    judged_ok = [(r, v, j) for r, v, j in judged if j is not None]
    if not judged_ok:
        row["reason"] = f"no finished reference cell with {expectation.lower_than or expectation.higher_than}"
        return row
    record, measured = _median([(r, v) for r, v, _ in judged_ok], metric)
    verdict, expected = next(j for r, _, j in judged_ok if r is record)
    agreeing = sum(j[0] == verdict for _, _, j in judged_ok)
    values = [v for _, v, _ in judged_ok]
    row.update(
        verdict=verdict,
        expected=expected,
        measured=measured,
        emulated=emulated,
        cell=axes_label(record),
        measured_on=ran_on(record, meta),
        matching_cells=len(judged_ok),
        reason=f"{where}; {_selection(len(judged_ok), agreeing, verdict, min(values), max(values))}",
    )
    return row


def verdict_note() -> str:
    """The verdict vocabulary and the rule that picks the judged cell, for the reports' claims section."""
    words = "; ".join(f"{word}: {meaning}" for word, meaning in VERDICTS.items())
    return (
        f"Claims the suite makes, checked against this run. {words}; {EMULATED}. A claim is about the suite's card "
        "(hardware:): its speed counts only when measured on that card. Where several cells match a claim, it is "
        "judged on the median one (of an even count, the worse middle one), never the best; the reason says how "
        "many matched and how many agree."
    )


def verdict_detail(row: dict[str, Any]) -> str:
    """The judged cell and the reason, or the reason alone when no cell was judged."""
    return f"{row['cell']}: {row['reason']}" if row.get("cell") else str(row.get("reason") or "")


def verdict_label(row: dict[str, Any]) -> str:
    """The verdict as a reader sees it: 'confirmed', or 'confirmed (emulated)' for memory under a card's budget."""
    return f"{row['verdict']} (emulated)" if row.get("emulated") else str(row["verdict"])


def evaluate_all(
    expectations: list[Expectation],
    records: list[dict[str, Any]],
    meta: dict[str, Any] | None = None,
    hardware: Any = None,
) -> list[dict[str, Any]]:
    """Every claim against the records; `hardware` is the suite's `hardware:` (the card the claims are about)."""
    card = target_card(hardware if hardware is not None else (meta or {}).get("hardware_target"))
    return [evaluate(expectation, records, meta, card) for expectation in expectations]


def evaluate_suite_data(
    suite: dict[str, Any], records: list[dict[str, Any]], meta: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """The expectations of a suite (as stored with a run) evaluated against the run's records."""
    expectations = [Expectation.model_validate(item) for item in suite.get("expectations") or []]
    return evaluate_all(expectations, records, meta, suite.get("hardware"))


def evaluate_run(run_dir: Any) -> list[dict[str, Any]]:
    """The expectations of a stored run's suite, evaluated against its records (latest attempt per cell)."""
    from segbench.results import store as results  # lazy: imports pandas

    suite = results.read_suite_copy(run_dir)
    if not suite.get("expectations"):
        return []
    return evaluate_suite_data(suite, results.read_records(run_dir), results.read_meta(run_dir))
