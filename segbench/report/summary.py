"""Terminal summaries of cell records (rich tables), shared by `segbench run` and later reports."""

from __future__ import annotations

from typing import Any, Iterable

from rich.markup import escape
from rich.table import Table

STATUS_STYLE = {"ok": "green", "oom": "yellow", "timeout": "red", "error": "red", "unsupported": "dim"}


def headline_memory(record: dict[str, Any]) -> tuple[float | None, str]:
    """The peak-memory figure a table headlines, and its name.

    On a GPU: NVML's per-process peak (what the card really gives the process: context, allocator
    cache and libraries), falling back to the allocator's reserved peak. On a CPU: peak RSS.
    """
    memory = record.get("memory_mb") or {}
    if str(record.get("device", "")).startswith("cuda"):
        for name in ("nvml_process_peak", "torch_reserved_peak"):
            if memory.get(name) is not None:
                return memory[name], name
        return None, "nvml_process_peak"
    return memory.get("rss_peak"), "rss_peak"


def measurement_flags(record: dict[str, Any]) -> list[str]:
    """Why a cell's figures deserve less trust: noisy, fewer samples than asked for, measured on a busy machine."""
    flags = ["noisy"] if record.get("noisy") else []
    if record.get("undersampled"):
        flags.append(f"undersampled: {record['undersampled']}")
    if record.get("contended"):
        flags.append(f"contended: {record['contended']}")
    return flags


def status_text(record: dict[str, Any]) -> str:
    status = record.get("status") or "?"
    style = STATUS_STYLE.get(status, "")
    if status == "ok":
        latency = record["latency_ms"]
        peak, _ = headline_memory(record)
        peak_text = f" · peak {peak:.0f} MiB" if peak is not None else ""
        noisy = "".join(f" [yellow](! {escape(flag)})[/]" for flag in measurement_flags(record))
        return f"[{style}]ok[/] median {latency['median']:.2f} ms · {record['fps']:.1f} FPS{peak_text}{noisy}{stream_text(record)}"
    return f"[{style}]{escape(status)}[/]: {escape(str(record.get('error') or ''))}"


def stream_text(record: dict[str, Any]) -> str:
    stream = record.get("stream")
    if not stream:
        return ""
    keeps_up = "[green]keeps up[/]" if stream.get("keeps_up") else "[red]falls behind[/]"
    best = f" · max sustainable {stream['max_sustainable_fps']:.1f} FPS" if "max_sustainable_fps" in stream else ""
    latency = stream.get("latency_ms") or {}
    p95 = f", p95 {latency['p95']:.1f} ms" if latency else ""
    return f" · stream at {stream.get('target_fps', 0):.1f} FPS: {keeps_up}, {stream.get('drop_pct', 0):.1f} % dropped{p95}{best}"


def summary_table(records: Iterable[dict[str, Any]], title: str = "") -> Table:
    """Every user or library string is escaped: a `[/path]` in a name must not be read as markup."""
    table = Table(title=escape(title))
    for column in ("model", "resolution", "batch", "precision", "backend", "status", "median ms", "p95 ms", "CV %", "FPS", "peak MiB"):
        table.add_column(column, justify="right" if column in ("batch", "median ms", "p95 ms", "CV %", "FPS", "peak MiB") else "left")
    for record in records:
        status = record.get("status") or "?"
        latency = record.get("latency_ms") or {}
        peak, _ = headline_memory(record)
        height, width = record["resolution"]
        table.add_row(
            escape(str(record["model"])),
            f"{height}x{width}",
            str(record["batch_size"]),
            escape(str(record["precision"])),
            escape(str(record["backend"])),
            f"[{STATUS_STYLE.get(status, '')}]{escape(status)}[/]",
            f"{latency['median']:.2f}" if latency else "–",
            f"{latency['p95']:.2f}" if latency else "–",
            f"{latency['cv'] * 100:.1f}" if latency and latency.get("cv") is not None else "–",  # None below 5 samples
            f"{record['fps']:.1f}" if record.get("fps") else "–",
            f"{peak:.0f}" if peak is not None else "–",
        )
    return table


VERDICT_STYLE = {"confirmed": "green", "refuted": "red", "untested": "yellow"}


def expectations_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="expectations")
    for column in ("claim", "metric", "expected", "measured", "verdict", "cell / reason"):
        table.add_column(column)
    for row in rows:
        measured = "–" if row["measured"] is None else f"{row['measured']:.4g}"
        style = VERDICT_STYLE.get(row["verdict"], "")
        texts = [escape(str(value)) for value in (row["claim"], row["metric"], row["expected"] or "–", row["cell"] or row["reason"] or "")]
        table.add_row(*texts[:3], measured, f"[{style}]{escape(row['verdict'])}[/]", texts[3])
    return table
