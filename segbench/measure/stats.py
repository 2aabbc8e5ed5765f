"""Latency statistics as a small frozen value object that keeps its samples."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from segbench.measure.quantiles import TAIL_PERCENTILES, percentile_withheld

HIGH_CV = 0.10  # above this a cell's spread is worth a warning in tables and reports
MIN_SAMPLES_FOR_SPREAD = (
    5  # below this a CV or a bootstrap interval says nothing (n = 1 gives CV 0 and a zero-width CI)
)


def spread_unavailable(n: int) -> str | None:
    """Why CV and CI are withheld for n samples, or None when there are enough."""
    if n >= MIN_SAMPLES_FOR_SPREAD:
        return None
    return f"n = {n} < {MIN_SAMPLES_FOR_SPREAD} samples: CV and CI would be meaningless"


def tail_percentiles(values: np.ndarray) -> tuple[dict[str, float | None], dict[str, str] | None]:
    """p90 / p95 / p99 of the samples, each None (with its reason) where n is too small for it."""
    computed = dict(zip(TAIL_PERCENTILES, (float(v) for v in np.percentile(values, [90, 95, 99]))))
    reasons = {name: why for name in TAIL_PERCENTILES if (why := percentile_withheld(name, int(values.size)))}
    return {name: None if name in reasons else value for name, value in computed.items()}, reasons or None


def bootstrap_ci(
    samples: np.ndarray, quantile: float = 50.0, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Interval of a quantile of one process's samples, by stationary block bootstrap (consecutive samples are
    autocorrelated, so an i.i.d. bootstrap would be far too narrow); seeded, so the same samples give the same
    interval."""
    from segbench.measure.significance import interval, within_process_spread  # lazy: arch imports pandas

    values = np.asarray(samples, dtype=np.float64)
    if values.size < 2 or not (values > 0).all():
        value = float(np.percentile(values, quantile)) if values.size else float("nan")
        return value, value
    return interval(within_process_spread(values, quantile, seed=seed), confidence)


@dataclass(frozen=True)
class LatencyStats:
    """Summary of per-iteration latencies in milliseconds; `samples` keeps every measurement."""

    mean: float
    median: float
    p90: float | None  # None (with `percentiles_withheld`) below 1 / (1 - q) samples: see measure/quantiles.py
    p95: float | None
    p99: float | None
    min: float
    max: float
    std: float
    cv: float | None  # None (with `spread_unavailable`) below MIN_SAMPLES_FOR_SPREAD samples
    ci95: tuple[float, float] | None
    n: int
    samples: tuple[float, ...] = field(repr=False, default=())
    spread_unavailable: str | None = None
    percentiles_withheld: dict[str, str] | None = None  # by percentile ('p99'): why it is None

    @classmethod
    def from_samples(cls, samples_ms: list[float] | np.ndarray) -> LatencyStats:
        values = np.asarray(samples_ms, dtype=np.float64)
        if values.size == 0:
            raise ValueError("no samples")
        mean = float(values.mean())
        std = float(values.std(ddof=1)) if values.size > 1 else 0.0
        tails, tails_withheld = tail_percentiles(values)
        withheld = spread_unavailable(int(values.size))
        return cls(
            mean=mean,
            median=float(np.median(values)),
            p90=tails["p90"],
            p95=tails["p95"],
            p99=tails["p99"],
            min=float(values.min()),
            max=float(values.max()),
            std=std,
            cv=None if withheld else (std / mean if mean > 0 else 0.0),
            ci95=None if withheld else bootstrap_ci(values),
            n=int(values.size),
            samples=tuple(float(v) for v in values),
            spread_unavailable=withheld,
            percentiles_withheld=tails_withheld,
        )

    @property
    def is_noisy(self) -> bool:
        return self.cv is not None and self.cv > HIGH_CV

    def summary(self) -> dict[str, Any]:
        """The statistics without the samples (what results.jsonl stores under latency_ms)."""
        data = asdict(self)
        data.pop("samples")
        data["ci95"] = list(self.ci95) if self.ci95 is not None else None
        return data

    @classmethod
    def from_dict(cls, summary: dict[str, Any], samples: list[float] | None = None) -> LatencyStats:
        fields = {k: v for k, v in summary.items() if k in cls.__dataclass_fields__}
        fields["ci95"] = tuple(fields["ci95"]) if fields.get("ci95") is not None else None
        # Summaries stored before the rule kept a p99 for any n: the same rule applies when they are read.
        reasons = dict(fields.get("percentiles_withheld") or {})
        for name in TAIL_PERCENTILES:
            why = percentile_withheld(name, fields.get("n"))
            if why and fields.get(name) is not None:
                fields[name], reasons[name] = None, why
        fields["percentiles_withheld"] = reasons or None
        return cls(**fields, samples=tuple(samples or ()))
