"""`segbench env`, `models`, `fit`, `predict` and `selfcheck`: the machine, the zoo and the tools beside a run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.markup import escape
from rich.table import Table

from segbench.cli.app import console, errors, user_errors
from segbench.cli.options import bounded, load_plugins, parse_resolution_flag, split_values
from segbench.cli.quiet import library_output
from segbench.device import is_gpu
from segbench.errors import SegbenchError
from segbench.formatting import fmt_fixed
from segbench.naming import REFERENCE_BACKEND, REFERENCE_PRECISION
from segbench.suite.axes import MAX_SIDE
from segbench.system.env import device_identity, fingerprint, identity_line, resolve_device

if TYPE_CHECKING:
    from segbench.tools.predict import Prediction  # only a type here: importing it at run time imports torch

MAX_FIT_BATCH = 65536  # the search doubles up to it: 17 probes at most
MAX_TIMEOUT_S = 86400.0  # a day: any longer is a mistake, never a probe or a timing
SELFCHECK_MAX_SIDE = 4096  # selfcheck times in this process: a 16k side would allocate gigabytes here


@user_errors
def env(as_json: bool = typer.Option(False, "--json", help="print the raw JSON")) -> None:
    """Print the hardware and software fingerprint stored with every run."""
    data = fingerprint()
    if as_json:
        console.print_json(json.dumps(data, default=str))
        return
    table = Table(show_header=False)
    cpu = data["cpu"]
    rows = [
        ("machine", data["machine"]),
        (
            "cpu",
            f"{cpu['model']} · {cpu['physical_cores']} cores / {cpu['logical_cores']} threads · "
            f"{' '.join(cpu['flags'])}",
        ),
        ("ram", f"{data['ram_gb']} GiB"),
        (
            "gpus",
            "; ".join(
                f"{g['name']} {g['memory_mb'] / 1024:.1f} GiB cc {g['compute_capability']} driver {g['driver']}"
                for g in data["gpus"]
            )
            or "none",
        ),
        ("nvml", data["nvml"]),
        (
            "cuda",
            f"available={data['cuda']['available']} torch build {data['cuda']['torch_cuda_build']} cudnn "
            f"{data['cuda']['cudnn']}",
        ),
        ("torch threads", str(data["torch_threads"])),
        ("packages", ", ".join(f"{k} {v}" for k, v in data["packages"].items() if v)),
        ("segbench", f"{data['segbench']['version']} ({data['segbench']['commit']})"),
    ]
    for key, value in rows:
        table.add_row(key, str(value))
    console.print(table)


PLUGIN_HELP = "a .py file or module that registers your own models (repeatable); see README, 'Benchmark your own model'"


@user_errors
def models(
    pattern: str = typer.Argument("*", help="wildcard, e.g. 'segformer-*'"),
    plugins: Optional[list[str]] = typer.Option(None, "--plugin", metavar="FILE", help=PLUGIN_HELP),
) -> None:
    """List the registered models (exit 1 when none matches the pattern)."""
    from segbench.models.registry import get_card, list_models  # lazy: imports torch

    with library_output():
        load_plugins(plugins)
        names = list_models(pattern)
    if not names:
        errors.print(
            f"no registered model matches {pattern!r}; `segbench models` lists all {len(list_models())}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)
    table = Table()
    for column in ("name", "family", "source", "classes", "label set", "published params (M)", "description"):
        table.add_column(column)
    for name in names:
        card = get_card(name)
        table.add_row(
            *(
                escape(str(text))
                for text in (
                    name,
                    card.family,
                    card.source,
                    card.num_classes,
                    card.dataset,  # what the class count means (SAM's 65 are prompts, not classes)
                    fmt_fixed(2)(card.published_params_m),
                    card.description,
                )
            )
        )
    console.print(table)


def _shape(parsed: int | list[int]) -> tuple[int, int]:
    """A parsed --resolution (a side or [height, width]) as (height, width)."""
    return (parsed, parsed) if isinstance(parsed, int) else (parsed[0], parsed[1])


@user_errors
def fit(
    model: str = typer.Argument(..., help="registered model name"),
    hardware: str = typer.Option(
        ..., "--hardware", help="target card profile, e.g. rtx3060 (see segbench/hardware/profiles)"
    ),
    precision: str = typer.Option(
        REFERENCE_PRECISION, "--precision", help="precision of every probe, e.g. fp16 or int8 (as a suite's precisions)"
    ),
    backend: str = typer.Option(
        REFERENCE_BACKEND, "--backend", help="backend of every probe, e.g. eager or compile (as a suite's backends)"
    ),
    resolution: list[str] = typer.Option(
        ["512", "1024"],
        "--resolution",
        "-r",
        metavar="SIDE|HxW",
        help="resolutions to find the largest batch for, as `run` takes them: 512 or 360x640 (repeatable)",
    ),
    max_batch: int = bounded(256, "--max-batch", low=1, high=MAX_FIT_BATCH, help="largest batch the search tries"),
    max_side: int = bounded(
        4096,
        "--max-side",
        low=32,
        high=MAX_SIDE,
        help="largest square side (px) the batch-1 search tries (32: fit's step)",
    ),
    device: Optional[str] = typer.Option(
        None,
        "--device",
        help="where probes run: cuda or cuda:N (default: the GPU); --device cpu probes host RAM against the budget",
    ),
    timeout: float = bounded(300.0, "--timeout", low=1, high=MAX_TIMEOUT_S, help="seconds per probe cell"),
    plugins: Optional[list[str]] = typer.Option(None, "--plugin", metavar="FILE", help=PLUGIN_HELP),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="show libraries' warnings from the probes on the terminal"
    ),
) -> None:
    """Largest batch per resolution, and largest square side at batch 1, that fit a card's memory budget (isolated
    probes)."""
    from segbench.cell.request import CellRequest  # lazy: imports numpy
    from segbench.hardware import load_profile  # lazy: imports torch
    from segbench.models.registry import get_card  # lazy: imports torch
    from segbench.suite.matrix import CellSpec  # lazy: imports numpy
    from segbench.tools.fit import (  # lazy: imports numpy
        budget_lines,
        check_fit_options,
        fit_search,
        isolated_runner,
        probe_timing,
    )

    shapes = [_shape(parse_resolution_flag(text)) for text in split_values(resolution)]
    with library_output():
        plugin_specs = load_plugins(plugins)
        check_fit_options(
            precision=precision,
            backend=backend,
            resolution=[side for shape in shapes for side in shape],
            max_batch=max_batch,
            max_side=max_side,
            device=device or "auto",
            timeout=timeout,
        )
        get_card(model)
    profile = load_profile(hardware)
    chosen = resolve_device(device or "auto")
    if device is None and not is_gpu(chosen):  # never answer for a card the probes did not see
        raise SegbenchError(
            f"fit: {profile.name} is a GPU's memory budget and this machine has no CUDA device, so the probes would "
            "measure host RAM; run it where the GPU is, or give --device cpu to probe host RAM against that budget"
        )
    timing = probe_timing(timeout)

    def request_for(batch: int, height: int, width: int) -> CellRequest:
        return CellRequest(
            CellSpec(model, (height, width), batch, precision, backend),
            chosen,
            timing,
            10.0,
            None,
            tuple(plugin_specs),
            hardware=hardware,
            probe=True,
        )

    identity = device_identity(chosen, cuda_context=False)  # NVML only: the card's memory stays the probes'
    where = identity_line(identity) if is_gpu(chosen) else "the CPU, in host RAM (no GPU measured)"
    console.print(
        f"fit search: {model} {precision} {backend} on {where}, budget of {profile.name} ({profile.memory_gb} GB)",
        markup=False,
        highlight=False,
    )
    for line in budget_lines(profile, backend, chosen):
        console.print(f"[yellow]{line}[/]" if not line.startswith("budget:") else line, markup=True, highlight=False)
    with library_output(verbose):  # probes inherit the captured stderr: their libraries' warnings stay off the terminal
        table_data = fit_search(
            isolated_runner(request_for, timeout),
            shapes,
            max_batch=max_batch,
            max_side=max_side,
        )
    table_data.device = identity
    limited = profile.name if is_gpu(chosen) else f"{profile.name}'s budget, probed in host RAM on the CPU"
    table = Table(title=f"{model} on {limited} ({table_data.probe_count} isolated probes)")
    for column in ("resolution", "largest batch", "limited by"):
        table.add_column(column)
    for row in table_data.batches:
        table.add_row(f"{row.height}x{row.width}", str(row.largest_batch), str(row.limited_by))
    console.print(table)
    if table_data.square is not None:
        console.print(
            f"largest square side at batch 1: [bold]{table_data.square.largest_side}[/] px (limited by "
            f"{table_data.square.limited_by})"
        )
    if not table_data.fits_anywhere:
        failure = next((row.limit_error for row in table_data.batches if row.limit_error), None)
        errors.print(
            f"nothing fits: even batch 1 failed ({failure or 'see the table'})",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)


def _check_weights(model: str, weights: Path | None) -> None:
    """--weights names a local path (the adapter checks it is a file or folder) or a library's weights name."""
    if weights is None or weights.exists():
        return
    from segbench.models.registry import get_card  # lazy: imports torch
    from segbench.models.weights import named_kind  # lazy: imports torch

    if named_kind(str(weights), get_card(model).source) is None:
        raise SegbenchError(
            f"--weights: not found: {weights} (a local file or folder, or a Hub id / ultralytics asset / "
            "torchvision weights name)"
        )


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f} %"


