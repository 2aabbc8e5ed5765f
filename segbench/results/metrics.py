"""The metric catalogue: the one place that says what each figure of a cell record is.

Each entry gives a key, a label, where the value lives in the record (a dotted path into the
record as `cell/passes.py` and `run/runner.py` write it, or a derivation when no single field holds it),
its unit, which direction is better, how it is formatted and a sentence of help. The leaderboard,
the exports, `compare`, expectations and targets are views on this catalogue: adding a metric
means its producer plus one entry here.

Nothing here imports `segbench.report` (the suite schema validates metric names against it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

from segbench.device import is_gpu
from segbench.errors import SegbenchError
from segbench.formatting import (
    Formatter,
    fmt_fixed,
    fmt_memory_saving,
    fmt_ms,
    fmt_params,
    fmt_seconds,
    fmt_significant,
    fmt_speedup,
    fmt_yes_no,
)
from segbench.measure.quantiles import TAIL_PERCENTILES, percentile_withheld, samples_needed, time_needed_text
from segbench.naming import did_you_mean

Better = Literal["lower", "higher", "none"]
Record = dict[str, Any]
PIPELINE_WHY = (
    "pipeline backend: its forward is the whole library call, so only its end-to-end figures compare with other options"
)
MEMORY_FIGURES = {
    "nvml_process_peak": "NVML process peak",
    "torch_reserved_peak": "allocator reserved peak",
    "rss_peak": "host RSS peak",
}


class UnknownMetricError(SegbenchError):
    """A suite, target or option naming a metric the catalogue does not have."""


# ---- reading a record ------------------------------------------------------------------------------


def number(value: Any) -> float | None:
    """A recorded figure as a float (NaN and ±inf included), or None: text, lists, None and booleans (flags, never
    figures) are not numbers."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def flag(value: Any) -> float | None:
    """A recorded yes/no as 1/0 (a flag shown as a metric, like keeps_up), or None when it is not a boolean."""
    return float(value) if isinstance(value, bool) else None


def dig(data: Any, path: str) -> Any:
    """The value at a dotted path ('latency_ms.ci95.0'); None where any step is missing."""
    for part in path.split("."):
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data


def path_exists(data: Any, path: str) -> bool:
    """Whether the record holds this path: every step present, or a step recorded as null (a figure this
    device cannot give, such as GPU clocks on a CPU, is null where its statistics would be)."""
    for part in path.split("."):
        if data is None:
            return True
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return False
    return True


def declared(record: Record, field: str) -> Any:
    """What the cell's precision and backend declare (stored with the record; asked of the registry for a record without
    it)."""
    if field in record:
        return record[field]
    if not record.get("precision") or not record.get("backend"):
        return None
    from segbench.results.store import declared as registry_declared  # lazy: imports pandas

    return registry_declared(str(record["precision"]), str(record["backend"]))[field]


def is_reference(record: Record) -> bool:
    """The cell speed-ups and fidelity are measured against, as its precision and backend declared it (fp32 eager)."""
    return bool(declared(record, "reference"))


def has_reference_numerics(record: Record) -> bool:
    """The cell's precision is the reference precision (fp32), whatever backend ran it."""
    return bool(declared(record, "reference_precision"))


def times_whole_pipeline(record: Record) -> bool:
    """A pipeline backend's forward is the whole library call (resize, model, NMS, masks): not a forward-only time."""
    return declared(record, "latency_scope") == "end_to_end"


def ran_on_gpu(record: Record) -> bool:
    return is_gpu(record.get("device"))


def headline_memory(record: Record) -> tuple[float | None, str]:
    """The peak-memory figure a table headlines, and its name.

    On a GPU: NVML's per-process peak (what the card really gives the process: context, allocator
    cache and libraries), falling back to the allocator's reserved peak. On a CPU: peak RSS.
    """
    memory = record.get("memory_mb") or {}
    if ran_on_gpu(record):
        for name in ("nvml_process_peak", "torch_reserved_peak"):
            if number(memory.get(name)) is not None:
                return float(memory[name]), name
        return None, "nvml_process_peak"
    return number(memory.get("rss_peak")), "rss_peak"


def footprint_mb(record: Record) -> float | None:
    """The model's own memory: the headline peak minus the baseline recorded before the model was built.

    The baseline is what the process held already (CUDA context on a GPU, the interpreter and its
    libraries on a CPU). The allocator's reserved peak counts only PyTorch's allocations, so it is
    a footprint already.
    """
    peak, figure = headline_memory(record)
    if peak is None:
        return None
    if figure == "torch_reserved_peak":
        return peak
    baseline = number((record.get("memory_mb") or {}).get("baseline"))
    return None if baseline is None else max(0.0, peak - baseline)


def _stream(record: Record) -> dict[str, Any]:
    value = record.get("stream")
    return value if isinstance(value, dict) else {}


def _capacity_missing(record: Record, path: str) -> str | None:
    """Why a capacity figure is missing: not a capacity cell, the policy was not searched, or the search's reason."""
    part = dig(record, path)
    if not isinstance(record.get("capacity"), dict):
        return "not a capacity cell"
    if not isinstance(part, dict):
        return "this policy was not searched"
    return str(part.get("max_cameras_why") or "") or None


def capacity_confirmed_p99(record: Record) -> float | None:
    """p99 from scheduled arrival of the best policy's last confirmation trial at the reported N."""
    capacity = record.get("capacity")
    if not isinstance(capacity, dict) or not capacity.get("policy"):
        return None
    policy = dig(capacity, f"policies.{capacity['policy']}") or {}
    rows = [row for row in policy.get("trials") or [] if isinstance(row, dict)]
    confirmed = [row for row in rows if row.get("phase") == "confirm" and row.get("cameras") == capacity["max_cameras"]]
    return number(confirmed[-1].get("p99_ms")) if confirmed else None


