"""Terminal summaries of cell records (rich tables), shared by `segbench run` and later reports."""

from __future__ import annotations

from typing import Any, Iterable

from rich.markup import escape
from rich.table import Table

from segbench.results.metrics import METRICS, headline_memory
from segbench.suite.expectations import verdict_detail, verdict_label

__all__ = ["headline_memory", "status_text", "stream_text", "summary_table", "expectations_table"]

STATUS_STYLE = {
    "ok": "green",
    "oom": "yellow",
    "timeout": "red",
    "error": "red",
    "unsupported": "dim",
    "pruned": "cyan",  # skipped by a search: the rule and its evidence in `search`
}


def measurement_flags(record: dict[str, Any]) -> list[str]:
    """Why a cell's figures deserve less trust: noisy, fewer samples than asked for, a busy or drifting machine."""
    flags = ["noisy"] if record.get("noisy") else []
    if record.get("undersampled"):
        flags.append(f"undersampled: {record['undersampled']}")
    if record.get("contended"):
        flags.append(f"contended: {record['contended']}")
    if record.get("drifted"):
        flags.append(f"drifted: {record['drifted']}")
    for flag in ("inconsistent_forward", "over_budget"):
        if record.get(flag):
            flags.append(f"{flag}: {record[flag]}")
    flags += roofline_flags(record)
    return flags


def roofline_flags(record: dict[str, Any]) -> list[str]:
    """A share of a yardstick above 100 %: shown as measured, flagged, because the yardstick was not the maximum."""
    roofline = record.get("roofline") or {}
    flags = []
    shares = ("percent_of_peak", "percent_of_ceiling", "percent_of_attainable")
    peak, ceiling, roof = (roofline.get(key) for key in shares)
    if isinstance(peak, (int, float)) and peak > 100.0:
        flags.append(f"above_peak: {peak:.0f} % of the published {roofline.get('peak_figure')} (the FLOP count is off)")
    if isinstance(ceiling, (int, float)) and ceiling > 100.0:
        kernel, kind = roofline.get("ceiling_kernel") or "the run's GEMM", roofline.get("matmul_class")
        flags.append(f"above_ceiling: {ceiling:.0f} % of the measured {kind} ceiling ({kernel})")
    if isinstance(roof, (int, float)) and roof > 100.0:
        flags.append(
            f"above_roof: {roof:.0f} % of the attainable roof (the ceiling was not the maximum, or a fused forward "
            "moves fewer bytes than counted)"
        )
    return flags


# Why a flagged cell's figures deserve less trust, and what to do about it, per flag (`measurement_flags`' fields).
UNRELIABLE = {
    "contended": ("contended", "other processes took its cores", "rerun on a quiet machine"),
    "drifted": ("drifted", "the host's speed changed during the cell", "rerun on a quiet machine"),
    "undersampled": ("undersampled", "fewer samples than asked", "raise timing.max_time_s"),
}


def reliability_text(records: list[dict[str, Any]]) -> str | None:
    """One sentence on how many ok cells carry each flag that makes a verdict unreliable, and what to do; None when
    none does."""
    ok = [record for record in records if record.get("status") == "ok"]
    parts, actions = [], []
    for field, (word, why, action) in UNRELIABLE.items():
        count = sum(1 for record in ok if record.get(field))
        if count:
            parts.append(f"{count} {word} ({why})")
            actions.append(action)
    if not parts:
        return None
    unique_actions = list(dict.fromkeys(actions))
    return (
        f"Reliability: of {len(ok)} ok cell(s), {', '.join(parts)}; their figures and verdicts may not hold: "
        f"{' and '.join(unique_actions)}."
    )


def status_text(record: dict[str, Any]) -> str:
    status = record.get("status") or "?"
    style = STATUS_STYLE.get(status, "")
    if status == "ok":
        latency = record["latency_ms"]
        peak, _ = headline_memory(record)
        peak_text = f" · peak {peak:.0f} MiB" if peak is not None else ""
        noisy = "".join(f" [yellow](! {escape(flag)})[/]" for flag in measurement_flags(record))
        end_to_end = METRICS["end_to_end_fps"].value(record)
        throughput = METRICS["end_to_end_throughput_fps"].value(record)
        fps = f"{record['fps']:.1f} FPS forward (1/latency)" + (
            f", {end_to_end:.1f} end to end" if end_to_end is not None else ""
        )
        fps += f" ({throughput:.1f} images / wall time)" if throughput is not None else ""
        phase = (record.get("search") or {}).get("phase")
        searched = {"screen": " · screened (brief timing)", "extend": " · timed in full after screening"}.get(
            str(phase), ""
        )
        scenario = stream_text(record) + capacity_text(record)
        return f"[{style}]ok[/] median {latency['median']:.2f} ms · {fps}{peak_text}{noisy}{scenario}{searched}"
    if status == "pruned":
        search = record.get("search") or {}
        return f"[{style}]pruned[/] ({escape(str(search.get('rule')))}): {escape(str(search.get('reason') or ''))}"
    return f"[{style}]{escape(status)}[/]: {escape(str(record.get('error') or ''))}"


