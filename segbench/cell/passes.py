"""What happens inside one isolated cell: build, warm up, time, sample memory, report a dict.

This module runs in the spawned child. The sequence follows optimum-benchmark: a synchronous latency pass with
nothing else running (after a warm-up for a count and a time), a back-to-back device throughput loop (GPU), a
telemetry pass of its own (NVML clocks, power, energy), a stage pass (preprocess / forward / postprocess, end to
end), and a memory pass with the poller on, so sampling never disturbs a timed loop.
"""

from __future__ import annotations

import ctypes
import gc
import statistics
import sys
import time
import traceback
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from segbench.backends import get_backend
from segbench.cell.capacity import capacity_pass, memory_fit
from segbench.cell.profile import dtype_name, profile_pass
from segbench.cell.request import CellRequest
from segbench.cell.stream import Criterion, StreamOutcome, find_max_rate, run_stream, trial_row, warm_stream
from segbench.data.camera import CameraInput
from segbench.data.datasets import Dataset, images_in_folder
from segbench.data.images import calibration_batches, evaluation_batches
from segbench.data.sources import open_source
from segbench.errors import SegbenchError, UnsupportedError
from segbench.hardware import BudgetInfo, apply_budget, load_profile, over_budget
from segbench.measure import memory, nvml
from segbench.measure.accuracy import accuracy_pass
from segbench.measure.canary import StealWindow, canary_reading, cell_canary, cell_drift
from segbench.measure.fidelity import Fp32Reference, measure_fidelity
from segbench.measure.quantiles import time_needed_text
from segbench.measure.stats import LatencyStats
from segbench.measure.telemetry import (
    MIN_WINDOW_S,
    SAMPLE_INTERVAL_S,
    SamplingThread,
    TelemetrySampler,
    clocks_steady,
    empty_summary,
    wait_for_cooldown,
)
from segbench.measure.timing import (
    BACK_TO_BACK,
    SYNCHRONOUS,
    StopRule,
    ThroughputRun,
    TimedRun,
    device_sync,
    synchronize,
    time_steps,
    time_throughput,
    warm_up,
)
from segbench.models.base import OutputPolicy, SegmentationAdapter
from segbench.models.blocks import BlockMap, count_block_work
from segbench.models.flops import Work, count_work
from segbench.models.registry import create_model, load_plugin
from segbench.paths import resolve_path
from segbench.precision import cell_reason, get_precision
from segbench.precision.base import Precision, PrecisionContext
from segbench.results.schema import INPUT_STAGES, STAGES
from segbench.suite.matrix import CellSpec
from segbench.suite.schema import Timing
from segbench.suite.search_rules import promotion
from segbench.system import cache
from segbench.system.cpus import ContentionWindow, default_threads, pin_to, torch_threads

# The synchronous latency pass and the synchronised forward stage time the same forward: beyond this ratio (either
# way) and this many ms, something moved one of them (a thread beside the loop, a pipelined backend), so the cell is
# flagged `inconsistent_forward` and its forward FPS and roofline are withheld.
FORWARD_AGREEMENT_RATIO = 1.15
FORWARD_AGREEMENT_MIN_MS = 0.5
OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory")


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(marker in str(exc).lower() for marker in OOM_MARKERS)


def last_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1].strip()}" if lines else type(exc).__name__


def synthetic_images(cell: CellSpec, device: torch.device) -> torch.Tensor:
    """A seeded host uint8 batch (N, H, W, 3): what a camera or decoder hands the pipeline."""
    generator = torch.Generator().manual_seed(0)
    height, width = cell.resolution
    images = torch.randint(0, 256, (cell.batch_size, height, width, 3), dtype=torch.uint8, generator=generator)
    return images.pin_memory() if device.type == "cuda" else images


def end_to_end_frames(cell: CellSpec, device: torch.device, camera: CameraInput | None = None) -> list[Any]:
    """What the end-to-end pass feeds the pipeline, in turn: the held-out photographs at the cell's size and batch.

    Not the noise batch the forward pass times: a detector's postprocess scales with what it finds, and in noise an
    int8 model can find far more than fp32 does (trained YOLOv8n-seg at 640 on the Xeon: 30 instances against 1,
    postprocess 127 ms against 33 ms), which no camera would show it.
    """
    if camera is not None and camera.active:  # at the camera's size, encoded as it delivers them (outside the clock)
        return [camera.encode(batch) for batch in evaluation_batches(*camera.source_size(), cell.batch_size)]
    frames = evaluation_batches(*cell.resolution, cell.batch_size)
    return [frame.pin_memory() for frame in frames] if device.type == "cuda" else frames


def _median(stats: LatencyStats | None) -> float | None:
    return stats.median if stats is not None else None


def inconsistent_forward(latency_ms: float, forward_stage_ms: float | None, device: torch.device) -> str | None:
    """Why, on a GPU, the latency pass and the synchronised forward stage of the end-to-end pass disagree beyond
    noise (> 15 % and > 0.5 ms), or None.

    Both are synchronous timings of the same forward, so they should agree. Seen on an H200 before the latency pass
    was synchronous and had the NVML thread beside it: Mask2Former 45.4 ms against 26.8 ms (slower: something beside
    the loop), SegFormer-B2 fp16 8.16 ms against 10.83 ms (faster: a pipelined figure). CPU passes differ for other
    reasons (caches after preprocess, load), which the contention check covers.
    """
    if device.type != "cuda" or not forward_stage_ms:
        return None
    ratio = latency_ms / forward_stage_ms
    if abs(latency_ms - forward_stage_ms) < FORWARD_AGREEMENT_MIN_MS:
        return None
    if 1 / FORWARD_AGREEMENT_RATIO <= ratio <= FORWARD_AGREEMENT_RATIO:
        return None
    direction = "slower" if ratio > 1 else "faster"
    return (
        f"the latency pass read {latency_ms:.2f} ms, {ratio:.2f}x the synchronised forward stage of the end-to-end "
        f"pass ({forward_stage_ms:.2f} ms): {direction} beyond {FORWARD_AGREEMENT_RATIO - 1:.0%}, so forward FPS and "
        "the roofline are withheld"
    )


