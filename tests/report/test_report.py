"""`segbench report` on a real small run: every section and plot is there, nothing can inject markup,
runs with only failures or without optional fields still render, and Markdown / CSV exports.

The run is real (spawned cells of the test plugin's models) and its suite is named
`<script>alert(1)</script>`, so every test here also renders an attacker-chosen suite name.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from segbench.cli.main import app
from segbench.report.exports import default_output, write_report
from segbench.results import store as results
from segbench.run.runner import run_suite
from segbench.suite.schema import load_suite
from tests.helpers import FAULT_PLUGIN

HOSTILE_NAME = "<script>alert(1)</script>"
HOSTILE_DESCRIPTION = '<img src=x onerror="alert(2)"> & friends'
SECTIONS = {"answer", "header", "leaderboard", "plots", "quantization", "failed"}
PLOTS = {
    "plot-latency-resolution",
    "plot-fps-batch",
    "plot-memory-resolution",
    "plot-stages",
    "plot-latency-distribution",
}
TINY_TIMING = {
    "warmup_iters": 1,
    "warmup_s": 0.0,
    "min_iters": 5,
    "max_iters": 20,
    "min_time_s": 0.05,
    "max_time_s": 1.0,
    "timeout_s": 120,
    "memory_iters": 1,
}
FAILING = ["test-raise", "test-oom"]


def small_suite() -> dict[str, Any]:
    """Six cells: test-tiny at two resolutions, two batches and fp32 + bf16 (fidelity), plus an error and an oom."""
    return {
        "name": HOSTILE_NAME,
        "description": HOSTILE_DESCRIPTION,
        "device": "cpu",
        "plugins": [FAULT_PLUGIN],
        "models": ["test-tiny", *FAILING],
        "resolutions": [16, 32],
        "batch_sizes": [1, 2],
        "precisions": ["fp32", "bf16"],
        "exclude": [
            {"model": FAILING, "resolution": 32},
            {"model": FAILING, "batch_size": 2},
            {"model": FAILING, "precision": "bf16"},
            {"model": "test-tiny", "resolution": 32, "batch_size": 2},
            {"model": "test-tiny", "resolution": 32, "precision": "bf16"},
            {"model": "test-tiny", "batch_size": 2, "precision": "bf16"},
        ],
        "timing": TINY_TIMING,
        "roofline": {"measure_ceiling": False},  # a 4 s device measurement per run that these tests do not read
    }


def build_small_run(factory: pytest.TempPathFactory) -> Path:
    """Run the small suite once per pytest session (test_browser reuses it); about 40 s on 2 cores."""
    base = factory.getbasetemp() / "segbench-small-run"
    marker = base / "run-dir.txt"
    if marker.is_file():
        return Path(marker.read_text())
    base.mkdir(exist_ok=True)
    suite_path = base / "suite.yaml"
    suite_path.write_text(yaml.safe_dump(small_suite(), sort_keys=False))
    run_dir = run_suite(load_suite(suite_path), suite_path, base / "results").run_dir
    marker.write_text(str(run_dir))
    return run_dir


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_small_run(tmp_path_factory)


@pytest.fixture(scope="module")
def small_report(small_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small run's HTML report, rendered once for the tests that only read it."""
    return write_report(small_run, tmp_path_factory.mktemp("report") / "report.html")


