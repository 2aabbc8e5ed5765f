"""The suite YAML schema (pydantic v2, unknown keys forbidden) and friendly, one-line errors."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from segbench import safe_yaml
from segbench.data.datasets import CalibrationConfig, Dataset, DatasetConfig, check_dataset, images_in_folder
from segbench.device import DEVICE_NAME_PATTERN
from segbench.errors import SegbenchError, SuiteError
from segbench.measure.telemetry import SAMPLE_INTERVAL_S, CooldownConfig
from segbench.naming import REFERENCE_BACKEND, REFERENCE_PRECISION, did_you_mean, shorten, unknown_name_message
from segbench.paths import resolve_path
from segbench.suite.axes import (  # noqa: F401 (re-exported: suite.Rule, suite.MAX_SIDE)
    MAX_SIDE,
    Rule,
    parse_resolution,
    rule_resolutions,
)
from segbench.suite.expectations import Expectation
from segbench.suite.targets import Percentile, Targets

MAX_DURATION_S = 86_400.0  # a day of measuring one cell
MAX_TIMEOUT_S = 7 * 86_400.0
DEFAULT_SEARCH_BUDGET_S = 300.0  # a stream search's trials, unless the suite or a short timeout says less
DeviceName = Annotated[str, Field(pattern=DEVICE_NAME_PATTERN)]
# strict: YAML's `true` is a bool, never a batch of 1 (lax pydantic reads it as 1); floats and strings are refused too.
PositiveInt = Annotated[int, Field(gt=0, strict=True)]
MAX_THREADS = 1024  # a sane bound for any node a cell may run on (a Ray node can have more CPUs than this machine)


MAX_NAME = 120  # characters; a run folder's name adds 18 and most file systems allow 255 bytes


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelEntry(StrictModel):
    """A model of the matrix: a registered name, optional local weights and family options."""

    name: str
    weights: Path | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("weights", mode="before")
    @classmethod
    def _weights_not_empty(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():  # Path("") is the working directory
            raise ValueError("empty weights; give a weights file or folder, or leave weights out for random weights")
        return value


class Timing(StrictModel):
    """When a cell's measurement stops: both minimums met, or either maximum reached."""

    warmup_iters: Annotated[int, Field(ge=0)] = 5
    # The end-to-end pass warms the whole pipeline for at least warmup_iters calls and at least this long before its
    # clock starts (its first, cold call is recorded apart as first_call_ms).
    warmup_s: Annotated[float, Field(ge=0, le=MAX_DURATION_S, allow_inf_nan=False)] = 1.0
    min_iters: PositiveInt = 10
    max_iters: PositiveInt = 1000
    # Finite bounds on every duration: .inf or 1e308 would overflow a timer deep inside a run.
    min_time_s: Annotated[float, Field(ge=0, le=MAX_DURATION_S, allow_inf_nan=False)] = 1.0
    max_time_s: Annotated[float, Field(gt=0, le=MAX_DURATION_S, allow_inf_nan=False)] = 10.0
    timeout_s: Annotated[float, Field(gt=0, le=MAX_TIMEOUT_S, allow_inf_nan=False)] = 600.0
    memory_iters: Annotated[int, Field(ge=0)] = 3
    # NVML telemetry (GPU cells) is sampled in a pass of its own after the latency pass, never beside the timed loop
    # (NVML queries can hold the driver's lock that kernel launches need: see results/README.md on the H200): the
    # same step back to back for at least telemetry_s (NVML averages power over about a second; 0: no telemetry
    # pass), a sample every telemetry_interval_s (0: the pass's two ends only).
    telemetry_s: Annotated[float, Field(ge=0, le=MAX_DURATION_S, allow_inf_nan=False)] = 2.0
    telemetry_interval_s: Annotated[float, Field(ge=0, le=60, allow_inf_nan=False)] = SAMPLE_INTERVAL_S
    # torch.backends.cudnn.benchmark for CUDA cells: cuDNN times candidate kernels at each new shape and keeps the
    # fastest (its workspaces with them); the warm-up (warmup_iters and warmup_s) covers that autotuning. PyTorch's
    # default is off; every cuDNN/matmul flag a cell ran with is recorded in its `torch_flags`.
    cudnn_benchmark: bool = False
    # Each cell measured in this many separate processes; the headline is the median of their medians
    # (segbench/repeats.py).
    repeats: Annotated[int, Field(ge=1, le=100)] = 1

    @model_validator(mode="after")
    def _bounds_are_ordered(self) -> Timing:
        if self.max_iters < self.min_iters:
            raise ValueError(f"max_iters ({self.max_iters}) is below min_iters ({self.min_iters}); raise max_iters")
        if self.max_time_s < self.min_time_s:
            raise ValueError(
                f"max_time_s ({self.max_time_s}) is below min_time_s ({self.min_time_s}); raise max_time_s"
            )
        return self


