"""The profile in a report: per configuration its top operators and blocks, a stacked bar from preprocess through the
forward's blocks to postprocess, two precisions of one model side by side, the CSV's columns and `compare`'s lines.

Tables are pandas frames with plain columns; `html.py` and `exports.py` format them as every other section.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from segbench.results.labels import cell_label
from segbench.results.runs import RunData

LOW_PRECISIONS = ("int8", "bf16", "fp16", "fp8")
TOP_SHOWN = 12  # operators per configuration in a report (the record keeps more)
REGRESSION_RATIO = 1.10  # a block slower by more than this in compare is named
BLOCK_COLOURS = ("#e78ac3", "#a6d854", "#ffd92f", "#e5c494", "#b3b3b3", "#fc8d62", "#8dd3c7", "#bebada")
PROFILE_NOTE = (
    "From the runtime's own profiler (torch.profiler, ONNX Runtime session profiling, OpenVINO PERF_COUNT) over a "
    "pass of its own after the timed ones: self time per forward with the profiler on, so shares matter more than "
    "milliseconds. Precision is what the runtime reports executing (OpenVINO's exec_type, ONNX Runtime's input types, "
    "int8 kernel names in PyTorch); bound compares each block's FLOPs and bytes against the run's measured ceilings."
)


def profiled(run: RunData) -> list[dict[str, Any]]:
    return [record for record in run.ok if (record.get("profile") or {}).get("operators")]


def _low_share(row: dict[str, Any]) -> float:
    return float(row.get("low_precision_share") or 0.0)


def _float_share(row: dict[str, Any]) -> float:
    shares = row.get("precision_share") or {}
    return sum(value for key, value in shares.items() if key not in LOW_PRECISIONS and key != "quant/dequant")


def headline(record: dict[str, Any]) -> str:
    """'head: 38 %, 41 % of it in fp32 · backbone: ...' for the blocks over 10 % of the forward."""
    profile = record.get("profile") or {}
    parts = []
    for block in profile.get("blocks", [])[:4]:
        if block["share"] < 0.10 and parts:
            break
        shares = block.get("precision_share") or {}
        main = max(shares.items(), key=lambda item: item[1]) if shares else ("?", 0.0)
        low = _low_share(block)
        precision = (
            f"{_float_share(block):.0%} of it still in float" if low > 0 else f"{main[1]:.0%} of it in {main[0]}"
        )
        bound = f", {block['bound']}-bound" if block.get("bound") else ""
        parts.append(f"{block['name']}: {block['share']:.0%}, {precision}{bound}")
    coverage = profile.get("coverage")
    covered = f" (operators account for {coverage:.0%} of the profiled forward)" if coverage else ""
    return " · ".join(parts) + covered


def operator_frame(record: dict[str, Any], limit: int = TOP_SHOWN) -> pd.DataFrame:
    rows = [
        {
            "operator": row["name"],
            "implementation": row.get("implementation") or "",
            "precision": row.get("precision") or "",
            "self_ms": row["self_ms"],
            "share_pct": 100.0 * row["share"],
            "calls": row.get("calls"),
        }
        for row in (record.get("profile") or {}).get("operators", [])[:limit]
    ]
    return pd.DataFrame(rows, columns=["operator", "implementation", "precision", "self_ms", "share_pct", "calls"])


def block_frame(record: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for block in (record.get("profile") or {}).get("blocks", []):
        shares = block.get("precision_share") or {}
        rows.append(
            {
                "block": block["name"],
                "self_ms": block["self_ms"],
                "share_pct": 100.0 * block["share"],
                "low_precision_pct": 100.0 * _low_share(block),
                "precisions": ", ".join(f"{key} {value:.0%}" for key, value in shares.items()),
                "gflops": block["flops"] / 1e9 if block.get("flops") else None,
                "intensity": block.get("arithmetic_intensity"),
                "pct_of_roof": block.get("percent_of_attainable"),
                "bound": block.get("bound") or "",
            }
        )
    columns = [
        "block", "self_ms", "share_pct", "low_precision_pct", "precisions", "gflops", "intensity", "pct_of_roof",
        "bound",
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


@dataclass(frozen=True)
class ProfileSection:
    title: str
    headline: str
    operators: pd.DataFrame
    blocks: pd.DataFrame
    how: str


def sections(run: RunData) -> list[ProfileSection]:
    out = []
    for record in profiled(run):
        profile = record["profile"]
        how = (
            f"{profile.get('profiler')}, {profile.get('iters')} forwards; blocks from {profile.get('grouping')}; "
            f"profiled forward {profile.get('forward_ms')} ms (timed median {record['latency_ms']['median']:.3g} ms)"
        )
        frames = operator_frame(record), block_frame(record)
        out.append(ProfileSection(cell_label(record), headline(record), *frames, how))
    return out


# ---- two precisions of one model --------------------------------------------------------------------------------


def _pair_key(record: dict[str, Any]) -> tuple[Any, ...]:
    return (record["model"], tuple(record["resolution"]), record["batch_size"], record.get("hardware"))


def precision_pairs(run: RunData) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(float, low precision) cells of one model, resolution and batch: the same backend's fp32 where there is one,
    else the fp32 cell of the runtime the precision runs on (ort-int8 -> onnxruntime, ov-int8 -> openvino)."""
    cells = profiled(run)
    pairs = []
    for cell in cells:
        if cell["precision"] == "fp32":
            continue
        runtime = {"ort-int8": "onnxruntime", "ov-int8": "openvino"}.get(cell["precision"], cell["backend"])
        base = next(
            (
                other
                for other in cells
                if other["precision"] == "fp32" and _pair_key(other) == _pair_key(cell) and other["backend"] == runtime
            ),
            None,
        )
        if base is not None:
            pairs.append((base, cell))
    return pairs