def _stop_rule(timing: Timing) -> StopRule:
    return StopRule(timing.min_iters, timing.max_iters, timing.min_time_s, timing.max_time_s)


def undersampled(passes: dict[str, LatencyStats], timing: Timing) -> str | None:
    """Which timed passes have fewer samples than `min_iters` asked for (max_time_s stopped them first), and how long
    the slowest of them needs; None when none is short. Every pass a verdict reads counts: the latency pass and the
    end-to-end pass (the Answer's FPS and percentiles)."""
    short = {name: stats for name, stats in passes.items() if stats.n < timing.min_iters}
    if not short:
        return None
    counts = ", ".join(f"{name} n = {stats.n}" for name, stats in short.items())
    slowest_ms = max(stats.median for stats in short.values())
    return (
        f"{counts} < min_iters {timing.min_iters}: max_time_s ({timing.max_time_s:g} s) ended the timed loop first; "
        f"min_iters {time_needed_text(timing.min_iters, slowest_ms, 'timing.max_time_s')}"
    )


def _timed_forward(
    forward: Callable[[torch.Tensor], Any],
    parts: list[tuple[str, Callable[[Any], Any]]] | None,
    inputs: Any,
    device: torch.device,
    samples: dict[str, list[float]],
) -> Any:
    """The forward stage, split into the family's own parts (e.g. SAM's encoder and decoder) when it has them."""
    if not parts:
        return forward(inputs)
    value = inputs
    for name, part in parts:
        began = time.perf_counter_ns()
        value = part(value)
        synchronize(device)
        samples.setdefault(name, []).append((time.perf_counter_ns() - began) / 1e6)
    return value


@dataclass
class StagesRun:
    samples_ms: dict[str, list[float]]
    detections: list[int] | None  # instances found in each frame (detector families), counted outside the timing
    warmup: dict[str, float]  # the pipeline's own warm-up before the clock: calls made and seconds taken
    wall_s: float  # from the first timed call's start to the last one's end, less what was counted outside the clock

    def throughput_fps(self, batch_size: int) -> float:
        """Images / wall time of the timed calls: what the sequential pipeline sustained, gaps and slow calls
        included (1 / median leaves out a skewed series' tail)."""
        return batch_size * len(self.samples_ms["end_to_end"]) / self.wall_s


# perf_counter_ns before the input stages (decode, resize; the same as the next when there are none), before
# preprocess, forward, postprocess, and after it
Readings = tuple[int, int, int, int, int]


def _camera_frame(camera: CameraInput | None, frame: Any, samples: dict[str, list[float]]) -> torch.Tensor:
    """The input stages a camera's frame needs before preprocess (decode, resize), each timed into `samples`."""
    if camera is None or not camera.active:
        return frame
    clock = time.perf_counter_ns
    began = clock()
    images = camera.decoded(frame)
    decoded = clock()
    batch = camera.resized(images)
    ended = clock()
    for stage, (a, b) in (("decode", (began, decoded)), ("resize", (decoded, ended))):
        if stage in camera.stages:
            samples.setdefault(stage, []).append((b - a) / 1e6)
    return batch


def _pipeline_call(
    adapter: SegmentationAdapter,
    forward: Callable[[torch.Tensor], Any],
    parts: list[tuple[str, Callable[[Any], Any]]] | None,
    frame: Any,
    device: torch.device,
    samples: dict[str, list[float]],
    camera: CameraInput | None = None,
) -> tuple[Any, Readings]:
    """One frame through the input stages (when the suite asks for them), preprocess, forward and postprocess, a
    device sync closing each stage."""
    clock = time.perf_counter_ns
    start = clock()
    frame = _camera_frame(camera, frame, samples)
    t0 = clock()
    inputs = adapter.preprocess(frame)
    synchronize(device)
    t1 = clock()
    outputs = _timed_forward(forward, parts, inputs, device, samples)
    synchronize(device)
    t2 = clock()
    adapter.postprocess(outputs, tuple(frame.shape[1:3]))
    synchronize(device)  # a map left on the device (end_to_end.map_device) is complete only after a sync
    t3 = clock()
    return outputs, (start, t0, t1, t2, t3)


def first_call_ms(
    adapter: SegmentationAdapter,
    forward: Callable[[torch.Tensor], Any],
    frame: Any,
    device: torch.device,
    camera: CameraInput | None = None,
) -> float:
    """The first call of the whole pipeline once the model is built and prepared: cold (lazy initialisation, first
    kernels, caches), what a user waits for once. Recorded apart, never one of the end-to-end samples."""
    _, (start, _, _, _, t3) = _pipeline_call(adapter, forward, None, frame, device, {}, camera)
    return (t3 - start) / 1e6


