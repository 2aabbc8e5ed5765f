"""Bad suites: each mistake gives one line naming the file, the field path and the fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from segbench.errors import SegbenchError, SuiteError
from segbench.suite.schema import load_suite, parse_suite

DROP = object()  # a field to leave out of the suite

BAD_SUITES: list[tuple[str, dict[str, Any], str, str]] = [
    # (kind, fields overriding a valid suite, expected field path, expected fix hint)
    ("misspelt top-level key", {"resolution": [64]}, "resolution", "did you mean 'resolutions'?"),
    ("unknown model", {"models": ["test-tiny", "fast-scnm"]}, "models[1]", "did you mean 'fast-scnn'?"),
    ("impossible resolution", {"resolutions": [64, 0]}, "resolutions", "impossible resolution 0"),
    ("resolution of the wrong shape", {"resolutions": [[64, 64, 3]]}, "resolutions", "[height, width]"),
    (
        "resolution below the model's minimum",
        {"models": ["fast-scnn"], "resolutions": [16]},
        "resolutions[0]",
        "minimum side of 64 px",
    ),
    ("zero batch size", {"batch_sizes": [1, 0]}, "batch_sizes[1]", "greater than 0"),
    ("unknown precision", {"precisions": ["fp32", "fp61"]}, "precisions[1]", "unknown precision 'fp61'"),
    ("unknown backend", {"backends": ["eagre"]}, "backends[0]", "did you mean 'eager'?"),
    ("invalid device", {"device": "gpu"}, "device", "use auto, cpu, cuda or cuda:N"),
    ("misspelt timing key", {"timing": {"warmup_iter": 3}}, "timing.warmup_iter", "did you mean 'warmup_iters'?"),
    ("max below min", {"timing": {"min_iters": 50, "max_iters": 10}}, "timing", "raise max_iters"),
    ("missing models", {"models": DROP}, "models", "required field is missing"),
    ("unknown rule axis", {"exclude": [{"modle": "test-tiny"}]}, "exclude[0].modle", "did you mean 'model'?"),
    (
        "bad model option",
        {"models": [{"name": "test-tiny", "options": {"sleep": 1}}]},
        "models[0].options.sleep",
        "did you mean 'sleep_ms'?",
    ),
    ("negative poll interval", {"memory": {"poll_interval_ms": -1}}, "memory.poll_interval_ms", "greater than 0"),
    ("bad rule resolution", {"include": [{"resolution": -3}]}, "include[0].resolution", "impossible resolution"),
]


@pytest.mark.parametrize("kind, fields, where, hint", BAD_SUITES, ids=[case[0] for case in BAD_SUITES])
def test_bad_suite_gives_one_clear_line(
    write_suite: Callable[..., Path], kind: str, fields: dict[str, Any], where: str, hint: str
) -> None:
    path = write_suite(**{k: v for k, v in fields.items() if v is not DROP})
    if fields.get("models") is DROP:
        path.write_text(path.read_text().replace("models:\n- test-tiny\n", ""))
    with pytest.raises(SuiteError) as caught:
        load_suite(path)
    message = str(caught.value)
    assert len(message.splitlines()) == 1, message
    assert message.startswith(f"{path}: {where}"), message
    assert hint in message, message


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nmodels: [fast-scnn\n")
    with pytest.raises(SuiteError, match=r"broken.yaml: line \d+, column \d+: invalid YAML"):
        load_suite(path)


def test_missing_file_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="suite file not found"):
        load_suite(tmp_path / "nope.yaml")
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(SuiteError, match="must be a mapping"):
        load_suite(listing)


def test_valid_suite_parses_every_field(write_suite: Callable[..., Path]) -> None:
    path = write_suite(
        description="all fields",
        device="cpu",
        threads=2,
        models=["test-tiny", {"name": "test-tiny", "options": {"sleep_ms": 1}}],
        resolutions=[32, [24, 40]],
        batch_sizes=[1, 2],
        precisions=["fp32", "bf16"],
        backends=["eager"],
        include=[{"model": "test-*"}],
        exclude=[{"batch_size": 2, "precision": "bf16"}],
        memory={"poll_interval_ms": 5},
    )
    suite = load_suite(path)
    assert suite.resolutions == [(32, 32), (24, 40)]
    assert suite.models[1].options == {"sleep_ms": 1}
    assert suite.threads == 2 and suite.memory.poll_interval_ms == 5


def test_cli_prints_one_line_and_exits_2(write_suite: Callable[..., Path]) -> None:
    path = write_suite(models=["segformer-b9"])
    done = subprocess.run(
        [sys.executable, "-m", "segbench", "run", str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"{path}: models[0]: unknown model 'segformer-b9'" in lines[0]
    assert "Traceback" not in done.stderr + done.stdout


def test_an_unknown_model_names_the_closest_and_where_the_rest_are_listed() -> None:
    """Issue 33.10: the error dumped 30 names and was cut off; pointing to `segbench models` does."""
    with pytest.raises(SegbenchError) as raised:
        parse_suite({"name": "s", "models": ["yolov8-seg"], "resolutions": [64]}, "test")
    message = str(raised.value)
    assert "did you mean 'yolov8" in message and "also close: " in message
    assert "known: `segbench models` lists them)" in message and "segformer-b5" not in message