class MemoryConfig(StrictModel):
    poll_interval_ms: Annotated[float, Field(gt=0, le=10_000)] = 10.0


class StreamConfig(StrictModel):
    """The stream scenario: frames arrive at `target_fps` (or the highest sustainable rate is searched); a trial
    passes when its `latency_percentile` of latency from scheduled arrival is within `latency_bound_ms` (default:
    the frame interval at the trial's rate) and no frame is dropped. A trial lasts at least `duration_s` and
    `min_frames` frames (default 1 / (1 - q): 100 for p99); a searched rate is reported after `confirmations`
    consecutive passing trials, within `search_budget_s` (default half the cell's timeout, at most 300 s)."""

    target_fps: Annotated[float, Field(gt=0, le=10_000)] | Literal["max"] = 30.0
    duration_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    latency_bound_ms: Annotated[float, Field(gt=0, le=3_600_000)] | None = None
    latency_percentile: Percentile = "p99"
    min_frames: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    confirmations: Annotated[int, Field(ge=1, le=20)] = 3
    search_budget_s: Annotated[float, Field(gt=0, le=MAX_TIMEOUT_S)] | None = None
    source: str = "synthetic"
    queue_size: Annotated[int, Field(ge=1, le=1000)] = 2
    overlap: bool = False
    search_steps: Annotated[int, Field(ge=1, le=20)] = 6
    warmup_s: Annotated[float, Field(ge=0, le=600)] = (
        2.0  # the per-frame path runs this long before the camera's clock starts
    )

    def quantile(self) -> float:
        return int(self.latency_percentile.removeprefix("p")) / 100

    def trial_frames(self) -> int:
        """The fewest frames a trial offers: enough for the percentile judged (1 / (1 - q)), or `min_frames`."""
        return self.min_frames or round(1 / (1 - self.quantile()))

    def search_budget(self, timeout_s: float) -> float:
        """Seconds of trials a search may run: the suite's, else half the cell's timeout (the offline passes before
        the stream keep the other half), at most DEFAULT_SEARCH_BUDGET_S."""
        return self.search_budget_s or min(DEFAULT_SEARCH_BUDGET_S, timeout_s / 2)


