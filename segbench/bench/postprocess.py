"""Postprocess benchmark: segbench's class-map path against the one it replaced, in one process, as a ratio.

A benchmark to run on a quiet machine (or a test marked `alone`), never a timed unit test:

    python -m segbench.bench.postprocess [--classes 19] [--logits 128x256] [--size 512x1024] [--rounds 15]
    python -m segbench.bench.postprocess --yolo WEIGHTS.pt [--size 640x640] [--rounds 30]

The second form times YOLOv8-seg's class map on the held-out photographs' real detections against
ultralytics' own postprocess for the same raw output (NMS, then `process_mask(upsample=True)`: what its
predictor does without retina_masks) and against segbench's previous full-size merge.

The old path (issue 27, item 7) upcast the scores to float32, upsampled them bilinearly to the input,
reduced with `argmax(dim=1)` and returned an int64 map; `legacy_class_map` keeps it, so tests can check
that the new path gives the same labels bit for bit and this module can time both on the same tensor.
Rounds alternate old and new, so a change in the host's speed hits both; the figure is old / new of the
medians.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from segbench.models.base import ModelCard, SegmentationAdapter
from segbench.models.yolov8_seg import YoloV8SegAdapter


def legacy_class_map(scores: torch.Tensor, padded: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """The postprocess segbench shipped before: float32 upsample, crop, argmax, int64 on the host."""
    if tuple(scores.shape[-2:]) != padded:
        scores = F.interpolate(scores.float(), size=padded, mode="bilinear", align_corners=False)
    return scores[..., : size[0], : size[1]].argmax(dim=1).cpu()


def merge_full_size_instances(masks: torch.Tensor, confidences: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """YOLOv8-seg's old merge of full-size instance masks (ultralytics' process_mask, upsampled): the most
    confident covering instance wins, else background 0."""
    if not len(classes):
        return torch.zeros(masks.shape[-2:], dtype=torch.int64, device=masks.device)
    best, owner = (masks.float() * confidences.view(-1, 1, 1)).max(dim=0)
    return torch.where(best > 0, classes[owner] + 1, 0)


def legacy_postprocess(adapter: SegmentationAdapter, outputs: Any, size: tuple[int, int]) -> torch.Tensor:
    """The old postprocess of the dense heads' base adapter, and of YOLOv8-seg's instance merge."""
    if isinstance(adapter, YoloV8SegAdapter):
        labels = [merge_full_size_instances(*instance) for instance in adapter.instances(outputs)]
        return torch.stack(labels)[:, : size[0], : size[1]].to(torch.int64).cpu()
    return legacy_class_map(adapter.logits(outputs), adapter.model_input_size(*size), size)


class _ScoresAdapter(SegmentationAdapter):
    """An adapter with no model: its outputs are the scores, so only the class-map code is timed."""

    def build_module(self) -> torch.nn.Module:
        raise NotImplementedError


def scores_adapter(classes: int) -> SegmentationAdapter:
    card = ModelCard(name="scores", family="scores", variant="-", source="segbench", num_classes=classes, dataset="-")
    return _ScoresAdapter(card)


def _time_into(call: Callable[[], Any], rounds: list[float]) -> None:
    began = time.perf_counter()
    call()
    rounds.append((time.perf_counter() - began) * 1000)


def compare(
    classes: int, logits: tuple[int, int], size: tuple[int, int], rounds: int, seed: int = 0
) -> dict[str, float]:
    """Median ms of the old and the new class map on the same scores, alternating, and old / new."""
    scores = torch.randn(1, classes, *logits, generator=torch.Generator().manual_seed(seed))
    adapter = scores_adapter(classes)
    old: list[float] = []
    new: list[float] = []
    with torch.inference_mode():
        for _ in range(2):  # warm both: first calls allocate and pick kernels
            legacy_class_map(scores, size, size), adapter.class_map(scores, size)
        for _ in range(rounds):
            _time_into(lambda: legacy_class_map(scores, size, size), old)
            _time_into(lambda: adapter.class_map(scores, size), new)
    old_ms, new_ms = statistics.median(old), statistics.median(new)
    return {"old_ms": old_ms, "new_ms": new_ms, "speedup": old_ms / new_ms}


def ultralytics_postprocess(adapter: YoloV8SegAdapter, outputs: Any) -> list[torch.Tensor]:
    """What ultralytics' segment predictor does after the forward, without retina_masks: NMS, then every kept
    instance's mask upsampled to the input, thresholded and cropped to its box."""
    from ultralytics.utils.ops import process_mask

    detections, protos = adapter.kept(outputs)
    size = (protos.shape[-2] * 4, protos.shape[-1] * 4)
    return [process_mask(proto, det[:, 6:], det[:, :4], size, upsample=True) for det, proto in zip(detections, protos)]


