"""Scale benchmark: `segbench report` and `segbench compare` on runs of thousands of cells (issue 34's targets).

    python -m segbench.bench.scale [--cells 10000] [--samples 1000] [--out DIR] [--keep] [--json FILE]

Synthesises two run folders of N cells each (A, the baseline, and B, the same matrix measured again), written
through segbench's own record schema and store, so every line is one that `segbench run` could have written and
the reader validates. The matrix is real registry models × resolutions × batch sizes × precisions × backends; a
few percent of cells end unsupported, oom, error or timeout, and an ok cell keeps `--samples` latency samples from
an autocorrelated series (as a real process's are) plus a tenth as many per stage. In B most cells only move by
noise, one in a hundred is 60 % slower and one in a hundred 45 % faster, so compare has verdicts to reach.

It then times, each as its own subprocess as a user runs it, `segbench report A -o report.html` and `segbench
compare A B -o compare.html`, with each one's wall time and peak RSS (`os.wait4`'s rusage of that child), and
prints them against the targets with this CPU's model and instruction sets. A benchmark to run on a quiet
machine, never a timed test: the figures depend on the host.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from segbench.bench.cpu_best import instruction_sets
from segbench.measure.stats import HIGH_CV, spread_unavailable, tail_percentiles
from segbench.models.registry import get_card
from segbench.results import store
from segbench.results.schema import validate_meta, validate_record
from segbench.suite.matrix import CellSpec, expand
from segbench.suite.schema import parse_suite
from segbench.system.env import cpu_model, fingerprint

REPORT_TARGET_S = 30.0
REPORT_TARGET_RSS_MB = 1024.0
COMPARE_TARGET_S = 60.0
DEFAULT_CELLS = 10_000
DEFAULT_SAMPLES = 1_000
STAGE_SHARE = 10  # the stage pass keeps a tenth as many frames as the latency pass (three timers per frame)

# The matrix's axes, largest first; a smaller --cells takes fewer values of each (see _axes).
MODELS = (
    "fast-scnn",
    "deeplabv3-mobilenetv3-large",
    "segformer-b0",
    "segformer-b1",
    "segformer-b2",
    "segformer-b3",
    "segformer-b4",
    "segformer-b5",
    "segformer-b0-cityscapes",
    "segformer-b1-cityscapes",
    "yolov8n-seg",
    "yolov8s-seg",
    "yolov8m-seg",
    "yolov8l-seg",
    "yolov8x-seg",
    "yolo26n-sem",
    "yolo26s-sem",
    "yolo26m-sem",
    "mask2former-swin-t",
    "sam-vit-b",
)
RESOLUTIONS = (256, 320, 384, 448, 512, 576, 640, [512, 1024], [720, 1280], 1024)
BATCHES = (1, 2, 4, 8, 16)
PRECISIONS = ("fp32", "bf16", "int8", "int8-wo", "amp-bf16")
BACKENDS = ("eager", "compile")
# Of every cell: the share that ends in each failing status, the rest ok.
FAILURE_SHARES = {"unsupported": 0.02, "oom": 0.01, "error": 0.004, "timeout": 0.002}
SLOWER_SHARE, FASTER_SHARE = 0.01, 0.01  # cells of B that really changed, by these factors
SLOWER, FASTER = 1.6, 0.55


# ---- the synthetic runs ------------------------------------------------------------------------------------


def _axes(cells: int) -> dict[str, list[Any]]:
    """The fewest values of each axis (dropping from the longest first) whose product still holds `cells`."""
    axes: dict[str, list[Any]] = {
        "models": list(MODELS),
        "resolutions": list(RESOLUTIONS),
        "batch_sizes": list(BATCHES),
        "precisions": list(PRECISIONS),
        "backends": list(BACKENDS),
    }
    while True:
        longest = max((name for name in axes if len(axes[name]) > 1), key=lambda n: len(axes[n]), default=None)
        if longest is None or math.prod(len(v) for v in axes.values()) / len(axes[longest]) * (
            len(axes[longest]) - 1
        ) < cells:
            return axes
        axes[longest] = axes[longest][:-1]


def synthetic_suite(cells: int) -> dict[str, Any]:
    return {
        "name": "scale",
        "description": f"segbench.bench.scale: {cells} synthetic cells",
        "device": "cpu",
        **_axes(cells),
        "timing": {"min_iters": 50, "max_iters": 2000},
    }


def _series(rng: np.random.Generator, median_ms: float, n: int, rho: float = 0.5, sigma: float = 0.04) -> np.ndarray:
    """n latencies around median_ms: AR(1) in the logs (consecutive samples of a process are correlated), plus the
    rare slow iteration a real pass has."""
    noise = rng.normal(0.0, sigma, n)
    logs = np.empty(n)
    logs[0] = noise[0]
    for index in range(1, n):
        logs[index] = rho * logs[index - 1] + noise[index]
    values = median_ms * np.exp(logs)
    values[rng.random(n) < 0.01] *= 1.5
    return np.round(values, 6)


def _summary(values: np.ndarray) -> dict[str, Any]:
    """latency_ms as LatencyStats.summary() has it; the interval is the normal one on a tenth of the samples
    (a stand-in for the block bootstrap, which would take minutes over 10,000 cells and is not what is timed)."""
    n = int(values.size)
    mean, median, std = float(values.mean()), float(np.median(values)), float(values.std(ddof=1)) if n > 1 else 0.0
    tails, withheld = tail_percentiles(values)
    unavailable = spread_unavailable(n)
    half = 1.96 * 1.2533 * std / math.sqrt(max(1.0, n / 10))
    return {
        "mean": mean,
        "median": median,
        **tails,
        "min": float(values.min()),
        "max": float(values.max()),
        "std": std,
        "cv": None if unavailable else std / mean,
        "ci95": None if unavailable else [median - half, median + half],
        "n": n,
        "spread_unavailable": unavailable,
        "percentiles_withheld": withheld,
    }


MODEL_COST = {name: 1.0 + 0.6 * index for index, name in enumerate(MODELS)}  # ms per 100k pixels, batch 1
OPTION_SPEED = {"fp32": 1.0, "bf16": 0.9, "int8": 0.55, "int8-wo": 0.95, "amp-bf16": 0.85}


def _median_ms(spec: CellSpec) -> float:
    pixels = spec.resolution[0] * spec.resolution[1]
    compiled = 0.85 if spec.backend == "compile" else 1.0
    return MODEL_COST[spec.model] * pixels / 1e5 * spec.batch_size**0.9 * OPTION_SPEED[spec.precision] * compiled


def _status(rng: np.random.Generator) -> str:
    draw, edge = rng.random(), 0.0
    for status, share in FAILURE_SHARES.items():
        edge += share
        if draw < edge:
            return status
    return "ok"


FAILURE_TEXT = {
    "unsupported": "bf16 matmuls need avx512_bf16 or AMX on this CPU",
    "oom": "host out of memory: 23.5 GiB RAM",
    "error": "RuntimeError: synthetic failure from segbench.bench.scale",
    "timeout": "timeout after 600 s",
}


def _axes_record(spec: CellSpec) -> dict[str, Any]:
    reference = spec.precision == "fp32" and spec.backend == "eager"
    return {
        "cell_id": spec.cell_id,
        "model": spec.model,
        "family": get_card(spec.model).family,
        "resolution": list(spec.resolution),
        "batch_size": spec.batch_size,
        "precision": spec.precision,
        "backend": spec.backend,
        "scenario": "offline",
        "device": "cpu",
        "weights": None,
        "options": {},
        "matmul_class": "int8" if spec.precision == "int8" else "fp32",
        "reference_precision": spec.precision == "fp32",
        "reference": reference,
        "latency_scope": "forward",
    }


def _ok_record(spec: CellSpec, rng: np.random.Generator, samples: int, factor: float) -> dict[str, Any]:
    median = _median_ms(spec) * factor
    latency = _series(rng, median, samples)
    stage_n = max(10, samples // STAGE_SHARE)
    stage_samples = {
        "preprocess": _series(rng, 0.04 * median + 0.5, stage_n),
        "forward": _series(rng, median, stage_n),
        "postprocess": _series(rng, 0.03 * median + 0.3, stage_n),
    }
    end_to_end = np.sum(list(stage_samples.values()), axis=0)
    summary = _summary(latency)
    e2e = _summary(end_to_end)
    footprint = 40 + 0.002 * spec.resolution[0] * spec.resolution[1] * spec.batch_size / 1e2
    reference = spec.precision == "fp32" and spec.backend == "eager"
    return {
        **_axes_record(spec),
        "status": "ok",
        "latency_ms": summary,
        "samples_ms": latency.tolist(),
        "iterations": samples,
        "fps": spec.batch_size * 1000 / summary["median"],
        "measured_s": float(latency.sum() / 1000),
        "stages_ms": {name: _summary(values) for name, values in stage_samples.items()},
        "stage_samples_ms": {name: values.tolist() for name, values in stage_samples.items()},
        "end_to_end_ms": e2e,
        "end_to_end_fps": spec.batch_size * 1000 / e2e["median"],
        "first_call_ms": float(end_to_end[0] * 3),
        "end_to_end_input": "8 held-out photographs in turn",
        "memory_mb": {"rss_peak": 430.0 + footprint, "baseline": 430.0, "weights": 12.9},
        "fidelity": None
        if reference
        else {
            "pixel_agreement": float(1 - rng.uniform(0, 0.02)),
            "miou_vs_fp32": float(1 - rng.uniform(0, 0.05)),
            "max_abs_logit_diff": float(rng.uniform(0, 0.5)),
            "note": "random weights: these figures measure numeric drift against fp32, not accuracy",
        },
        "fidelity_unavailable": "this is the fp32 eager reference" if reference else None,
        "params": 3.4e6 * MODEL_COST[spec.model],
        "gflops": 12.0 * MODEL_COST[spec.model] * spec.resolution[0] * spec.resolution[1] / 640**2,
        "prepare_s": float(rng.uniform(0.01, 30.0 if spec.backend == "compile" else 1.0)),
        "startup_s": float(rng.uniform(0.3, 1.2)),
        "wall_s": float(latency.sum() / 1000 + 5),
        "noisy": bool(summary["cv"] is not None and summary["cv"] > HIGH_CV),
        "threads": 2,
        "roofline": {"matmul_class": "fp32", "achieved_tflops": 0.07, "percent_of_ceiling": 48.0},
    }


def synthetic_record(spec: CellSpec, rng: np.random.Generator, samples: int, factor: float = 1.0) -> dict[str, Any]:
    """One results.jsonl line for this cell, as `segbench run` writes it (validated by the record schema)."""
    status = _status(rng)
    if status == "ok":
        record = _ok_record(spec, rng, samples, factor)
    else:
        record = {**_axes_record(spec), "status": status, "error": FAILURE_TEXT[status]}
    validate_record(record)
    return record


def _change(rng: np.random.Generator) -> float:
    draw = rng.random()
    return SLOWER if draw < SLOWER_SHARE else FASTER if draw < SLOWER_SHARE + FASTER_SHARE else 1.0


def synthesise(out: Path, cells: int, samples: int, seed: int = 0) -> tuple[Path, Path]:
    """Run folders A and B of `cells` cells under out/, written through the store; returns their paths."""
    suite = synthetic_suite(cells)
    specs = expand(parse_suite(suite))[:cells]
    host = fingerprint()
    changes = np.random.default_rng(seed + 2)
    factors = [_change(changes) for _ in specs]
    folders = []
    for side, side_seed in (("a", seed), ("b", seed + 1)):
        run_dir = out / f"scale-{side}"
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        (run_dir / store.SUITE_FILE).write_text(json.dumps(suite, indent=2) + "\n")  # JSON is YAML
        rng = np.random.default_rng(side_seed)
        meta = {
            "suite": suite["name"],
            "description": suite["description"],
            "device": "cpu",
            "start_time": store.utc_now(),
            "status": "complete",
            "fingerprint": host,
            "cells_done": len(specs),
            "cells_total": len(specs),
        }
        with open(run_dir / store.RESULTS_FILE, "w", encoding="utf-8") as handle:
            for spec, factor in zip(specs, factors):
                record = synthetic_record(spec, rng, samples, factor if side == "b" else 1.0)
                # The store's own line format (store.append_record), without an fsync per line.
                handle.write(json.dumps({"schema_version": 1, **record}, default=str, allow_nan=True) + "\n")
        meta["end_time"] = store.utc_now()
        validate_meta(meta)
        store.write_json(run_dir / store.META_FILE, meta)
        folders.append(run_dir)
    return folders[0], folders[1]


# ---- timing the commands -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timed:
    """One command's wall time, peak RSS and exit status."""

    command: str
    wall_s: float
    cpu_s: float  # user + system: near the wall time on a quiet machine, far below it on a busy one
    peak_rss_mb: float
    returncode: int
    output_tail: str


