"""Device names as suites, flags and records write them: the one test of "is this a GPU"."""

from __future__ import annotations

import re

DEVICE_NAME_PATTERN = r"^(auto|cpu|cuda|cuda:\d+)$"  # what a suite's `device:` and `--device` accept


def is_device_name(name: str) -> bool:
    return re.match(DEVICE_NAME_PATTERN, name) is not None


def is_gpu(device: object) -> bool:
    """'cuda' and 'cuda:N' (a name, a record's field or a torch.device) are GPUs; 'cpu', 'auto' and None are not."""
    name = str(device or "")
    return name == "cuda" or name.startswith("cuda:")


def gpu_index(device: object) -> int:
    """The N of 'cuda:N'; 0 for a bare 'cuda'."""
    _, _, index = str(device or "").partition(":")
    return int(index) if index.isdigit() else 0
