"""Suite wall-time benchmark: per-cell start-up, cold vs warm prepare caches, and a suite's wall time.

A benchmark to run on a quiet machine, never a timed test. Three parts (default: all):

    python -m segbench.bench.walltime startup [--cells 4] [--models fast-scnn,segformer-b0,...]
        fp32 eager cells of each family at a small resolution (batch 1..cells), spawned
        (SEGBENCH_WARM_START=0) and forked from a warm template; startup_s and wall_s per family and mode.
    python -m segbench.bench.walltime prepare [--suite suites/quantization.yaml]
        clears every cache, runs the suite (cold), runs it again (warm); prepare_s per cell, warm/cold.
    python -m segbench.bench.walltime suite [--suite suites/quick.yaml] [--repeats 2]
        the suite's whole wall time with spawned cells and with warm start, alternating.

Cells of `startup` and `prepare` run with the shortest timing (one warm-up, three iterations): start-up
and prepare times do not depend on it. `suite` keeps the suite's own timing. Results go to a temporary
folder; `--json FILE` also writes every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from segbench.results.labels import axes_label
from segbench.run import forkserver
from segbench.run.runner import run_suite
from segbench.suite.schema import Suite, load_suite, parse_suite
from segbench.system import cache

FAMILY_MODELS = (
    "fast-scnn",
    "deeplabv3-mobilenetv3-large",
    "segformer-b0",
    "yolov8n-seg",
    "yolo26n-sem",
    "mask2former-swin-t",
    "sam-vit-b",
)
SHORT_TIMING = {
    "warmup_iters": 1,
    "min_iters": 3,
    "max_iters": 3,
    "min_time_s": 0.0,
    "max_time_s": 5.0,
    "timeout_s": 1800,
    "memory_iters": 1,
}
MODES = ("spawn", "forkserver")
PARTS = ("startup", "prepare", "suite")


@contextmanager
def _env(**values: str | None) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        forkserver.shutdown()  # the next run starts from no template, as a fresh `segbench run` would
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _warm(mode: str) -> str:
    return "1" if mode == "forkserver" else "0"


def _run(suite: Suite, out: Path) -> tuple[list[dict[str, Any]], float]:
    started = time.perf_counter()
    result = run_suite(suite, None, out, suite_text=f"# {suite.name}: segbench.bench.walltime\n")
    return result.records, time.perf_counter() - started


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def startup(models: list[str], cells: int, resolution: int, out: Path) -> dict[str, Any]:
    """startup_s and wall_s of fp32 eager cells per model (batch 1..cells, so a template serves several), spawned and
    forked."""
    figures: dict[str, dict[str, dict[str, list[float]]]] = {
        m: {mode: {"startup_s": [], "wall_s": []} for mode in MODES} for m in models
    }
    for mode in MODES:
        suite = parse_suite(
            {
                "name": f"startup-{mode}",
                "device": "cpu",
                "models": models,
                "resolutions": [resolution],
                "batch_sizes": list(range(1, cells + 1)),
                "timing": SHORT_TIMING,
                "roofline": {"measure_ceiling": False},
            }
        )
        with _env(SEGBENCH_WARM_START=_warm(mode)):
            records, _ = _run(suite, out)
        for record in records:
            if record["status"] == "ok":
                figures[record["model"]][mode]["startup_s"].append(record["startup_s"])
                figures[record["model"]][mode]["wall_s"].append(record["wall_s"])
            else:
                print(f"  {record['model']} ({mode}): {record['status']}: {record.get('error')}")
    table = {
        model: {mode: _startup_row(mode, v) for mode, v in per_model.items()} for model, per_model in figures.items()
    }
    print(
        f"\nper-cell start-up (process start to model build), {cells} fp32 eager cells per model at "
        f"{resolution}x{resolution}"
    )
    print(
        f"{'model':30} {'spawn median':>12} {'warm median':>12} {'warm first':>11} {'spawn wall':>11} {'warm wall':>10}"
    )
    for model, row in table.items():
        spawn, warm = row["spawn"], row["forkserver"]
        print(
            f"{model:30} {_fmt(spawn['median_startup_s']):>12} {_fmt(warm['median_startup_s']):>12} "
            f"{_fmt(warm['first_startup_s']):>11} {_fmt(spawn['median_wall_s']):>11} {_fmt(warm['median_wall_s']):>10}"
        )
    print(
        "(warm median leaves out each family's first cell, shown as warm first: it waits for its template to import "
        "the libraries)"
    )
    return table


def _startup_row(mode: str, figures: dict[str, list[float]]) -> dict[str, float | None]:
    startups, walls = figures["startup_s"], figures["wall_s"]
    later = slice(1, None) if mode == "forkserver" and len(startups) > 1 else slice(None)
    return {
        "median_startup_s": _median(startups[later]),
        "first_startup_s": startups[0] if startups else None,
        "median_wall_s": _median(walls[later]),
    }


def prepare(suite_path: Path, cache_dir: Path, out: Path) -> dict[str, Any]:
    """prepare_s per cell of a cold run (every cache cleared first) and of a warm run right after it."""
    suite = load_suite(suite_path)
    suite = suite.model_copy(update={"timing": suite.timing.model_copy(update=SHORT_TIMING)})
    cache.clear(cache_dir)
    runs: dict[str, dict[str, Any]] = {}
    for phase in ("cold", "warm"):
        with _env(SEGBENCH_CACHE_DIR=str(cache_dir), SEGBENCH_NO_CACHE=None, SEGBENCH_WARM_START="1"):
            records, wall = _run(suite, out)
        runs[phase] = {"wall_s": round(wall, 1), "cells": {axes_label(r): r for r in records}}
    rows = []
    print(f"\nprepare_s, cold cache (cleared) then warm, {suite_path} (cache: {cache_dir})")
    print(f"{'cell':58} {'cold':>8} {'warm':>8} {'warm/cold':>9}  cache")
    for label, cold in runs["cold"]["cells"].items():
        warm = runs["warm"]["cells"].get(label, {})
        cold_s, warm_s = cold.get("prepare_s"), warm.get("prepare_s")
        ratio = warm_s / cold_s if cold_s and warm_s is not None else None
        rows.append(
            {
                "cell": label,
                "cold_prepare_s": cold_s,
                "warm_prepare_s": warm_s,
                "ratio": ratio,
                "cold_cache": cold.get("prepare_cache"),
                "warm_cache": warm.get("prepare_cache"),
                "status": [cold["status"], warm.get("status")],
            }
        )
        print(
            f"{label:58} {_fmt(cold_s):>8} {_fmt(warm_s):>8} {_fmt(ratio, '{:.0%}'):>9}  {cold.get('prepare_cache')} "
            f"-> {warm.get('prepare_cache')}"
        )
    cold_total = sum(r["cold_prepare_s"] or 0 for r in rows)
    warm_total = sum(r["warm_prepare_s"] or 0 for r in rows)
    print(
        f"{'total':58} {cold_total:8.1f} {warm_total:8.1f} "
        f"{_fmt(warm_total / cold_total if cold_total else None, '{:.0%}'):>9}"
    )
    print(f"run wall time: cold {runs['cold']['wall_s']} s, warm {runs['warm']['wall_s']} s")
    return {
        "cells": rows,
        "cold_total_s": cold_total,
        "warm_total_s": warm_total,
        "cold_wall_s": runs["cold"]["wall_s"],
        "warm_wall_s": runs["warm"]["wall_s"],
    }


def suite_wall(suite_path: Path, repeats: int, out: Path) -> dict[str, Any]:
    """A suite's whole wall time with spawned cells and with warm start, alternating (caches as configured)."""
    suite = load_suite(suite_path)
    walls: dict[str, list[float]] = {mode: [] for mode in MODES}
    for repeat in range(repeats):
        for mode in MODES if repeat % 2 == 0 else MODES[::-1]:
            with _env(SEGBENCH_WARM_START=_warm(mode)):
                _, wall = _run(suite, out)
            walls[mode].append(round(wall, 1))
            print(f"  {suite_path} with {mode}: {wall:.1f} s")
    spawn, warm = _median(walls["spawn"]), _median(walls["forkserver"])
    print(
        f"\n{suite_path} wall time, median of {repeats}: spawned cells {spawn} s, warm start {warm} s"
        + (f" ({1 - warm / spawn:.0%} lower)" if spawn and warm else "")
    )
    return {"runs": walls, "spawn_median_s": spawn, "warm_median_s": warm}