def pair_frame(base: dict[str, Any], other: dict[str, Any]) -> pd.DataFrame:
    """Per block: ms in each, the speed-up, and how much of the low-precision cell's block stayed in float."""
    before = {block["name"]: block for block in base["profile"]["blocks"]}
    after = {block["name"]: block for block in other["profile"]["blocks"]}
    rows = []
    for name in [*after, *(name for name in before if name not in after)]:
        a, b = before.get(name), after.get(name)
        speedup = a["self_ms"] / b["self_ms"] if a and b and b["self_ms"] else None
        rows.append(
            {
                "block": name,
                "base_ms": a["self_ms"] if a else None,
                "other_ms": b["self_ms"] if b else None,
                "speedup": speedup,
                "verdict": (
                    "not in both"
                    if speedup is None
                    else "faster"
                    if speedup > 1.1
                    else "slower"
                    if speedup < 0.9
                    else "same"
                ),  # fmt: skip
                "float_pct": 100.0 * _float_share(b) if b else None,
            }
        )
    return pd.DataFrame(rows, columns=["block", "base_ms", "other_ms", "speedup", "verdict", "float_pct"])


def pair_title(base: dict[str, Any], other: dict[str, Any]) -> str:
    return f"{cell_label(base)} against {cell_label(other)}"


def pair_line(base: dict[str, Any], other: dict[str, Any]) -> str:
    frame = pair_frame(base, other)
    faster = [row.block for row in frame.itertuples() if row.verdict == "faster"]
    stayed = [row.block for row in frame.itertuples() if row.verdict in ("same", "slower")]
    shares = {block["name"]: block["share"] for block in other["profile"]["blocks"]}
    in_float = [
        f"{row.block} ({row.float_pct:.0f} % float)"
        for row in frame.itertuples()
        if (row.float_pct or 0) > 50 and shares.get(row.block, 0) >= 0.05  # blocks that matter to the forward
    ]
    unmatched = "" if len(faster) + len(stayed) else " (the two profiles share no block: one ran as a compiled graph)"
    return (
        f"{other['precision']} on {other['backend']}{unmatched}: faster in {', '.join(faster) or 'no block'}; "
        f"not faster in {', '.join(stayed) or 'no block'}; mostly float: {', '.join(in_float) or 'none'}"
    )


