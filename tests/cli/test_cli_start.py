"""Issue 17: runs without YAML, your own model from the README, CLI conventions, dry runs, a quiet terminal."""

from __future__ import annotations

import json
import re
import shlex
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import pytest
import skimage.data
import torch
import typer.main
import yaml
from typer.testing import CliRunner

from segbench.cli.main import app
from segbench.cli.options import parse_resolution_flag, split_values, suite_from_flags
from segbench.cli.quiet import library_output
from segbench.errors import SegbenchError, SuiteError
from segbench.run.dryrun import DEFAULT_STARTUP_S, estimate_wall_time, plan_cells
from segbench.suite.matrix import expand
from segbench.suite.schema import load_suite, parse_suite
from segbench.system.env import fingerprint
from tests.helpers import FAST_TIMING, FAULT_PLUGIN, REPO, segbench

FAST_OVERRIDES = [f"timing.{key}={value}" for key, value in FAST_TIMING.items()] + ["roofline.measure_ceiling=false"]
runner = CliRunner()


def set_flags(overrides: list[str]) -> list[str]:
    return [part for override in overrides for part in ("-s", override)]


# ---- 1. runs without a suite file, and -s overrides ------------------------------------------------


def test_run_from_flags_keeps_an_equivalent_resumable_suite_and_a_quiet_terminal(tmp_path: Path) -> None:
    # A plugin that chatters on stderr at import, as torchao does: the parent's copy goes to logs/segbench.log,
    # each cell's to the cell's log; the terminal shows neither.
    chatty = tmp_path / "chatty_models.py"
    chatty.write_text(
        "import sys, warnings\n"
        "print('W1125 third-party chatter on stderr', file=sys.stderr)\n"
        "warnings.warn('a library UserWarning')\n"
        # The test models, loaded as segbench loads that plugin (so this process registers them once).
        f"from segbench.models.registry import load_plugin\nload_plugin({FAULT_PLUGIN!r})\n"
    )
    out = tmp_path / "out"
    args = [
        "run",
        "--plugin",
        str(chatty),
        "--model",
        "test-tiny",
        "-r",
        "16,16x24",
        "--batch",
        "1",
        "--device",
        "cpu",
        "--out",
        str(out),
        *set_flags(FAST_OVERRIDES),
    ]
    done = segbench(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "chatter" not in done.stdout + done.stderr and "UserWarning" not in done.stdout + done.stderr
    [run_dir] = out.iterdir()
    assert run_dir.name.startswith("test-tiny-")
    records = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["ok", "ok"] and sorted(r["resolution"] for r in records) == [
        [16, 16],
        [16, 24],
    ]
    assert "chatter" in (run_dir / "logs" / "segbench.log").read_text()
    assert any("chatter" in log.read_text() for log in (run_dir / "logs").glob("*.log") if log.name != "segbench.log")
    # The kept suite.yaml is a real suite with the same cells: the run can be repeated from it.
    kept = load_suite(run_dir / "suite.yaml")
    assert {cell.cell_id for cell in expand(kept)} == {r["cell_id"] for r in records}
    assert kept.timing.min_time_s == FAST_TIMING["min_time_s"] and kept.plugins == [str(chatty.resolve())]
    # …and resumed without naming a suite: the run folder's suite.yaml is used, nothing is rerun.
    resumed = segbench("run", "--resume", str(run_dir), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "2 already finished, skipped" in resumed.stdout
    assert len((run_dir / "results.jsonl").read_text().splitlines()) == 2


def test_axis_flags_are_repeatable_and_comma_separated() -> None:
    assert split_values(["1,4", "8", " 16 , "]) == ["1", "4", "8", "16"]
    assert parse_resolution_flag("512") == 512 and parse_resolution_flag("360x640") == [360, 640]
    data = suite_from_flags(
        ["fast-scnn,segformer-b0"], ["512", "360x640"], ["1,4"], ["fp32,fp16", "int8"], [], "cpu", None, ["rtx3060"], []
    )
    suite = parse_suite(data, "command line")
    assert [m.name for m in suite.models] == ["fast-scnn", "segformer-b0"]
    assert suite.resolutions == [(512, 512), (360, 640)] and suite.batch_sizes == [1, 4]
    assert suite.precisions == ["fp32", "fp16", "int8"] and suite.backends == ["eager"] and suite.hardware == "rtx3060"
    assert len(expand(suite)) == 2 * 2 * 2 * 3
    for bad, field in ((["0"], "--resolution"), (["360xabc"], "--resolution")):
        with pytest.raises(SegbenchError, match=field):
            suite_from_flags(["fast-scnn"], bad, [], [], [], None, None, [], [])
    with pytest.raises(SegbenchError, match="--batch: 'x' is not a whole number"):
        suite_from_flags(["fast-scnn"], [], ["x"], [], [], None, None, [], [])
    with pytest.raises(SegbenchError, match="--weights: belongs to one model"):
        suite_from_flags(["fast-scnn,segformer-b0"], [], [], [], [], None, Path("w.pt"), [], [])


def test_each_model_takes_its_own_weights_on_the_command_line(tmp_path: Path) -> None:
    """Issue 33.2: `--weights` applied to one `--model` only, so two trained models needed a suite file."""
    first, second = tmp_path / "a.pt", tmp_path / "b.pt"
    data = suite_from_flags(
        [f"fast-scnn={first}", f"segformer-b0={second}", "yolov8n-seg"], [], [], [], [], "cpu", None, [], []
    )
    assert data["models"] == [
        {"name": "fast-scnn", "weights": str(first)},
        {"name": "segformer-b0", "weights": str(second)},
        "yolov8n-seg",
    ]
    for bad in ("=a.pt", "fast-scnn="):
        with pytest.raises(SegbenchError, match="needs a name and weights either side of '='"):
            suite_from_flags([bad], [], [], [], [], None, None, [], [])
    with pytest.raises(SegbenchError, match="names its weights .* give them once"):
        suite_from_flags([f"fast-scnn={first}"], [], [], [], [], None, first, [], [])
    with pytest.raises(SegbenchError, match="--model: no model name given"):
        suite_from_flags([""], [], [], [], [], None, None, [], [])
    done = runner.invoke(app, ["run", "--model", f"fast-scnn={first}", "--dry-run"])
    assert done.exit_code == 2 and "weights" in done.stderr and str(first) in done.stderr  # checked like a suite file


def test_flag_mistakes_get_the_schemas_one_line_errors(tmp_path: Path) -> None:
    done = runner.invoke(app, ["run", "--model", "fast-scnn", "--precision", "fp61", "--batch", "0", "--dry-run"])
    assert done.exit_code == 2
    lines = done.stderr.strip().splitlines()
    assert lines == ["error: command line: batch_sizes[0]: Input should be greater than 0 (got 0)"], done.stderr
    done = runner.invoke(app, ["run", "--model", "fast-scnn", "--precision", "fp61", "--dry-run"])
    assert (
        done.exit_code == 2
        and "command line: precisions[0]: unknown precision 'fp61' (did you mean 'fp16'?" in done.stderr
    )
    done = runner.invoke(app, ["run", "--precision", "fp16"])
    assert done.exit_code == 2 and "--precision: these build a suite from flags and need --model" in done.stderr


def test_overrides_are_validated_by_the_suite_schema(write_suite: Callable[..., Path]) -> None:
    path = write_suite()
    suite = load_suite(path, ["timing.min_time_s=0.5", "batch_sizes=[1,8]", "name=renamed"])
    assert suite.timing.min_time_s == 0.5 and suite.batch_sizes == [1, 8] and suite.name == "renamed"
    assert suite.timing.max_iters == FAST_TIMING["max_iters"]  # the rest of timing is kept
    with pytest.raises(SuiteError, match=r"timing\.min_tme_s: unknown key 'min_tme_s' \(did you mean 'min_time_s'"):
        load_suite(path, ["timing.min_tme_s=5"])
    with pytest.raises(SuiteError, match=r"batch_sizes\[0\]: Input should be greater than 0"):
        load_suite(path, ["batch_sizes=[0]"])
    with pytest.raises(SuiteError, match="expected KEY=VALUE"):
        load_suite(path, ["timing.min_time_s"])
    with pytest.raises(SuiteError, match="'name' is not a mapping"):
        load_suite(path, ["name.first=x"])
    # On the command line: exit 2, one line, and the run folder keeps the overridden suite.
    done = runner.invoke(app, ["run", str(path), "-s", "timing.min_tme_s=5"])
    assert (
        done.exit_code == 2
        and len(done.stderr.strip().splitlines()) == 1
        and "did you mean 'min_time_s'" in done.stderr
    )


# ---- 2. your own model: the README's adapter, run as printed -----------------------------------------


def _readme_section(title: str) -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(f"### {title}")
    end = text.index("\n### ", start + 1)
    return text[start:end]


def test_the_readme_adapter_runs_exactly_as_printed(tmp_path: Path) -> None:
    section = _readme_section("Benchmark your own model")
    [code] = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    [commands] = re.findall(r"```bash\n(.*?)```", section, re.DOTALL)
    assert 15 <= len(code.strip().splitlines()) <= 30, "about twenty lines"
    (tmp_path / "my_models.py").write_text(code)
    cv2.imwrite(str(tmp_path / "photo.jpg"), cv2.resize(skimage.data.coffee(), (160, 96))[..., ::-1])
    lines = [shlex.split(line.split("#")[0] if " # " in line else line) for line in commands.strip().splitlines()]
    models_cmd, run_cmd, predict_cmd = (line[1:] for line in lines)

    listed = segbench(*models_cmd, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "my-segnet" in listed.stdout and "my_models.py" in listed.stdout
    # The run line as printed, made quick with -s (the adapter is what this test checks).
    ran = segbench(*run_cmd, *set_flags(FAST_OVERRIDES), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    [run_dir] = (tmp_path / "out").iterdir()
    records = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert [(r["status"], r["batch_size"]) for r in records] == [("ok", 1), ("ok", 2)] and all(
        r["family"] == "my-segnet" for r in records
    )
    # predict with the plugin prints one line for the image (issue 33.10: what it found, its time, the files) and
    # keeps the terminal clear of library warnings; each stage's time (item 5) is in the JSON.
    predicted = segbench(*predict_cmd, "--out", str(tmp_path / "pred"), "--device", "cpu", cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    assert re.search(r"photo\.jpg · class \d+ [\d.]+ %.* · \d+ ms → .*photo\.\{classes\.png", predicted.stdout)
    assert predicted.stderr.strip() == ""  # the README model has no class names: "class N"
    summary = json.loads((tmp_path / "pred" / "photo.json").read_text())
    assert summary["num_classes"] == 19 and set(summary["timing_ms"]) == {
        "read",
        "preprocess",
        "forward",
        "postprocess",
    }


def test_predict_names_the_largest_classes() -> None:
    import numpy as np

    from segbench.tools.predict import top_classes

    labels = np.array([[0, 0, 0, 2], [2, 2, 0, 1]])
    assert top_classes(labels, {0: "road", 1: "sky", 2: "car"}) == (("road", 0.5), ("car", 0.375), ("sky", 0.125))
    assert top_classes(labels, None, count=1) == (("class 0", 0.5),)


def test_the_adapter_contract_is_documented_where_users_look() -> None:
    from segbench.models import base

    doc = (REPO / "docs" / "adapters.md").read_text()
    for method in (
        "build_module",
        "preprocess",
        "forward",
        "logits",
        "postprocess",
        "read_weights",
        "load_weights",
        "constraints",
        "options_schema",
    ):
        assert f"`{method}" in doc and method in (base.__doc__ or "")
    assert "docs/adapters.md" in _readme_section("Benchmark your own model")


def test_plugin_option_on_models_fit_and_predict() -> None:
    command = typer.main.get_command(app)
    assert hasattr(command, "commands")  # typer's group (typer vendors its own click)
    for name in ("run", "models", "predict", "fit"):
        assert "--plugin" in [opt for param in command.commands[name].params for opt in param.opts], name
    done = runner.invoke(app, ["models", "test-*", "--plugin", FAULT_PLUGIN])
    assert done.exit_code == 0 and "test-tiny" in done.stdout
    done = runner.invoke(app, ["models", "--plugin", "missing_file.py"])
    assert done.exit_code == 2 and "--plugin: file not found: missing_file.py" in done.stderr


# ---- 3. CLI conventions ------------------------------------------------------------------------------


def test_version_short_help_flags_and_help_on_every_option() -> None:
    from segbench import __version__

    done = runner.invoke(app, ["--version"])
    assert done.exit_code == 0 and done.stdout.strip() == f"segbench {__version__}"
    command = typer.main.get_command(app)
    assert hasattr(command, "commands")  # typer's group (typer vendors its own click)
    for name, sub in command.commands.items():
        shown = runner.invoke(app, [name, "-h"], terminal_width=200)
        assert shown.exit_code == 0 and "Usage:" in shown.stdout, name
        assert "<bool>" not in shown.stdout, f"{name}: a flag is shown as taking a value"
        for param in sub.params:
            assert getattr(param, "help", None), f"{name} {param.opts}: no help text"


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--precision", "fp61"], "error: --precision: unknown precision 'fp61' (did you mean 'fp16'?"),
        (["--backend", "eagre"], "error: --backend: unknown backend 'eagre' (did you mean 'eager'?"),
        (["--max-batch", "0"], "error: --max-batch: Input should be greater than or equal to 1"),
        (["--timeout", "0"], "error: --timeout: Input should be greater than or equal to 1"),
        (["--timeout", "inf"], "error: --timeout: Input should be less than or equal to 86400"),
        (["--resolution", "-5"], "error: --resolution: impossible side -5 in '-5'; each side must be between 1 and"),
        (["--resolution", "360xabc"], "error: --resolution: 'abc' is not a whole number; e.g. 512 or 360x640"),
        (["--device", "gpu"], "error: --device: invalid device 'gpu'; use auto, cpu, cuda or cuda:N"),
    ],
)
def test_fit_refuses_bad_options_before_any_probe(
    flags: list[str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_probe(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a probe ran before the options were checked")

    monkeypatch.setattr("segbench.tools.fit.fit_search", no_probe)
    done = runner.invoke(app, ["fit", "fast-scnn", "--hardware", "rtx3060", "--device", "cpu", *flags])
    assert done.exit_code == 2, done.output
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and done.stderr.startswith(expected), done.stderr


def test_models_without_a_match_exits_1_saying_so() -> None:
    done = runner.invoke(app, ["models", "nothing*"])
    assert done.exit_code == 1
    assert "no registered model matches 'nothing*'" in done.stderr and done.stdout == ""


# ---- 4. dry runs that inform ---------------------------------------------------------------------------


def test_dry_run_marks_unsupported_cells_and_estimates_without_spawning(
    write_suite: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_cell(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a dry run spawned a cell")

    monkeypatch.setattr("segbench.run.isolation.execute_isolated", no_cell)
    path = write_suite(precisions=["fp32", "tf32"], batch_sizes=list(range(1, 31)))
    done = runner.invoke(app, ["run", str(path), "--dry-run", "--out", str(tmp_path / "none")], terminal_width=250)
    assert done.exit_code == 0, done.output
    assert "60 cell(s), 30 unsupported on cpu" in done.stdout
    assert "unsupported: tf32 needs an NVIDIA GPU" in done.stdout
    assert "20 more cell(s); --verbose lists them all" in done.stdout  # 60 rows summarised to 40
    assert "estimated wall time:" in done.stdout and "the estimate rests on:" in done.stdout
    assert f"default startup of {DEFAULT_STARTUP_S:g} s per cell for test" in done.stdout


def _earlier_run(folder: Path, records: list[dict[str, Any]], machine: dict[str, Any]) -> None:
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"fingerprint": machine}))
    (folder / "results.jsonl").write_text("".join(f"{json.dumps(record)}\n" for record in records) + "{torn line\n")


EARLIER_CELL = {
    "status": "ok",
    "family": "test",
    "precision": "fp32",
    "backend": "eager",
    "device": "cpu",
    "wall_s": 20.0,
    "measured_s": 1.0,
}


def test_the_estimate_rests_on_earlier_runs_of_the_family(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    suite = load_suite(write_suite(batch_sizes=[1, 2]))
    on_a_gpu = {**EARLIER_CELL, "device": "cuda:0", "wall_s": 500.0}  # another kind of device: not this run's cost
    _earlier_run(tmp_path / "results" / "earlier-run", [EARLIER_CELL, on_a_gpu], fingerprint())
    plan = plan_cells(suite, expand(suite))
    estimate = estimate_wall_time(suite, plan, tmp_path / "results")
    timing = suite.timing
    startup = 20.0 - 2 * 1.0  # wall minus the two timed passes of the earlier cell
    assert estimate.low_s == pytest.approx(2 * (startup + 2 * timing.min_time_s))
    assert estimate.high_s == pytest.approx(2 * (startup + 2 * timing.max_time_s))
    basis = estimate.basis
    assert any("1 earlier cpu cell record(s) made on this machine" in part and "test" in part for part in basis)


def test_the_estimate_ignores_other_machines_records(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    """Issue 33.7: the dry run learnt start-up from the repository's committed Xeon and H200 records, estimating
    8 min 17 s for a run that took 1 min 13 s. Only this machine's records count; the basis says what it left out."""
    suite = load_suite(write_suite(batch_sizes=[1, 2]))
    here = fingerprint()
    another_cpu = {**here, "cpu": {**here["cpu"], "model": "AMD EPYC 9B45", "flags": ["avx2"]}}
    _earlier_run(tmp_path / "results" / "elsewhere", [{**EARLIER_CELL, "wall_s": 400.0}], another_cpu)
    _earlier_run(tmp_path / "results" / "no-meta", [{**EARLIER_CELL, "wall_s": 300.0}], here)
    (tmp_path / "results" / "no-meta" / "meta.json").unlink()  # a machine nobody recorded is not this one
    estimate = estimate_wall_time(suite, plan_cells(suite, expand(suite)), tmp_path / "results")
    timing = suite.timing
    assert estimate.low_s == pytest.approx(2 * (DEFAULT_STARTUP_S + 2 * timing.min_time_s))
    assert any("2 cpu cell record(s)" in part and "from other machines left out" in part for part in estimate.basis)
    assert any("no earlier cpu run of that family on this machine" in part for part in estimate.basis)


def test_the_estimate_spans_a_warm_and_a_cold_prepare_cache(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    """Issue 33.7: a cell whose export is cached starts in seconds, one that exports takes a minute: the low estimate
    takes the cache hits' start-up, the high one the misses'."""
    suite = load_suite(write_suite(batch_sizes=[1]))
    hit = {**EARLIER_CELL, "wall_s": 6.0, "prepare_cache": "hit"}
    miss = {**EARLIER_CELL, "wall_s": 62.0, "prepare_cache": "miss"}
    _earlier_run(tmp_path / "results" / "earlier-run", [hit, miss], fingerprint())
    estimate = estimate_wall_time(suite, plan_cells(suite, expand(suite)), tmp_path / "results")
    timing = suite.timing
    assert estimate.low_s == pytest.approx(6.0 - 2 + 2 * timing.min_time_s)
    assert estimate.high_s == pytest.approx(62.0 - 2 + 2 * timing.max_time_s)


def test_the_estimate_counts_the_end_to_end_warm_up(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    """The latency pass warms up for timing.warmup_s too (issue 27 item 4): two warm-ups per cell."""

    def estimate(warmup_s: float) -> Any:
        suite = load_suite(write_suite(f"w{warmup_s:g}.yaml", timing={**FAST_TIMING, "warmup_s": warmup_s}))
        return estimate_wall_time(suite, plan_cells(suite, expand(suite)), tmp_path / "no-results")

    without, with_warmup = estimate(0.0), estimate(2.0)
    gpu = load_suite(write_suite("gpu.yaml", device="cuda", timing={**FAST_TIMING, "telemetry_s": 1.5}))
    on_gpu = estimate_wall_time(gpu, plan_cells(gpu, expand(gpu)), tmp_path / "no-results")
    # issue 27 items 1-2: a GPU cell adds its device-throughput loop and its telemetry pass
    assert on_gpu.low_s == pytest.approx(without.low_s + FAST_TIMING["min_time_s"] + 1.5)
    assert with_warmup.low_s == pytest.approx(without.low_s + 2 * 2.0) and "timing.warmup_s=2 s" in str(
        with_warmup.basis
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the warning on a machine without CUDA")
def test_dry_run_warns_when_the_device_is_unavailable(write_suite: Callable[..., Path]) -> None:
    done = runner.invoke(app, ["run", str(write_suite(device="cuda")), "--dry-run"])
    assert done.exit_code == 0, done.output
    assert "warning: device 'cuda' is not available here" in done.stderr and "CUDA is not available" in done.stderr
    assert "estimated wall time" in done.stdout


# ---- 5. a quiet terminal -------------------------------------------------------------------------------


def test_library_output_is_captured_at_the_descriptor_level(capfd: pytest.CaptureFixture[str]) -> None:
    import os

    with library_output() as captured:
        os.write(2, b"W1125 12:00:00 C-level chatter\n")
        warnings.warn("python-level chatter", UserWarning, stacklevel=1)
    assert capfd.readouterr().err == ""
    assert "C-level chatter" in captured.text and "python-level chatter" in captured.text
    with library_output(verbose=True) as shown:
        os.write(2, b"shown when verbose\n")
    assert "shown when verbose" in capfd.readouterr().err and shown.text == ""
    # A user's mistake keeps the terminal to its one line; a crash shows what libraries said before it.
    with pytest.raises(SegbenchError), library_output():
        os.write(2, b"noise before a user error\n")
        raise SegbenchError("bad input")
    assert "noise" not in capfd.readouterr().err
    with pytest.raises(KeyboardInterrupt), library_output():
        os.write(2, b"context before a crash\n")
        raise KeyboardInterrupt
    assert "context before a crash" in capfd.readouterr().err


def test_suite_yaml_written_for_flags_round_trips() -> None:
    from segbench.suite.schema import dump_suite

    data = suite_from_flags(["fast-scnn"], ["360x640"], ["1,2"], [], [], "cpu", None, [], [])
    assert yaml.safe_load(dump_suite(data)) == data


def test_a_weights_key_mismatch_is_one_short_line(tmp_path: Path) -> None:
    from torch import nn

    from segbench.errors import WeightsError
    from segbench.models._common import strict_load

    module = nn.Sequential(*(nn.Linear(2, 2) for _ in range(10)))  # 20 tensors, none in the file
    with pytest.raises(WeightsError) as error:
        strict_load("my-model", module, {"backbone.stem.weight": torch.zeros(1)}, tmp_path / "w.pt")
    message = str(error.value)
    assert (
        "20 missing key(s): 0.bias, 0.weight, 1.bias, … 17 more; 1 unexpected key(s): backbone.stem.weight" in message
    )
    assert len(message.splitlines()) == 1 and "9.weight" not in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks fit's refusal on a machine without CUDA")
def test_fit_never_answers_for_a_card_it_did_not_see(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 33.6: `fit yolov8n-seg --hardware rtx3060` without CUDA spent 54 s and printed "largest batch 8" from
    host-RAM probes. It stops at once unless --device cpu is explicit, and then says what limited it."""

    def no_probe(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a probe ran for a card this machine does not have")

    monkeypatch.setattr("segbench.tools.fit.fit_search", no_probe)
    refused = runner.invoke(app, ["fit", "fast-scnn", "--hardware", "rtx3060"])
    assert refused.exit_code == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.output
    assert "this machine has no CUDA device" in refused.stderr and "--device cpu" in refused.stderr

    from segbench.tools.fit import BatchFit, FitTable

    seen: list[Any] = []

    def table(prober: Any, shapes: list[tuple[int, int]], **kwargs: Any) -> Any:
        seen.extend(shapes)
        return FitTable([BatchFit(h, w, 2, "budget", None) for h, w in shapes], None)

    monkeypatch.setattr("segbench.tools.fit.fit_search", table)
    done = runner.invoke(
        app, ["fit", "fast-scnn", "--hardware", "rtx3060", "--device", "cpu", "-r", "360x640"], terminal_width=200
    )
    assert done.exit_code == 0, done.output
    flowing = " ".join(done.stdout.split())  # the table's title wraps to the table's width
    assert seen == [(360, 640)] and "rtx3060's budget, probed in host RAM on the CPU" in flowing


def test_fit_exits_1_when_nothing_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    from segbench.tools.fit import BatchFit, FitTable

    nothing = FitTable([BatchFit(64, 64, 0, "error", "RuntimeError: the model failed")], None)
    monkeypatch.setattr("segbench.tools.fit.fit_search", lambda *args, **kwargs: nothing)
    done = runner.invoke(app, ["fit", "fast-scnn", "--hardware", "rtx3060", "--device", "cpu", "--resolution", "64"])
    assert done.exit_code == 1
    assert "nothing fits: even batch 1 failed (RuntimeError: the model failed)" in done.stderr


def test_verbose_shows_a_failed_cells_traceback_and_the_default_shows_one_line() -> None:
    from rich.console import Console
    from rich.progress import Progress

    from segbench.cli.run import ProgressObserver
    from segbench.suite.matrix import CellSpec

    record = {
        "status": "error",
        "error": "ValueError: the last line",
        "traceback": "Traceback (most recent call last):\n  File x\nValueError: the last line",
    }
    cell = CellSpec("test-tiny", (16, 16), 1, "fp32", "eager")
    for verbose, shows_traceback in ((False, False), (True, True)):
        console = Console(record=True, width=200)
        with Progress(console=console, transient=True) as progress:
            observer = ProgressObserver(progress, verbose)
            observer.run_started(Path("run"), [cell], 0)
            observer.cell_finished(cell, record)
        text = console.export_text()
        assert "error: ValueError: the last line" in text
        assert ("Traceback (most recent call last)" in text) is shows_traceback


def test_fit_loads_a_plugin_into_its_probes_and_keeps_their_chatter_off_the_terminal(tmp_path: Path) -> None:
    chatty = tmp_path / "chatty_models.py"
    chatty.write_text(
        "import sys\nprint('W1125 probe chatter', file=sys.stderr)\n"
        f"from segbench.models.registry import load_plugin\nload_plugin({FAULT_PLUGIN!r})\n"
    )
    done = segbench(
        "fit",
        "test-tiny",
        "--plugin",
        str(chatty),
        "--hardware",
        "rtx3060",
        "--device",
        "cpu",
        "--resolution",
        "16",
        "--max-batch",
        "2",
        "--max-side",
        "64",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "16x16" in done.stdout and "max_batch" in done.stdout  # both batches fit: the search stopped at the cap
    assert "chatter" not in done.stdout + done.stderr


def test_the_one_line_cli_keeps_only_pairs_that_can_run(tmp_path: Path) -> None:
    """Issue 33.1: `--precision fp32,fp16,bf16,int8,ort-int8,ov-int8 --backend eager,onnxruntime,openvino` listed 36
    cells, every one "will run: yes", and ort-int8/ov-int8 on eager then ended unsupported at run time."""
    done = runner.invoke(
        app,
        [
            "run", "--model", "yolov8n-seg", "--device", "cpu", "-r", "64",
            "--precision", "fp32,fp16,bf16,int8,ort-int8,ov-int8", "--backend", "eager,onnxruntime,openvino",
            "--dry-run",
        ],
        terminal_width=300,
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    for pair in ("ort-int8 on eager", "ov-int8 on onnxruntime", "int8 on openvino", "fp16 on onnxruntime"):
        assert f"left out: {pair}: " in done.stdout
    assert "ort-int8 on eager: ort-int8 runs only on backend onnxruntime" in done.stdout
    table = [line for line in done.stdout.splitlines() if line.startswith("│") and "yolov8n-seg" in line]
    assert not any(" ort-int8 " in line and " eager " in line for line in table)
    assert any(" ort-int8 " in line and " onnxruntime " in line for line in table)
    assert all("unsupported" not in line for line in table)  # none left to fail at run time on this CPU
    fp16_eager = next(line for line in table if " fp16 " in line and " eager " in line)
    assert "impractical" in fp16_eager  # asked for explicitly: it runs, and the dry run says what it is


def test_all_paths_tries_every_pair_this_device_runs(tmp_path: Path) -> None:
    """Issue 33.1: a preset for all valid paths, as `yolo benchmark` runs every format a model supports."""
    flags = ["--model", "fast-scnn", "--device", "cpu", "-r", "64", "--all-paths", "--dry-run"]
    done = runner.invoke(app, ["run", *flags], terminal_width=300)
    assert done.exit_code == 0, done.output
    rows = [line.split("│") for line in done.stdout.splitlines() if line.startswith("│") and "fast-scnn" in line]
    pairs = {(cells[6].strip(), cells[7].strip()) for cells in rows}
    assert {("fp32", "eager"), ("ort-int8", "onnxruntime"), ("ov-int8", "openvino"), ("int8", "compile")} <= pairs
    assert not any(backend.startswith(("ultralytics", "hf-")) for _, backend in pairs)  # peers, not segbench's paths
    assert ("fp16", "eager") not in pairs and "left out: fp16 on eager: fp16 on a CPU is emulated" in done.stdout
    # autocast to a dtype this CPU only emulates is no deployment choice either (amp-fp16 without avx512_fp16)
    from segbench.system.env import cpu_flags

    if not {"avx512_fp16", "amx_fp16"} & set(cpu_flags()):
        assert not any(precision == "amp-fp16" for precision, _ in pairs) and "left out: amp-fp16 on" in done.stdout
    # A cast OpenVINO would have to compute in a precision this CPU lacks is refused by the cell: left out here too.
    import openvino as ov

    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        assert ("bf16", "openvino") not in pairs and "left out: bf16 on openvino: bf16 on OpenVINO needs" in done.stdout
    if "FP16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        assert ("fp16", "openvino-throughput") not in pairs
    assert all("unsupported" not in "│".join(cells) for cells in rows)
    clash = runner.invoke(app, ["run", "--model", "fast-scnn", "--all-paths", "--precision", "fp32", "--dry-run"])
    assert clash.exit_code == 2 and "--all-paths: needs --model and replaces --precision" in clash.stderr
