"""The stored shapes: one line of results.jsonl (a cell record) and meta.json, as pydantic models.

These are the one source of the stored field names: `cell/passes.py` and `run/runner.py` write them, the
metric catalogue's dotted paths point into them, and `results/store.py` validates every line and
meta.json against them on load, so a hand-edited or foreign file gives one line naming the file,
the line and the field instead of a traceback deep in a report. Only the fields that readers rely
on are typed; the others pass through untouched (`extra="allow"`), so a newer producer's extra
figures never break an older reader.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from segbench.naming import shorten

SCHEMA_VERSION = 1
# pruned: skipped by `run --search`, its rule and evidence in `search` (suite/search_rules.py); never measured
FINAL_STATUSES = ("ok", "oom", "timeout", "error", "unsupported", "pruned")
RUN_STATUSES = ("running", "complete", "interrupted", "failed")
STAGES = ("preprocess", "forward", "postprocess")  # the timed parts of one end-to-end frame, in order
# Timed before preprocess when the suite's end_to_end block asks for them (frames encoded, or at a camera's size).
INPUT_STAGES = ("decode", "resize")

Number = float | None  # JSON numbers; NaN and ±inf are numbers too (reports handle them)


class Stored(BaseModel):
    # Strict: a "4" where 4 belongs is an edited file, not a value to coerce silently.
    model_config = ConfigDict(extra="allow", strict=True)


class LatencySummary(Stored):
    """`latency_ms`, `end_to_end_ms` and each stage of `stages_ms`: LatencyStats.summary()."""

    median: float
    mean: Number = None
    p90: Number = None
    p95: Number = None
    p99: Number = None
    min: Number = None
    max: Number = None
    std: Number = None
    cv: Number = None
    ci95: list[float] | None = None
    n: int | None = None
    percentiles_withheld: dict[str, str] | None = None  # p90/p95/p99 left null: n below 1 / (1 - q) (measure/quantiles)


class Accuracy(Stored):
    """`accuracy`: ground-truth figures (measure/accuracy.py); the reports iterate `per_class_iou`."""

    miou: Number = None
    pixel_accuracy: Number = None
    per_class_iou: dict[str, Number] | None = None
    images: int | None = None


class Repeats(Stored):
    """`repeats`: the k processes of a repeated cell (run/repeats.py); compare tests on the per-process lists."""

    k: int | None = None
    statuses: list[str] | None = None
    process_medians_ms: list[Number] | None = None
    process_p95_ms: list[Number] | None = None
    process_end_to_end_ms: list[Number] | None = None
    process_end_to_end_p95_ms: list[Number] | None = None
    within_cv: list[Number] | None = None
    between_cv: Number = None
    between_ci95: list[Number] | None = None


class CapacityPolicy(Stored):
    """`capacity.policies.<name>`: one serving policy's search (cell/capacity.py)."""

    policy: str
    status: str  # ok, unsupported, budget
    max_cameras: int | None = None  # confirmed by k consecutive trials; None with max_cameras_why
    max_cameras_why: str | None = None
    failing_cameras: int | None = None  # N + 1, whose trial failed
    failed_on: Literal["drops", "latency"] | None = None
    trials: list[dict[str, Any]] = Field(default_factory=list)


class Capacity(Stored):
    """`capacity`: how many cameras at camera_fps the cell's deployment serves, and each policy's search."""

    camera_fps: float
    max_cameras: int | None = None  # the best policy's confirmed N
    policy: str | None = None  # that policy
    how: str | None = None  # how it was confirmed, and how N + 1 failed
    max_cameras_why: str | None = None
    policies: dict[str, CapacityPolicy] = Field(default_factory=dict)


class CpuInfo(Stored):
    model: str | None = None
    physical_cores: int | None = None
    logical_cores: int | None = None
    flags: list[str] | None = None


class GpuInfo(Stored):
    index: int | None = None
    name: str | None = None
    memory_mb: Number = None


class Fingerprint(Stored):
    """`fingerprint` (system/env.py): the parts the reports and compare read field by field."""

    machine: str | None = None
    cpu: CpuInfo | None = None
    gpus: list[GpuInfo] | None = None
    packages: dict[str, str | None] | None = None
    ram_gb: Number = None


class Node(Stored):
    """`node`: where a Ray cell ran (run/executors/ray.py); its fingerprint names the card the cell ran on."""

    hostname: str | None = None
    fingerprint: Fingerprint | None = None