def stream_fps(record: Record) -> float | None:
    """The camera rate a stream cell sustained: the confirmed highest rate of a search, else the target it kept up with.

    A searched maximum counts only when its confirmation trials passed (runs recorded before segbench
    confirmed its search may hold one that dropped frames: no value then; a search that confirmed no rate
    records null and says why in max_sustainable_fps_why).
    """
    stream = _stream(record)
    if not stream:
        return None
    if "max_sustainable_fps" in stream:
        best = number(stream["max_sustainable_fps"])
        return best if stream.get("keeps_up") or not best else None
    if stream.get("keeps_up"):
        return number(stream.get("target_fps"))
    return number(stream.get("sustained_fps"))


def _stream_fps_missing(record: Record) -> str | None:
    stream = _stream(record)
    if not stream:
        return "not a stream cell"
    if stream.get("max_sustainable_fps_why"):
        return str(stream["max_sustainable_fps_why"])
    if "max_sustainable_fps" in stream and not stream.get("keeps_up"):
        rate = number(stream.get("max_sustainable_fps")) or 0.0
        return f"the confirmation trial at {rate:.1f} FPS dropped frames, so no rate was confirmed"
    return None


def achieved_fps(record: Record) -> float | None:
    """Frames per second the whole pipeline delivers: end to end offline, the sustained rate for a stream."""
    return stream_fps(record) if _stream(record) else number(record.get("end_to_end_fps"))


def interval(metric: Metric, record: Record) -> tuple[float, float] | None:
    """The 95 % interval of a metric's shown value where the record has one: a median's own `ci95`, and a rate's from
    the interval of the median it inverts (end to end for achieved and end-to-end FPS, the latency pass for forward
    FPS). None for percentiles, memory and stream rates (no interval is measured for them)."""
    value = metric.value(record)
    if value is None:
        return None
    rates = {"achieved_fps": "end_to_end_ms", "end_to_end_fps": "end_to_end_ms", "fps": "latency_ms"}
    if metric.key in rates:
        if _stream(record):
            return None
        median, bounds = number(dig(record, f"{rates[metric.key]}.median")), dig(record, f"{rates[metric.key]}.ci95")
        if not median or not isinstance(bounds, list) or len(bounds) != 2 or not all(number(b) for b in bounds):
            return None
        return value * median / float(bounds[1]), value * median / float(bounds[0])
    if metric.path and metric.path.endswith(".median"):
        bounds = dig(record, metric.path.removesuffix(".median") + ".ci95")
        if isinstance(bounds, list) and len(bounds) == 2 and all(number(b) is not None for b in bounds):
            return float(bounds[0]) * metric.scale, float(bounds[1]) * metric.scale
    return None


def above_ceiling(record: Record) -> float | None:
    """1 when the cell's share of the measured ceiling (or of the attainable roof) exceeds 100 %: the yardstick was
    not a maximum. Read from the share itself, so records written before the flag are judged alike."""
    shares = [number(dig(record, f"roofline.{key}")) for key in ("percent_of_ceiling", "percent_of_attainable")]
    known = [share for share in shares if share is not None]
    return float(any(share > 100.0 for share in known)) if known else None


# ---- percentiles: shown only where their n supports them (measure/quantiles.py) --------------------


@dataclass(frozen=True)
class TimedPass:
    """Where a latency summary lives in a record, what to call its samples, and the setting that gives it more."""

    path: str
    name: str
    setting: str

    def sample_ms(self, record: Record) -> float | None:
        """What one more sample costs: the pass's median, or a stream's frame interval."""
        if self.path.startswith("stream."):
            rate = number(_stream(record).get("target_fps"))
            return 1000.0 / rate if rate else None
        return number(dig(record, f"{self.path}.median"))


LATENCY_PASS = TimedPass("latency_ms", "the latency pass", "timing.max_time_s / min_iters")
END_TO_END_PASS = TimedPass("end_to_end_ms", "the end-to-end pass", "timing.max_time_s / min_iters")
STREAM_TRIAL = TimedPass("stream.latency_ms", "the stream trial", "stream.duration_s")


def stored_percentile(summary: Any, percentile: str) -> float | None:
    """A percentile of a stored latency summary, or None where its n is too small for it: records written before the
    rule kept a p99 for any n, so it is applied when they are read."""
    if not isinstance(summary, dict) or percentile_withheld(percentile, number(summary.get("n"))):
        return None
    return number(summary.get(percentile))


def percentile_reason(record: Record, percentile: str, timed: TimedPass) -> str | None:
    """Why a pass's percentile is withheld, and how long the pass would need to run for it; None when it is not."""
    summary = dig(record, timed.path)
    if not isinstance(summary, dict):
        return None
    why = percentile_withheld(percentile, number(summary.get("n")))
    if why is None:
        return None
    advice = time_needed_text(samples_needed(percentile), timed.sample_ms(record), timed.setting)
    return f"{why} in {timed.name}; {advice}"


def withhold_percentiles(record: Record) -> Record:
    """The record with every stored percentile its n cannot support set to null and named under
    `percentiles_withheld` (what an export of an old record's raw fields shows)."""
    summaries = [("latency_ms",), ("end_to_end_ms",), ("stream", "latency_ms")]
    summaries += [("stages_ms", stage) for stage in (record.get("stages_ms") or {})]
    result = dict(record)
    for steps in summaries:
        _withhold_at(result, steps)
    return result


def _withhold_at(container: dict[str, Any], steps: tuple[str, ...]) -> None:
    """Copy-on-write along `steps`, so the caller's record is never changed."""
    value = container.get(steps[0])
    if not isinstance(value, dict):
        return
    value = dict(value)
    container[steps[0]] = value
    if len(steps) > 1:
        _withhold_at(value, steps[1:])
        return
    reasons = dict(value.get("percentiles_withheld") or {})
    for name in TAIL_PERCENTILES:
        why = percentile_withheld(name, number(value.get("n")))
        if why and value.get(name) is not None:
            value[name], reasons[name] = None, why
    if reasons:
        value["percentiles_withheld"] = reasons