def _warm_pipeline(
    adapter: SegmentationAdapter,
    forward: Callable[[torch.Tensor], Any],
    parts: list[tuple[str, Callable[[Any], Any]]] | None,
    frames: list[Any],
    device: torch.device,
    iterations: int,
    seconds: float,
    camera: CameraInput | None = None,
) -> dict[str, float]:
    """The end-to-end frames through the whole pipeline, untimed, for at least `iterations` calls and at least
    `seconds` (timing.warmup_iters, timing.warmup_s). Without it the pass's first samples carried the first
    postprocess (Fast-SCNN on an H200: 14.78 ms against a 1.16 ms median) and set its p99."""
    calls, started = 0, time.perf_counter()
    while calls < iterations or time.perf_counter() - started < seconds:
        _pipeline_call(adapter, forward, parts, frames[calls % len(frames)], device, {}, camera)
        calls += 1
    return {"calls": calls, "seconds": round(time.perf_counter() - started, 3)}


def _time_stages(
    adapter: SegmentationAdapter,
    forward: Callable[[torch.Tensor], Any],
    frames: list[Any],
    rule: StopRule,
    device: torch.device,
    split: bool,
    warmup_iters: int = 0,
    warmup_s: float = 0.0,
    camera: CameraInput | None = None,
) -> StagesRun:
    """Wall-clock each stage with a device sync at its end, after a warm-up of its own: the latency a caller of the
    pipeline sees."""
    input_stages = camera.stages if camera is not None else ()
    samples: dict[str, list[float]] = {stage: [] for stage in (*input_stages, *STAGES, "end_to_end")}
    detections: list[int] = []
    counting = True  # until the family says it has no instances to count, or every frame has been counted
    parts = adapter.forward_parts() if split else None
    warmup = _warm_pipeline(adapter, forward, parts, frames, device, warmup_iters, warmup_s, camera)
    clock = time.perf_counter_ns
    start = clock()
    first_start, last_end, uncounted_ns = 0, 0, 0
    while not rule.done(len(samples["end_to_end"]), (clock() - start) / 1e9):
        frame_index = len(samples["end_to_end"]) % len(frames)
        frame = frames[frame_index]
        outputs, (begun, t0, t1, t2, t3) = _pipeline_call(adapter, forward, parts, frame, device, samples, camera)
        first_start, last_end = first_start or begun, t3
        for stage, (a, b) in zip((*STAGES, "end_to_end"), ((t0, t1), (t1, t2), (t2, t3), (begun, t3))):
            samples[stage].append((b - a) / 1e6)
        if counting and len(detections) == frame_index:  # first pass over the frames, after the clock stopped
            found = adapter.detections(outputs)
            if found is None:
                counting = False
            else:
                detections.append(found)
            uncounted_ns += clock() - t3
    return StagesRun(samples, detections or None, warmup, (last_end - first_start - uncounted_ns) / 1e9)


# Runtimes that run the forward in a thread pool of their own, beside torch's (which runs the host stages).
FOREIGN_THREAD_POOLS = ("onnxruntime", "openvino")


PROBE_BLOCKS, PROBE_CALLS = 2, 3  # per thread count: blocks of calls, the first of each block not counted


def host_thread_count(setting: int | str, runtime: str, cell_threads: int) -> int | None:
    """torch's threads for the host stages: the suite's number, else the cell's, except beside another runtime's
    pool where `auto` is decided by measurement (None)."""
    if isinstance(setting, int):
        return setting
    return None if runtime in FOREIGN_THREAD_POOLS and cell_threads > 1 else cell_threads


def probe_host_threads(calls: Callable[[int], float], cell_threads: int) -> tuple[int, dict[str, float]]:
    """1 or the cell's threads for the host stages beside another runtime's pool, whichever runs the whole pipeline
    faster here. torch's OpenMP workers spin-wait after a host stage and take the cores the runtime's forward needs
    (fast-scnn 192x256 on OpenVINO: its forward 9.8 ms after 2-thread host stages, 6.1 ms after 1-thread ones), but a
    heavy postprocess (SegFormer's 150-class upsample) on one thread costs more than that. Blocks of calls at each
    count alternate, the first call of each block (the previous count's spin still under way) not counted; `calls`
    runs one pipeline call at a count and returns its end-to-end ms."""
    samples: dict[int, list[float]] = {1: [], cell_threads: []}
    for _ in range(PROBE_BLOCKS):
        for count, found in samples.items():
            calls(count)
            found.extend(calls(count) for _ in range(PROBE_CALLS))
    medians = {count: statistics.median(found) for count, found in samples.items()}
    chosen = min(medians, key=lambda count: (medians[count], -count))
    return chosen, {f"{count} thread(s)": round(median, 3) for count, median in medians.items()}


def end_to_end_covers(camera: CameraInput, adapter: SegmentationAdapter, library_pipeline: bool) -> dict[str, Any]:
    """What the end-to-end pass timed, for the record and the report beside the stage breakdown."""
    class_map = (
        "the library's own postprocess (a pipeline backend: its call is the forward stage)"
        if library_pipeline
        else f"{adapter.output_policy.describe()}, at the cell's resolution"
    )
    return {
        "stages": [*camera.stages, *STAGES],
        "input": camera.describe(),
        "class_map": class_map,
        "decode": None if camera.decode == "none" else camera.decode,
        "camera_size": list(camera.camera_size) if camera.camera_size else None,
    }


def pipelined_bound_fps(stages: dict[str, LatencyStats], batch_size: int) -> float | None:
    """Images per second a pipeline that overlaps its stages could sustain at most: 1 / the slowest stage's median
    (each stage busy on another frame, as a deployment overlapping host pre/post with the forward runs)."""
    medians = [stats.median for name, stats in stages.items() if name in (*INPUT_STAGES, *STAGES) and stats.median > 0]
    return batch_size * 1000.0 / max(medians) if medians else None