class CellRecord(Stored):
    """One line of results.jsonl."""

    schema_version: int = SCHEMA_VERSION
    cell_id: str
    cell_key: str | None = None
    status: Literal[FINAL_STATUSES]  # type: ignore[valid-type]
    model: str
    family: str | None = None
    resolution: Annotated[list[Annotated[int, Field(gt=0)]], Field(min_length=2, max_length=2)]
    batch_size: Annotated[int, Field(gt=0)]
    precision: str
    backend: str
    scenario: str = "offline"
    device: str | None = None
    hardware: str | None = None
    latency_ms: LatencySummary | None = None
    samples_ms: list[float] | None = None
    latency_timing: str | None = None  # how the latency pass timed a step (synchronous, one request at a time)
    fps: Number = None  # latency-derived: batch x 1000 / the latency pass's median
    device_throughput_fps: Number = None  # images / loop time of the forward back to back (measure/timing.py)
    end_to_end_ms: LatencySummary | None = None
    end_to_end_fps: Number = None  # batch x 1000 / end-to-end median: 1 / the median call of the sequential pipeline
    end_to_end_throughput_fps: Number = None  # images / wall time of the end-to-end pass (slow calls and gaps included)
    pipelined_fps_bound: Number = None  # batch x 1000 / the slowest stage's median: what overlapping stages could reach
    end_to_end_covers: dict[str, Any] | None = None  # what the end-to-end pass timed: input, stages, class map
    first_call_ms: Number = None  # the first, cold call of the whole pipeline: never one of the end-to-end samples
    end_to_end_input: str | None = None  # what the end-to-end pass fed the pipeline (held-out photographs)
    detections_per_frame: list[int] | None = None  # instances found per end-to-end frame (detector families)
    stages_ms: dict[str, LatencySummary] | None = None
    memory_mb: dict[str, Number] | None = None
    gflops: Number = None
    measured_s: Number = None
    fidelity: dict[str, Any] | None = None
    accuracy: Accuracy | None = None
    repeats: Repeats | None = None
    node: Node | None = None
    stream: dict[str, Any] | None = None
    capacity: Capacity | None = None
    roofline: dict[str, Any] | None = None
    telemetry: dict[str, Any] | None = None
    params: Number = None
    prepare_s: Number = None
    startup_s: Number = None
    wall_s: Number = None
    error: str | None = None
    traceback: str | None = None
    noisy: bool | None = None
    canary: dict[str, Any] | None = None  # the host's speed around the timed passes (segbench.measure.canary)
    drifted: str | None = None  # why the machine's speed moved under the cell (canary or steal), or None
    inconsistent_forward: str | None = None  # the latency pass and the forward stage disagree: forward FPS withheld
    over_budget: str | None = None  # an emulated card's total exceeded by the NVML process peak
    torch_flags: dict[str, Any] | None = None  # cuDNN/matmul settings the timed passes ran with
    memory_allocator_mb: dict[str, Number] | None = None  # torch.cuda.memory_stats() at the memory pass's peak
    profile: dict[str, Any] | None = None  # the profile pass: operators and blocks, bounded (cell/profile.py)
    # `run --search`: phase (screen | extend | full) and why, or for a pruned cell its rule, reason and evidence
    search: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _ok_has_figures(self) -> CellRecord:
        if self.status == "ok" and (self.latency_ms is None or self.fps is None):
            raise ValueError("status is ok but latency_ms or fps is missing")
        return self


class RunMeta(Stored):
    """meta.json."""

    schema_version: int = SCHEMA_VERSION
    suite: str
    description: str | None = None
    suite_file: str | None = None
    device: str
    hardware_target: str | list[str] | None = None
    start_time: str | None = None
    end_time: str | None = None
    status: Literal[RUN_STATUSES] | None = None  # type: ignore[valid-type]
    fingerprint: Fingerprint | None = None
    ceiling: dict[str, Any] | None = None
    executor: str | None = None
    duration_s: Number = None
    cells_done: int | None = None
    cells_total: int | None = None
    stop_reason: str | None = None


def first_problem(exc: ValidationError) -> str:
    """'batch_size: Input should be a valid integer (got '4')': the first error, bounded in length."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "(top level)"
    got = "" if error["type"] == "missing" else f" (got {shorten(repr(error.get('input')), 80)})"
    more = f"; {len(exc.errors()) - 1} more problem(s)" if len(exc.errors()) > 1 else ""
    return f"{where}: {error['msg']}{got}{more}"


def validate_record(data: Any) -> CellRecord:
    return CellRecord.model_validate(data)


def validate_meta(data: Any) -> RunMeta:
    return RunMeta.model_validate(data)