class CapacityConfig(StrictModel):
    """The capacity scenario: N cameras at `camera_fps` (phases spread over the frame interval; `jitter` or `poisson`
    arrivals optionally) feed one deployment of the cell's model under each serving policy; the largest N whose trials
    keep up (no frame dropped, `latency_percentile` of latency from scheduled arrival within `latency_bound_ms`,
    default the frame interval) is searched up to `max_cameras`, confirmed by `confirmations` consecutive trials, and
    N + 1 shown to fail. A trial lasts at least `duration_s` and `min_frames` frames over all cameras (default
    1 / (1 - q): 100 for p99); the search runs within `search_budget_s` (default half the cell's timeout, at most
    300 s) for all policies together."""

    camera_fps: Annotated[float, Field(gt=0, le=1000)] = 30.0
    latency_bound_ms: Annotated[float, Field(gt=0, le=3_600_000)] | None = None
    latency_percentile: Percentile = "p99"
    confirmations: Annotated[int, Field(ge=1, le=20)] = 2
    duration_s: Annotated[float, Field(gt=0, le=3600)] = 3.0
    min_frames: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    arrival: Literal["uniform", "jitter", "poisson"] = "uniform"
    jitter_ms: Annotated[float, Field(ge=0, le=10_000)] = 2.0  # arrival: jitter: each frame up to ± this late/early
    seed: Annotated[int, Field(ge=0)] = 0  # the arrival schedule's random phases and gaps (jitter, poisson)
    policies: Annotated[list[Literal["replicas", "batched", "streams"]], Field(min_length=1)] = ["replicas", "batched"]
    replicas: Annotated[int, Field(ge=1, le=64, strict=True)] = 2  # workers of the replicas policy (and streams)
    max_batch: Annotated[int, Field(ge=1, le=256, strict=True)] = 4  # the batched policy's largest batch
    max_batch_delay_ms: Annotated[float, Field(ge=0, le=10_000)] = 5.0  # how long a batch waits to fill
    queue_size: Annotated[int, Field(ge=1, le=100, strict=True)] = 1  # frames a camera may have waiting
    max_cameras: Annotated[int, Field(ge=1, le=1024, strict=True)] = 64  # the search's cap
    search_budget_s: Annotated[float, Field(gt=0, le=MAX_TIMEOUT_S)] | None = None
    warmup_s: Annotated[float, Field(ge=0, le=600)] = 1.0  # every worker's path runs this long before the clocks

    @field_validator("policies")
    @classmethod
    def _policies_once(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"policies {value} names one twice; list each of replicas, batched, streams once")
        return value

    def quantile(self) -> float:
        return int(self.latency_percentile.removeprefix("p")) / 100

    def bound_ms(self) -> float:
        """The latency bound: the suite's, else the frame interval (each class map before the camera's next frame)."""
        return self.latency_bound_ms if self.latency_bound_ms is not None else 1000.0 / self.camera_fps

    def trial_frames(self) -> int:
        return self.min_frames or round(1 / (1 - self.quantile()))

    def search_budget(self, timeout_s: float) -> float:
        return self.search_budget_s or min(DEFAULT_SEARCH_BUDGET_S, timeout_s / 2)


class EndToEndConfig(StrictModel):
    """What the end-to-end pass times besides preprocess, forward and postprocess, and how postprocess hands over its
    class map. The defaults time decoded frames at the cell's resolution and give the reference labels bit for bit;
    `resize`, `interpolate_dtype` and `map_device` trade labels or placement for speed (see OutputPolicy)."""

    decode: Literal["none", "jpeg", "png"] = "none"  # frames arrive encoded: cv2.imdecode inside the clock
    # frames arrive at this (height, width), e.g. "1080x1920": cv2.resize to the cell's resolution inside the clock
    camera_size: tuple[Annotated[int, Field(gt=0, le=MAX_SIDE)], Annotated[int, Field(gt=0, le=MAX_SIDE)]] | None = None
    resize: Literal["logits", "labels"] = "logits"
    interpolate_dtype: Literal["float32", "logits"] = "float32"
    map_device: Literal["host", "device"] = "host"
    # torch's threads for the host stages (decode, resize, preprocess, postprocess): "auto" is the cell's threads,
    # except where OpenVINO or ONNX Runtime run the forward in their own thread pool: there torch's OpenMP workers
    # spin-wait after each host stage and take the forward's cores (OpenVINO's docs, "Composability of different
    # threading runtimes"), so a short probe before the timed passes picks 1 or the cell's count, whichever runs the
    # whole pipeline faster (recorded with both medians); a number sets it for every backend.
    host_threads: Literal["auto"] | Annotated[int, Field(ge=1, le=MAX_THREADS)] = "auto"

    @field_validator("host_threads", mode="before")
    @classmethod
    def _auto_or_a_count(cls, value: Any) -> Any:
        # One line for a bad value, not one per member of the union.
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_THREADS):
            return value
        raise ValueError(
            f"host_threads {value!r} is neither auto nor a thread count 1-{MAX_THREADS}; write auto or e.g. 1"
        )

    @field_validator("camera_size", mode="before")
    @classmethod
    def _height_x_width(cls, value: Any) -> Any:
        if isinstance(value, str):
            height, times, width = value.lower().partition("x")
            if not times or not height.strip().isdigit() or not width.strip().isdigit():
                raise ValueError(f"camera_size {value!r} is not HEIGHTxWIDTH; write e.g. 1080x1920 or [1080, 1920]")
            return int(height), int(width)
        return value


