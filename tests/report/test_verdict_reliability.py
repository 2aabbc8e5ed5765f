"""Issue 33.4: every verdict carries its reliability. Run 1 of a user's question said "no configuration meets 30 FPS"
with every cell flagged contended, and nothing in the Answer or the exit line said so; "meets" at 30.8 vs 30 showed
no margin. A verdict whose interval straddles its target reads borderline; the Answer and the exit line count the
contended, drifted and undersampled cells and say what to do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segbench.report.answer import answer
from segbench.results.runs import RunData
from segbench.run.gate import run_gate
from segbench.suite.schema import parse_suite
from segbench.suite.targets import Targets, verdict
from tests.helpers import cell_record


def _cell(cell_id: str, fps: float, spread_pct: float, **fields: Any) -> dict[str, Any]:
    """An ok cell whose end-to-end median gives `fps`, with a 95 % interval ± `spread_pct`."""
    median = 1000.0 / fps
    end_to_end = {"median": median, "ci95": [median * (1 - spread_pct / 100), median * (1 + spread_pct / 100)]}
    return cell_record(cell_id, median=median * 0.8, end_to_end_ms=end_to_end, end_to_end_fps=fps, **fields)


def test_a_verdict_whose_interval_straddles_the_target_is_borderline() -> None:
    targets = Targets(fps=30)
    clear, close = _cell("a", 40.0, 2.0), _cell("b", 30.8, 5.0)
    assert verdict(clear, targets).status == "meets"
    judged = verdict(close, targets)
    assert judged.status == "borderline", judged.text
    assert "straddles 30.0 FPS" in judged.text and "timing.repeats=3" in judged.text
    assert verdict(_cell("c", 29.0, 5.0), targets).status == "misses"  # below the target: a miss, whatever the spread


def test_the_answer_says_borderline_instead_of_best_when_nothing_clearly_meets() -> None:
    run = RunData(Path("run"), {}, [_cell("b", 30.8, 5.0), _cell("c", 20.0, 1.0, precision="int8")])
    [model] = answer(run, Targets(fps=30)).models
    assert model.lines[0].startswith("Borderline: no configuration clearly meets every target. Nearest: 16x16")
    both = RunData(Path("run"), {}, [_cell("a", 40.0, 1.0), _cell("b", 30.8, 5.0, precision="int8")])
    [model] = answer(both, Targets(fps=30)).models
    assert model.lines[0].startswith("Best: 16x16 batch 1 fp32") and "1 more are borderline" in model.lines[-1]


def test_the_answer_and_the_exit_line_count_unreliable_cells() -> None:
    records = [
        _cell("a", 40.0, 1.0, contended="other processes used 61 % of the cores"),
        _cell("b", 35.0, 1.0, precision="int8", drifted="the canary slowed by 30 %"),
        _cell("c", 20.0, 1.0, precision="bf16"),
    ]
    result = answer(RunData(Path("run"), {}, records), Targets(fps=30))
    assert result.reliability.startswith("Reliability: of 3 ok cell(s), 1 contended (other processes took its cores)")
    assert "1 drifted" in result.reliability and "rerun on a quiet machine" in result.reliability
    suite = parse_suite({"name": "s", "models": ["fast-scnn"], "resolutions": [64], "targets": {"fps": 30}}, "test")
    line = run_gate(suite, records).line
    assert line.startswith("exit 0:") and "Reliability: of 3 ok cell(s), 1 contended" in line
    quiet = run_gate(suite, [_cell("a", 40.0, 1.0), _cell("b", 30.8, 5.0, precision="int8")]).line
    assert "Reliability" not in quiet and "1 cell(s) borderline on a target" in quiet