def compare_yolo(weights: str, size: tuple[int, int], rounds: int) -> dict[str, float]:
    """Median ms per photograph of ultralytics' own postprocess, segbench's previous one and its current one, on the
    same raw outputs of the held-out photographs, alternating; and the ratios to the current one."""
    from segbench.data.images import evaluation_batches  # lazy: the photographs are read only for this form
    from segbench.models.registry import create_model  # lazy: builds a model only for this form

    adapter = create_model("yolov8n-seg", weights, {})
    adapter.build("cpu")
    assert isinstance(adapter, YoloV8SegAdapter)
    timings: dict[str, list[float]] = {"ultralytics": [], "previous": [], "segbench": []}
    with torch.inference_mode():
        frames = [frame for frame in evaluation_batches(*size, 1)]
        outputs = [adapter.forward(adapter.preprocess(frame)) for frame in frames]
        calls = {
            "ultralytics": lambda out: ultralytics_postprocess(adapter, out),
            "previous": lambda out: legacy_postprocess(adapter, out, size),
            "segbench": lambda out: adapter.postprocess(out, size),
        }
        for out in outputs:  # warm every path once
            for call in calls.values():
                call(out)
        for round_index in range(rounds):
            out = outputs[round_index % len(outputs)]
            for name, call in calls.items():
                _time_into(lambda: call(out), timings[name])
    medians = {name: statistics.median(values) for name, values in timings.items()}
    instances = sum(adapter.detections(out) or 0 for out in outputs) / len(outputs)
    return {
        **{f"{name}_ms": value for name, value in medians.items()},
        "over_ultralytics": medians["ultralytics"] / medians["segbench"],
        "over_previous": medians["previous"] / medians["segbench"],
        "instances_per_frame": instances,
    }


def _size(text: str) -> tuple[int, int]:
    height, width = text.lower().split("x")
    return int(height), int(width)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=19)
    parser.add_argument("--logits", type=_size, default=(128, 256), help="the logits' HxW")
    parser.add_argument("--size", type=_size, default=(512, 1024), help="the input's HxW")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--yolo", metavar="WEIGHTS", help="time YOLOv8-seg's class map on these weights instead")
    args = parser.parse_args(argv)
    if args.yolo:
        found = compare_yolo(args.yolo, args.size, args.rounds)
        print(
            f"YOLOv8n-seg at {args.size[0]}x{args.size[1]}, {found['instances_per_frame']:.1f} instances per "
            "photograph: "
            f"ultralytics' own postprocess {found['ultralytics_ms']:.2f} ms, segbench's previous "
            f"{found['previous_ms']:.2f} ms, now {found['segbench_ms']:.2f} ms ({found['over_ultralytics']:.2f}x "
            f"ultralytics', {found['over_previous']:.2f}x the previous) on {torch.get_num_threads()} threads"
        )
        return
    result = compare(args.classes, args.logits, args.size, args.rounds)
    print(
        f"({args.classes}, {args.logits[0]}x{args.logits[1]}) -> {args.size[0]}x{args.size[1]}: old "
        f"{result['old_ms']:.1f} ms, new {result['new_ms']:.1f} ms, {result['speedup']:.2f}x on "
        f"{torch.get_num_threads()} threads"
    )


if __name__ == "__main__":
    main()
