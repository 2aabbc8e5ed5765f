"""The plain-language "best choice" per model: fastest acceptable option and the largest batch that fits.

Options are ranked by end-to-end latency (preprocess + forward + postprocess), the one figure every backend
shares: a pipeline backend's forward is its whole library call. "Acceptable" means within a fidelity threshold
(pixel agreement with fp32 eager) when the run measured fidelity; without fidelity data only fp32 options
count, on the stated assumption that a backend running fp32 keeps fp32 numerics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from segbench.results.labels import option_text, resolution_text
from segbench.results.metrics import METRICS, has_reference_numerics, is_reference
from segbench.results.runs import RunData, fidelity, peak_memory, pixels

AGREEMENT_THRESHOLD = 0.99  # pixel agreement with fp32 eager that counts as "same output"


@dataclass(frozen=True)
class ModelAdvice:
    model: str
    lines: tuple[str, ...]


def best_choices(run: RunData, threshold: float = AGREEMENT_THRESHOLD) -> list[ModelAdvice]:
    models = sorted({r["model"] for r in run.records})
    return [ModelAdvice(model, tuple(_advice_for_model(run, model, threshold))) for model in models]


def _acceptable(record: dict[str, Any], use_fidelity: bool, threshold: float) -> bool:
    if not use_fidelity:
        return has_reference_numerics(record)
    if is_reference(record):
        return True
    agreement = fidelity(record).get("pixel_agreement")
    return isinstance(agreement, (int, float)) and agreement >= threshold


def _ms(value: float) -> str:
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def _latency(record: dict[str, Any]) -> float:
    """End-to-end median, the latency all backends share; the forward median for records that lack it."""
    return METRICS["end_to_end_ms"].value(record) or record["latency_ms"]["median"]


def _fps(record: dict[str, Any]) -> float:
    return record["batch_size"] * 1000.0 / _latency(record)


def _describe(record: dict[str, Any]) -> str:
    agreement = fidelity(record).get("pixel_agreement")
    quality = f", pixel agreement {agreement * 100:.2f} %" if isinstance(agreement, (int, float)) else ""
    return (
        f"{option_text(record)} at batch {record['batch_size']}: {_ms(_latency(record))} ms end to end "
        f"({_fps(record):.1f} FPS{quality})"
    )


def _why_unverified(record: dict[str, Any], use_fidelity: bool, threshold: float) -> str:
    measured = fidelity(record)
    if not use_fidelity or not measured:
        return "has no fidelity data"
    if measured.get("agreement_unavailable"):
        return f"its agreement is undefined ({measured['agreement_unavailable']})"
    return f"is below the {threshold * 100:g} % agreement threshold"


def _advice_for_model(run: RunData, model: str, threshold: float) -> list[str]:
    ok = [r for r in run.ok if r["model"] == model]
    if not ok:
        statuses = sorted({r.get("status") or "?" for r in run.records if r["model"] == model})
        return [f"No cell finished ok ({', '.join(statuses)}); see the failed cells for the reasons."]
    use_fidelity = any(fidelity(r).get("pixel_agreement") is not None for r in ok)
    lines = []
    for resolution in sorted({tuple(r["resolution"]) for r in ok}, key=lambda res: res[0] * res[1]):
        here = [r for r in ok if tuple(r["resolution"]) == resolution]
        lines.append(_resolution_advice(run, model, here, use_fidelity, threshold))
    return lines


def _resolution_advice(
    run: RunData, model: str, here: list[dict[str, Any]], use_fidelity: bool, threshold: float
) -> str:
    where = resolution_text(here[0])
    sentences = []
    candidates = [r for r in here if _acceptable(r, use_fidelity, threshold)]
    if candidates:
        smallest_batch = min(r["batch_size"] for r in candidates)
        fastest = min((r for r in candidates if r["batch_size"] == smallest_batch), key=_latency)
        sentences.append(f"fastest is {_describe(fastest)}")
        unverified = [
            r
            for r in here
            if r["batch_size"] == smallest_batch and r not in candidates and _latency(r) < _latency(fastest)
        ]
        if unverified:
            quicker = min(unverified, key=_latency)
            sentences.append(
                f"{option_text(quicker)} is quicker ({_ms(_latency(quicker))} ms) but "
                f"{_why_unverified(quicker, use_fidelity, threshold)}"
            )
        throughput = max(candidates, key=_fps)
        if throughput is not fastest and _fps(throughput) > _fps(fastest):
            sentences.append(
                f"for throughput, {option_text(throughput)} at batch {throughput['batch_size']} gives "
                f"{_fps(throughput):.1f} FPS"
            )
    else:
        sentences.append("no option meets the fidelity rule here" if use_fidelity else "no fp32 option ran ok here")
    sentences.append(_batch_limit(run, model, here))
    return f"{where}: " + "; ".join(sentences) + "."


def _batch_limit(run: RunData, model: str, here: list[dict[str, Any]]) -> str:
    """The largest batch that ran ok, the budget's verdict when there is one, and the failure above it."""
    largest = max(here, key=lambda r: r["batch_size"])
    text = f"largest batch that ran ok: {largest['batch_size']}"
    peak, figure = peak_memory(largest)
    if peak is not None:
        text += f" (peak {peak:.0f} MiB, {figure})"
    budget = run.budget()
    if budget is not None:
        limit, label = budget
        fitting = [r for r in here if (peak_memory(r)[0] or float("inf")) <= limit]
        text += (
            f"; largest within the {label} ({limit / 1024:.3g} GiB): {max(r['batch_size'] for r in fitting)}"
            if fitting
            else f"; none fits the {label} ({limit / 1024:.3g} GiB)"
        )
    failed_above = [
        r
        for r in run.failed
        if r["model"] == model and pixels(r) == pixels(largest) and r["batch_size"] > largest["batch_size"]
    ]
    if failed_above:
        first = min(failed_above, key=lambda r: r["batch_size"])
        text += f"; batch {first['batch_size']} ended {first.get('status')}"
    return text
