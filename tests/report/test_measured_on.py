"""The Answer's first line names the device every speed was measured on and what of the suite's card was only
emulated (issue 26, item 4): on the committed H200 run made with `hardware: rtx3060`, the same records as an RTX
3060 writes them, and the committed CPU run."""

from __future__ import annotations

import re
from typing import Any

from segbench.report.answer import answer
from segbench.report.exports import render_markdown
from segbench.report.html import render_report
from segbench.results.runs import RunData, load_run
from tests.helpers import REPO

H200_RUN = REPO / "results" / "rtx3060-claims-h200-20261126T102857Z"  # read only
CPU_RUN = REPO / "results" / "quick-20261126T002401Z"  # read only: no card, no target
RTX3060 = "NVIDIA GeForce RTX 3060"


def _on_an_rtx3060(run: RunData) -> RunData:
    """The same run as a real RTX 3060 records it: its fingerprint and every budget name the card."""
    gpus = [{**gpu, "name": RTX3060} for gpu in run.fingerprint["gpus"]]
    meta = {**run.meta, "fingerprint": {**run.fingerprint, "machine": RTX3060, "gpus": gpus}}

    def relabel(record: dict[str, Any]) -> dict[str, Any]:
        budget = record.get("budget")
        return {**record, "budget": {**budget, "emulated_on": RTX3060}} if isinstance(budget, dict) else record

    return RunData(run.path, meta, [relabel(r) for r in run.records], run.suite)


def _first_line_after(markdown: str, heading: str) -> str:
    after = markdown.split(heading, 1)[1]
    return next(line for line in after.splitlines() if line.strip())


def test_the_answer_opens_with_the_measured_card_and_what_was_emulated() -> None:
    run = load_run(H200_RUN)
    line = answer(run).measured_on
    assert line.startswith("Measured on NVIDIA H200, not on the GeForce RTX 3060 12GB the suite targets")
    assert "every speed below is NVIDIA H200's" in line and "only the GeForce RTX 3060 12GB's memory budget" in line
    assert _first_line_after(render_markdown(run), "### Answer") == f"**{line}**"
    page = render_report(run)
    section = page.split('<section id="answer">', 1)[1]
    first = re.search(r"<p[^>]*>(.*?)</p>", section, re.S)
    assert first is not None and first.group(1).startswith("Measured on NVIDIA H200, not on the GeForce RTX 3060")
    assert "measured on NVIDIA H200" in page.split('id="expectations"', 1)[1]  # the claims say where, too


def test_on_the_card_itself_and_on_a_cpu_the_first_line_says_so() -> None:
    on_card = answer(_on_an_rtx3060(load_run(H200_RUN))).measured_on
    assert on_card == f"Measured on {RTX3060}, the GeForce RTX 3060 12GB the suite targets."
    cpu = answer(load_run(CPU_RUN)).measured_on
    assert cpu.startswith("Measured on the CPU (Intel") and "emulated" not in cpu


def test_segbench_run_prints_the_measured_device_under_its_summary(tmp_path, write_suite) -> None:
    """A CPU run of a suite made for an RTX 3060: the terminal says whose speed it shows and that nothing was
    emulated (a CPU cell has no card budget)."""
    from typer.testing import CliRunner

    from segbench.cli.main import app

    suite = write_suite(hardware="rtx3060")
    done = CliRunner().invoke(app, ["run", str(suite), "--out", str(tmp_path / "results")])
    assert done.exit_code == 0, done.output
    text = " ".join(done.output.split())
    assert "Measured on the CPU (" in text and "not on the GeForce RTX 3060 12GB the suite targets" in text
    assert "every speed below is the CPU's, and nothing of the GeForce RTX 3060 12GB was emulated." in text
