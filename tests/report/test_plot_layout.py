"""Issue 33.5: the Pareto plot's point labels stay inside their panel, never over the legend beside it, on committed
real runs (mIoU against labels; several paths a model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox

from segbench.report import plots
from segbench.results.runs import load_run
from tests.helpers import REPO

RUNS = ["accuracy-demo-20261202T041955Z", "cpu-best-20261202T041047Z"]  # the committed runs with a Pareto plot


def _drawn_figure(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Figure:
    figures: list[Figure] = []
    encode = plots._encode

    def keep(figure: Figure) -> str:
        figures.append(figure)
        return encode(figure)

    monkeypatch.setattr(plots, "_encode", keep)
    assert plots.pareto_plot(load_run(run_dir)).image_png
    [figure] = figures
    return figure


def _overlap(a: Bbox, b: Bbox) -> bool:
    return min(a.x1, b.x1) - max(a.x0, b.x0) > 0.5 and min(a.y1, b.y1) - max(a.y0, b.y0) > 0.5


@pytest.mark.parametrize("name", RUNS, ids=lambda name: name.rsplit("-", 1)[0])
def test_pareto_labels_stay_in_their_panel_clear_of_the_legend(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    figure = _drawn_figure(REPO / "results" / name, monkeypatch)
    renderer: Any = figure.canvas.get_renderer()  # type: ignore[attr-defined]
    labelled = 0
    for axis in figure.axes:
        if not axis.get_visible():
            continue
        panel = axis.get_window_extent(renderer)
        legend = axis.get_legend()
        for text in axis.texts:
            box = text.get_window_extent(renderer)
            labelled += 1
            assert panel.x0 - 0.5 <= box.x0 and box.x1 <= panel.x1 + 0.5, f"{text.get_text()!r} leaves its panel"
            assert panel.y0 - 0.5 <= box.y0 and box.y1 <= panel.y1 + 0.5, f"{text.get_text()!r} leaves its panel"
            if legend is not None:
                assert not _overlap(box, legend.get_window_extent(renderer)), f"{text.get_text()!r} over the legend"
    assert labelled  # the front is labelled: the check above looked at something


def test_a_tag_all_points_share_goes_to_the_title_and_differing_ones_stay_wrapped() -> None:
    base = {"precision": "int8", "backend": "eager", "options": {"num_classes": 5}, "weights": "w/a-long-name.pt"}
    labels, shared = plots._point_labels([base, {**base, "precision": "fp32"}])
    assert labels == ["int8 / eager", "fp32 / eager"] and "a-long-name.pt" in shared
    labels, shared = plots._point_labels([base, {**base, "weights": "w/other-weights-file.pt"}])
    assert shared == "" and all(len(line) <= plots.MAX_LABEL_CHARS for text in labels for line in text.splitlines())
    assert "other-weights-file.pt" in labels[1].replace("\n", " ")