def _memory_pass(
    adapter: SegmentationAdapter,
    forward: Callable[[torch.Tensor], Any],
    frames: list[torch.Tensor],
    request: CellRequest,
    device: torch.device,
    baseline: memory.Baseline,
    occupied_mb: float,
    camera: CameraInput | None = None,
) -> memory.MemoryPeaks:
    """Peaks with the poller on, over the end-to-end pass's frames (the held-out photographs, each at least once: a
    detector's postprocess memory scales with what it finds, and noise finds what no camera shows)."""
    at_start = memory.reset_allocator_peaks(device)
    iterations = max(1, request.timing.memory_iters, len(frames))
    with memory.MemoryPoller(device, request.poll_interval_ms) as poller:
        for index in range(iterations):
            frame = _camera_frame(camera, frames[index % len(frames)], {})  # what end to end feeds: decoded, resized
            adapter.postprocess(forward(adapter.preprocess(frame)), tuple(frame.shape[1:3]))
        synchronize(device)
    assert adapter.model is not None
    return memory.collect_peaks(poller, device, baseline, memory.module_size_mb(adapter.model), at_start, occupied_mb)


def _latency_warm_up(step: Callable[[], Any], timing: Timing, device: torch.device) -> dict[str, Any]:
    """The step synchronised per call for at least warmup_iters calls and warmup_s seconds (cuDNN autotuning, lazy
    kernels, the clock ramp), with NVML sampling the SM clock on a GPU (nothing is timed yet) to tell whether the
    clocks reached steady state."""
    sampler = _telemetry_sampler(device)
    with SamplingThread(sampler, timing.telemetry_interval_s or SAMPLE_INTERVAL_S):
        done = warm_up(step, timing.warmup_iters, device, timing.warmup_s)
    return {**done, "clocks": clocks_steady(sampler)}


def _device_throughput(
    step: Callable[[], Any], rule: StopRule, device: torch.device, latency_run: TimedRun, batch_size: int
) -> dict[str, Any]:
    """Images / loop time of the step back to back: on a GPU its own loop (the host queues step i+1 while the device
    runs step i, one sync at the end); on a CPU the latency pass's loop, already back to back and synchronous."""
    if device.type != "cuda":
        run = ThroughputRun(len(latency_run.samples_ms), latency_run.measured_s)
        loop = "the latency pass's loop (a CPU step returns finished: back to back is synchronous)"
    else:
        run, loop = time_throughput(step, rule, device_sync(device)), BACK_TO_BACK
    return {"fps": run.images_per_s(batch_size), "iterations": run.iterations, "loop_s": run.loop_s, "loop": loop}


def _telemetry_pass(step: Callable[[], Any], timing: Timing, device: torch.device, batch_size: int) -> dict[str, Any]:
    """NVML clocks, power, energy and throttling over a loop of their own (the same step back to back for at least
    timing.telemetry_s), after the latency pass: nothing samples beside the headline loop."""
    sampler = _telemetry_sampler(device)
    if not sampler.enabled:
        return sampler.summary(None)
    if timing.telemetry_s <= 0:
        return empty_summary("timing.telemetry_s is 0: no telemetry pass")
    sync, iterations = device_sync(device), 0
    with SamplingThread(sampler, timing.telemetry_interval_s):
        started = time.perf_counter()
        while iterations == 0 or time.perf_counter() - started < timing.telemetry_s:
            step()
            iterations += 1
        sync()
        seconds = time.perf_counter() - started
    summary = sampler.summary(iterations * batch_size, min_window_s=MIN_WINDOW_S)
    return {**summary, "pass": {"iterations": iterations, "seconds": round(seconds, 3), "loop": BACK_TO_BACK}}


def _telemetry_sampler(device: torch.device) -> TelemetrySampler:
    """NVML clocks, power, energy and throttling for one pass (a disabled sampler on a CPU); tests fake it."""
    return TelemetrySampler.for_device(device)


def torch_flags(device: torch.device) -> dict[str, Any]:
    """Every cuDNN/matmul setting the cell's timed passes ran with (a precision may have changed them)."""
    return {
        "cudnn_enabled": torch.backends.cudnn.enabled,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "matmul_allow_fp16_reduced_precision_reduction": (
            torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction
        ),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_version": torch.backends.cudnn.version() if device.type == "cuda" else None,
    }


def _cooldown(request: CellRequest, device: torch.device) -> dict[str, Any] | None:
    if request.cooldown is None:
        return None
    handle = nvml.handle_for(device.index or 0) if device.type == "cuda" else None
    config = request.cooldown
    return wait_for_cooldown(handle, config.below_c, config.fixed_s, config.timeout_s)


def _prepare_device(device: torch.device, timing: Timing) -> None:
    # Chosen by the suite on every device (a CPU ignores it), so the record's torch_flags say what was asked.
    torch.backends.cudnn.benchmark = timing.cudnn_benchmark
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.empty(1, device=device)  # creates the CUDA context, so the baseline includes it


def apply_precision(
    precision: Precision,
    adapter: SegmentationAdapter,
    images: torch.Tensor,
    calibration: list[torch.Tensor],
    device: torch.device,
) -> tuple[nn.Module, float]:
    """The converted model and the seconds the conversion took.

    The precision context (the fp32 example batch and the preprocessed calibration images) lives only
    inside this call: a measured pass that kept it alive would count it in every peak.
    """
    with torch.inference_mode():  # fp32 inputs, made before the precision changes the input dtype
        context = PrecisionContext(
            example=adapter.preprocess(images), calibration=tuple(adapter.preprocess(batch) for batch in calibration)
        )
    assert adapter.model is not None
    started = time.perf_counter()
    model = precision.apply(adapter.model, device, context)  # quantization and its compile happen here
    return model, time.perf_counter() - started


