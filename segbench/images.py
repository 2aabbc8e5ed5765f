"""Real photographs for calibration and fidelity: the sample images that scikit-image ships (no download).

Random-noise inputs are fine for timing, but quantization calibration and output agreement need the
statistics of real images, so both use this fixed set, resized to the cell's resolution.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

# Colour photographs bundled inside scikit-image's wheel (skimage/data/*.png|jpg).
PHOTOGRAPHS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina", "motorcycle_left")


@functools.lru_cache(maxsize=1)
def sample_photographs() -> tuple[np.ndarray, ...]:
    import skimage.data

    images = []
    for name in PHOTOGRAPHS:
        try:
            image = getattr(skimage.data, name)()
        except Exception:  # a build of scikit-image without that file: use the others
            continue
        if image.ndim == 3 and image.shape[2] >= 3:
            images.append(np.ascontiguousarray(image[..., :3]))
    if not images:
        raise RuntimeError("scikit-image ships no colour sample photographs in this installation")
    return tuple(images)


def resized(image: np.ndarray, height: int, width: int) -> torch.Tensor:
    tensor = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).float()
    tensor = F.interpolate(tensor, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return tensor.round().clamp(0, 255).to(torch.uint8).squeeze(0).permute(1, 2, 0).contiguous()


def photo_batches(height: int, width: int, batch_size: int, count: int = 8) -> list[torch.Tensor]:
    """`count` photographs at (height, width) as host uint8 batches (N, H, W, 3) of the cell's batch size."""
    photos = sample_photographs()
    frames = [resized(photos[i % len(photos)], height, width) for i in range(max(count, batch_size))]
    batches = [torch.stack(frames[i : i + batch_size]) for i in range(0, len(frames) - batch_size + 1, batch_size)]
    return batches
