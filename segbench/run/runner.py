"""Runs a suite: expands the matrix, hands cells to an executor, appends each record as it ends.

The run folder is created first (suite copy + meta.json, before anything slow: the fingerprint, the ceiling), so
a run killed at any moment loses at most the cells in flight, and `--resume` continues it on any executor. Every
phase after that obeys the same stop rules (interruption.py): a stop signal during the ceiling measurement ends the
run as one during a cell does.
"""

from __future__ import annotations

import errno
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from pydantic import ValidationError

from segbench.cell.request import CellRequest
from segbench.data.images import photograph_names
from segbench.device import is_gpu
from segbench.errors import SegbenchError
from segbench.hardware import profile_for_device
from segbench.hardware.bounds import profile_bounds
from segbench.hardware.roofline import bytes_per_image, measure_ceiling_isolated, roofline
from segbench.measure.canary import against_reference, joined, reference_drift
from segbench.models.registry import get_card
from segbench.plain import NotPlain, to_plain
from segbench.results import store as results
from segbench.results.devices import ran_on
from segbench.results.runs import add_accuracy_deltas
from segbench.results.schema import first_problem, validate_record
from segbench.results.search import accounting, searched
from segbench.run.executors import get_executor
from segbench.run.executors.base import Executor, Job
from segbench.run.interruption import RunInterrupted, signal_name_of, stop_signals_deferred, stop_signals_raise
from segbench.run.runlock import hold_run_lock
from segbench.run.search import run_search
from segbench.suite.matrix import CellSpec, expand
from segbench.suite.schema import Suite
from segbench.system.env import fingerprint, resolve_device

LOG_DIR = results.LOG_DIR


class RunObserver(Protocol):
    def run_started(self, run_dir: Path, cells: list[CellSpec], skipped: int) -> None: ...
    def cell_started(self, cell: CellSpec, index: int) -> None: ...
    def cell_finished(self, cell: CellSpec, record: dict[str, Any]) -> None: ...


class SilentObserver:
    def run_started(self, run_dir: Path, cells: list[CellSpec], skipped: int) -> None: ...
    def cell_started(self, cell: CellSpec, index: int) -> None: ...
    def cell_finished(self, cell: CellSpec, record: dict[str, Any]) -> None: ...


@dataclass
class RunResult:
    run_dir: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0


def _base_record(cell: CellSpec, device: str) -> dict[str, Any]:
    card = get_card(cell.model)
    return {
        "cell_id": cell.cell_id,
        "status": None,
        "model": cell.model,
        "family": card.family,
        "source": card.source,
        "resolution": list(cell.resolution),
        "batch_size": cell.batch_size,
        "precision": cell.precision,
        "backend": cell.backend,
        "scenario": cell.scenario,
        "device": device,
        "weights": cell.weights,
        "options": cell.options,
        "latency_ms": None,
        "fps": None,
        "memory_mb": None,
        "error": None,
        **results.declared(cell.precision, cell.backend),
    }


def storable(record: dict[str, Any]) -> dict[str, Any]:
    """The record as plain JSON that the record schema accepts; a cell whose outcome is neither becomes that cell's
    `error` (naming the field), never the run's, so every line appended can be read back."""
    try:
        plain = to_plain(record, "record")
        validate_record(plain)
        return plain
    except NotPlain as exc:
        problem = str(exc)
    except ValidationError as exc:
        problem = first_problem(exc)
    failed = {key: _plain_or_none(record.get(key)) for key in _IDENTITY_FIELDS if key in record}
    failed.update(status="error", latency_ms=None, fps=None)
    failed["error"] = f"the cell's outcome is not a valid record: {problem}"
    return failed


def _plain_or_none(value: Any) -> Any:
    try:
        return to_plain(value)
    except NotPlain:
        return None


