"""What `segbench run` exits with, and the summary's last line that says why.

1 when any cell ended in error or timeout (oom and unsupported are results, not failures); with
`strict`, also when a cell misses a suite target or an expectation is refuted. 0 otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from segbench.report.summary import reliability_text
from segbench.results.labels import axes_label
from segbench.suite.expectations import evaluate_all
from segbench.suite.schema import Suite
from segbench.suite.targets import verdict

FAILED = ("error", "timeout")


@dataclass(frozen=True)
class Gate:
    exit_code: int
    line: str


def _listed(records: list[dict[str, Any]], limit: int = 3) -> str:
    names = [f"{axes_label(r)} ({r.get('status')})" for r in records[:limit]]
    return "; ".join(names) + (f"; and {len(records) - limit} more" if len(records) > limit else "")


def run_gate(
    suite: Suite, records: list[dict[str, Any]], strict: bool = False, meta: dict[str, Any] | None = None
) -> Gate:
    """The exit code of a run over these records (the latest attempt of each cell) and the reason in one line; `meta`
    names the device that measured them (a claim about another card is untested, never refuted)."""
    failed = [r for r in records if r.get("status") in FAILED]
    reasons = []
    if failed:
        reasons.append(f"{len(failed)} cell(s) ended in error or timeout: {_listed(failed)}")
    notes = []
    missed: list[dict[str, Any]] = []
    borderline = 0
    if suite.targets is not None and not suite.targets.empty:
        statuses = [verdict(r, suite.targets).status for r in records]
        missed = [r for r, status in zip(records, statuses) if status == "misses"]
        if missed:
            (reasons if strict else notes).append(f"{len(missed)} cell(s) miss a target")
        borderline = statuses.count("borderline")
    claims = evaluate_all(suite.expectations, records, meta, suite.hardware)
    refuted = [row for row in claims if row["verdict"] == "refuted"]
    if refuted:
        (reasons if strict else notes).append(f"{len(refuted)} expectation(s) refuted")
    reliability = reliability_text(records)
    trust = "".join(
        [
            f"; {borderline} cell(s) borderline on a target (the interval straddles it)" if borderline else "",
            f". {reliability}" if reliability else "",
        ]
    )
    if reasons:
        also = "" if not notes else f" (also {', '.join(notes)})"
        return Gate(1, "exit 1: " + "; ".join(reasons) + also + trust)
    ok = sum(r.get("status") == "ok" for r in records)
    tail = f"; {', '.join(notes)} (use --strict to fail on them)" if notes else ""
    pruned = sum(r.get("status") == "pruned" for r in records)
    tail = f"; {pruned} pruned by the search (never measured){tail}" if pruned else tail
    return Gate(
        0,
        f"exit 0: {ok} of {len(records)} cell(s) ok, none ended in error or timeout (oom and unsupported are "
        f"results){tail}{trust}",
    )