def release_preparation(device: torch.device) -> None:
    """Free what preparation left behind (export graphs, calibration tensors) before anything is measured.

    Cyclic garbage goes first; glibc then returns freed heap pages to the OS (RSS would keep them
    otherwise), and CUDA's caching allocator hands back its cached blocks, so the peaks that follow
    hold only what the measured passes use.
    """
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl): nothing to trim
            pass
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _local_or_named(weights: str | None, suite_dir: Path | None) -> Path | None:
    """A weights path as the suite meant it; a library name (Hub id, asset, enum) stays as given for the adapter to
    fetch."""
    if weights is None:
        return None
    resolved = resolve_path(Path(weights), suite_dir)
    return resolved if resolved.exists() else Path(weights)


def _calibration_files(request: CellRequest, dataset: Dataset | None, suite_dir: Path | None) -> tuple[list[Path], str]:
    """The images int8 calibrates on, and where they come from: the calibration folder, the dataset's train split, or
    none (photographs)."""
    if request.calibration is not None:
        folder = resolve_path(request.calibration.path, suite_dir)
        return images_in_folder(folder)[: request.calibration.limit], f"calibration folder {request.calibration.path}"
    if dataset is not None and dataset.config.split != "train" and dataset.has_split("train"):
        return dataset.images("train", limit=8), f"dataset train split ({dataset.config.path})"
    return [], "calibration half of the bundled photographs"


def _fidelity(
    cell: CellSpec,
    weights: Path | None,
    adapter: SegmentationAdapter,
    forward: Callable[[Any], Any],
    device: torch.device,
    autocast: Any,
) -> dict[str, Any]:
    """Held-out photographs (never calibration ones) through an fp32 eager build of the same model (same resolved
    weights)."""
    reference = Fp32Reference(cell.model, weights, cell.options, device)
    held_out = evaluation_batches(*cell.resolution, cell.batch_size)
    return measure_fidelity(reference, adapter, forward, held_out, autocast, random_weights=cell.weights is None)


def _stream_pass(
    adapter: SegmentationAdapter,
    forward: Callable[[torch.Tensor], Any],
    request: CellRequest,
    device: torch.device,
    end_to_end: LatencyStats,
) -> dict[str, Any]:
    """Frames on a clock at the target rate, or a search for the highest rate that passes the latency criterion."""
    config = request.stream
    assert config is not None
    source = open_source(
        config.source, *request.cell.resolution, Path(request.suite_dir) if request.suite_dir else None
    )
    frames = source.frames()
    criterion = Criterion.from_config(config, request.timing.timeout_s)

    def trial(rate: float, stop_early: bool = True) -> StreamOutcome:
        return run_stream(
            adapter, forward, frames, rate, config.duration_s, device, config.queue_size, config.overlap,
            criterion=criterion, stop_early=stop_early,
        )  # fmt: skip

    warmup = warm_stream(adapter, forward, frames, device, config.warmup_s, config.overlap)
    common = {"criterion": criterion.to_dict(), "source": config.source, "overlap": config.overlap, "warmup": warmup}
    if config.target_fps == "max":
        search = find_max_rate(trial, criterion, 1000.0 / end_to_end.median, config.search_steps)
        outcome = search.pop("outcome")
        result = outcome.to_dict(criterion) if outcome is not None else {"target_fps": 0.0, "keeps_up": False}
        return {**result, **search, **common}
    outcome = trial(float(config.target_fps), stop_early=False)
    return {**outcome.to_dict(criterion), "trials": [trial_row("fixed", outcome, criterion)], **common}


def _work(adapter: SegmentationAdapter, cell: CellSpec) -> tuple[Work | None, str | None]:
    """FLOPs (torch.utils.flop_counter, 2 x multiply-adds) and elements moved per image; a model the counter cannot
    trace still runs."""
    try:
        return count_work(adapter, *cell.resolution), None
    except Exception as exc:
        return None, f"FLOP counter failed: {last_line(exc)}"