def _fmt(value: float | None, pattern: str = "{:.2f}") -> str:
    return "-" if value is None else pattern.format(value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m segbench.bench.walltime",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("parts", nargs="*", metavar="PART", help="startup, prepare and/or suite (default: all three)")
    parser.add_argument(
        "--models", default=",".join(FAMILY_MODELS), help="startup: comma-separated models (default: one per family)"
    )
    parser.add_argument("--cells", type=int, default=4, help="startup: cells per model and mode")
    parser.add_argument("--resolution", type=int, default=64, help="startup: square side")
    parser.add_argument(
        "--prepare-suite",
        type=Path,
        default=Path("suites/quantization.yaml"),
        help="prepare: the suite run cold then warm",
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="prepare: the cache to clear and fill (default: a temporary one)"
    )
    parser.add_argument(
        "--wall-suite", type=Path, default=Path("suites/quick.yaml"), help="suite: the suite whose wall time to compare"
    )
    parser.add_argument("--repeats", type=int, default=2, help="suite: runs per mode")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this file")
    args = parser.parse_args(argv)
    parts = args.parts or list(PARTS)
    if unknown := set(parts) - set(PARTS):
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}")
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="segbench-walltime-") as scratch:
        out = Path(scratch) / "results"
        if "startup" in parts:
            report["startup"] = startup(
                [m.strip() for m in args.models.split(",") if m.strip()], args.cells, args.resolution, out
            )
        if "prepare" in parts:
            report["prepare"] = prepare(args.prepare_suite, args.cache_dir or Path(scratch) / "cache", out)
        if "suite" in parts:
            report["suite"] = suite_wall(args.wall_suite, args.repeats, out)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