def capacity_text(record: dict[str, Any]) -> str:
    """' · 3 cameras at 30 FPS (batched; 4 failed on drops)' for a capacity cell, else ''."""
    capacity = record.get("capacity")
    if not isinstance(capacity, dict):
        return ""
    fps = f"{capacity.get('camera_fps') or 0:g} FPS"
    if capacity.get("max_cameras") is None:
        return f" · [red]no camera count confirmed at {fps}[/]: {escape(str(capacity.get('max_cameras_why') or ''))}"
    failing = capacity.get("failing_cameras")
    why = f"; {failing} failed on {capacity.get('failed_on')}" if failing else ""
    return f" · {capacity['max_cameras']} cameras at {fps} ({escape(str(capacity.get('policy')))}{escape(why)})"


def stream_text(record: dict[str, Any]) -> str:
    stream = record.get("stream")
    if not stream:
        return ""
    keeps_up = "[green]keeps up[/]" if stream.get("keeps_up") else "[red]falls behind[/]"
    best = ""
    if "max_sustainable_fps" in stream:
        rate = stream["max_sustainable_fps"]
        best = f" · max sustainable {rate:.1f} FPS" if isinstance(rate, (int, float)) else " · no sustainable rate"
    p95_ms, frames = METRICS["stream_p95_ms"].value(record), METRICS["stream_n"].value(record)
    p95 = f", p95 {p95_ms:.1f} ms (n = {frames:.0f})" if p95_ms is not None and frames is not None else ""
    latency = stream.get("latency_ms") or {}
    bound = stream.get("latency_bound_ms")
    if isinstance(bound, (int, float)) and latency:  # the latency criterion: say what was judged against what
        percentile = (stream.get("criterion") or {}).get("percentile") or "p99"
        judged = latency.get("median" if percentile == "p50" else percentile)
        if isinstance(judged, (int, float)):
            p95 = f", {percentile} from schedule {judged:.1f} ms (bound {bound:.1f}, n = {latency.get('n')})"
    return (
        f" · stream at {stream.get('target_fps', 0):.1f} FPS: {keeps_up}, {stream.get('drop_pct', 0):.1f} % "
        f"dropped{p95}{best}"
    )


SUMMARY_METRICS = (
    "median_ms",
    "p95_ms",
    "n",
    "cv_pct",
    "fps",
    "end_to_end_fps",
    "end_to_end_throughput_fps",
    "peak_mb",
    "footprint_mb",
)


def summary_table(records: Iterable[dict[str, Any]], title: str = "") -> Table:
    """Every user or library string is escaped: a `[/path]` in a name must not be read as markup. Figures come from the
    metric catalogue."""
    table = Table(title=escape(title))
    for column in ("model", "resolution", "batch", "precision", "backend", "status"):
        table.add_column(column, justify="right" if column == "batch" else "left")
    for key in SUMMARY_METRICS:
        table.add_column(escape(METRICS[key].label), justify="right")
    for record in records:
        status = record.get("status") or "?"
        height, width = record["resolution"]
        table.add_row(
            escape(str(record["model"])),
            f"{height}x{width}",
            str(record["batch_size"]),
            escape(str(record["precision"])),
            escape(str(record["backend"])),
            f"[{STATUS_STYLE.get(status, '')}]{escape(status)}[/]",
            *(METRICS[key].format(METRICS[key].value(record)) for key in SUMMARY_METRICS),
        )
    return table


VERDICT_STYLE = {"confirmed": "green", "refuted": "red", "untested": "yellow"}


def expectations_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="expectations")
    for column in ("claim", "metric", "expected", "measured", "verdict", "cell and reason"):
        table.add_column(column)
    for row in rows:
        measured = "–" if row["measured"] is None else f"{row['measured']:.4g}"
        style = VERDICT_STYLE.get(row["verdict"], "")
        texts = [
            escape(str(value)) for value in (row["claim"], row["metric"], row["expected"] or "–", verdict_detail(row))
        ]
        table.add_row(*texts[:3], measured, f"[{style}]{escape(verdict_label(row))}[/]", texts[3])
    return table
