"""How many samples a tail percentile needs before it is shown: the one rule, shared by the cell and every report.

The rule is the nonparametric one: a q-quantile needs n >= 1 / (1 - q) samples (p90 10, p95 20, p99 100), so that at
least one sample is expected beyond the true quantile (n x (1 - q) >= 1). With fewer, the interpolated estimate
(numpy's default, Hyndman & Fan's definition 7) lies between the two largest samples: it is the maximum, or a blend
towards it, not a tail. A "p99" from 2 samples is the slower of the two.

numpy-free, so the metric catalogue (imported by `--help` and the suite schema) can apply it to stored records.
"""

from __future__ import annotations

import math

TAIL_PERCENTILES = ("p90", "p95", "p99")


def samples_needed(percentile: str) -> int:
    """Samples a percentile named 'p90' / 'p95' / 'p99' needs; 1 for the median ('p50', 'median')."""
    if percentile in ("median", "p50"):
        return 1
    tail = 100 - float(percentile.removeprefix("p"))
    return math.ceil(round(100 / tail, 9))  # rounded: 100 / 5 must be 20, never 20.000000000000004 rounded up


def percentile_withheld(percentile: str, n: int | float | None) -> str | None:
    """Why a percentile of n samples is withheld (too few, or n unrecorded), or None when n supports it."""
    needed = samples_needed(percentile)
    if needed <= 1:
        return None
    if n is None:
        return f"{percentile} withheld: the sample count was not recorded"
    if n >= needed:
        return None
    return f"{percentile} needs n ≥ {needed} samples (at least one beyond it), n = {int(n)}"


def time_needed_text(samples: int, sample_ms: float | None, setting: str) -> str:
    """How long a pass must run for `samples` samples at `sample_ms` each, and which setting to raise."""
    if sample_ms is None or not math.isfinite(sample_ms) or sample_ms <= 0:
        return f"raise {setting}"
    seconds = samples * sample_ms / 1000
    return f"at {_ms_text(sample_ms)} ms each that is ≥ {_seconds_text(seconds)}: raise {setting}"


def _ms_text(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _seconds_text(value: float) -> str:
    return f"{value:,.0f} s" if value >= 100 else f"{value:.2g} s"
