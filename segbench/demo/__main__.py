"""`python -m segbench.demo generate|train|evaluate`: the synthetic dataset and the demo weights."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def generate(out: Path = typer.Option(Path("demo-data"), "--out", help="dataset folder (plain layout)")) -> None:
    """Write the synthetic labelled dataset (seeded: always the same pixels)."""
    from segbench.demo.generate import generate as write  # lazy: imports torch (and OpenCV, numpy)

    typer.echo(f"dataset written to {write(out)}")


@app.command()
def train(
    data: Path = typer.Option(Path("demo-data"), "--data", help="dataset folder; generated first when missing"),
    models: list[str] = typer.Option(
        ["fast-scnn", "segformer-b0", "yolov8n-seg"], "--model", help="which demo models to train"
    ),
    threads: int = typer.Option(2, "--threads", help="torch CPU threads"),
) -> None:
    """Train the demo models and write their fp16 weights into segbench/demo/weights/."""
    import torch

    from segbench.demo.generate import generate as write  # lazy: imports torch (and OpenCV, numpy)
    from segbench.demo.recipes import RECIPES  # lazy: imports torch (and OpenCV, numpy)
    from segbench.demo.recipes import train as run  # lazy: imports torch (and OpenCV, numpy)

    torch.set_num_threads(threads)
    if not (data / "images").is_dir():
        write(data)
    for name in models:
        if name not in RECIPES:
            raise typer.BadParameter(f"no demo recipe for {name!r}; known: {', '.join(RECIPES)}")
        run(RECIPES[name], data, log=typer.echo)


@app.command()
def evaluate(data: Path = typer.Option(Path("demo-data"), "--data")) -> None:
    """Validation mIoU of the committed demo weights."""
    from segbench.demo.recipes import RECIPES  # lazy: imports torch (and OpenCV, numpy)
    from segbench.demo.train import demo_options, load_split  # lazy: imports torch (and OpenCV, numpy)
    from segbench.demo.train import evaluate as score  # lazy: imports torch (and OpenCV, numpy)
    from segbench.models.registry import create_model  # lazy: imports torch

    images, masks = load_split(data, "val")
    for recipe in RECIPES.values():
        if not recipe.weights_file.exists():
            typer.echo(f"{recipe.model}: {recipe.weights_file.name} not trained yet (python -m segbench.demo train)")
            continue
        adapter = create_model(recipe.model, recipe.weights_file, demo_options())
        adapter.build("cpu")
        result = score(adapter, images, masks)
        typer.echo(f"{recipe.model}: mIoU {result['miou']:.4f}, pixel accuracy {result['pixel_accuracy']:.4f}")


if __name__ == "__main__":
    app()