_IDENTITY_FIELDS = (
    "cell_id",
    "cell_key",
    "model",
    "family",
    "source",
    "resolution",
    "batch_size",
    "precision",
    "backend",
    "scenario",
    "device",
    "hardware",
    "weights",
    "options",
    "matmul_class",
    "reference_precision",
    "reference",
    "latency_scope",
    "started_at",
    "wall_s",
    "startup",
    "threads",
)


def _check_resume(run_dir: Path, suite: Suite, device: str) -> None:
    meta = results.read_meta(run_dir)
    if meta.get("suite") != suite.name:
        raise SegbenchError(
            f"--resume {run_dir}: that run is of suite '{meta.get('suite')}', not '{suite.name}'; resume with the same "
            "suite"
        )
    if meta.get("device") != device:
        raise SegbenchError(
            f"--resume {run_dir}: that run measured on '{meta.get('device')}', not '{device}'; pass --device "
            f"{meta.get('device')}"
        )


def _ceiling(suite: Suite, device: str) -> dict[str, Any] | None:
    """The device's measured matmul and copy rates, once per run, in its own process (no CUDA context here)."""
    if not suite.roofline.measure_ceiling:
        return None

    return measure_ceiling_isolated(
        device, list(suite.precisions), seconds=suite.roofline.ceiling_seconds, threads=suite.threads
    )


def peak_profile(record: dict[str, Any], meta: dict[str, Any]) -> tuple[Any, str]:
    """(profile of the card the cell ran on, its name) or (None, why there is no peak to compare with).

    Never the emulated target: a cell run on an H100 with `hardware: rtx3060` is compared with the H100's peak.
    """
    name = ran_on(record, meta)
    if not is_gpu(record.get("device") or meta.get("device")):
        return None, f"ran on {name}: a CPU has no published peak here; see percent_of_ceiling"
    profile = profile_for_device(name)
    if profile is None:
        return None, f"ran on {name}, which has no hardware profile: its peak is unknown"
    return profile, name


def ceiling_for(record: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any] | None:
    """The ceiling measured where the cell ran: its node's on a cluster (never the driver's), else the run's."""
    node = record.get("node")
    if not node:
        return meta.get("ceiling")
    return (meta.get("node_ceilings") or {}).get(str(node.get("node_id")))


def _node_ceilings(suite: Suite, executor: Any, device: str, run_dir: Path, meta: dict[str, Any]) -> None:
    """On a cluster, each node's own ceiling, measured before any cell with the node to itself."""
    if not suite.roofline.measure_ceiling or not hasattr(executor, "measure_ceilings") or meta.get("node_ceilings"):
        return
    meta["node_ceilings"] = executor.measure_ceilings(
        device, list(suite.precisions), suite.roofline.ceiling_seconds, suite.threads
    )
    results.write_json(run_dir / results.META_FILE, meta)


def _matmul_class(record: dict[str, Any]) -> str:
    """The class the cell's precision declared (stored with the record; looked up for records written before)."""
    return (
        record.get("matmul_class")
        or results.declared(record["precision"], record["backend"])["matmul_class"]
        or "unknown"
    )


