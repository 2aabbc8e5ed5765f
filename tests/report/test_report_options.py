"""Issue 33.5: a report that survives real options. With `options: {class_names: [...]}` the JSON was pasted into every
cell label, table row (7 lines tall) and plot label, and the plots' axes collapsed (`constrained_layout not applied`,
printed to the terminal). Built from a committed real run (results/quick-20261201T233829Z) given a 19-name option."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from segbench.formatting import fmt_memory_saving
from segbench.report.exports import write_report
from tests.helpers import REPO

from .test_report import copy_run

QUICK = REPO / "results" / "quick-20261201T233829Z"
CITYSCAPES = [f"class-number-{index}" for index in range(19)]


def _with_class_names(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "options": {"class_names": CITYSCAPES, "aux_head": False}}


def test_long_options_get_a_short_tag_in_labels_and_plots_do_not_collapse(tmp_path: Path) -> None:
    run = copy_run(QUICK, tmp_path / "named", change=_with_class_names)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's "axes sizes collapsed to zero" is a UserWarning
        html = write_report(run, tmp_path / "r.html").read_text()
        markdown = write_report(run, tmp_path / "r.md", fmt="md").read_text()
    assert "class-number-7" not in html and "class-number-7" not in markdown  # the list is in the CSV, not labels
    assert "{aux_head=False, class_names[19]}" in markdown
    csv = write_report(run, tmp_path / "r.csv", fmt="csv").read_text()
    assert "class-number-7" in csv  # nothing is lost: the full options are a column


def test_memory_saving_reads_as_a_reader_says_it() -> None:
    """"memory saving −164.2 %" read as nothing; "2.6× the memory" reads."""
    assert fmt_memory_saving(-164.2) == "2.6× the memory" and fmt_memory_saving(38.0) == "38.0 % less"