# ---- the stacked bar ----------------------------------------------------------------------------------------------


def stacked_plot(run: RunData) -> Any:
    """One bar per profiled cell: preprocess, the forward's blocks (their profile shares of the forward stage median),
    postprocess, in ms from the stage pass."""
    import matplotlib  # compare reads this module too, and needs no plots
    from matplotlib.figure import Figure

    from segbench.report.plots import MAX_ROWS, STAGE_COLOURS, STYLE, Plot, _encode  # lazy: imports matplotlib

    key, title = "plot-profile", "Where the time goes"
    cells = [r for r in profiled(run) if all((r.get("stages_ms") or {}).get(s) for s in STAGE_COLOURS)][:MAX_ROWS]
    if not cells:
        return Plot(key, title, None, "Skipped: no profiled cell recorded per-stage timings.")
    names: list[str] = []
    for record in cells:
        names += [b["name"] for b in record["profile"]["blocks"] if b["name"] not in names]
    colours = {name: BLOCK_COLOURS[index % len(BLOCK_COLOURS)] for index, name in enumerate(names)}
    with matplotlib.rc_context(STYLE):
        figure = Figure(figsize=(10, 1.6 + 0.36 * len(cells)), layout="constrained")
        axis = figure.subplots()
        labels = [cell_label(r) for r in cells]
        left = [0.0] * len(cells)
        segments = [("preprocess", STAGE_COLOURS["preprocess"])]
        segments += [(name, colours[name]) for name in names]
        segments += [("postprocess", STAGE_COLOURS["postprocess"])]
        for name, colour in segments:
            widths = [_segment_ms(r, name) for r in cells]
            axis.barh(labels, widths, left=left, color=colour, label=name, height=0.7)
            left = [a + b for a, b in zip(left, widths)]
        axis.invert_yaxis()
        axis.set(xlabel="ms per call (stage medians; the forward split by the profile's block shares)", title=title)
        axis.grid(axis="y", visible=False)
        figure.legend(loc="outside lower center", ncol=4, frameon=False)
        image = _encode(figure)
    note = "Preprocess and postprocess from the stage pass; the forward stage's median split by each block's share."
    return Plot(key, title, image, note)


def _segment_ms(record: dict[str, Any], name: str) -> float:
    stages = record["stages_ms"]
    if name in ("preprocess", "postprocess"):
        return float(stages[name]["median"])
    share = next((b["share"] for b in record["profile"]["blocks"] if b["name"] == name), 0.0)
    return float(stages["forward"]["median"]) * share


# ---- CSV and compare ------------------------------------------------------------------------------------------------


def block_regressions(old: dict[str, Any], new: dict[str, Any], ratio: float = REGRESSION_RATIO) -> list[str]:
    """Blocks whose share of the forward time grew, as 'neck 2.10 -> 3.40 ms (+62 %)': which part of a slower model
    got slower (profiled milliseconds carry the profiler's cost, so each side is scaled to its timed median)."""
    if not (old.get("profile") and new.get("profile")):
        return []
    before = {b["name"]: b for b in old["profile"].get("blocks", [])}
    lines = []
    for block in new["profile"].get("blocks", []):
        was = before.get(block["name"])
        if not was:
            continue
        then = was["share"] * old["latency_ms"]["median"]
        now = block["share"] * new["latency_ms"]["median"]
        if then > 0 and now / then > ratio:
            lines.append(f"{block['name']} {then:.3g} -> {now:.3g} ms ({now / then - 1:+.0%})")
    return lines
