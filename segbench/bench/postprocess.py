"""Postprocess benchmark: segbench's class-map path against the one it replaced, in one process, as a ratio.

A benchmark to run on a quiet machine (or a test marked `alone`), never a timed unit test:

    python -m segbench.bench.postprocess [--classes 19] [--logits 128x256] [--size 512x1024] [--rounds 15]

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
from segbench.models.yolov8_seg import YoloV8SegAdapter, _merge_instances


def legacy_class_map(scores: torch.Tensor, padded: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """The postprocess segbench shipped before: float32 upsample, crop, argmax, int64 on the host."""
    if tuple(scores.shape[-2:]) != padded:
        scores = F.interpolate(scores.float(), size=padded, mode="bilinear", align_corners=False)
    return scores[..., : size[0], : size[1]].argmax(dim=1).cpu()


def legacy_postprocess(adapter: SegmentationAdapter, outputs: Any, size: tuple[int, int]) -> torch.Tensor:
    """The old postprocess of the dense heads' base adapter, and of YOLOv8-seg's instance merge."""
    if isinstance(adapter, YoloV8SegAdapter):
        labels = [_merge_instances(*instance) for instance in adapter.instances(outputs)]
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


def _size(text: str) -> tuple[int, int]:
    height, width = text.lower().split("x")
    return int(height), int(width)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=19)
    parser.add_argument("--logits", type=_size, default=(128, 256), help="the logits' HxW")
    parser.add_argument("--size", type=_size, default=(512, 1024), help="the input's HxW")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    result = compare(args.classes, args.logits, args.size, args.rounds)
    print(
        f"({args.classes}, {args.logits[0]}x{args.logits[1]}) -> {args.size[0]}x{args.size[1]}: old "
        f"{result['old_ms']:.1f} ms, new {result['new_ms']:.1f} ms, {result['speedup']:.2f}x on "
        f"{torch.get_num_threads()} threads"
    )


if __name__ == "__main__":
    main()