def _percentile_of(quantile: str, timed: TimedPass) -> dict[str, Callable[[Record], Any]]:
    """A percentile metric's `derive` and `why`: the value where n supports it, else the reason."""
    return {
        "derive": lambda record: stored_percentile(dig(record, timed.path), quantile),
        "why": lambda record: percentile_reason(record, quantile, timed),
    }


def deploy_pass(record: Record) -> TimedPass:
    """The pass whose latency a caller sees: the stream trial for a stream cell, else the end-to-end pass."""
    return STREAM_TRIAL if _stream(record) else END_TO_END_PASS


def _deploy_latency(quantile: str) -> Callable[[Record], float | None]:
    """Latency a caller sees: from the frame's arrival for a stream, preprocess to class map offline."""

    def value(record: Record) -> float | None:
        summary = dig(record, deploy_pass(record).path)
        return number((summary or {}).get("median")) if quantile == "median" else stored_percentile(summary, quantile)

    return value


def _deploy_latency_why(quantile: str) -> Callable[[Record], str | None]:
    return lambda record: percentile_reason(record, quantile, deploy_pass(record))


def _agreement(record: Record) -> float | None:
    """Pixel agreement with fp32 eager; the reference agrees with itself."""
    measured = number(dig(record, "fidelity.pixel_agreement"))
    if measured is None and is_reference(record) and record.get("status") == "ok":
        return 1.0
    return measured


def _headline_drift(record: Record) -> float | None:
    """The headline output's largest absolute drift; withheld where fp32's output is too flat for it to mean a thing."""
    if dig(record, "fidelity.drift_uninformative"):
        return None
    return number(dig(record, "fidelity.max_abs_logit_diff"))


def _quantized_share(record: Record) -> float | None:
    """quantized_share is a fraction or a dict of fractions ({params, flops}); the parameter share counts."""
    value = record.get("quantized_share")
    if isinstance(value, dict):
        value = value.get("params", next(iter(value.values()), None))
    return number(value)


# ---- the catalogue ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    better: Better
    format: Formatter
    help: str
    path: str | None = None  # dotted path into the record
    scale: float = 1.0  # shown value = stored value x scale (a fraction shown in %)
    derive: Callable[[Record], float | None] | None = None  # when no single field holds the value (stored units)
    relative: bool = False  # measured against the fp32 eager cell of the same variant: the tables compute it
    unavailable: str | None = None  # dotted path of the record's reason when the value is missing
    why: Callable[[Record], str | None] | None = None  # the reason, when it takes more than a path
    aliases: tuple[str, ...] = ()
    withheld_by: str | None = None  # a record flag that withholds the value (its text is the reason)

    @property
    def higher_is_better(self) -> bool:
        return self.better == "higher"

    @property
    def name(self) -> str:
        """The label without a trailing unit ('latency p99 ms' -> 'latency p99'), for sentences that show the unit with
        the value."""
        return self.label.removesuffix(f" {self.unit}") if self.unit else self.label

    @property
    def header(self) -> str:
        """The label with its unit, for a column header."""
        return f"{self.label} ({self.unit})" if self.unit and self.unit not in self.label else self.label

    @property
    def forward_only(self) -> bool:
        """A forward-pass latency or rate: a pipeline cell has none (its forward is the whole library call)."""
        return self.path is not None and (
            (self.path.startswith("latency_ms.") and self.key not in ("cv_pct", "n"))
            or self.path in ("fps", "device_throughput_fps")
        )

    def value(self, record: Record) -> float | None:
        """The shown value of this metric for one record (None: not recorded, or needs the run)."""
        if self.relative or (self.forward_only and times_whole_pipeline(record)):
            return None
        if self.withheld_by and record.get(self.withheld_by):
            return None
        raw = self.derive(record) if self.derive else number(dig(record, self.path)) if self.path else None
        return None if raw is None else raw * self.scale

    def missing_reason(self, record: Record) -> str:
        """Why a record has no value for this metric, in a few words."""
        if record.get("status") not in (None, "ok"):
            return f"the cell ended {record.get('status')}"
        if self.forward_only and times_whole_pipeline(record):
            return PIPELINE_WHY
        if self.withheld_by and record.get(self.withheld_by):
            return f"withheld ({self.withheld_by}): {record[self.withheld_by]}"
        reason = self.why(record) if self.why else dig(record, self.unavailable) if self.unavailable else None
        if isinstance(reason, str) and reason:
            return reason
        if self.key.startswith("stream_") and not _stream(record):
            return "not a stream cell"
        return f"{self.label} was not recorded"

    def best(self, values: list[float]) -> float:
        """The value a user would pick among several (lowest latency, highest FPS)."""
        return max(values) if self.higher_is_better else min(values)

    def show(self, value: Any) -> str:
        """The formatted value with its unit ('12.4 images/s', '50 ms'), for sentences."""
        text = self.format(value)
        if text == "–" or not self.unit or text.endswith(self.unit) or self.unit == "×":
            return text
        return f"{text} {self.unit}"


def _m(key: str, label: str, unit: str, better: Better, fmt: Formatter, help: str, **kw: Any) -> Metric:
    return Metric(key, label, unit, better, fmt, help, **kw)


_PCT2, _PCT1, _INT, _FPS = fmt_fixed(2), fmt_fixed(1), fmt_fixed(0), fmt_fixed(1)
_FIDELITY_WHY = "fidelity_unavailable"
_LATENCY = "forward pass per batch, the latency pass"