def measure_cell(request: CellRequest) -> dict[str, Any]:
    """Run one cell in this process and return its measurements (raises on failure)."""
    cell, device = request.cell, torch.device(request.device)
    precision, backend = get_precision(cell.precision), get_backend(cell.backend)
    reason = cell_reason(cell.precision, cell.backend, device)  # before building: a pair that cannot run costs nothing
    if reason:
        raise UnsupportedError(reason)
    cache.set_cell(
        model=cell.model,
        options=cell.options,
        weights=cell.weights,
        resolution=list(cell.resolution),
        batch_size=cell.batch_size,
        precision=cell.precision,
        backend=cell.backend,
        device=device.type,
    )
    cooldown = _cooldown(request, device)
    device_before_context = memory.device_used_mb(device)  # the PID-namespace fallback's zero
    _prepare_device(device, request.timing)
    baseline = memory.baseline_mb(device, device_before_context)  # the context, before a budget occupies anything
    budget = apply_budget(device, load_profile(request.hardware), baseline.mb) if request.hardware else None

    # Process start to the first model build: what warm start (segbench.run.forkserver) makes cheap.
    startup_s = round(time.time() - request.launched_at, 3) if request.launched_at is not None else None
    suite_dir = Path(request.suite_dir) if request.suite_dir else None
    weights = _local_or_named(cell.weights, suite_dir)
    adapter = create_model(cell.model, weights, cell.options)
    adapter.build(device)
    options = request.end_to_end
    adapter.output_policy = OutputPolicy(options.resize, options.interpolate_dtype, options.map_device)
    camera = CameraInput(options.decode, options.camera_size, cell.resolution)
    # Counted once on the fp32 model, batch 1: FLOPs per image are a property of the architecture.
    work, flops_unavailable = (None, "fit probe") if request.probe else _work(adapter, cell)
    blocks, block_work = _block_work(adapter, cell) if request.profile else (None, None)
    images = synthetic_images(cell, device)
    frames = end_to_end_frames(cell, device, camera)
    dataset = Dataset(request.dataset, suite_dir) if request.dataset is not None else None
    calibration_files, calibration_source = _calibration_files(request, dataset, suite_dir)
    calibration = calibration_batches(*cell.resolution, cell.batch_size, calibration_files)
    calibration_images = sum(batch.shape[0] for batch in calibration)
    adapter.model, precision_prepare_s = apply_precision(precision, adapter, images, calibration, device)
    del calibration  # no measured pass may hold the calibration images
    adapter.input_dtype = precision.input_dtype
    adapter = backend.wrap(adapter)
    backend.profiling = request.profile is not None
    timed_policy = adapter.output_policy  # the timed passes' class map (fidelity's comes home to the host)

    with _timed_context(precision, device):
        inputs = adapter.preprocess(images)
        started = time.perf_counter()
        forward = backend.prepare(adapter, inputs)
        prepare_s = time.perf_counter() - started
        inputs = adapter.preprocess(images)  # again: a backend may change the layout preprocess emits (channels_last)
        release_preparation(device)

        cell_threads = torch.get_num_threads()
        host_threads = host_thread_count(options.host_threads, backend.runtime, cell_threads)
        with torch_threads(host_threads or cell_threads):  # before anything else warms the pipeline
            cold_ms = first_call_ms(adapter, forward, frames[0], device, camera)
        host_probe: dict[str, float] | None = None
        if host_threads is None:

            def pipeline_ms(count: int) -> float:
                with torch_threads(count):
                    _, (begun, *_, ended) = _pipeline_call(adapter, forward, None, frames[0], device, {}, camera)
                return (ended - begun) / 1e6

            host_threads, host_probe = probe_host_threads(pipeline_ms, cell_threads)
        step = lambda: forward(inputs)  # noqa: E731 (the timed closure)

        def timed(timing: Timing) -> TimedPasses:
            return _timed_passes(step, adapter, forward, frames, timing, device, cell, host_threads, camera)

        passes = timed(request.timing)
        peaks = _memory_pass(adapter, forward, frames, request, device, baseline, budget_occupied(budget), camera)
        end_to_end = passes.end_to_end
        with torch_threads(host_threads):
            stream = _stream_pass(adapter, forward, request, device, end_to_end) if request.stream else None
        capacity = None
        if request.capacity is not None:  # N cameras against each serving policy, the model's copies prepared alike
            capacity = capacity_pass(
                request.capacity, adapter, forward, lambda replica: backend.prepare(replica, inputs), device,
                cell.resolution, end_to_end.median, request.timing.timeout_s,
                memory_fit(peaks.to_dict(), budget, request.hardware), lambda: precision.autocast(device),
            )  # fmt: skip
        profile = (  # the last timed pass under this context: no profiler ran before it
            _profile(backend, forward, inputs, request, device, adapter, blocks, block_work, _executed_float(precision))
            if request.profile and blocks is not None
            else None
        )

    # Fidelity and accuracy compare the map with host-side references: a map left on the device comes home for them.
    adapter.output_policy = replace(adapter.output_policy, map_device="host")
    fidelity, fidelity_unavailable = None, "this is the fp32 eager reference"
    if not (precision.is_reference and backend.is_reference) and not request.probe:
        try:
            fidelity, fidelity_unavailable = (
                _fidelity(cell, weights, adapter, forward, device, precision.autocast(device)),
                None,
            )
        except Exception as exc:  # the measurement stands even when the fp32 reference cannot be built
            fidelity_unavailable = f"fp32 reference failed: {last_line(exc)}"
    accuracy, accuracy_unavailable = None, "no dataset in the suite"
    if dataset is not None and not request.probe:
        try:
            accuracy, accuracy_unavailable = (
                accuracy_pass(adapter, forward, dataset, cell.resolution, cell.batch_size, precision.autocast(device)),
                None,
            )
        except SegbenchError as exc:  # e.g. label ids beyond a head sized by the weights: the timing still stands
            accuracy_unavailable = str(exc)

    cache_events = cache.events()
    height, width = cell.resolution
    memory_mb = peaks.to_dict()
    record = {
        **_timing_fields(passes, cell, request.timing, device),
        "startup_s": startup_s,
        "prepare_s": precision_prepare_s + prepare_s,  # never part of latency
        "prepare_breakdown_s": {"precision": precision_prepare_s, "backend": prepare_s},
        "prepare_cache": cache.summary(cache_events),  # hit: prepared from the cache; miss: built (and stored)
        "cache_events": cache_events,
        "first_call_ms": cold_ms,
        "end_to_end_input": f"{len(frames) * cell.batch_size} held-out photographs in turn, "
        + (camera.describe() if camera.active else f"{height}x{width}"),
        "end_to_end_covers": {
            **end_to_end_covers(camera, adapter, backend.latency_scope == "end_to_end"),
            "host_threads": host_threads,
            "host_threads_probe_ms": host_probe,  # auto beside another runtime's pool: each count's median
        },
        "memory_mb": memory_mb,
        "memory_unavailable": peaks.unavailable,
        "memory_sources": peaks.sources,
        "memory_allocator_mb": peaks.allocator,
        "memory_input": f"{len(frames) * cell.batch_size} held-out photographs in turn, as end to end",
        "over_budget": over_budget(budget.to_dict() if budget else None, memory_mb["nvml_process_peak"]),
        "fidelity": fidelity,
        "fidelity_unavailable": fidelity_unavailable,
        "accuracy": accuracy,
        "accuracy_unavailable": accuracy_unavailable,
        "calibration": {"source": calibration_source, "images": calibration_images},
        "quantized_share": precision.quantized_share(adapter.model),
        "params": adapter.parameter_count(),
        "model_input": list(adapter.model_input_size(height, width)),
        "notes": [
            *adapter.notes(),
            *precision.notes(device),
        ],
        "stream": stream,
        "capacity": capacity,
        "gflops": work.flops / 1e9 if work and work.flops else None,
        "gflops_unavailable": flops_unavailable,
        "traffic": work.traffic() if work else None,  # elements moved per image: the roofline's memory side
        "torch_flags": torch_flags(device),
        "budget": budget.to_dict() if budget else None,
        "cooldown": cooldown,
        "backend_info": backend.describe(adapter),
        **profile_fields(profile, request),
    }
    if request.screening is not None:
        adapter.output_policy = timed_policy
        again = lambda timing: _timed_again(timed, timing, precision, device)  # noqa: E731
        record = _screened(record, request, passes.seconds, again)
    return record