def _prediction_line(prediction: Prediction, miou: float | str | None) -> str:
    """One line per image: what it found (largest classes, their share), its mIoU where a mask is known, the time,
    the files written."""
    parts = [escape(str(prediction.image)), escape(prediction.classes_text())]
    if miou != "no mask":
        parts.append(f"mIoU {_percent(miou if isinstance(miou, float) else None)}")
    parts.append(f"{prediction.total_ms():.0f} ms")
    return f"{' · '.join(parts)} → {escape(prediction.files_text())}"


def _class_names_flag(text: str | None) -> list[str] | None:
    """--class-names: a comma list, or a file with one name a line."""
    if text is None:
        return None
    source = Path(text)
    if "," not in text and source.is_file():
        try:
            lines = source.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise SegbenchError(f"--class-names {text}: cannot read it ({exc}); give a UTF-8 text file") from None
        names = [line.strip() for line in lines if line.strip()]
    else:
        names = [name.strip() for name in text.split(",")]
    if not names or not all(names):
        raise SegbenchError(f"--class-names {text!r}: an empty name; give one name per class id, e.g. road,sky,car")
    return names


@user_errors
def predict(
    model: str = typer.Argument(..., help="registered model name"),
    images: Optional[list[Path]] = typer.Argument(None, help="one or more image files (or --dataset)"),
    weights: Optional[Path] = typer.Option(
        None,
        "--weights",
        help="local weights, or a Hub id / ultralytics asset / torchvision weights name (random weights without it)",
    ),
    dataset: Optional[Path] = typer.Option(
        None,
        "--dataset",
        help=(
            "a labelled dataset folder: segment its validation images and score them (mIoU, pixel accuracy, per-class "
            "IoU in <out>/accuracy.json)"
        ),
    ),
    out: Path = typer.Option(Path("predictions"), "--out", help="output folder"),
    device: str = typer.Option("auto", "--device", help="where the model runs: auto, cpu, cuda or cuda:N"),
    plugins: Optional[list[str]] = typer.Option(None, "--plugin", metavar="FILE", help=PLUGIN_HELP),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="show libraries' warnings on the terminal instead of <out>/predict.log"
    ),
    max_pixels: int = typer.Option(
        4096 * 4096,
        "--max-pixels",
        min=1,
        max=1 << 30,  # OpenCV decodes at most 2**30 pixels (CV_IO_MAX_IMAGE_PIXELS)
        help="refuse images with more pixels than this (memory grows with image size; at most 2**30)",
    ),
    precision: str = typer.Option(
        REFERENCE_PRECISION, "--precision", metavar="NAME", help="run the model in this precision (as a run's cell)"
    ),
    backend: str = typer.Option(
        REFERENCE_BACKEND, "--backend", metavar="NAME", help="run the model on this backend (as a run's cell)"
    ),
    class_names: Optional[str] = typer.Option(
        None,
        "--class-names",
        metavar="NAMES",
        help="one name per class id: a comma list (road,sky,car) or a text file with one name a line",
    ),
) -> None:
    """Segment real images: class-id map PNG, overlay PNG with a legend and a JSON (names, areas, contours, RLE) per
    image, one line each on the terminal; the stage timing is in the JSON."""
    from segbench.tools.predict import RANDOM_WEIGHTS_WARNING  # lazy: imports torch (and numpy)
    from segbench.tools.predict import predict as run_predict

    labelled = None
    if dataset is not None:
        from segbench.data.datasets import Dataset, DatasetConfig  # lazy: imports numpy

        labelled = Dataset(DatasetConfig(path=dataset))
        images = [*(images or []), *labelled.images(labelled.config.split)]
    if not images:
        raise SegbenchError("predict: give one or more image files, or --dataset FOLDER")
    with library_output(verbose) as chatter:
        load_plugins(plugins)  # first: a plugin's model is known to the weights check below
        _check_weights(model, weights)
        predictions = run_predict(
            model,
            images,
            out,
            weights,
            resolve_device(device),
            class_names=_class_names_flag(class_names),
            max_pixels=max_pixels,
            precision=precision,
            backend=backend,
        )
    renamed = [p for p in predictions if not p.class_map.name.startswith(f"{p.image.stem}.classes.")]
    if renamed:
        errors.print(
            f"note: {len(renamed)} image(s) share a file name with an earlier one; their outputs are numbered, e.g. "
            f"{renamed[0].image} → {renamed[0].class_map.name}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    scored = None
    if labelled is not None:
        from segbench.tools.predict import dataset_accuracy  # lazy: imports torch (and numpy)

        scored = dataset_accuracy(
            labelled, [p for p in predictions if p.image in set(labelled.images(labelled.config.split))], out
        )
    per_image = scored["per_image_miou"] if scored else {}
    for prediction in predictions:
        line = _prediction_line(prediction, per_image.get(str(prediction.image), "no mask"))
        console.print(line, highlight=False, soft_wrap=True)  # one line an image, however long
    if scored is not None:
        console.print(
            f"against {escape(str(dataset))}: mIoU {_percent(scored['miou'])}, pixel accuracy "
            f"{_percent(scored['pixel_accuracy'])} over {scored['images']} images "
            f"({escape(str(out / 'accuracy.json'))})",
            highlight=False,
        )
    if chatter.lines:
        (out / "predict.log").write_text(chatter.text, encoding="utf-8")
        console.print(
            f"{len(chatter.lines)} line(s) of library warnings in {escape(str(out / 'predict.log'))} (--verbose shows "
            "them here)",
            highlight=False,
        )
    if weights is None:
        console.print(f"[yellow]{RANDOM_WEIGHTS_WARNING}[/]")


@user_errors
def selfcheck(
    model: str = typer.Option("fast-scnn", help="registered model to time"),
    resolution: int = bounded(256, "--resolution", low=16, high=SELFCHECK_MAX_SIDE, help="square input side"),
    repeats: int = bounded(5, "--repeats", low=2, high=100, help="repeats of each timing (for the CV of the median)"),
    min_time_s: float = bounded(2.0, "--min-time-s", low=0.1, high=600, help="seconds per timing"),
    device: str = typer.Option("auto", help="cpu, cuda or auto"),
) -> None:
    """Time one model with the harness and with a bare inference_mode loop, in one process; print the overhead ratio."""
    from segbench.tools.selfcheck import run_selfcheck  # lazy: imports torch (and numpy)

    report = run_selfcheck(model, resolution, repeats, min_time_s, resolve_device(device))
    table = Table(title=f"selfcheck: {model} {resolution}x{resolution} on {report.device}")
    for column in ("repeat", "harness median ms", "bare median ms", "ratio"):
        table.add_column(column)
    for index, (harness, bare) in enumerate(zip(report.harness_medians, report.bare_medians), start=1):
        table.add_row(str(index), f"{harness:.3f}", f"{bare:.3f}", f"{harness / bare:.4f}")
    console.print(table)
    console.print(
        f"ratio of medians (harness / bare): [bold]{report.ratio:.4f}[/] (target ≤ {report.ratio_target}) · CV of the "
        f"harness median over {repeats} repeats: [bold]{report.cv_of_median * 100:.2f} %[/], of the bare loop's: "
        f"[bold]{report.bare_cv_of_median * 100:.2f} %[/] (target ≤ {report.cv_target * 100:.0f} %)"
    )
    for failure in report.failures:
        console.print(f"[red]FAIL: {escape(failure)}[/]", highlight=False)
    if not report.passed:
        raise typer.Exit(1)
