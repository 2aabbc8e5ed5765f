"""`segbench fit`: the largest batch per resolution, and the largest square side at batch 1, that fit a budget.

Each probe is one cell run by a caller-supplied `CellRunner` (in production an isolated child, so an
OOM never leaves a long-lived process in a half-freed state). The search grows exponentially until a
probe fails, then bisects between the last size that fit and the first that did not, so it assumes
memory need grows with batch and side. Probes are cached: a (batch, height, width) runs once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from segbench.device import is_gpu
from segbench.errors import SegbenchError
from segbench.run.isolation import execute_isolated
from segbench.suite.axes import MAX_SIDE
from segbench.suite.schema import DeviceName, Timing, describe_error

# A probe returns the cell's status ("ok", "oom", "error", ...) or the cell's outcome dict.
ProbeOutcome = str | Mapping[str, Any]
CellRunner = Callable[[int, int, int], ProbeOutcome]

OK = "ok"
SIDE_STEP = 32  # square sides are multiples of 32, the stride most segmentation backbones need


@dataclass(frozen=True)
class Probe:
    batch: int
    height: int
    width: int
    status: str
    error: str | None = None


@dataclass(frozen=True)
class BatchFit:
    """Largest batch that fit at one resolution; 0 when even batch 1 did not."""

    height: int
    width: int
    largest_batch: int
    limited_by: str  # status of the smallest probe that failed ("oom", "error", ...), or "max_batch"
    limit_error: str | None = None

    @property
    def fits(self) -> bool:
        return self.largest_batch > 0


@dataclass(frozen=True)
class SideFit:
    """Largest square side (a multiple of SIDE_STEP) that fit at batch 1; 0 when none did."""

    largest_side: int
    limited_by: str  # as BatchFit.limited_by, or "max_side"
    limit_error: str | None = None

    @property
    def fits(self) -> bool:
        return self.largest_side > 0


@dataclass
class FitTable:
    batches: list[BatchFit]
    square: SideFit | None
    probes: list[Probe] = field(default_factory=list)
    device: dict[str, Any] | None = None  # where the probes ran: name, GPU UUID, UTC time (system.env.device_identity)

    @property
    def probe_count(self) -> int:
        return len(self.probes)

    @property
    def fits_anywhere(self) -> bool:
        return any(row.fits for row in self.batches) or bool(self.square and self.square.fits)

    def to_dict(self) -> dict[str, Any]:
        return {
            "batches": [asdict(row) for row in self.batches],
            "square": asdict(self.square) if self.square else None,
            "probe_count": self.probe_count,
            "probes": [asdict(probe) for probe in self.probes],
            "device": self.device,
        }


class _Prober:
    """Runs each distinct (batch, height, width) once and remembers the outcome."""

    def __init__(self, run: CellRunner):
        self.run = run
        self.cache: dict[tuple[int, int, int], Probe] = {}

    def __call__(self, batch: int, height: int, width: int) -> Probe:
        key = (batch, height, width)
        if key not in self.cache:
            outcome = self.run(batch, height, width)
            if isinstance(outcome, str):
                self.cache[key] = Probe(batch, height, width, outcome)
            else:
                self.cache[key] = Probe(batch, height, width, str(outcome.get("status")), outcome.get("error"))
        return self.cache[key]


def _largest_fitting(fits: Callable[[int], Probe], start: int, limit: int) -> tuple[int, Probe | None]:
    """Largest n in [1, limit] whose probe is ok, assuming ok is monotone (ok below, failing above).

    Doubles from `start` while probes fit (halves while they fail), then bisects between the last n
    that fit and the first that did not. Returns (n, the smallest failing probe seen): n is 0 when
    even 1 fails, and the probe is None when `limit` itself fits.
    """
    n = max(1, min(start, limit))
    probe = fits(n)
    if probe.status == OK:
        good, bad, failure = n, 0, None
        while not bad:
            if good == limit:
                return good, None
            n = min(good * 2, limit)
            probe = fits(n)
            if probe.status == OK:
                good = n
            else:
                bad, failure = n, probe
    else:
        good, bad, failure = 0, n, probe
        while not good and bad > 1:
            n = bad // 2
            probe = fits(n)
            if probe.status == OK:
                good = n
            else:
                bad, failure = n, probe
    while bad - good > 1:
        middle = (good + bad) // 2
        probe = fits(middle)
        if probe.status == OK:
            good = middle
        else:
            bad, failure = middle, probe
    return good, failure


def largest_batch(prober: _Prober, height: int, width: int, max_batch: int) -> BatchFit:
    batch, failure = _largest_fitting(lambda b: prober(b, height, width), 1, max_batch)
    if failure is None:
        return BatchFit(height, width, batch, "max_batch")
    return BatchFit(height, width, batch, failure.status, failure.error)


def largest_square(prober: _Prober, max_side: int, start_side: int = 512) -> SideFit:
    steps, failure = _largest_fitting(
        lambda k: prober(1, k * SIDE_STEP, k * SIDE_STEP), start_side // SIDE_STEP, max_side // SIDE_STEP
    )
    if failure is None:
        return SideFit(steps * SIDE_STEP, "max_side")
    return SideFit(steps * SIDE_STEP, failure.status, failure.error)


def fit_search(
    run: CellRunner,
    resolutions: list[tuple[int, int]],
    max_batch: int = 256,
    max_side: int = 8192,
    start_side: int = 512,
    square: bool = True,
) -> FitTable:
    """The fit table: largest batch per resolution, then (if `square`) the largest square side at batch 1."""
    if max_batch < 1 or max_side < SIDE_STEP:
        raise ValueError(f"max_batch must be >= 1 and max_side >= {SIDE_STEP}")
    prober = _Prober(run)
    batches = [largest_batch(prober, height, width, max_batch) for height, width in resolutions]
    side = largest_square(prober, max_side, start_side) if square else None
    return FitTable(batches, side, list(prober.cache.values()))


def probe_timing(timeout_s: float = 300.0) -> Any:
    """Timing for a probe cell: one warm-up and one pass of each kind show whether a shape fits."""
    return Timing(
        warmup_iters=1,
        warmup_s=0.0,
        min_iters=1,
        max_iters=1,
        min_time_s=0.0,
        max_time_s=1.0,
        timeout_s=timeout_s,
        memory_iters=1,
        telemetry_s=0.0,  # a probe asks "does it fit?": no telemetry pass
    )


def _default_execute() -> Callable[..., Mapping[str, Any]]:
    return execute_isolated


def isolated_runner(
    request_for: Callable[[int, int, int], Any],
    timeout_s: float,
    log_dir: Path | str | None = None,
    execute: Callable[..., Mapping[str, Any]] | None = None,
) -> CellRunner:
    """A CellRunner that runs each probe as an isolated cell.

    `request_for(batch, height, width)` builds the probe's CellRequest; `execute(request, timeout_s,
    log_path)` runs it (default: segbench's `execute_isolated`, one fresh spawned process per probe).
    """
    run_isolated = execute or _default_execute()

    def run(batch: int, height: int, width: int) -> Mapping[str, Any]:
        log = Path(log_dir) / f"fit-b{batch}-{height}x{width}.log" if log_dir else None
        return run_isolated(request_for(batch, height, width), timeout_s, log)

    return run


def budget_lines(profile: Any, backend_name: str, device: str) -> list[str]:
    """What the fit search's budget is and what it cannot see, printed before the search starts."""
    from segbench.backends import get_backend  # lazy: imports torch

    lines = [
        f"budget: the card's {profile.total_mb:.0f} MiB total ({profile.total_basis}): each probe occupies the real "
        "card's free memory down to that total minus the CUDA context it measures"
    ]
    if not is_gpu(device):
        lines.append("CPU device: probes are limited by host RAM, not by the card's budget")
    outside = get_backend(backend_name).memory_outside_torch
    if outside:
        lines.append(f"{backend_name}: {outside} see the emulated free memory too (occupied, not an allocator cap)")
    return lines


class FitOptions(BaseModel):
    """`segbench fit`'s options, with the suite schema's types and bounds."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    precision: str
    backend: str
    resolution: Annotated[list[Annotated[int, Field(gt=0, le=MAX_SIDE)]], Field(min_length=1)]
    max_batch: Annotated[int, Field(ge=1)]
    max_side: Annotated[int, Field(ge=SIDE_STEP, le=MAX_SIDE)]
    device: DeviceName
    timeout: Annotated[float, Field(gt=0)]


def check_fit_options(**options: Any) -> None:
    """Validate `segbench fit`'s options before any probe runs: names as a suite's, numbers in range.

    Raises SegbenchError with one line per problem, each naming the flag, as the suite schema does.
    """
    from segbench.backends import backend_names, unknown_backend_message  # lazy: imports torch
    from segbench.precision import precision_names, unknown_precision_message  # lazy: imports torch

    try:
        checked = FitOptions.model_validate(options)
    except ValidationError as exc:
        lines = [
            f"--{where.split('[')[0].replace('_', '-')}: {what}"
            for where, what in (describe_error(error, FitOptions) for error in exc.errors())
        ]
        raise SegbenchError("\n".join(lines)) from None
    problems = []
    if checked.precision not in precision_names():
        problems.append(f"--precision: {unknown_precision_message(checked.precision)}")
    if checked.backend not in backend_names():
        problems.append(f"--backend: {unknown_backend_message(checked.backend)}")
    if problems:
        raise SegbenchError("\n".join(problems))