def _timed_again(
    timed: Callable[[Timing], TimedPasses], timing: Timing, precision: Precision, device: torch.device
) -> TimedPasses:
    with _timed_context(precision, device):
        return timed(timing)


def _timed_context(precision: Precision, device: torch.device) -> ExitStack:
    """What every timed pass runs under: inference mode and the precision's autocast."""
    stack = ExitStack()
    stack.enter_context(torch.inference_mode())
    stack.enter_context(precision.autocast(device))
    return stack


@dataclass
class TimedPasses:
    """The latency, throughput, telemetry and stage passes of one timing, with the machine's state around them."""

    latency_warmup: dict[str, Any]
    latency_run: TimedRun
    throughput: dict[str, Any]
    telemetry: dict[str, Any]
    stages_run: StagesRun
    contention: ContentionWindow
    canary: dict[str, Any]
    seconds: float  # wall time from the canary before to the canary after

    @property
    def end_to_end(self) -> LatencyStats:
        return LatencyStats.from_samples(self.stages_run.samples_ms["end_to_end"])


def _timed_passes(
    step: Callable[[], Any],
    adapter: SegmentationAdapter,
    forward: Callable[[Any], Any],
    frames: list[Any],
    timing: Timing,
    device: torch.device,
    cell: CellSpec,
    host_threads: int,
    camera: CameraInput,
) -> TimedPasses:
    """The timed passes under `timing`, nothing else beside them, between two canary readings."""
    started = time.perf_counter()
    rule = _stop_rule(timing)
    canary_before = canary_reading()  # before warm-up, so the timed passes start from warm caches
    latency_warmup = _latency_warm_up(step, timing, device)
    with ContentionWindow(torch.get_num_threads()) as contention, StealWindow() as steal:
        latency_run: TimedRun = time_steps(step, rule, device)  # nothing beside it
        throughput = _device_throughput(step, rule, device, latency_run, cell.batch_size)
        telemetry = _telemetry_pass(step, timing, device, cell.batch_size)
        # Sub-stages need the eager module; another backend's forward is timed whole.
        with torch_threads(host_threads):
            stages_run = _time_stages(
                adapter,
                forward,
                frames,
                rule,
                device,
                split=cell.backend == "eager",
                warmup_iters=timing.warmup_iters,
                warmup_s=timing.warmup_s,
                camera=camera,
            )
    canary = cell_canary(canary_before, canary_reading(), steal)
    seconds = time.perf_counter() - started
    return TimedPasses(latency_warmup, latency_run, throughput, telemetry, stages_run, contention, canary, seconds)


def _timing_fields(passes: TimedPasses, cell: CellSpec, timing: Timing, device: torch.device) -> dict[str, Any]:
    """The record's fields that come from the timed passes (a promoted screening replaces exactly these)."""
    latency = LatencyStats.from_samples(passes.latency_run.samples_ms)
    end_to_end = passes.end_to_end
    stage_samples = passes.stages_run.samples_ms
    stages = {
        stage: LatencyStats.from_samples(values) for stage, values in stage_samples.items() if stage != "end_to_end"
    }
    return {
        "latency_ms": latency.summary(),
        "latency_timing": SYNCHRONOUS,
        "latency_warmup": passes.latency_warmup,
        "samples_ms": list(latency.samples),
        "fps": cell.batch_size * 1000.0 / latency.median,  # latency-derived: batch / synchronous median
        "device_throughput": passes.throughput,
        "device_throughput_fps": passes.throughput["fps"],
        "iterations": latency.n,
        "measured_s": passes.latency_run.measured_s,
        "stages_ms": {stage: stats.summary() for stage, stats in stages.items()},
        "stage_samples_ms": {stage: list(stats.samples) for stage, stats in stages.items()},
        "end_to_end_ms": end_to_end.summary(),
        "end_to_end_fps": cell.batch_size * 1000.0 / end_to_end.median,
        "end_to_end_throughput_fps": passes.stages_run.throughput_fps(cell.batch_size),
        "pipelined_fps_bound": pipelined_bound_fps(stages, cell.batch_size),
        "end_to_end_warmup": passes.stages_run.warmup,
        "detections_per_frame": passes.stages_run.detections,
        "inconsistent_forward": inconsistent_forward(latency.median, _median(stages.get("forward")), device),
        "noisy": latency.is_noisy,
        "undersampled": undersampled({"latency pass": latency, "end-to-end pass": end_to_end}, timing),
        "contended": passes.contention.reason,
        "load": passes.contention.to_dict(),
        "canary": passes.canary,  # the machine's speed around the timed passes (segbench.measure.canary)
        "drifted": cell_drift(passes.canary),  # the run's reference joins it when the runner writes the record
        "telemetry": passes.telemetry,
    }