class RayConfig(StrictModel):
    """How cells ask a Ray cluster for resources (each still runs in its own fresh process)."""

    # Default: the cell's `threads`, or without them the smallest eligible node's CPUs, the worker then
    # using one thread per physical core it was given: cells side by side on a node never share a core.
    cpus_per_cell: Annotated[float, Field(gt=0, le=4096, allow_inf_nan=False)] | None = None


class RooflineConfig(StrictModel):
    """Once per run, measure the device's dense matmul rate and copy bandwidth (stored in meta.json)."""

    measure_ceiling: bool = True
    ceiling_seconds: Annotated[float, Field(gt=0, le=120)] = 4.0


class ProfileConfig(StrictModel):
    """The profile pass (segbench.cell.profile): the runtime's own profiler over a few forwards, after the timed
    passes. `profile: true` takes these defaults."""

    enabled: bool = True
    iters: Annotated[int, Field(ge=1, le=1000, strict=True)] = 10


class Suite(StrictModel):
    name: Annotated[str, Field(min_length=1, max_length=MAX_NAME)]  # it names the run folder
    description: str = ""
    device: DeviceName = "auto"
    hardware: str | list[str] | None = None
    executor: Literal["local", "ray"] = "local"
    ray: RayConfig = RayConfig()
    threads: Annotated[int, Field(gt=0, le=MAX_THREADS, strict=True)] | None = None
    plugins: list[str] = Field(default_factory=list)
    models: Annotated[list[ModelEntry], Field(min_length=1)]
    resolutions: Annotated[list[tuple[int, int]], Field(min_length=1)]
    batch_sizes: Annotated[list[PositiveInt], Field(min_length=1)] = [1]
    precisions: Annotated[list[str], Field(min_length=1)] = [REFERENCE_PRECISION]
    backends: Annotated[list[str], Field(min_length=1)] = [REFERENCE_BACKEND]
    timing: Timing = Timing()
    memory: MemoryConfig = MemoryConfig()
    roofline: RooflineConfig = RooflineConfig()
    cooldown: CooldownConfig | None = None
    expectations: list[Expectation] = Field(default_factory=list)
    targets: Targets | None = None
    scenario: Literal["offline", "stream", "capacity"] = "offline"
    stream: StreamConfig = StreamConfig()
    capacity: CapacityConfig = CapacityConfig()
    end_to_end: EndToEndConfig = EndToEndConfig()
    dataset: DatasetConfig | None = None  # labelled images: every ok cell gets mIoU, pixel accuracy, per-class IoU
    calibration: CalibrationConfig | None = None  # images int8 calibrates on (default: the dataset's train split)
    profile: ProfileConfig | None = None  # a per-operator profile of every cell, after its timed passes
    include: list[Rule] = Field(default_factory=list)
    exclude: list[Rule] = Field(default_factory=list)
    # `run --search`: the cells in the order that decides the Answer soonest, the rest pruned (run/search.py); each
    # cell first timed briefly (screening) unless search_screening is false
    search: bool = False
    search_screening: bool = True

    @property
    def hardware_targets(self) -> list[str]:
        if self.hardware is None:
            return []
        return [self.hardware] if isinstance(self.hardware, str) else list(self.hardware)

    @field_validator("models", mode="before")
    @classmethod
    def _names_to_entries(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("profile", mode="before")
    @classmethod
    def _profile_flag(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return {"enabled": True} if value else None
        return value

    @field_validator("resolutions", mode="before")
    @classmethod
    def _parse_resolutions(cls, value: Any) -> Any:
        if not isinstance(value, list):
            raise ValueError("resolutions must be a list, e.g. [512, [360, 640]]")
        return [parse_resolution(v) for v in value]


# ---- loading with friendly errors ---------------------------------------------------------------


def _format_location(location: tuple[Any, ...]) -> str:
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "(top level)"


def _fields_at(location: tuple[Any, ...], root: type[BaseModel]) -> list[str]:
    """The keys allowed where an unknown key was found, for did-you-mean hints."""
    model: type[BaseModel] | None = root
    for part in location[:-1]:
        if model is None or isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return []
        annotation = field.annotation
        inner = getattr(annotation, "__args__", (annotation,))
        model = next((t for t in inner if isinstance(t, type) and issubclass(t, BaseModel)), None)
    return list(model.model_fields) if model else []


def _describe(error: dict[str, Any], root: type[BaseModel] | None = None) -> tuple[str, str]:
    location = tuple(p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    kind = error["type"]
    if kind == "extra_forbidden":
        key = str(location[-1])
        allowed = _fields_at(location, root or Suite)
        hint = did_you_mean(key, allowed).strip() or f"allowed keys: {', '.join(allowed) or 'none'}"
        return _format_location(location), f"unknown key '{key}' ({hint})"
    if kind == "missing":
        return _format_location(location), "required field is missing; add it"
    message = error["msg"].removeprefix("Value error, ")
    if kind == "string_pattern_mismatch" and location and location[-1] == "device":
        message = f"invalid device {error.get('input')!r}; use auto, cpu, cuda or cuda:N"
    elif "input" in error and kind not in ("value_error",) and not isinstance(error["input"], (dict, list)):
        message = f"{message} (got {shorten(repr(error['input']), 120)})"
    return _format_location(location), shorten(message, 300)  # a validator's message may quote an alias-expanded value


describe_error = _describe  # one pydantic error as (field path, message): for other option schemas (fit)


def _check_names(suite: Suite, base_dir: Path | None = None) -> list[tuple[str, str]]:
    """Names that only the registries know: models, options, precisions, backends, rules."""
    from segbench.backends import backend_names, unknown_backend_message  # lazy: imports torch
    from segbench.models.registry import adapter_class, list_models, unknown_model_message  # lazy: imports torch
    from segbench.precision import precision_names, unknown_precision_message  # lazy: imports torch

    problems: list[tuple[str, str]] = []
    for index, entry in enumerate(suite.models):
        if entry.name not in list_models():
            problems.append((f"models[{index}]", unknown_model_message(entry.name)))
            continue
        try:
            adapter_class(entry.name).options_schema.model_validate(entry.options)
        except ValidationError as exc:
            where, what = _describe(exc.errors()[0], adapter_class(entry.name).options_schema)
            problems.append((f"models[{index}].options.{where}", what))
    for index, name in enumerate(suite.precisions):
        if name not in precision_names():
            problems.append((f"precisions[{index}]", unknown_precision_message(name)))
    for index, name in enumerate(suite.backends):
        if name not in backend_names():
            problems.append((f"backends[{index}]", unknown_backend_message(name)))
    if suite.executor == "local":  # on Ray, card names are cluster resources, not profiles
        from segbench.hardware import list_profiles  # lazy: imports torch

        for name in suite.hardware_targets:
            if name not in list_profiles():
                problems.append(("hardware", unknown_name_message("hardware profile", name, list_profiles())))
    from segbench.models.registry import get_card  # lazy: imports torch
    from segbench.models.weights import named_kind  # lazy: imports torch

    for index, entry in enumerate(suite.models):
        if entry.weights is None or resolve_path(entry.weights, base_dir).exists() or entry.name not in list_models():
            continue
        if named_kind(str(entry.weights), get_card(entry.name).source) is None:
            problems.append(
                (
                    f"models[{index}].weights",
                    f"weights not found: {entry.weights}; give a local file or folder, or a name "
                    f"{get_card(entry.name).source} knows (Hub id, ultralytics asset, torchvision weights)",
                )
            )
    for rules_name in ("include", "exclude"):
        for index, rule in enumerate(getattr(suite, rules_name)):
            if rule.resolution is not None:
                try:
                    rule_resolutions(rule.resolution)
                except ValueError as exc:
                    problems.append((f"{rules_name}[{index}].resolution", str(exc)))
    return problems


def _check_resolutions(suite: Suite) -> list[tuple[str, str]]:
    from segbench.models.registry import adapter_class, list_models  # lazy: imports torch

    problems = []
    for entry in suite.models:
        if entry.name not in list_models():
            continue
        constraints = adapter_class(entry.name).constraints
        for index, (height, width) in enumerate(suite.resolutions):
            problem = constraints.problem(height, width)
            if problem:
                problems.append(
                    (
                        f"resolutions[{index}]",
                        f"{height}x{width} is {problem} for model '{entry.name}'; change the resolution or exclude the "
                        "pair",
                    )
                )
    return problems


def _check_stream(suite: Suite, base_dir: Path | None) -> list[tuple[str, str]]:
    if suite.scenario != "stream":
        return []
    if suite.stream.source != "synthetic":
        from segbench.data.sources import check_video  # lazy: imports torch

        path = Path(suite.stream.source)
        try:
            check_video(path if path.is_absolute() or base_dir is None else base_dir / path)
        except SegbenchError as exc:
            return [("stream.source", str(exc).removeprefix("stream.source: "))]
    if any(batch != 1 for batch in suite.batch_sizes):
        return [("batch_sizes", "the stream scenario processes one frame at a time; use batch_sizes: [1]")]
    budget, timeout = suite.stream.search_budget_s, suite.timing.timeout_s
    if suite.stream.target_fps == "max" and budget is not None and budget + suite.stream.warmup_s >= timeout:
        return [
            (
                "stream.search_budget_s",
                f"the search ({budget:g} s) and its warm-up ({suite.stream.warmup_s:g} s) must end within "
                f"timing.timeout_s ({timeout:g} s); lower the budget or raise the timeout",
            )
        ]
    return []


def _check_capacity(suite: Suite) -> list[tuple[str, str]]:
    if suite.scenario != "capacity":
        return []
    if any(batch != 1 for batch in suite.batch_sizes):
        return [("batch_sizes", "the capacity scenario takes frames one camera at a time; use batch_sizes: [1]")]
    budget, timeout = suite.capacity.search_budget_s, suite.timing.timeout_s
    if budget is not None and budget + suite.capacity.warmup_s >= timeout:
        return [
            (
                "capacity.search_budget_s",
                f"the search ({budget:g} s) and its warm-up ({suite.capacity.warmup_s:g} s) must end within "
                f"timing.timeout_s ({timeout:g} s); lower the budget or raise the timeout",
            )
        ]
    return []


def _known_classes(entry: ModelEntry) -> int | None:
    """The class count a model entry will have, when known without reading its weights."""
    from segbench.models.registry import get_card  # lazy: imports torch

    option = entry.options.get("num_classes")
    if isinstance(option, int):
        return option
    return get_card(entry.name).num_classes if entry.weights is None else None


def _check_data(suite: Suite, base_dir: Path | None) -> list[tuple[str, str]]:
    """The dataset's masks fit every model; the calibration folder holds images."""
    problems: list[tuple[str, str]] = []
    if suite.dataset is not None:
        try:
            dataset = Dataset(suite.dataset, base_dir)
            known = [(classes, entry.name) for entry in suite.models if (classes := _known_classes(entry)) is not None]
            fewest, owner = min(known, default=(None, ""))
            check_dataset(dataset, fewest, f"model '{owner}'")
        except SegbenchError as exc:
            problems.append(("dataset", str(exc)))
    if suite.calibration is not None:
        try:
            images_in_folder(resolve_path(suite.calibration.path, base_dir))
        except SegbenchError as exc:
            problems.append(("calibration", str(exc)))
    return problems


def parse_suite(
    data: Any,
    source: str = "<suite>",
    base_dir: Path | None = None,
    on_schema_valid: Callable[[Suite], None] | None = None,
) -> Suite:
    """Validate suite data; raise SuiteError whose message is one line per problem.

    The schema first (no import needed), then the plugins and the names only registries know (they import
    torch: seconds); `on_schema_valid` runs between the two.
    """
    if not isinstance(data, dict):
        raise SuiteError(f"{source}: (top level): a suite must be a mapping with name, models, resolutions, …")
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        lines = [f"{source}: {where}: {what}" for where, what in map(_describe, exc.errors())]
        raise SuiteError("\n".join(lines)) from None
    if on_schema_valid is not None:
        on_schema_valid(suite)
    for plugin in suite.plugins:
        from segbench.models.registry import load_plugin  # lazy: imports torch

        try:
            load_plugin(str(plugin), base_dir)
        except Exception as exc:  # a plugin's own bug is still the user's input: one line
            raise SuiteError(f"{source}: plugins: {shorten(str(exc))}") from None
    problems = (
        _check_names(suite, base_dir)
        or _check_resolutions(suite)
        or _check_stream(suite, base_dir)
        or _check_capacity(suite)
        or _check_data(suite, base_dir)
        or _check_search(suite)
    )
    if problems:
        raise SuiteError("\n".join(f"{source}: {where}: {what}" for where, what in problems))
    return suite


def _check_search(suite: Suite) -> list[tuple[str, str]]:
    """A search prunes what cannot change the Answer, and the Answer needs targets."""
    if suite.search and (suite.targets is None or suite.targets.empty):
        return [
            (
                "search",
                "a search needs targets: add a targets: block (e.g. targets: {fps: 30}) or pass --target-fps 30",
            )
        ]
    return []


def read_suite_data(path: Path | str) -> Any:
    """A suite file's YAML as plain data (not yet validated)."""
    path = Path(path)
    if not path.is_file():
        raise SuiteError(f"{path}: suite file not found; check the path (examples live in suites/)")
    try:
        return safe_yaml.load_file(path)
    except safe_yaml.YamlRefused as exc:
        raise SuiteError(f"{path}: {exc}") from None
    except OSError as exc:
        raise SuiteError(f"{path}: cannot read the suite ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(syntax)"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SuiteError(f"{path}: {where}: invalid YAML: {problem}; fix the syntax") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """`timing.min_time_s=5` -> (['timing', 'min_time_s'], 5); the value is read as YAML, so `[1,8]` is a list."""
    key, equals, value = text.partition("=")
    if not equals or not key.strip() or any(not part for part in key.strip().split(".")):
        raise SuiteError(
            f"-s {text}: expected KEY=VALUE with a dotted key, e.g. -s timing.min_time_s=5 or -s batch_sizes=[1,8]"
        )
    try:
        parsed = safe_yaml.load_text(value) if value.strip() else ""
    except safe_yaml.YamlRefused as exc:
        raise SuiteError(f"-s {key}: {exc}") from None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SuiteError(f"-s {key}: invalid value {value!r} ({problem}); write it as YAML, e.g. [1, 8] or 5") from None
    return key.strip().split("."), parsed


def apply_overrides(data: Any, overrides: list[str] | tuple[str, ...]) -> Any:
    """Suite data with each `-s key.path=value` set; the schema validates the result as it does a file."""
    if not overrides:
        return data
    if not isinstance(data, dict):
        return data  # parse_suite reports the malformed top level
    result = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        target = result
        for depth, part in enumerate(path[:-1]):
            child = target.setdefault(part, {})
            if child is None:
                child = target[part] = {}
            if not isinstance(child, dict):
                where = ".".join(path[: depth + 1])
                raise SuiteError(
                    f"-s {'.'.join(path)}: '{where}' is not a mapping (it holds {child!r}); set '{where}' itself"
                )
            target = child
        target[path[-1]] = value
    return result


def dump_suite(data: Any) -> str:
    """Suite data as the YAML a run folder keeps, so the run can be repeated or resumed from it."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, allow_unicode=True)


def load_suite(path: Path | str, overrides: list[str] | tuple[str, ...] = ()) -> Suite:
    """Read and validate a suite YAML file, with optional `-s key=value` overrides."""
    path = Path(path)
    return parse_suite(apply_overrides(read_suite_data(path), overrides), str(path), path.parent)