class PageParser(HTMLParser):
    """Collects what the tests look for: section ids, figures and their images, tables, scripts, text."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: set[str] = set()
        self.figures: dict[str, list[str]] = {}
        self.tables: dict[str, list[dict[str, str]]] = {}
        self.scripts: list[str] = []
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self._figure: str | None = None
        self._table: str | None = None
        self._script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        self.tags.append((tag, attributes))
        if tag == "section":
            self.sections.add(attributes.get("id", ""))
        elif tag == "figure":
            self._figure = attributes.get("id", "")
            self.figures[self._figure] = []
        elif tag == "img" and self._figure is not None:
            self.figures[self._figure].append(attributes.get("src", ""))
        elif tag == "table":
            self._table = attributes.get("id", "")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None and "data-model" in attributes:
            self.tables[self._table].append(attributes)
        elif tag == "script":
            self._script = True
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "figure":
            self._figure = None
        elif tag == "table":
            self._table = None
        elif tag == "script":
            self._script = False

    def handle_data(self, data: str) -> None:
        if self._script:
            self.scripts[-1] += data
        else:
            self.text.append(data)

    @property
    def all_text(self) -> str:
        return " ".join(" ".join(self.text).split())


def parse(path: Path) -> PageParser:
    parser = PageParser()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def png_size(src: str) -> tuple[int, int]:
    from PIL import Image

    assert src.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).size


def copy_run(
    run_dir: Path,
    target: Path,
    keep: Callable[[dict[str, Any]], bool] = lambda r: True,
    change: Callable[[dict[str, Any]], dict[str, Any]] = lambda r: r,
    meta: dict[str, Any] | None = None,
) -> Path:
    """A copy of a run folder with some records kept / changed (real data, edited the way a test needs)."""
    shutil.copytree(run_dir, target)
    records = [change(r) for r in results.read_records(run_dir) if keep(r)]
    (target / results.RESULTS_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))
    if meta is not None:
        results.write_json(target / results.META_FILE, {**results.read_meta(run_dir), **meta})
    return target


def test_the_small_run_is_what_the_report_tests_expect(small_run: Path) -> None:
    statuses = sorted(r["status"] for r in results.read_records(small_run))
    assert statuses == ["error", "ok", "ok", "ok", "ok", "oom"], statuses


def test_html_report_has_every_section_plot_and_table(small_report: Path) -> None:
    page = parse(small_report)
    assert SECTIONS <= page.sections
    for key in PLOTS | {"plot-pareto"}:  # the bf16 cell has fidelity, so the Pareto plot is drawn too
        [src] = page.figures[key]
        width, height = png_size(src)
        assert width > 300 and height > 200, (key, width, height)
    leaderboard = page.tables["leaderboard-table"]
    assert len(leaderboard) == 4 and {row["data-model"] for row in leaderboard} == {"test-tiny"}
    assert len(page.tables["failed-table"]) == 2
    assert len(page.tables["quantization-table"]) == 1  # bf16 vs fp32 eager at 16x16 batch 1
    text = page.all_text
    assert "ValueError: the last line of a multi-line failure" in text and "can't allocate memory" in text
    assert "random weights" in text and "host RSS peak" in text
    assert "test-tiny" in text and "Fastest: " in text and "No targets are set" in text
    assert [
        column
        for column in ("n", "FPS (forward, 1/latency)", "FPS (end to end)", "footprint MiB")
        if column not in text
    ] == []
    assert "pixel agreement" in text
    assert "telemetry-table" not in page.tables  # CPU cells sample no GPU telemetry: no empty table
    # Self-contained: every image is inline and nothing points to another host.
    for tag, attributes in page.tags:
        for name in ("src", "href"):
            value = attributes.get(name, "")
            assert not value or value.startswith(("data:", "#")), (tag, name, value[:60])
    assert len(page.scripts) == 1 and "fetch(" not in page.scripts[0] and "XMLHttpRequest" not in page.scripts[0]


def test_hostile_suite_name_and_description_render_as_text(small_report: Path) -> None:
    raw = small_report.read_text(encoding="utf-8")
    page = parse(small_report)
    assert HOSTILE_NAME not in raw and "&lt;script&gt;alert(1)&lt;/script&gt;" in raw
    assert "<img src=x" not in raw and "&lt;img src=x onerror=" in raw
    assert not any(tag == "img" and "onerror" in attributes for tag, attributes in page.tags)
    assert len(page.scripts) == 1 and "alert" not in page.scripts[0]  # the one script is ours
    assert HOSTILE_NAME in page.all_text and HOSTILE_DESCRIPTION in page.all_text


def test_run_with_only_failed_cells_renders_every_format(small_run: Path, tmp_path: Path) -> None:
    failed = copy_run(small_run, tmp_path / "failed-run", keep=lambda r: r["status"] != "ok")
    page = parse(write_report(failed, tmp_path / "failed.html"))
    assert SECTIONS <= page.sections
    assert len(page.tables["failed-table"]) == 2 and "leaderboard-table" not in page.tables
    assert all(page.figures[key] == [] for key in PLOTS)  # each plot skipped with a sentence
    assert "No cell finished ok" in page.all_text and "Skipped:" in page.all_text
    markdown = write_report(failed, tmp_path / "failed.md", fmt="md").read_text()
    assert "No cell finished ok." in markdown and "| test-oom |" in markdown
    frame = pd.read_csv(write_report(failed, tmp_path / "failed.csv", fmt="csv"))
    assert sorted(frame["status"]) == ["error", "oom"]


def test_missing_optional_fields_are_left_out_and_present_ones_used(small_run: Path, tmp_path: Path) -> None:
    def strip(record: dict[str, Any]) -> dict[str, Any]:
        for name in ("stages_ms", "stage_samples_ms", "samples_ms", "fidelity", "params", "end_to_end_ms", "notes"):
            record.pop(name, None)
        record["memory_mb"] = None
        return record

    bare = parse(write_report(copy_run(small_run, tmp_path / "bare", change=strip), tmp_path / "bare.html"))
    assert SECTIONS <= bare.sections and len(bare.tables["leaderboard-table"]) == 4
    assert (
        bare.figures["plot-stages"] == []
        and bare.figures["plot-latency-distribution"] == []
        and bare.figures["plot-memory-resolution"] == []
    )
    assert "no fidelity data" in bare.all_text

    def enrich(record: dict[str, Any]) -> dict[str, Any]:
        record["gflops"] = 0.25
        record["telemetry"] = {
            "samples": 12,
            "power_w": {"min": 30.0, "mean": 42.0, "max": 50.0},
            "sm_clock_mhz": None,
            "throttled": True,
            "throttle_causes": ["hw_thermal_slowdown"],
            "throttled_share": 0.25,
        }
        return record

    rich = parse(
        write_report(
            copy_run(small_run, tmp_path / "rich", change=enrich, meta={"budget_mb": 2048}), tmp_path / "rich.html"
        )
    )
    assert "GFLOPs / image" in rich.all_text and "0.2" in rich.all_text
    assert len(rich.tables["telemetry-table"]) == 4
    assert (
        "power W (mean)" in rich.all_text and "hw_thermal_slowdown" in rich.all_text and "SM clock" not in rich.all_text
    )


def test_markdown_and_csv_exports(small_run: Path, tmp_path: Path) -> None:
    markdown = write_report(small_run, tmp_path / "r.md", fmt="md").read_text()
    table_rows = [line for line in markdown.splitlines() if line.startswith("| test-tiny |")]
    assert len(table_rows) == 4 + 1  # the leaderboard's four cells and the quantization table's bf16 row
    # Issue 33.5: CommonMark's backslash escapes, not HTML entities, so the raw file reads as it renders.
    assert "\\<script\\>" in markdown and HOSTILE_NAME not in markdown and "&lt;" not in markdown
    assert (
        "### Cells that did not finish" in markdown
        and "### Answer" in markdown
        and "### Quantization and precision" in markdown
    )
    frame = pd.read_csv(write_report(small_run, tmp_path / "r.csv", fmt="csv"))
    assert len(frame) == 6 and set(frame["status"]) == {"ok", "error", "oom"}
    assert frame.loc[frame["status"] == "ok", "median_ms"].gt(0).all()
    assert {
        "pixel_agreement_pct",
        "fidelity.pixel_agreement",
        "speedup",
        "quantized_share_pct",
        "n",
        "ci95_low_ms",
        "end_to_end_fps",
    } <= set(frame.columns)
    bf16 = frame[frame["precision"] == "bf16"].iloc[0]
    assert bf16["speedup"] > 0 and bf16["pixel_agreement_pct"] == pytest.approx(bf16["fidelity.pixel_agreement"] * 100)


def test_cli_report_writes_the_default_path_and_rejects_bad_input(
    small_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    done = runner.invoke(app, ["report", str(small_run)])
    assert done.exit_code == 0, done.output
    assert (tmp_path / default_output(small_run)).is_file()
    assert (tmp_path / "reports" / f"{small_run.name}.html").is_file()
    done = runner.invoke(app, ["report", str(small_run), "--format", "md", "-o", "out/r.md"])
    assert done.exit_code == 0 and (tmp_path / "out" / "r.md").is_file()

    missing = runner.invoke(app, ["report", str(tmp_path / "no-such-run")])
    assert (
        missing.exit_code == 2
        and "not a run directory" in missing.stderr
        and len(missing.stderr.strip().splitlines()) == 1
    )
    corrupt = copy_run(small_run, tmp_path / "corrupt")
    lines = (corrupt / results.RESULTS_FILE).read_text().splitlines()
    (corrupt / results.RESULTS_FILE).write_text("\n".join([lines[0], "{not json", *lines[1:]]) + "\n")
    broken = runner.invoke(app, ["report", str(corrupt)])
    assert broken.exit_code == 2 and "line 2: corrupt record" in broken.stderr and "Traceback" not in broken.output
    corrupt_meta = copy_run(small_run, tmp_path / "corrupt-meta")
    (corrupt_meta / results.META_FILE).write_text("{")
    broken_meta = runner.invoke(app, ["report", str(corrupt_meta), "--format", "csv"])
    assert (
        broken_meta.exit_code == 2
        and "meta.json: corrupt JSON" in broken_meta.stderr
        and len(broken_meta.stderr.strip().splitlines()) == 1
    )
    bad_format = runner.invoke(app, ["report", str(small_run), "--format", "pdf"])
    assert bad_format.exit_code == 2 and "unknown format" in bad_format.stderr


def test_runs_over_several_cards_are_grouped_by_card(tmp_path: Path) -> None:
    from segbench.results import store
    from segbench.results.runs import load_run

    run_dir = tmp_path / "multi"
    run_dir.mkdir()
    store.write_json(run_dir / store.META_FILE, {"suite": "cards", "device": "cuda:0"})
    for card in ("rtx3060", "a100-80gb"):
        axes = {"resolution": [512, 512], "batch_size": 1, "precision": "fp32", "backend": "eager"}
        store.append_record(
            run_dir,
            {
                "cell_id": "c1",
                "cell_key": f"c1@{card}",
                "hardware": card,
                "model": "fast-scnn",
                "status": "error",
                **axes,
            },
        )
    models = sorted(record["model"] for record in load_run(run_dir).records)
    assert models == ["fast-scnn @ a100-80gb", "fast-scnn @ rtx3060"]


def test_memory_plot_draws_each_cells_footprint_as_the_table_does(small_run: Path) -> None:
    from segbench.report.plots import memory_series, memory_vs_resolution
    from segbench.report.tables import leaderboard
    from segbench.results.labels import option_text
    from segbench.results.metrics import footprint_mb, headline_memory
    from segbench.results.runs import load_run

    run = load_run(small_run)
    tiny = [r for r in run.ok if r["model"] == "test-tiny"]
    drawn = memory_series(tiny)
    by_cell = {(f"{option_text(r)} b{r['batch_size']}", tuple(r["resolution"])): r for r in tiny}
    fp32_b1 = next(points for label, points in drawn.items() if label.startswith("fp32") and label.endswith(" b1"))
    assert [resolution for resolution, _ in fp32_b1] == [(16, 16), (32, 32)]  # ordered by pixel count
    for label, points in drawn.items():
        for resolution, value in points:
            record = by_cell[(label, resolution)]
            assert value == footprint_mb(record) and value < headline_memory(record)[0]  # not the peak
    table = leaderboard(run)
    assert sorted(v for points in drawn.values() for _, v in points) == sorted(
        table.loc[table["model"] == "test-tiny", "footprint_mb"]
    )
    plot = memory_vs_resolution(run)
    assert plot.image_png and "footprint" in plot.title.lower() and "footprint column" in plot.note


def test_reports_say_what_end_to_end_covers_and_show_throughput(
    small_run: Path, small_report: Path, tmp_path: Path
) -> None:
    """Guards items 7 and 9 in the reports: the stage breakdown never said what end to end covers, and FPS was only
    1 / the median call. Markdown and HTML now state the scope beside the stage breakdown and show throughput
    (images / wall time) beside it; records made before the scope was recorded get the old scope, said as such."""
    markdown = write_report(small_run, tmp_path / "r.md", fmt="md").read_text()
    assert "### Stage breakdown" in markdown
    assert "End to end covers" in markdown
    assert "preprocess → forward → postprocess, from decoded uint8 frames" in markdown
    assert "throughput (end to end)" in markdown and "pipelined FPS bound" in markdown
    html = small_report.read_text(encoding="utf-8")
    assert "End to end covers preprocess → forward → postprocess" in html and "images / wall time" in html

    def legacy(record: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in record.items() if key != "end_to_end_covers"}

    old = copy_run(small_run, tmp_path / "old", change=legacy)
    assert "recorded before end_to_end_covers" in write_report(old, tmp_path / "old.md", fmt="md").read_text()
    csv = write_report(small_run, tmp_path / "r.csv", fmt="csv").read_text()
    assert "end_to_end_throughput_fps" in csv.splitlines()[0]
