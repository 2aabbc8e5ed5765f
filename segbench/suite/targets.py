"""Deployment targets and a verdict per cell: meets, misses (which target, by how much), borderline (met by the median,
but its 95 % interval straddles the bound, so a rerun may miss it) or unknown (which figure, why).

    targets:
      fps: 30                  # achieved FPS: end to end, or the sustained camera rate of a stream cell
      max_latency_ms: 50       # a latency-percentile ceiling (end to end, or from arrival for a stream)
      latency_percentile: p99
      memory: rtx3060          # a card profile (its memory) or a size: 12GiB, 800MiB
      min_agreement: 99        # pixel agreement with fp32 eager, in %
      min_miou: 70             # mIoU against the suite's labelled dataset, in %
      metrics:                 # any other catalogue metric
        - {metric: prepare_s, at_most: 120}

Memory is judged on what competes for the budget: on a GPU the cell's headline peak (NVML's
per-process peak, which includes the CUDA context) against the card's memory; on a CPU the
model's own footprint (peak RSS minus the baseline held before the model was built).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from segbench.errors import SegbenchError
from segbench.naming import did_you_mean
from segbench.results.metrics import METRICS, Metric, Record, UnknownMetricError, get_metric, interval, ran_on_gpu

Status = Literal["meets", "borderline", "misses", "unknown"]
STATUSES: tuple[Status, ...] = ("meets", "borderline", "misses", "unknown")
BORDERLINE_ADVICE = "rerun with -s timing.repeats=3 (or a longer timing.max_time_s) to decide"
Percentile = Literal["p50", "p90", "p95", "p99"]
SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(KiB|MiB|GiB|TiB|KB|MB|GB|TB|K|M|G|T)?\s*$", re.IGNORECASE)
MIB_PER_UNIT = {"k": 1 / 1024, "m": 1.0, "g": 1024.0, "t": 1024.0**2}  # card sizes are binary: "12 GB" is 12 x 1024 MiB


def parse_size_mb(text: str | float | int) -> float | None:
    """'12GiB', '800 MiB', '12GB' or a bare number (MiB) in MiB; None when the text is no size."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text) if text > 0 else None
    match = SIZE.match(str(text))
    if not match:
        return None
    unit = (match.group(2) or "M")[0].lower()
    value = float(match.group(1)) * MIB_PER_UNIT[unit]
    return value if value > 0 else None


class Bound(BaseModel):
    """A bound on any catalogue metric."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str
    at_least: float | None = None
    at_most: float | None = None

    @field_validator("metric")
    @classmethod
    def _known(cls, value: str) -> str:
        try:
            get_metric(value)
        except UnknownMetricError as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _one_bound(self) -> Bound:
        if (self.at_least is None) == (self.at_most is None):
            raise ValueError("give exactly one of at_least, at_most")
        return self


class Targets(BaseModel):
    """What a deployment needs; every field is optional, an empty block sets no target."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fps: Annotated[float, Field(gt=0)] | None = None
    max_latency_ms: Annotated[float, Field(gt=0)] | None = None
    latency_percentile: Percentile = "p99"
    memory: str | float | None = None
    min_agreement: Annotated[float, Field(ge=0, le=100)] | None = None
    min_miou: Annotated[float, Field(ge=0, le=100)] | None = None  # mIoU against the suite's dataset, in %
    cameras: Annotated[int, Field(ge=1, strict=True)] | None = None  # capacity: at least this many at camera_fps
    metrics: list[Bound] = Field(default_factory=list)

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str | float | None) -> str | float | None:
        if value is None or parse_size_mb(value) is not None:
            return value
        from segbench.hardware import list_profiles  # lazy: imports torch

        if value in list_profiles():
            return value

        raise ValueError(
            f"{value!r} is neither a size (12GiB, 800MiB) nor a card profile "
            f"({did_you_mean(str(value), list_profiles())}known: {', '.join(list_profiles())})"
        )

    @property
    def empty(self) -> bool:
        return not self.requirements()

    def memory_budget(self) -> tuple[float, str] | None:
        """The memory budget in MiB and its name ('rtx3060 memory', '12 GiB')."""
        if self.memory is None:
            return None
        size = parse_size_mb(self.memory)
        if size is not None:
            return size, f"{size / 1024:g} GiB" if size >= 1024 else f"{size:g} MiB"
        from segbench.hardware import load_profile  # lazy: imports torch

        profile = load_profile(str(self.memory))
        # The total the driver reports (what the budget cap uses), not the nominal size: ECC and reserved memory never
        # reach CUDA.
        return float(profile.total_mb), f"{profile.name} memory ({profile.total_mb:,.0f} MiB)"

    def requirements(self) -> list[Requirement]:
        found: list[Requirement] = []
        if self.fps is not None:
            found.append(Requirement("achieved_fps", "at_least", self.fps))
        if self.max_latency_ms is not None:
            found.append(Requirement(f"latency_{self.latency_percentile}_ms", "at_most", self.max_latency_ms))
        budget = self.memory_budget()
        if budget is not None:
            found.append(Requirement("memory", "at_most", budget[0], budget[1]))
        if self.min_agreement is not None:
            found.append(Requirement("pixel_agreement_pct", "at_least", self.min_agreement))
        if self.min_miou is not None:
            found.append(Requirement("miou_gt_pct", "at_least", self.min_miou))
        if self.cameras is not None:
            found.append(Requirement("max_cameras", "at_least", float(self.cameras)))
        for bound in self.metrics:
            key = get_metric(bound.metric).key
            found.append(
                Requirement(
                    key,
                    "at_least" if bound.at_least is not None else "at_most",
                    bound.at_least if bound.at_least is not None else bound.at_most,
                )
            )  # type: ignore[arg-type]
        return found

    def merged(self, **overrides: Any) -> Targets:
        """These targets with the non-None overrides (command-line options) applied."""
        given = {key: value for key, value in overrides.items() if value is not None}
        return Targets.model_validate({**self.model_dump(), **given}) if given else self