def _drift_fields(record: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """The cell's canary against the reference canary measured with the ceiling where it ran, joined to `drifted`."""
    if not record.get("canary"):
        return {}
    canary = against_reference(record["canary"], (ceiling_for(record, meta) or {}).get("canary"))
    return {"canary": canary, "drifted": joined(record.get("drifted"), reference_drift(canary))}


def _derived_fields(record: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """Figures computed from a finished cell and the run: roofline, a throttle flag, drift against the run."""
    if record.get("status") != "ok":
        return {}
    gflops, fps = record.get("gflops"), record.get("fps")
    flops_per_image = gflops * 1e9 if gflops else None
    telemetry = record.get("telemetry") or {}
    profile, name_or_reason = peak_profile(record, meta)
    kind = _matmul_class(record)
    figures = roofline(
        flops_per_image,
        fps,
        kind,
        profile,
        ceiling_for(record, meta),
        no_profile_reason=name_or_reason,
        bytes_per_image=bytes_per_image(record.get("traffic"), kind),
    )
    bounded = (
        {"profile": profile_bounds(record["profile"], record["batch_size"], ceiling_for(record, meta), kind)}
        if record.get("profile")
        else {}
    )
    return {
        "roofline": _withheld(figures, record.get("inconsistent_forward")),
        "throttled": telemetry.get("throttled"),
        **_drift_fields(record, meta),
        **bounded,
    }


def _withheld(figures: dict[str, Any], reason: str | None) -> dict[str, Any]:
    """The roofline's rates withheld, with the reason, when the latency pass and the forward stage disagree (the forward
    FPS they rest on is not trusted)."""
    if not reason:
        return figures
    rates = ("achieved_tflops", "percent_of_peak", "percent_of_ceiling")
    return {
        **figures,
        **dict.fromkeys(rates),
        "unavailable": {**figures.get("unavailable", {}), **dict.fromkeys(rates, reason)},
    }


def _resume_run(run_dir: Path, suite: Suite, device: str, retry_failed: bool) -> tuple[dict[str, Any], set[str]]:
    """Check, repair and read the run before touching its meta: a resume refused leaves it as it was."""
    _check_resume(run_dir, suite, device)
    results.drop_torn_tail(run_dir)
    done = results.finished_cell_ids(run_dir, retry_failed)
    meta = results.read_meta(run_dir)
    meta.setdefault("resumed_at", []).append(results.utc_now())
    meta.update(status="running", end_time=None)
    meta.pop("stop_reason", None)
    results.write_json(run_dir / results.META_FILE, meta)
    return meta, done


def _new_run(
    suite: Suite, suite_path: Path | None, run_dir: Path, device: str, suite_text: str | None
) -> dict[str, Any]:
    if suite_text is not None or suite_path is None:  # built on the command line or overridden: keep what ran
        (run_dir / results.SUITE_FILE).write_text(suite_text or "", encoding="utf-8")
    else:
        results.copy_suite(suite_path, run_dir)
    meta = {
        "schema_version": results.SCHEMA_VERSION,
        "suite": suite.name,
        "description": suite.description,
        "suite_file": str(suite_path) if suite_path else None,  # None: built from command-line flags
        "device": device,
        "hardware_target": suite.hardware,
        "start_time": results.utc_now(),
        "end_time": None,
        "status": "running",
        "fingerprint": None,
        "photographs": photograph_names(),  # which bundled photograph calibrates and which judges (data/images.py)
        "ceiling": None,
    }
    results.write_json(run_dir / results.META_FILE, meta)  # before anything slow: a stop from here on is resumable
    return meta


def _measure_machine(suite: Suite, device: str, run_dir: Path, meta: dict[str, Any]) -> None:
    """The slow parts of a new run's meta (the fingerprint, the matmul ceiling), each written as soon as it is known."""
    if meta.get("fingerprint") is None:
        meta["fingerprint"] = fingerprint()
        results.write_json(run_dir / results.META_FILE, meta)
    if meta.get("ceiling") is None and suite.roofline.measure_ceiling:
        meta["ceiling"] = _ceiling(suite, device)
        results.write_json(run_dir / results.META_FILE, meta)


def _mark_stopped(
    run_dir: Path, meta: dict[str, Any], status: str, reason: str, cells_done: int, cells_total: int
) -> None:
    """Record how the run ended early, where meta.json can still be written (a full disk may refuse)."""
    meta.update(
        status=status, end_time=results.utc_now(), stop_reason=reason, cells_done=cells_done, cells_total=cells_total
    )
    try:
        results.write_json(run_dir / results.META_FILE, meta)
    except OSError:
        pass


class RunFolderWriteFailed(Exception):
    """An OSError from writing the run folder itself (a record, a log, meta.json), told apart from an executor's."""

    def __init__(self, error: OSError):
        super().__init__(str(error))
        self.error = error


def _writes_run_folder(exc: OSError, run_dir: Path) -> bool:
    """An OSError is the disk's only when it names a file in the run folder; a refused connection or the fd limit
    (torch's fd sharing) from the executor names none."""
    return bool(exc.filename) and Path(str(exc.filename)).resolve().is_relative_to(run_dir.resolve())


def _write_error(exc: OSError, run_dir: Path) -> SegbenchError:
    where = exc.filename or run_dir
    return SegbenchError(
        f"{where}: cannot write ({exc.strerror or exc}); earlier cells are kept; free space or fix permissions, then "
        f"resume with --resume {run_dir}"
    )


def _executor_error(exc: OSError, run_dir: Path, executor_name: str) -> SegbenchError:
    return SegbenchError(
        f"the {executor_name} executor failed: {type(exc).__name__}: {exc.strerror or exc}; earlier cells are kept in "
        f"{run_dir}; resume with --resume {run_dir}"
    )


def _folder_error(exc: OSError, out_dir: Path) -> SegbenchError:
    """Why the run folder could not be made, pointing at the fix that helps."""
    where = exc.filename or out_dir
    if exc.errno == errno.ENAMETOOLONG:
        return SegbenchError(
            f"{where}: the run folder's name is too long for this file system; shorten the suite's name (or --out)"
        )
    return SegbenchError(f"{where}: cannot create the run folder ({exc.strerror or exc}); choose a writable --out")


def _hardware_targets(suite: Suite, executor_name: str) -> list[str | None]:
    """The cards each cell runs on: one pass on this machine, or one per card listed for a Ray cluster."""
    cards = suite.hardware_targets
    if len(cards) > 1 and executor_name != "ray":
        raise SegbenchError(
            f"hardware: {len(cards)} cards listed ({', '.join(cards)}); several cards need --executor ray (one machine "
            "has one kind of card)"
        )
    return list(cards) if executor_name == "ray" and cards else [None]


def _jobs(
    suite: Suite, suite_path: Path | None, cells: list[CellSpec], device: str, run_dir: Path, cards: list[str | None]
) -> list[Job]:
    stream = suite.stream if suite.scenario == "stream" else None
    suite_dir = str(suite_path.resolve().parent if suite_path else Path.cwd())
    # One local card target is a budget to emulate; on Ray the cell runs on the real card instead.
    budget_profile = suite.hardware_targets[0] if cards == [None] and suite.hardware_targets else None
    cooldown = suite.cooldown
    timeout_s = suite.timing.timeout_s + ((cooldown.fixed_s or 0) + cooldown.timeout_s if cooldown else 0)
    jobs = []
    for cell in cells:
        request = CellRequest(
            cell,
            device,
            suite.timing,
            suite.memory.poll_interval_ms,
            suite.threads,
            tuple(suite.plugins),
            suite_dir,
            stream,
            budget_profile,
            cooldown,
            dataset=suite.dataset,
            calibration=suite.calibration,
            end_to_end=suite.end_to_end,
            profile=suite.profile if suite.profile is not None and suite.profile.enabled else None,
            capacity=suite.capacity if suite.scenario == "capacity" else None,
        )
        for card in cards:
            suffix = f"@{card}" if card else ""
            jobs.append(Job(request, timeout_s, run_dir / LOG_DIR / f"{cell.cell_id}{suffix}.log", card))
    return jobs


def run_suite(
    suite: Suite,
    suite_path: Path | None,
    out_dir: Path = Path("results"),
    device_override: str | None = None,
    resume: Path | None = None,
    retry_failed: bool = False,
    observer: RunObserver | None = None,
    executor: Executor | None = None,
    executor_name: str | None = None,
    suite_text: str | None = None,
    only_cells: frozenset[str] | None = None,
    retry_pruned: bool = False,
) -> RunResult:
    """Expand the suite and run every cell not yet finished, each isolated; returns the run folder and its records.

    `only_cells` (cell ids) runs those cells of the matrix and no other (`compare --confirm` reruns what it flagged).
    A suite with `search: true` runs as a search (run/search.py); `retry_pruned` (with `resume`) measures exactly the
    cells a search pruned, in full.

    `suite_text` is the YAML the run folder keeps instead of a copy of `suite_path` (a suite built from
    command-line flags, where `suite_path` is None, or one with `-s` overrides applied).
    """
    observer = observer or SilentObserver()
    executor_name = executor_name or suite.executor
    try:
        device = resolve_device(device_override or suite.device)
    except SegbenchError as exc:
        field_name = "--device" if device_override else "device"
        raise SegbenchError(f"{suite_path or 'command line'}: {field_name}: {exc}") from None
    cards = _hardware_targets(suite, executor_name)
    executor = executor or get_executor(executor_name, cpus_per_cell=suite.ray.cpus_per_cell)
    with ExitStack() as stack:
        stack.enter_context(stop_signals_raise())  # every phase from here obeys the same stop rules
        if resume is not None:
            run_dir = resume
            results.read_meta(run_dir)  # not a run folder: say so before taking its lock
            results.refuse_links(run_dir)  # a handed-over folder never gets a file outside it written
            stack.enter_context(hold_run_lock(run_dir))
            try:
                meta, done = _resume_run(run_dir, suite, device, retry_failed)
                (run_dir / LOG_DIR).mkdir(exist_ok=True)
            except OSError as exc:
                raise _write_error(exc, run_dir) from None
        else:
            try:
                run_dir = results.new_run_dir(out_dir, suite.name)
                stack.enter_context(hold_run_lock(run_dir))
                meta, done = _new_run(suite, suite_path, run_dir, device, suite_text), set()
                (run_dir / LOG_DIR).mkdir(exist_ok=True)
            except OSError as exc:
                raise _folder_error(exc, out_dir) from None
        if retry_pruned:
            only_cells, done = _retry_pruned(run_dir, done, only_cells)
        searching = suite.search and not retry_pruned
        if searching and cards != [None]:
            raise SegbenchError("search: runs on one card; list one hardware: card, or drop search")
        cells = [cell for cell in expand(suite) if only_cells is None or cell.cell_id in only_cells]
        all_jobs = _jobs(suite, suite_path, cells, device, run_dir, cards)
        jobs = [job for job in all_jobs if job.key not in done]
        outcome = RunResult(run_dir=run_dir, skipped=len(cells) * len(cards) - len(jobs))
        total = len(cells) * len(cards)

        def cells_done() -> int:
            return outcome.skipped + len(outcome.records)

        try:
            _measure_machine(suite, device, run_dir, meta)
            _node_ceilings(suite, executor, device, run_dir, meta)
            search = (suite, all_jobs, retry_failed) if searching else None
            return _run_jobs(run_dir, meta, jobs, outcome, total, device, executor, executor_name, observer, search)
        except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM or SIGHUP in any phase: the cell in flight is stopped
            with stop_signals_deferred():
                name = signal_name_of(exc)
                _mark_stopped(run_dir, meta, "interrupted", f"interrupted by {name}", cells_done(), total)
            raise RunInterrupted(run_dir, name, cells_done(), total) from None
        except RunFolderWriteFailed as exc:  # a full disk or a read-only folder: one line, what is written stays
            _mark_stopped(run_dir, meta, "failed", _reason(exc.error), cells_done(), total)
            raise _write_error(exc.error, run_dir) from None
        except OSError as exc:
            _mark_stopped(run_dir, meta, "failed", _reason(exc), cells_done(), total)
            if _writes_run_folder(exc, run_dir):
                raise _write_error(exc, run_dir) from None
            raise _executor_error(exc, run_dir, executor_name) from None
        except BaseException as exc:
            _mark_stopped(run_dir, meta, "failed", f"{type(exc).__name__}: {exc}", cells_done(), total)
            raise


def _retry_pruned(
    run_dir: Path, done: set[str], only_cells: frozenset[str] | None
) -> tuple[frozenset[str], set[str]]:
    """--retry-pruned: exactly the cells whose latest record is `pruned`, none of them counted as done."""
    pruned = {results.record_key(r) for r in results.read_records(run_dir) if r.get("status") == "pruned"}
    if not pruned:
        raise SegbenchError(f"--retry-pruned: {run_dir} has no pruned cells (only a search run prunes cells)")
    chosen = frozenset(pruned if only_cells is None else pruned & only_cells)
    return chosen, done - chosen


def _search_jobs(
    run_dir: Path,
    meta: dict[str, Any],
    search: tuple[Suite, list[Job], bool],
    executor: Executor,
    job_started: Callable[[Job], None],
    job_finished: Callable[[Job, dict[str, Any]], None],
) -> None:
    """The cells as a search: one at a time, each step decided on the records so far (run/search.py)."""
    suite, all_jobs, retry_failed = search
    assert suite.targets is not None  # the suite's schema refuses a search without targets

    def execute(job: Job, step: dict[str, Any]) -> None:
        executor.run([job], job_started, lambda ran, outcome: job_finished(ran, searched(outcome, step)))

    def record_pruned(job: Job, prune: dict[str, Any]) -> None:
        job_finished(job, {"status": "pruned", "search": prune})

    def write_meta(figures: dict[str, Any]) -> None:
        meta["search"] = figures
        try:
            results.write_json(run_dir / results.META_FILE, meta)
        except OSError as exc:
            raise RunFolderWriteFailed(exc) from exc

    run_search(
        all_jobs,
        run_dir,
        suite.targets,
        execute,
        record_pruned,
        write_meta,
        screening=suite.search_screening,
        retry_failed=retry_failed,
    )


def _reason(exc: OSError) -> str:
    return f"{type(exc).__name__}: {exc.strerror or exc}"


def _run_jobs(
    run_dir: Path,
    meta: dict[str, Any],
    jobs: list[Job],
    outcome: RunResult,
    total: int,
    device: str,
    executor: Executor,
    executor_name: str,
    observer: RunObserver,
    search: tuple[Suite, list[Job], bool] | None = None,
) -> RunResult:
    observer.run_started(run_dir, [job.request.cell for job in jobs], outcome.skipped)
    started = time.perf_counter()
    positions = {job.key: index for index, job in enumerate(jobs)}

    def job_started(job: Job) -> None:
        observer.cell_started(job.request.cell, positions.get(job.key, len(positions)))

    def job_finished(job: Job, cell_outcome: dict[str, Any]) -> None:
        record = _base_record(job.request.cell, device) | cell_outcome
        if job.hardware is not None:
            record.update(hardware=job.hardware, cell_key=job.key)
        record.update(_derived_fields(record, meta))
        record = storable(record)
        try:
            results.append_record(run_dir, record)
        except OSError as exc:
            raise RunFolderWriteFailed(exc) from exc
        outcome.records.append(record)
        observer.cell_finished(job.request.cell, record)

    if search is None:
        executor.run(jobs, job_started, job_finished)
    else:
        _search_jobs(run_dir, meta, search, executor, job_started, job_finished)
    add_accuracy_deltas(outcome.records)  # for the run summary's expectations; reports recompute it from the file
    meta.update(
        status="complete",
        end_time=results.utc_now(),
        executor=executor_name,
        duration_s=meta.get("duration_s", 0) + round(time.perf_counter() - started, 3),
    )
    meta.update(cells_done=outcome.skipped + len(outcome.records), cells_total=total)
    if meta.get("search"):  # a search's spend, with what --retry-pruned measured since
        meta["search"].update(accounting(results.read_records(run_dir, latest_only=False)))
    try:
        results.write_json(run_dir / results.META_FILE, meta)
    except OSError as exc:
        raise RunFolderWriteFailed(exc) from exc
    return outcome
