"""A search run in the reports: the sentence that says the Answer came from a search (cells measured and pruned,
device-seconds spent against the exhaustive run's estimate), the rules it switched off, and the pruned cells with
their rule and evidence."""

from __future__ import annotations

from typing import Any

import pandas as pd

from segbench.report.tables import sort_cells
from segbench.results.labels import resolution_text
from segbench.results.runs import RunData
from segbench.results.search import accounting, is_pruned, search_sentence
from segbench.results.store import read_records


def _figures(run: RunData) -> dict[str, Any] | None:
    """The spend from every line of the run (screenings included), else what the runner wrote in meta.json."""
    if not any(is_pruned(r) or r.get("search") for r in run.records):
        return None
    if not run.sources:
        try:
            return accounting(read_records(run.path, latest_only=False))
        except Exception:  # a report over a copied or hand-edited folder: the runner's own figures
            pass
    stored = run.meta.get("search")
    return stored if isinstance(stored, dict) and "measured" in stored else None


def search_note(run: RunData) -> str:
    """'' for a run that was no search."""
    figures = _figures(run)
    if figures is None:
        return ""
    lines = [search_sentence(figures)]
    rules_off = (run.meta.get("search") or {}).get("rules_off") or {}
    for model, rules in sorted(rules_off.items()):
        for rule, why in sorted(rules.items()):
            who = "every model" if model == "*" else model
            lines.append(f"Rule {rule} was off for {who}: {why}.")
    return " ".join(lines)


def _evidence_text(evidence: list[dict[str, Any]]) -> str:
    parts = []
    for item in evidence:
        figures = ", ".join(
            f"{key} {value}" if not isinstance(value, list) else f"{key} {value[0]}–{value[1]}"
            for key, value in (item.get("figures") or {}).items()
        )
        screened = ", screened" if item.get("screened") else ""
        parts.append(f"{item.get('cell')} [{item.get('cell_id')}] {item.get('status')}{screened}: {figures or '-'}")
    return "; ".join(parts)


def pruned_table(run: RunData) -> pd.DataFrame:
    """One row per pruned cell: its axes, the rule, the sentence and the measured cells it rests on."""
    rows = []
    for record in sort_cells([r for r in run.records if is_pruned(r)]):
        search = record.get("search") or {}
        rows.append(
            {
                "cell_id": record["cell_id"],
                "model": record["model"],
                "resolution": resolution_text(record),
                "batch": record["batch_size"],
                "precision": record["precision"],
                "backend": record["backend"],
                "rule": search.get("rule"),
                "reason": search.get("reason"),
                "evidence": _evidence_text(search.get("evidence") or []),
            }
        )
    return pd.DataFrame(rows)
