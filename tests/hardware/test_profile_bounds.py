"""A card profile's figures are finite, positive and consistent, checked by the profile schema itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from segbench.hardware.profiles import PROFILE_DIR, HardwareError, load_profile_file
from tests.helpers import segbench


def write_card(tmp_path: Path, **changes: Any) -> Path:
    data = yaml.safe_load((PROFILE_DIR / "rtx3060.yaml").read_text()) | {"name": "mycard"} | changes
    path = tmp_path / "mycard.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"memory_gb": float("inf"), "cuda_total_mb": None}, "memory_gb: Input should be a finite number"),
        ({"memory_bandwidth_gbs": float("nan")}, "memory_bandwidth_gbs: Input should be a finite number"),
        ({"fp32_tflops": 1e300}, "fp32_tflops: Input should be less than or equal to"),
        ({"cuda_context_mb": 1e6}, "cuda_context_mb: 1e+06 MiB is not smaller than the card's 12042 MiB"),
        ({"cuda_context_mb": 13000, "cuda_total_mb": None}, "cuda_context_mb: 13000 MiB is not smaller"),
        ({"cuda_total_mb": 20000}, "cuda_total_mb: 20000 MiB is more than memory_gb"),
    ],
)
def test_an_impossible_figure_is_refused_in_one_line(tmp_path: Path, changes: dict[str, Any], expected: str) -> None:
    """Issue 34 item 16: profiles accepted infinite memory and a CUDA context larger than the card."""
    path = write_card(tmp_path, **changes)
    with pytest.raises(HardwareError) as error:
        load_profile_file(path)
    [line] = str(error.value).splitlines()
    assert str(path) in line and expected in line, line


def test_fit_with_a_context_larger_than_the_card_says_which_field(tmp_path: Path) -> None:
    """Issue 34 item 16: `fit` printed a 300-digit negative budget for such a profile; now one line, exit 2."""
    path = write_card(tmp_path, cuda_context_mb=1e300)
    done = segbench("fit", "fast-scnn", "--hardware", str(path))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    [line] = done.stderr.strip().splitlines()
    assert "cuda_context_mb" in line and len(line) < 400, line