CATALOGUE: tuple[Metric, ...] = (
    # the latency pass: forward only, per batch
    _m(
        "median_ms",
        "median ms",
        "ms",
        "lower",
        fmt_ms,
        f"median latency, {_LATENCY}",
        path="latency_ms.median",
        aliases=("latency_ms",),
    ),
    _m("mean_ms", "mean ms", "ms", "lower", fmt_ms, f"mean latency, {_LATENCY}", path="latency_ms.mean"),
    _m(
        "p90_ms",
        "p90 ms",
        "ms",
        "lower",
        fmt_ms,
        f"90th percentile, {_LATENCY}",
        path="latency_ms.p90",
        **_percentile_of("p90", LATENCY_PASS),
    ),
    _m(
        "p95_ms",
        "p95 ms",
        "ms",
        "lower",
        fmt_ms,
        f"95th percentile, {_LATENCY}",
        path="latency_ms.p95",
        **_percentile_of("p95", LATENCY_PASS),
    ),
    _m(
        "p99_ms",
        "p99 ms",
        "ms",
        "lower",
        fmt_ms,
        f"99th percentile, {_LATENCY}",
        path="latency_ms.p99",
        **_percentile_of("p99", LATENCY_PASS),
    ),
    _m("min_ms", "min ms", "ms", "lower", fmt_ms, f"fastest sample, {_LATENCY}", path="latency_ms.min"),
    _m("max_ms", "max ms", "ms", "lower", fmt_ms, f"slowest sample, {_LATENCY}", path="latency_ms.max"),
    _m(
        "ci95_low_ms",
        "median CI low ms",
        "ms",
        "none",
        fmt_ms,
        "lower bound of the median's 95 % bootstrap interval",
        path="latency_ms.ci95.0",
    ),
    _m(
        "ci95_high_ms",
        "median CI high ms",
        "ms",
        "none",
        fmt_ms,
        "upper bound of the median's 95 % bootstrap interval",
        path="latency_ms.ci95.1",
    ),
    _m(
        "cv_pct",
        "CV %",
        "%",
        "lower",
        _PCT1,
        "coefficient of variation of the samples; marked when above 10 %",
        path="latency_ms.cv",
        scale=100.0,
    ),
    _m(
        "n",
        "n",
        "samples",
        "higher",
        _INT,
        "latency samples kept (iterations of the latency pass)",
        path="latency_ms.n",
    ),
    _m("measured_s", "measured s", "s", "none", fmt_fixed(2), "duration of the latency pass", path="measured_s"),
    _m(
        "fps",
        "FPS (forward, 1/latency)",
        "FPS",
        "higher",
        _FPS,
        "images per second of the forward pass alone, from its synchronous latency (one request at a time, the device "
        "synchronised after each): batch x 1000 / median ms; withheld when the latency pass and the forward stage "
        "disagree (inconsistent_forward)",
        path="fps",
        withheld_by="inconsistent_forward",
    ),
    _m(
        "device_throughput_fps",
        "device throughput",
        "images/s",
        "higher",
        _FPS,
        "images / loop time of the forward pass back to back (GPU: queued without a sync between steps, one at the "
        "end, so the host's launches overlap the device's work; CPU: the latency pass's loop): what the device "
        "sustains, not what one caller waits for",
        path="device_throughput_fps",
        why=lambda r: None if "device_throughput_fps" in r else "not recorded: the run predates device throughput",
    ),
    # the stage pass: what a caller of the pipeline sees
    _m(
        "end_to_end_ms",
        "end-to-end ms",
        "ms",
        "lower",
        fmt_ms,
        "median of preprocess + forward + postprocess per batch",
        path="end_to_end_ms.median",
    ),
    _m(
        "end_to_end_p95_ms",
        "end-to-end p95 ms",
        "ms",
        "lower",
        fmt_ms,
        "95th percentile of preprocess + forward + postprocess",
        path="end_to_end_ms.p95",
        **_percentile_of("p95", END_TO_END_PASS),
    ),
    _m(
        "end_to_end_p99_ms",
        "end-to-end p99 ms",
        "ms",
        "lower",
        fmt_ms,
        "99th percentile of preprocess + forward + postprocess",
        path="end_to_end_ms.p99",
        **_percentile_of("p99", END_TO_END_PASS),
    ),
    _m(
        "end_to_end_n",
        "end-to-end n",
        "samples",
        "higher",
        _INT,
        "end-to-end samples kept (iterations of the end-to-end pass, after its warm-up): what its percentiles rest on",
        path="end_to_end_ms.n",
    ),
    _m(
        "first_call_ms",
        "first call ms",
        "ms",
        "lower",
        fmt_ms,
        "the first, cold call of the whole pipeline (preprocess + forward + postprocess) after the model was built and "
        "prepared: what a user waits for once; never one of the end-to-end samples",
        path="first_call_ms",
        why=lambda r: None if "first_call_ms" in r else "not recorded: the run predates first_call_ms",
    ),
    _m(
        "end_to_end_fps",
        "FPS (end to end)",
        "FPS",
        "higher",
        _FPS,
        "images per second through preprocess, forward and postprocess: batch x 1000 / end-to-end median",
        path="end_to_end_fps",
    ),
    _m(
        "end_to_end_throughput_fps",
        "throughput (end to end)",
        "FPS",
        "higher",
        _FPS,
        "images / wall time of the end-to-end pass: what the sequential pipeline sustained, slow calls and the gaps "
        "between calls included (FPS end to end is 1 / the median call, which a skewed series overstates)",
        path="end_to_end_throughput_fps",
        why=lambda r: None if "end_to_end_throughput_fps" in r else "not recorded: the run predates throughput",
    ),
    _m(
        "pipelined_fps_bound",
        "pipelined FPS bound",
        "FPS",
        "higher",
        _FPS,
        "the most a pipeline overlapping its stages (host pre/post beside the forward) could sustain: batch x 1000 / "
        "the slowest stage's median; a bound, not a measurement",
        path="pipelined_fps_bound",
        why=lambda r: None if "pipelined_fps_bound" in r else "not recorded: the run predates the pipelined bound",
    ),
    _m(
        "preprocess_ms",
        "preprocess ms",
        "ms",
        "lower",
        fmt_ms,
        "median of the preprocess stage",
        path="stages_ms.preprocess.median",
    ),
    _m(
        "forward_stage_ms",
        "forward stage ms",
        "ms",
        "lower",
        fmt_ms,
        "median of the forward stage, timed in the stage pass",
        path="stages_ms.forward.median",
    ),
    _m(
        "postprocess_ms",
        "postprocess ms",
        "ms",
        "lower",
        fmt_ms,
        "median of the postprocess stage",
        path="stages_ms.postprocess.median",
    ),
    _m(
        "prepare_s",
        "prepare",
        "s",
        "lower",
        fmt_seconds,
        "precision conversion plus backend preparation (compile, export); never part of latency",
        path="prepare_s",
    ),
    # what a deployment gets: the figures targets judge
    _m(
        "achieved_fps",
        "achieved FPS",
        "FPS",
        "higher",
        _FPS,
        "end-to-end FPS; for a stream cell the camera rate it sustained with no drops",
        derive=achieved_fps,
        why=lambda r: _stream_fps_missing(r) if _stream(r) else None,
    ),
    _m(
        "latency_p50_ms",
        "latency p50 ms",
        "ms",
        "lower",
        fmt_ms,
        "median latency a caller sees: end to end, or from arrival for a stream",
        derive=_deploy_latency("median"),
    ),
    _m(
        "latency_p90_ms",
        "latency p90 ms",
        "ms",
        "lower",
        fmt_ms,
        "90th percentile a caller sees: end to end, or from arrival for a stream",
        derive=_deploy_latency("p90"),
        why=_deploy_latency_why("p90"),
    ),
    _m(
        "latency_p95_ms",
        "latency p95 ms",
        "ms",
        "lower",
        fmt_ms,
        "95th percentile a caller sees: end to end, or from arrival for a stream",
        derive=_deploy_latency("p95"),
        why=_deploy_latency_why("p95"),
    ),
    _m(
        "latency_p99_ms",
        "latency p99 ms",
        "ms",
        "lower",
        fmt_ms,
        "99th percentile a caller sees: end to end, or from arrival for a stream",
        derive=_deploy_latency("p99"),
        why=_deploy_latency_why("p99"),
    ),
    _m(
        "latency_n",
        "latency n",
        "samples",
        "higher",
        _INT,
        "samples the latency percentiles a caller sees rest on: end-to-end iterations, or a stream trial's frames",
        derive=lambda r: number(dig(r, f"{deploy_pass(r).path}.n")),
    ),
    # memory
    _m(
        "peak_mb",
        "peak MiB",
        "MiB",
        "lower",
        _INT,
        "headline peak: NVML per-process peak on a GPU (allocator reserved peak without NVML), peak RSS on a CPU",
        derive=lambda r: headline_memory(r)[0],
        unavailable="memory_unavailable.nvml_process_peak",
        aliases=("peak_memory_mb",),
    ),
    _m(
        "footprint_mb",
        "footprint MiB",
        "MiB",
        "lower",
        _INT,
        "the model's own memory: headline peak minus the baseline held before the model was built",
        derive=footprint_mb,
    ),
    _m(
        "baseline_mb",
        "baseline MiB",
        "MiB",
        "none",
        _INT,
        "memory held before the model was built (CUDA context, or the interpreter and libraries)",
        path="memory_mb.baseline",
    ),
    _m(
        "rss_peak_mb",
        "RSS peak MiB",
        "MiB",
        "lower",
        _INT,
        "peak resident set size of the cell's process",
        path="memory_mb.rss_peak",
    ),
    _m(
        "nvml_process_peak_mb",
        "NVML process peak MiB",
        "MiB",
        "lower",
        _INT,
        "NVML's peak for this process (includes the CUDA context)",
        path="memory_mb.nvml_process_peak",
        unavailable="memory_unavailable.nvml_process_peak",
    ),
    _m(
        "nvml_device_peak_mb",
        "NVML device peak MiB",
        "MiB",
        "lower",
        _INT,
        "NVML's peak for the whole device",
        path="memory_mb.nvml_device_peak",
        unavailable="memory_unavailable.nvml_device_peak",
    ),
    _m(
        "torch_allocated_peak_mb",
        "allocated peak MiB",
        "MiB",
        "lower",
        _INT,
        "PyTorch allocator's peak allocated",
        path="memory_mb.torch_allocated_peak",
        unavailable="memory_unavailable.torch_allocated_peak",
    ),
    _m(
        "torch_reserved_peak_mb",
        "reserved peak MiB",
        "MiB",
        "lower",
        _INT,
        "PyTorch allocator's peak reserved",
        path="memory_mb.torch_reserved_peak",
        unavailable="memory_unavailable.torch_reserved_peak",
    ),
    _m(
        "weights_mb",
        "weights MiB",
        "MiB",
        "lower",
        fmt_fixed(1),
        "size of the model's parameters and buffers",
        path="memory_mb.weights",
    ),
    # model
    _m("params_m", "params", "M", "none", fmt_params, "parameters, in millions", path="params", scale=1e-6),
    _m(
        "gflops",
        "GFLOPs / image",
        "GFLOP",
        "none",
        fmt_significant,
        "floating-point operations per image (2 x multiply-adds), counted on the fp32 model",
        path="gflops",
        unavailable="gflops_unavailable",
    ),
    # fidelity against fp32 eager
    _m(
        "pixel_agreement_pct",
        "agreement %",
        "%",
        "higher",
        _PCT2,
        "pixels whose class matches fp32 eager (fp32 eager itself: 100 %)",
        derive=_agreement,
        scale=100.0,
        unavailable=_FIDELITY_WHY,
        aliases=("fidelity.pixel_agreement", "agreement"),
    ),
    _m(
        "miou_vs_fp32_pct",
        "mIoU vs fp32 %",
        "%",
        "higher",
        _PCT2,
        "mean IoU of the class maps against fp32 eager's",
        path="fidelity.miou_vs_fp32",
        scale=100.0,
        unavailable=_FIDELITY_WHY,
    ),
    _m(
        "max_abs_logit_diff",
        "max |Δ logit|",
        "",
        "lower",
        fmt_fixed(3),
        "largest absolute difference of the headline raw output (fidelity.drift_of: logits; YOLO's pre-sigmoid class "
        "logits) against fp32 eager; withheld where fp32's output is nearly constant (fidelity.drift_uninformative)",
        path="fidelity.max_abs_logit_diff",
        derive=_headline_drift,
        why=lambda r: dig(r, "fidelity.drift_uninformative") or dig(r, _FIDELITY_WHY),
    ),
    _m(
        "drift_snr_db",
        "drift SNR dB",
        "dB",
        "higher",
        _PCT1,
        "signal-to-noise ratio of the headline raw output against fp32 eager, 10 log10(sum ref² / sum (ref - out)²): "
        "scale-free, so tiny outputs (post-sigmoid scores) still show their drift; none where identical",
        path="fidelity.drift_snr_db",
        why=lambda r: "identical to fp32 eager"
        if dig(r, "fidelity.drift_snr_db") is None and dig(r, "fidelity.max_abs_logit_diff") == 0
        else dig(r, _FIDELITY_WHY),
    ),
    # accuracy against a labelled dataset's ground truth (suite `dataset:`); the deltas are added when a run is loaded
    _m(
        "miou_gt_pct",
        "mIoU (GT) %",
        "%",
        "higher",
        _PCT2,
        "mean IoU against the dataset's labels, at the benchmarked resolution (class map resized back with nearest) "
        "unless the suite's dataset.protocol is mmseg (logits resized bilinearly to the labels): accuracy.protocol",
        path="accuracy.miou",
        scale=100.0,
        unavailable="accuracy_unavailable",
        aliases=("miou", "miou_gt"),
    ),
    _m(
        "pixel_accuracy_gt_pct",
        "pixel acc (GT) %",
        "%",
        "higher",
        _PCT2,
        "labelled pixels classified correctly",
        path="accuracy.pixel_accuracy",
        scale=100.0,
        unavailable="accuracy_unavailable",
        aliases=("pixel_accuracy_gt",),
    ),
    _m(
        "mean_accuracy_gt_pct",
        "mean class acc (GT) %",
        "%",
        "higher",
        _PCT2,
        "mean per-class recall against the dataset's labels",
        path="accuracy.mean_accuracy",
        scale=100.0,
        unavailable="accuracy_unavailable",
    ),
    _m(
        "miou_delta_pts",
        "Δ vs fp32",
        "pts",
        "higher",
        _PCT2,
        "mIoU (GT) minus fp32 eager's, in percentage points",
        path="accuracy.miou_delta_vs_fp32",
        scale=100.0,
        unavailable="accuracy_unavailable",
    ),
    _m(
        "pixel_accuracy_delta_pts",
        "pixel acc Δ vs fp32",
        "pts",
        "higher",
        _PCT2,
        "pixel accuracy (GT) minus fp32 eager's, in percentage points",
        path="accuracy.pixel_accuracy_delta_vs_fp32",
        scale=100.0,
        unavailable="accuracy_unavailable",
    ),
    _m(
        "quantized_share_pct",
        "quantized %",
        "%",
        "higher",
        _PCT1,
        "share of parameters the conversion changed",
        derive=_quantized_share,
        scale=100.0,
    ),
    # against the fp32 eager cell of the same model, resolution and batch (computed by the tables)
    _m(
        "speedup",
        "speed-up (forward)",
        "×",
        "higher",
        fmt_speedup,
        "fp32 eager forward median / this forward median; below 1x is slower",
        relative=True,
    ),
    _m(
        "end_to_end_speedup",
        "speed-up (end to end)",
        "×",
        "higher",
        fmt_speedup,
        "fp32 eager end-to-end median / this end-to-end median",
        relative=True,
    ),
    _m(
        "memory_saving_pct",
        "memory saving",
        "%",
        "higher",
        fmt_memory_saving,
        "1 - footprint / fp32 eager footprint (negative: uses more)",
        relative=True,
    ),
    # the stream scenario
    _m(
        "stream_fps",
        "sustained FPS",
        "FPS",
        "higher",
        _FPS,
        "camera rate kept up with: the confirmed highest rate of a search, else the target rate when its trial passed",
        derive=stream_fps,
        why=_stream_fps_missing,
    ),
    _m(
        "stream_target_fps",
        "stream target FPS",
        "FPS",
        "none",
        _FPS,
        "camera rate of the (last) stream trial",
        path="stream.target_fps",
    ),
    _m(
        "stream_max_sustainable_fps",
        "max sustainable FPS",
        "FPS",
        "higher",
        _FPS,
        "highest camera rate whose last k confirmation trials passed the latency criterion (the record's"
        " stream.criterion)",
        path="stream.max_sustainable_fps",
    ),
    _m(
        "stream_processed_fps",
        "processed FPS",
        "FPS",
        "higher",
        _FPS,
        "frames processed per second of the trial, first arrival to last result",
        path="stream.sustained_fps",
    ),
    _m(
        "stream_drop_pct",
        "dropped %",
        "%",
        "lower",
        _PCT1,
        "frames dropped because the queue was full",
        path="stream.drop_pct",
    ),
    _m(
        "stream_keeps_up",
        "keeps up",
        "",
        "higher",
        fmt_yes_no,
        "the (last) trial passed: latency percentile from scheduled arrival within the bound, drops counting as late"
        " (records before the latency criterion: no frame dropped)",
        path="stream.keeps_up",
        derive=lambda r: flag(dig(r, "stream.keeps_up")),
    ),
    _m(
        "stream_p50_ms",
        "stream p50 ms",
        "ms",
        "lower",
        fmt_ms,
        "median latency from a frame's scheduled arrival to its class map",
        path="stream.latency_ms.median",
    ),
    _m(
        "stream_p95_ms",
        "stream p95 ms",
        "ms",
        "lower",
        fmt_ms,
        "95th percentile latency from scheduled arrival",
        path="stream.latency_ms.p95",
        **_percentile_of("p95", STREAM_TRIAL),
    ),
    _m(
        "stream_p99_ms",
        "stream p99 ms",
        "ms",
        "lower",
        fmt_ms,
        "99th percentile latency from scheduled arrival",
        path="stream.latency_ms.p99",
        **_percentile_of("p99", STREAM_TRIAL),
    ),
    _m(
        "stream_n",
        "stream n",
        "frames",
        "higher",
        _INT,
        "frames the stream trial's latency percentiles rest on",
        path="stream.latency_ms.n",
    ),
    _m(
        "stream_latency_bound_ms",
        "latency bound ms",
        "ms",
        "none",
        fmt_ms,
        "the latency a trial's percentile must stay within (the frame interval unless the suite sets one)",
        path="stream.latency_bound_ms",
    ),
    _m(
        "stream_issue_delay_p99_ms",
        "issue delay p99 ms",
        "ms",
        "lower",
        fmt_ms,
        "scheduled arrival to the frame's put on the queue (high: the producer or host was late)",
        path="stream.issue_delay_ms.p99",
        **_percentile_of("p99", TimedPass("stream.issue_delay_ms", "the stream trial", "stream.duration_s")),
    ),
    _m(
        "stream_queue_wait_p99_ms",
        "queue wait p99 ms",
        "ms",
        "lower",
        fmt_ms,
        "put on the queue to taken off it (high: frames arrive faster than they are served)",
        path="stream.queue_wait_ms.p99",
        **_percentile_of("p99", TimedPass("stream.queue_wait_ms", "the stream trial", "stream.duration_s")),
    ),
    _m(
        "stream_service_p99_ms",
        "service p99 ms",
        "ms",
        "lower",
        fmt_ms,
        "taken off the queue to class map (high against offline: the model is slower under load)",
        path="stream.service_ms.p99",
        **_percentile_of("p99", TimedPass("stream.service_ms", "the stream trial", "stream.duration_s")),
    ),
    _m(
        "stream_queue_max",
        "queue depth max",
        "frames",
        "lower",
        _INT,
        "deepest the frame queue got",
        path="stream.queue_depth.max",
    ),
    # the capacity scenario
    _m(
        "max_cameras",
        "cameras",
        "cameras",
        "higher",
        _INT,
        "largest number of cameras at the capacity scenario's camera FPS whose trials dropped no frame and kept the "
        "latency percentile within the bound, confirmed by k consecutive trials (the best serving policy)",
        path="capacity.max_cameras",
        why=lambda r: _capacity_missing(r, "capacity"),
    ),
    _m(
        "capacity_camera_fps",
        "camera FPS",
        "FPS",
        "none",
        _FPS,
        "each camera's frame rate in the capacity scenario",
        path="capacity.camera_fps",
    ),
    _m(
        "capacity_p99_ms",
        "p99 at N ms",
        "ms",
        "lower",
        fmt_ms,
        "p99 latency from scheduled arrival in the last confirmation trial at the reported number of cameras",
        derive=lambda r: capacity_confirmed_p99(r),
        why=lambda r: _capacity_missing(r, "capacity"),
    ),
    *(
        _m(
            f"capacity_{policy}_cameras",
            f"cameras ({policy})",
            "cameras",
            "higher",
            _INT,
            f"cameras the {policy} serving policy serves, confirmed (capacity.policies.{policy})",
            path=f"capacity.policies.{policy}.max_cameras",
            why=lambda r, policy=policy: _capacity_missing(r, f"capacity.policies.{policy}"),
        )
        for policy in ("replicas", "batched")
    ),
    # roofline and GPU telemetry
    _m(
        "achieved_tflops",
        "TFLOP/s",
        "TFLOP/s",
        "higher",
        fmt_significant,
        "GFLOPs per image x forward FPS",
        path="roofline.achieved_tflops",
        unavailable="roofline.unavailable.achieved_tflops",
    ),
    _m(
        "percent_of_peak",
        "% of peak",
        "%",
        "higher",
        _PCT1,
        "achieved TFLOP/s as a share of the published peak, for this precision, of the card the cell ran on "
        "(roofline.peak_card; never an emulated target)",
        path="roofline.percent_of_peak",
        unavailable="roofline.unavailable.percent_of_peak",
    ),
    _m(
        "percent_of_ceiling",
        "% of ceiling",
        "%",
        "higher",
        _PCT1,
        "achieved TFLOP/s as a share of the best kernel rate (BLAS GEMM, oneDNN/cuDNN convolution) measured on this "
        "device for the precision's class; above 100 % is kept and flagged above_ceiling (the ceiling was not the max)",
        path="roofline.percent_of_ceiling",
        unavailable="roofline.unavailable.percent_of_ceiling",
    ),
    _m(
        "above_ceiling",
        "above ceiling",
        "",
        "none",
        fmt_yes_no,
        "the cell beat the measured ceiling: the ceiling's kernels were not the fastest the stack offers",
        path="roofline.above_ceiling",
        derive=lambda r: above_ceiling(r),
    ),
    _m(
        "bytes_per_image_mb",
        "MB moved / image",
        "MB",
        "lower",
        fmt_significant,
        "parameters + input + every layer's output, at the precision class's element size (an unfused forward's "
        "traffic; models/flops.py)",
        path="roofline.bytes_per_image",
        scale=1e-6,
        unavailable="roofline.unavailable.arithmetic_intensity",
    ),
    _m(
        "arithmetic_intensity",
        "FLOP/byte",
        "FLOP/byte",
        "none",
        fmt_significant,
        "FLOPs per image over bytes moved per image: below the ridge (ceiling / bandwidth) the memory roof binds",
        path="roofline.arithmetic_intensity",
        unavailable="roofline.unavailable.arithmetic_intensity",
    ),
    _m(
        "attainable_tflops",
        "attainable TFLOP/s",
        "TFLOP/s",
        "higher",
        fmt_significant,
        "the roofline: min(measured ceiling, measured copy bandwidth x arithmetic intensity)",
        path="roofline.attainable_tflops",
        unavailable="roofline.unavailable.percent_of_attainable",
    ),
    _m(
        "percent_of_attainable",
        "% of roof",
        "%",
        "higher",
        _PCT1,
        "achieved TFLOP/s as a share of the attainable roof (roofline.bound says whether memory or compute binds; "
        "above 100 % is kept and flagged above_roof)",
        path="roofline.percent_of_attainable",
        unavailable="roofline.unavailable.percent_of_attainable",
    ),
    _m(
        "sm_clock_mean_mhz",
        "SM clock MHz (mean)",
        "MHz",
        "none",
        _INT,
        "GPU SM clock during the telemetry pass",
        path="telemetry.sm_clock_mhz.mean",
        unavailable="telemetry.unavailable.sm_clock_mhz",
    ),
    _m(
        "sm_clock_min_mhz",
        "SM clock MHz (min)",
        "MHz",
        "none",
        _INT,
        "lowest GPU SM clock sampled",
        path="telemetry.sm_clock_mhz.min",
        unavailable="telemetry.unavailable.sm_clock_mhz",
    ),
    _m(
        "memory_clock_mhz",
        "memory clock MHz",
        "MHz",
        "none",
        _INT,
        "GPU memory clock",
        path="telemetry.memory_clock_mhz.mean",
        unavailable="telemetry.unavailable.memory_clock_mhz",
    ),
    _m(
        "temperature_max_c",
        "temperature °C (max)",
        "°C",
        "lower",
        _INT,
        "hottest GPU temperature sampled",
        path="telemetry.temperature_c.max",
        unavailable="telemetry.unavailable.temperature_c",
    ),
    _m(
        "power_mean_w",
        "power W (mean)",
        "W",
        "lower",
        _INT,
        "mean board power",
        path="telemetry.power_w.mean",
        unavailable="telemetry.unavailable.power_w",
    ),
    _m(
        "power_max_w",
        "power W (max)",
        "W",
        "lower",
        _INT,
        "highest board power sampled",
        path="telemetry.power_w.max",
        unavailable="telemetry.unavailable.power_w",
    ),
    _m(
        "gpu_util_pct",
        "GPU util %",
        "%",
        "none",
        _INT,
        "NVML utilisation",
        path="telemetry.gpu_util_pct.mean",
        unavailable="telemetry.unavailable.gpu_util_pct",
    ),
    _m(
        "joules_per_image",
        "J / image",
        "J",
        "lower",
        fmt_fixed(2),
        "energy per image over the telemetry pass (the forward back to back, after the latency pass; older records: "
        "over the latency pass)",
        path="telemetry.joules_per_image",
        unavailable="telemetry.unavailable.joules_per_image",
    ),
    _m(
        "throttled_pct",
        "throttled % of samples",
        "%",
        "lower",
        _INT,
        "share of telemetry samples with a throttle reason",
        path="telemetry.throttled_share",
        scale=100.0,
        unavailable="telemetry.unavailable.throttled_share",
    ),
    _m(
        "startup_s",
        "startup s",
        "s",
        "lower",
        fmt_seconds,
        "process start to the cell's first line of work (spawned or forked from a warm template)",
        path="startup_s",
    ),
    _m(
        "repeats_k",
        "processes",
        "processes",
        "higher",
        _INT,
        "separate processes the cell was measured in (timing.repeats; 1 without)",
        derive=lambda r: number(dig(r, "repeats.k")) or (1.0 if r.get("status") == "ok" else None),
    ),
    _m(
        "wall_s",
        "wall s",
        "s",
        "none",
        fmt_fixed(1),
        "wall time of the whole cell, process start to record",
        path="wall_s",
    ),
)

