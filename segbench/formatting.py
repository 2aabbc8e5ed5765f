"""Number formats shared by the terminal, HTML, Markdown and the metric catalogue ("–" for a missing value), and the
one rule for text that reaches a terminal or a text file (`printable`)."""

from __future__ import annotations

import math
import re
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


# C0 controls but tab and newline, DEL, and C1 controls: ESC sequences set a terminal's title, clear its screen or
# rewrite what it shows; a carriage return overwrites a line.
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SURROGATES = re.compile(r"[\ud800-\udfff]")


def _surrogate_text(match: re.Match[str]) -> str:
    """A byte a file name carried that is not UTF-8 (Python keeps it as U+DC80..U+DCFF) shown as `\\xNN`."""
    code = ord(match.group())
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else "\ufffd"


def printable(text: str) -> str:
    """Text safe to print or write as text: control characters (newline and tab kept) removed, and the raw bytes of a
    non-UTF-8 file name spelled `\\xNN` (they cannot be encoded, and a terminal would misread them)."""
    return _SURROGATES.sub(_surrogate_text, _CONTROLS.sub("", text))
