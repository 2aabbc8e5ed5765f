"""Number formats shared by the terminal, HTML, Markdown and the metric catalogue ("–" for a missing value)."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, Callable

Formatter = Callable[[Any], str]


def missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def fmt_ms(value: Any) -> str:
    if missing(value):
        return "–"
    digits = 3 if abs(value) < 1 else 2 if abs(value) < 10 else 1 if abs(value) < 100 else 0
    return f"{value:,.{digits}f}"


def fmt_fixed(digits: int) -> Formatter:
    return lambda value: "–" if missing(value) else f"{value:,.{digits}f}"


def fmt_significant(value: Any) -> str:
    """Three significant digits: GFLOPs run from 0.0005 (a test net) to thousands."""
    if missing(value):
        return "–"
    return "< 0.001" if 0 < abs(value) < 0.001 else f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def fmt_memory_saving(value: Any) -> str:
    """A footprint against the reference's, as a reader says it: '38.0 % less', or '2.6× the memory' when it uses
    more (a saving of −164 % reads as nothing)."""
    if missing(value):
        return "–"
    return f"{value:.1f} % less" if value >= 0 else f"{1 - value / 100:.1f}× the memory"


def fmt_speedup(value: Any) -> str:
    return "–" if missing(value) else f"{value:.2f}×"


def fmt_params(millions: Any) -> str:
    """Millions with two decimals; tiny models as a plain count, so they do not all read 0.00."""
    if missing(millions):
        return "–"
    return f"{millions:,.2f} M" if millions >= 0.01 else f"{millions * 1e6:,.0f}"


def fmt_flag(value: Any) -> str:
    return "✓" if value else ""


def fmt_yes_no(value: Any) -> str:
    return "–" if missing(value) else "yes" if value else "no"


def fmt_seconds(value: Any) -> str:
    if missing(value):
        return "–"
    return f"{value * 1000:.3g} ms" if abs(value) < 1 else f"{value:,.1f} s"


def fmt_duration(seconds: Any) -> str:
    if missing(seconds):
        return "unknown"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s" if minutes else f"{secs} s"


def fmt_time(text: Any) -> str:
    if not text:
        return "unknown"
    try:
        return datetime.fromisoformat(str(text)).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return str(text)