@dataclass(frozen=True)
class Requirement:
    """One target: a catalogue metric (or 'memory', which picks the figure per device) and a bound."""

    metric: str
    kind: Literal["at_least", "at_most"]
    threshold: float
    budget_name: str = ""

    def metric_for(self, record: Record) -> Metric:
        if self.metric == "memory":
            return METRICS["peak_mb" if ran_on_gpu(record) else "footprint_mb"]
        return METRICS[self.metric]

    @property
    def label(self) -> str:
        if self.metric == "memory":
            return f"memory ≤ {self.budget_name}"
        metric = METRICS[self.metric]
        return f"{metric.name} {'≥' if self.kind == 'at_least' else '≤'} {metric.show(self.threshold)}"

    def check(self, record: Record) -> Check:
        metric = self.metric_for(record)
        value = metric.value(record)
        if value is None:
            return Check(self, metric, None, None, metric.missing_reason(record))
        passed = value >= self.threshold if self.kind == "at_least" else value <= self.threshold
        return Check(self, metric, value, passed, "", interval(metric, record))


@dataclass(frozen=True)
class Check:
    requirement: Requirement
    metric: Metric
    value: float | None
    passed: bool | None  # None: the figure is missing
    reason: str
    interval: tuple[float, float] | None = None  # the value's 95 % interval, where one was measured

    @property
    def borderline(self) -> bool:
        """Met by the value, but its interval reaches past the bound: another run may well miss it."""
        if not self.passed or self.interval is None:
            return False
        low, high = self.interval
        bound = self.requirement.threshold
        return low < bound if self.requirement.kind == "at_least" else high > bound

    @property
    def shortfall(self) -> float:
        """How far the value is from the bound, as a fraction of the bound (0 when met or unknown)."""
        if self.passed is not False or self.value is None or not self.requirement.threshold:
            return 0.0
        return abs(self.value - self.requirement.threshold) / abs(self.requirement.threshold)

    @property
    def text(self) -> str:
        show = self.metric.show
        if self.value is None:
            return f"{self.metric.name} unknown ({self.reason})"
        if self.borderline and self.interval is not None:
            low, high = self.interval
            bound = self.requirement.budget_name or show(self.requirement.threshold)
            return (
                f"{self.metric.name} {show(self.value)}, borderline: its 95 % interval {show(low)}–{show(high)} "
                f"straddles {bound}"
            )
        if self.passed:
            return f"{self.metric.name} {show(self.value)}"
        gap = abs(self.value - self.requirement.threshold)
        side = "<" if self.requirement.kind == "at_least" else ">"
        bound = self.requirement.budget_name or show(self.requirement.threshold)
        return f"{self.metric.name} {show(self.value)} {side} {bound} (misses by {show(gap)}, {self.shortfall:.0%})"


@dataclass(frozen=True)
class Verdict:
    status: Status
    checks: tuple[Check, ...]
    text: str

    @property
    def shortfall(self) -> float:
        """The largest relative miss: ranks near misses (a failed cell ranks last)."""
        misses = [check.shortfall for check in self.checks if check.passed is False]
        return max(misses) if misses else float("inf")


def verdict(record: Record, targets: Targets) -> Verdict:
    """Meets every target, misses one or more (each named, with the gap), or unknown (the missing figure and why)."""
    status = record.get("status")
    if status == "oom":
        return Verdict("misses", (), f"ran out of memory: {_short(record.get('error') or 'oom')}")
    if status != "ok":
        return Verdict("unknown", (), f"the cell ended {status}: {record.get('error') or 'no reason recorded'}")
    checks = tuple(requirement.check(record) for requirement in targets.requirements())
    missed = [check for check in checks if check.passed is False]
    unknown = [check for check in checks if check.passed is None]
    if missed:
        return Verdict("misses", checks, "; ".join(check.text for check in missed))
    if unknown:
        return Verdict("unknown", checks, "; ".join(check.text for check in unknown))
    if any(check.borderline for check in checks):
        return Verdict("borderline", checks, "; ".join(check.text for check in checks) + f" ({BORDERLINE_ADVICE})")
    return Verdict("meets", checks, "; ".join(check.text for check in checks))


def _short(text: str, limit: int = 120) -> str:
    """An error's first sentence, cut at `limit` characters (OOM messages run to a paragraph)."""
    first = str(text).split(". ")[0]
    return first if len(first) <= limit else first[: limit - 1] + "…"


def targets_from_suite(suite: dict[str, Any]) -> Targets | None:
    """The `targets:` block of a stored suite, or None; a broken block is a one-line error."""
    block = suite.get("targets") if isinstance(suite, dict) else None
    if not block:
        return None
    try:
        return Targets.model_validate(block)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise SegbenchError(
            f"suite.yaml: targets{'.' + where if where else ''}: {error['msg'].removeprefix('Value error, ')}"
        ) from None


def describe(targets: Targets) -> str:
    """The targets in one sentence, e.g. 'achieved FPS ≥ 30.0; memory ≤ rtx3060 memory'."""
    return "; ".join(requirement.label for requirement in targets.requirements())
