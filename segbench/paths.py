"""The one rule for paths a user writes in a suite or on the command line."""

from __future__ import annotations

from pathlib import Path


def resolve_path(path: Path, base_dir: Path | None) -> Path:
    """A relative path as the user meant it: from the working directory, else from the suite's folder."""
    if path.is_absolute() or path.exists() or base_dir is None:
        return path
    return base_dir / path
