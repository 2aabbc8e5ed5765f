"""Frame sources for the stream scenario: a synthetic moving scene, or a local video file (OpenCV)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Protocol

import numpy as np
import torch

from segbench.data.images import resized, sample_photographs
from segbench.errors import SegbenchError


class FrameSource(Protocol):
    def frames(self) -> Iterator[torch.Tensor]:
        """Endless host uint8 frames (H, W, 3) at the cell's resolution."""
        ...


class MovingScene:
    """A photograph panning across the frame: real image statistics, a new frame every tick, no I/O."""

    def __init__(self, height: int, width: int, step_px: int = 4):
        base = resized(sample_photographs()[0], height, width * 2)
        self.base = torch.cat([base, base.flip(1)], dim=1)  # mirrored so the pan wraps without a seam
        self.width = width
        self.step_px = step_px

    def frames(self) -> Iterator[torch.Tensor]:
        offset, span = 0, self.base.shape[1]
        while True:
            start = offset % (span - self.width)
            yield self.base[:, start : start + self.width].contiguous()
            offset += self.step_px


def check_video(path: Path) -> None:
    """Fail with one line when a video cannot be opened or decoded."""
    import cv2

    if not path.is_file():
        raise SegbenchError(f"stream.source: video file not found: {path}; give a local video path or 'synthetic'")
    capture = cv2.VideoCapture(str(path))
    try:
        ok, _ = capture.read() if capture.isOpened() else (False, None)
    finally:
        capture.release()
    if not ok:
        raise SegbenchError(
            f"stream.source: cannot decode a frame from {path} (corrupt file or a codec OpenCV lacks); re-encode it as "
            "H.264 MP4 or use 'synthetic'"
        )


class VideoFile:
    """Decodes a local video with OpenCV, looping at the end, resized to the cell's resolution."""

    def __init__(self, path: Path, height: int, width: int):
        check_video(path)
        self.path, self.height, self.width = path, height, width

    def frames(self) -> Iterator[torch.Tensor]:
        import cv2

        capture = cv2.VideoCapture(str(self.path))
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    continue
                if frame.shape[:2] != (self.height, self.width):
                    frame = cv2.resize(frame, (self.width, self.height), interpolation=cv2.INTER_AREA)
                yield torch.from_numpy(np.ascontiguousarray(frame[..., ::-1]))  # BGR -> RGB
        finally:
            capture.release()


def open_source(source: str, height: int, width: int, base_dir: Path | None = None) -> FrameSource:
    if source == "synthetic":
        return MovingScene(height, width)
    path = Path(source)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return VideoFile(path, height, width)
