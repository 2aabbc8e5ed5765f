"""Frames as a camera or a file hands them over, for an end-to-end pass that includes decode and resize.

By default the end-to-end pass starts from decoded uint8 frames already at the cell's resolution. The suite's
`end_to_end: {decode: jpeg, camera_size: 1080x1920}` starts it earlier: each held-out photograph is resized to the
camera's size and encoded once, outside the clock; inside it, every frame is decoded (`cv2.imdecode`, BGR to RGB)
and resized to the cell's resolution (`cv2.resize`, bilinear, as ultralytics' letterbox resizes), the two timed as
stages of their own before preprocess.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

Codec = Literal["none", "jpeg", "png"]
EXTENSIONS = {"jpeg": ".jpg", "png": ".png"}
JPEG_QUALITY = 95  # OpenCV's default


@dataclass(frozen=True)
class CameraInput:
    """What a frame is before the pipeline sees it: encoded or not, at the camera's size or already the cell's."""

    decode: Codec
    camera_size: tuple[int, int] | None  # (height, width); None: frames come at the cell's resolution
    resolution: tuple[int, int]  # the cell's (height, width), what the resize stage produces

    @property
    def active(self) -> bool:
        return self.decode != "none" or self.camera_size is not None

    @property
    def stages(self) -> tuple[str, ...]:
        """The timed input stages this adds before preprocess, in order."""
        return ("decode",) * (self.decode != "none") + ("resize",) * (self.camera_size is not None)

    def source_size(self) -> tuple[int, int]:
        return self.camera_size or self.resolution

    def encode(self, batch: torch.Tensor) -> list[Any]:
        """One batch (N, H, W, 3) uint8 RGB at the source size as the camera delivers it (outside the clock)."""
        import cv2

        images = [image.numpy() for image in batch]
        if self.decode == "none":
            return images
        flags = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if self.decode == "jpeg" else []
        encoded = []
        for image in images:
            ok, data = cv2.imencode(EXTENSIONS[self.decode], cv2.cvtColor(image, cv2.COLOR_RGB2BGR), flags)
            if not ok:
                raise RuntimeError(f"OpenCV could not encode a {image.shape} frame as {self.decode}")
            encoded.append(data)
        return encoded

    def decoded(self, frame: list[Any]) -> list[np.ndarray]:
        """The decode stage: encoded bytes to RGB arrays (a no-op for raw frames)."""
        import cv2

        if self.decode == "none":
            return frame
        return [cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for data in frame]

    def resized(self, images: list[np.ndarray]) -> torch.Tensor:
        """The resize stage: the camera's size to the cell's resolution, stacked as the (N, H, W, 3) batch."""
        import cv2

        height, width = self.resolution
        if self.camera_size is not None:
            images = [cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR) for image in images]
        return torch.from_numpy(np.stack(images))

    def describe(self) -> str:
        if not self.active:
            return "decoded uint8 frames already at the cell's resolution (no decode, no resize in the clock)"
        source_h, source_w = self.source_size()
        what = f"{self.decode.upper()} bytes" if self.decode != "none" else "decoded uint8 frames"
        steps = []
        if self.decode != "none":
            steps.append("decoded (cv2.imdecode)")
        if self.camera_size is not None:
            steps.append("resized to the cell's resolution (cv2.resize, bilinear)")
        return f"{what} at {source_h}x{source_w}, {' and '.join(steps)} inside the clock"