def timed(args: list[str], log: Path) -> Timed:
    """Run `python -m segbench ARGS` as a user does; peak RSS is that child's own (os.wait4's rusage)."""
    env = {**os.environ, "COLUMNS": "160"}
    with open(log, "wb") as output:
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "segbench", *args], stdout=output, stderr=output, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    tail = log.read_text(errors="replace")[-2000:]
    cpu = usage.ru_utime + usage.ru_stime
    return Timed(" ".join(["segbench", *args]), wall, cpu, usage.ru_maxrss / 1024, process.returncode, tail)


@dataclass(frozen=True)
class Verdict:
    figure: str
    measured: float
    target: float
    unit: str

    @property
    def passed(self) -> bool:
        return self.measured <= self.target


def verdicts(report: Timed, compare: Timed) -> list[Verdict]:
    return [
        Verdict("report wall time", report.wall_s, REPORT_TARGET_S, "s"),
        Verdict("report peak RSS", report.peak_rss_mb, REPORT_TARGET_RSS_MB, "MiB"),
        Verdict("compare wall time", compare.wall_s, COMPARE_TARGET_S, "s"),
        Verdict("compare peak RSS (no target)", compare.peak_rss_mb, math.inf, "MiB"),
    ]


def print_table(console: Console, cells: int, samples: int, results: list[Verdict], runs: list[Timed]) -> None:
    console.print(
        f"CPU: {cpu_model()} ({os.cpu_count()} logical cores); instruction sets: {instruction_sets()}", markup=False
    )
    table = Table(title=f"segbench at scale: {cells} cells, {samples} samples per ok cell")
    for column in ("figure", "measured", "target", "verdict"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    for verdict in results:
        target = "–" if math.isinf(verdict.target) else f"≤ {verdict.target:g} {verdict.unit}"
        passed = "[green]pass[/]" if verdict.passed else "[red]FAIL[/]"
        table.add_row(verdict.figure, f"{verdict.measured:.1f} {verdict.unit}", target, passed)
    console.print(table)
    for run in runs:
        console.print(f"{run.command}: {run.wall_s:.1f} s wall, {run.cpu_s:.1f} s CPU", highlight=False, markup=False)
    console.print(
        "(CPU time well below wall time means other processes took the cores: rerun on a quiet machine)", markup=False
    )
    for run in runs:
        if run.returncode != 0:
            console.print(f"[red]{run.command} exited {run.returncode}[/]:\n{run.output_tail}", highlight=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m segbench.bench.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=_positive, default=DEFAULT_CELLS, help="cells per run (default 10000)")
    parser.add_argument("--samples", type=_positive, default=DEFAULT_SAMPLES, help="latency samples per ok cell")
    parser.add_argument("--out", type=Path, default=None, help="folder for the runs and reports (default: a temp)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    largest = math.prod(len(axis) for axis in (MODELS, RESOLUTIONS, BATCHES, PRECISIONS, BACKENDS))
    if args.cells > largest:
        parser.error(f"--cells: at most {largest} (the synthetic matrix's size; got {args.cells})")
    console = Console()
    out = args.out or Path(tempfile.mkdtemp(prefix="segbench-scale-"))
    out.mkdir(parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        run_a, run_b = synthesise(out, args.cells, args.samples)
        console.print(f"synthesised {run_a} and {run_b} in {time.perf_counter() - started:.1f} s", highlight=False)
        report = timed(["report", str(run_a), "-o", str(out / "report.html")], out / "report.log")
        compare = timed(["compare", str(run_a), str(run_b), "-o", str(out / "compare.html")], out / "compare.log")
        results = verdicts(report, compare)
        print_table(console, args.cells, args.samples, results, [report, compare])
        if args.json:
            args.json.write_text(json.dumps(_figures(args, report, compare, results), indent=2) + "\n")
    finally:
        if args.out is None and not args.keep:
            shutil.rmtree(out, ignore_errors=True)
        elif args.out is None:
            console.print(f"kept: {out}", highlight=False)
    ok = report.returncode == 0 and compare.returncode == 0
    return 0 if ok and all(v.passed for v in results) else 1


def _figures(args: argparse.Namespace, report: Timed, compare: Timed, results: list[Verdict]) -> dict[str, Any]:
    return {
        "cells": args.cells,
        "samples": args.samples,
        "cpu": cpu_model(),
        "instruction_sets": instruction_sets(),
        "runs": [{k: v for k, v in asdict(run).items() if k != "output_tail"} for run in (report, compare)],
        "verdicts": [{**asdict(v), "target": None if math.isinf(v.target) else v.target, "passed": v.passed}
                     for v in results],
    }


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number (got {text})")
    return value


if __name__ == "__main__":
    sys.exit(main())