# What a promoted cell keeps of its screening: enough for the search to check the screening against the full timing.
SCREEN_FIGURES = ("latency_ms", "fps", "end_to_end_ms", "end_to_end_fps", "iterations", "measured_s")


def _screened(
    record: dict[str, Any], request: CellRequest, screen_s: float, time_again: Callable[[Timing], TimedPasses]
) -> dict[str, Any]:
    """A search's screening judged here, as the search's next step would judge it: where the brief timing cannot
    decide the cell, it is timed again with the suite's timing in this process (its model built and warm), and the
    full figures replace the screening's, which stay under `screening`."""
    plan = request.screening
    assert plan is not None
    cell = request.cell
    screened = {**cell.to_dict(), "cell_id": cell.cell_id, "status": "ok", **record}
    why = promotion(screened, plan.targets, plan.leader)
    screening: dict[str, Any] = {
        "promoted": why,
        "passes_s": round(screen_s, 3),
        "figures": {key: record[key] for key in SCREEN_FIGURES},
    }
    if why is not None:
        passes = time_again(plan.full_timing)
        record.update(_timing_fields(passes, cell, plan.full_timing, torch.device(request.device)))
        screening["full_passes_s"] = round(passes.seconds, 3)
    return {**record, "screening": screening}


def profile_fields(profile: dict[str, Any] | str | None, request: CellRequest) -> dict[str, Any]:
    """The record's profile, or why there is none (a failed profiler never fails the cell)."""
    if request.profile is None:
        return {}
    if isinstance(profile, str) or profile is None:
        return {"profile": None, "profile_unavailable": profile or "no profile"}
    return {"profile": profile, "profile_unavailable": None}


def _executed_float(precision: Precision) -> str:
    """What a PyTorch op that no kernel name marks as int8 ran in: the model's dtype, or under autocast its dtype for
    matmuls and convolutions ("amp-bf16: mixed", as the profiler's CPU events carry no dtypes)."""
    dtype = getattr(precision, "dtype", None)
    if precision.name.startswith("amp") and isinstance(dtype, torch.dtype):
        return f"mixed ({dtype_name(dtype)} convs and matmuls)"
    return dtype_name(precision.input_dtype)


def _block_work(adapter: SegmentationAdapter, cell: CellSpec) -> tuple[BlockMap, dict[str, Any] | None]:
    """The family's block map and each block's FLOPs and elements, on the float model before any precision."""
    blocks = BlockMap.for_model(adapter.card.family, adapter.model)
    try:
        return blocks, count_block_work(adapter, *cell.resolution, blocks)
    except Exception:  # noqa: BLE001 (a model the counter cannot trace is still profiled, without FLOPs)
        return blocks, None


def _profile(
    backend: Any,
    forward: Callable[[Any], Any],
    inputs: Any,
    request: CellRequest,
    device: torch.device,
    adapter: SegmentationAdapter,
    blocks: BlockMap,
    block_work: dict[str, Any] | None,
    float_name: str,
) -> dict[str, Any] | str:
    assert request.profile is not None
    try:
        return profile_pass(
            backend, forward, inputs, request.profile.iters, device, adapter.model, blocks, block_work, float_name
        )
    except Exception as exc:  # noqa: BLE001 (the timed figures stand without a profile)
        return f"profile pass failed: {last_line(exc)}"


def budget_occupied(budget: BudgetInfo | None) -> float:
    """MiB a budget holds outside every allocator (NVML counts it in this process): taken out of the peaks."""
    return (budget.occupied_mb or 0.0) if budget is not None else 0.0


def run_cell(request: CellRequest) -> dict[str, Any]:
    """measure_cell with every failure turned into a status: the parent always gets a dict back."""
    pinned = None
    try:
        pinned = pin_to(request.cpu_set)  # before the thread pools start, so each thread inherits the set
        # Explicit, so every cell runs with the same thread count whatever a library set at import.
        torch.set_num_threads(request.threads or default_threads())
        cache.configure_inductor()
        for plugin in request.plugins:
            load_plugin(plugin, Path(request.suite_dir) if request.suite_dir else None)
        outcome = {"status": "ok", **measure_cell(request)}
    except UnsupportedError as exc:
        outcome = {"status": "unsupported", "error": str(exc)}
    except SegbenchError as exc:
        outcome = {"status": "error", "error": str(exc)}
    except BaseException as exc:  # noqa: BLE001 (a cell's failure is a result, whatever it is)
        status = "oom" if is_out_of_memory(exc) else "error"
        outcome = {"status": status, "error": last_line(exc), "traceback": traceback.format_exc(limit=20)}
    if outcome["status"] != "ok":  # the cell's log (its stderr) says why, as the record does
        why = outcome.get("traceback") or outcome["error"]
        print(f"segbench: cell ended {outcome['status']}: {why}", file=sys.stderr, flush=True)
    outcome["threads"] = torch.get_num_threads()
    outcome["interop_threads"] = torch.get_num_interop_threads()
    if pinned is not None:
        outcome["cpu_affinity"] = pinned
    return outcome