METRICS: dict[str, Metric] = {metric.key: metric for metric in CATALOGUE}
_BY_NAME: dict[str, Metric] = {
    **{metric.path: metric for metric in CATALOGUE if metric.path},
    **{alias: metric for metric in CATALOGUE for alias in metric.aliases},
    **METRICS,
}
TELEMETRY = (
    "sm_clock_mean_mhz",
    "sm_clock_min_mhz",
    "memory_clock_mhz",
    "temperature_max_c",
    "power_mean_w",
    "power_max_w",
    "gpu_util_pct",
    "joules_per_image",
    "throttled_pct",
)
STREAM = (
    "stream_fps",
    "stream_drop_pct",
    "stream_keeps_up",
    "stream_p50_ms",
    "stream_p95_ms",
    "stream_p99_ms",
    "stream_n",
)


def metric_names() -> list[str]:
    """Every name a suite may use: keys, record paths and aliases."""
    return sorted(_BY_NAME)


def get_metric(name: str) -> Metric:
    """A metric by key, by its dotted record path, or by an alias; unknown names raise with a suggestion."""
    metric = _BY_NAME.get(name)
    if metric is None:
        hint = did_you_mean(name, metric_names(), cutoff=0.6)
        raise UnknownMetricError(
            f"unknown metric '{name}' ({hint}known ones include median_ms, end_to_end_fps, achieved_fps, peak_mb, "
            "footprint_mb, pixel_agreement_pct; the catalogue is segbench/metrics.py)"
        )
    return metric


def metric_value(record: Record, name: str) -> float | None:
    """The value of a metric as named: by key or alias in the catalogue's units (% for fractions), by record path as
    stored."""
    metric = get_metric(name)
    if "." in name and metric.path is not None and metric.derive is None:
        return number(dig(record, name))
    return metric.value(record)
