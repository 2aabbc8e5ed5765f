"""Persistent caches for what a cell prepares: inductor's compiled code, ONNX exports, quantized ONNX graphs,
PT2E int8 programs, OpenVINO models (converted and NNCF-quantized) and OpenVINO's compiled blobs.

Where: `--cache-dir`, else `$SEGBENCH_CACHE_DIR`, else the platform's user cache directory
(platformdirs: ~/.cache/segbench on Linux). `--no-cache` (`SEGBENCH_NO_CACHE=1`) turns every cache
off, inductor's included (it then compiles into a fresh temporary directory).

An entry is a folder named by the hash of its key: the model, a hash of its weights, resolution,
batch, precision, backend, the device type and the versions of torch and of the exporting library,
so a version change never reuses an entry. Its manifest holds the key and a SHA-256 of each file;
an entry whose manifest or files do not check out is discarded with a warning and rebuilt.

The settings travel to cells as environment variables (a forked or spawned cell inherits them). What
the cell's process did with the caches (`events()`) goes into its record as `prepare_cache`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from segbench.plain import nesting_problem

CACHE_DIR_ENV = "SEGBENCH_CACHE_DIR"
NO_CACHE_ENV = "SEGBENCH_NO_CACHE"
MANIFEST = "manifest.json"
ENTRIES_DIR = "entries"
INDUCTOR_DIR = "inductor"
FORMAT = 1  # bump when the layout of an entry changes


class CacheWarning(UserWarning):
    """A cache entry was unusable (corrupt, unreadable) and is being rebuilt."""


def enabled() -> bool:
    return os.environ.get(NO_CACHE_ENV, "").strip().lower() not in ("1", "true", "yes", "on")


def default_root() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("segbench"))


def root() -> Path | None:
    """The cache directory, or None when caching is off."""
    if not enabled():
        return None
    override = os.environ.get(CACHE_DIR_ENV, "").strip()
    return Path(override).expanduser() if override else default_root()


def configure(cache_dir: Path | None = None, disabled: bool = False) -> None:
    """Set this process's (and so its cells') cache settings: what --cache-dir and --no-cache do."""
    if cache_dir is not None:
        os.environ[CACHE_DIR_ENV] = str(Path(cache_dir).expanduser().resolve())
    if disabled:
        os.environ[NO_CACHE_ENV] = "1"


def unusable_reason() -> str | None:
    """Why the configured cache root cannot hold entries (read-only, under a file, not creatable), or None."""
    base = root()
    if base is None:
        return None
    try:
        base.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".probe-", dir=base)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        return f"{exc.filename or base}: {exc.strerror or exc}"
    return None


def fall_back_if_unusable() -> str | None:
    """Turn caching off for this process and its cells when the root is unusable; the one warning to show, or None.

    A cache only saves time: a bad one costs the run its reuse, never a cell (fp32 eager needs no cache at all)."""
    reason = unusable_reason()
    if reason is None:
        return None
    os.environ[NO_CACHE_ENV] = "1"
    return f"the prepare cache is unusable ({reason}); this run prepares every cell afresh, uncached"


def clear(directory: Path | None = None) -> None:
    """Delete every cache (segbench's entries and inductor's) under `directory` or the configured root."""
    target = directory or root()
    if target is not None and target.exists():
        shutil.rmtree(target)


# ---- inductor --------------------------------------------------------------------------------------


def configure_inductor() -> None:
    """Point inductor's on-disk caches at the segbench cache, or switch them off; call before any compile."""
    base = root()
    if base is None:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="segbench-inductor-")
        os.environ["TORCHINDUCTOR_FORCE_DISABLE_CACHES"] = "1"
        if "torch._inductor.config" in sys.modules:  # a warm template imported it: its env was read already
            sys.modules["torch._inductor.config"].force_disable_caches = True
        return
    directory = base / INDUCTOR_DIR
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:  # unusable since the run checked it: compile into a temporary folder, as with --no-cache
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="segbench-inductor-")
        return
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(directory)


def inductor_event() -> dict[str, Any] | None:
    """Inductor's own cache counters for this process (FX graphs and AOT autograd), as one event, if it compiled."""
    if "torch._dynamo.utils" not in sys.modules:
        return None
    counters = sys.modules["torch._dynamo.utils"].counters
    inductor, aot = counters.get("inductor", {}), counters.get("aot_autograd", {})
    counts = {
        "fx_graph_hit": inductor.get("fxgraph_cache_hit", 0),
        "fx_graph_miss": inductor.get("fxgraph_cache_miss", 0),
        "fx_graph_bypass": inductor.get("fxgraph_cache_bypass", 0),
        "autograd_hit": aot.get("autograd_cache_hit", 0),
        "autograd_miss": aot.get("autograd_cache_miss", 0),
    }
    if not any(counts.values()):
        return None
    if not enabled():
        status = "off"
    elif counts["fx_graph_miss"]:
        status = "miss"
    elif counts["fx_graph_hit"]:
        status = "hit"
    else:  # freezing graphs (int8's) skip the FX cache; only inductor's compiled C++ is reused
        status = "bypass"
    return {"kind": "inductor", "status": status, **counts}


# ---- keys ------------------------------------------------------------------------------------------


def library_versions(names: Iterable[str]) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def weights_digest(module: Any) -> str:
    """SHA-256 of a module's state: names, dtypes, shapes and bytes (random weights are seeded, so stable)."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        if not isinstance(tensor, torch.Tensor):
            continue
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        if tensor.numel():
            digest.update(
                tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
                if tensor.dtype != torch.bool
                else tensor.numpy().tobytes()
            )
    return digest.hexdigest()


@dataclass(frozen=True)
class CacheKey:
    """What an entry was built from; any field that differs is a different entry."""

    kind: str  # onnx-export, ort-int8, ...
    fields: dict[str, Any] = field(default_factory=dict)

    def canonical(self) -> str:
        return json.dumps(
            {"format": FORMAT, "kind": self.kind, **self.fields}, sort_keys=True, separators=(",", ":"), default=str
        )

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.canonical().encode()).hexdigest()[:32]


_CELL: dict[str, Any] = {}


def set_cell(**axes: Any) -> None:
    """The cell's axes (model, options, weights, resolution, batch, precision, backend, device); part of every key."""
    _CELL.clear()
    _CELL.update(axes)


def key(kind: str, module: Any, libraries: Iterable[str], **extra: Any) -> CacheKey:
    """A key for an artefact built from `module` in this cell, by these libraries (plus torch)."""
    return CacheKey(
        kind,
        {
            **_CELL,
            "weights_sha256": weights_digest(module),
            "versions": library_versions(("torch", *libraries)),
            **extra,
        },
    )


# ---- entries ---------------------------------------------------------------------------------------

_EVENTS: list[dict[str, Any]] = []


def events() -> list[dict[str, Any]]:
    """What this process's cell did with the caches, in order, inductor's counters last."""
    found = list(_EVENTS)
    inductor = inductor_event()
    return found + [inductor] if inductor else found


def summary(found: list[dict[str, Any]]) -> str | None:
    """One word for prepare_s: hit (all reused), miss (something built), off (--no-cache), or None (nothing
    cacheable)."""
    statuses = {event["status"] for event in found if event["status"] != "bypass"}
    if not statuses:
        return None
    if statuses == {"off"}:
        return "off"
    return "hit" if statuses == {"hit"} else "miss"


def _record(cache_key: CacheKey, status: str, **detail: Any) -> None:
    directory = _entry_dir(cache_key)
    where = {"entry": str(directory)} if directory is not None and status in ("hit", "miss") else {}
    _EVENTS.append({"kind": cache_key.kind, "status": status, "key": cache_key.digest, **where, **detail})


def unstorable(cache_key: CacheKey, reason: str) -> None:
    """Record that a built artefact could not be serialised: the cell runs it uncached, and says why."""
    _record(cache_key, "unserialisable", reason=reason)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Entry:
    """A usable entry: its folder and what was stored with it."""

    path: Path
    extra: dict[str, Any]

    def file(self, name: str) -> Path:
        return self.path / name


def _entry_dir(cache_key: CacheKey) -> Path | None:
    base = root()
    return None if base is None else base / ENTRIES_DIR / cache_key.kind / cache_key.digest


def discard(cache_key: CacheKey, reason: str) -> None:
    """Remove an unusable entry, with a warning naming it and why."""
    directory = _entry_dir(cache_key)
    warnings.warn(
        f"segbench cache: discarding {cache_key.kind} entry {cache_key.digest} ({reason}); rebuilding it",
        CacheWarning,
        stacklevel=2,
    )
    print(
        f"segbench cache: discarding {cache_key.kind} entry {cache_key.digest} ({reason}); rebuilding it",
        file=sys.stderr,
        flush=True,
    )
    _record(cache_key, "corrupt", reason=reason)
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)


def lookup(cache_key: CacheKey) -> Entry | None:
    """The entry for this key when it exists and checks out; a miss (recorded) otherwise."""
    directory = _entry_dir(cache_key)
    if directory is None:
        _record(cache_key, "off")
        return None
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        _record(cache_key, "miss")
        return None
    try:
        manifest = _read_manifest(manifest_path)
        if manifest.key != json.loads(cache_key.canonical()):
            raise ValueError("its manifest holds another key")
        for name, expected in manifest.files.items():
            if Path(name).name != name or _sha256(directory / name) != expected:
                raise ValueError(f"{name} does not match its checksum")
    except (OSError, ValueError) as exc:
        discard(cache_key, str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}")
        return None
    _record(cache_key, "hit")
    return Entry(directory, manifest.extra)


class Manifest(BaseModel):
    """An entry's manifest.json: the key it was built from, a SHA-256 per file, what the builder stored beside."""

    model_config = ConfigDict(extra="allow", strict=True)
    key: dict[str, Any]
    files: dict[str, str]
    extra: dict[str, Any] = {}


MAX_MANIFEST_DEPTH = 32  # a key and its extra nest a few levels; deeper is a damaged or hostile file


def _read_manifest(path: Path) -> Manifest:
    """The manifest, checked; ValueError (the entry is discarded and rebuilt) when it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise ValueError("its manifest is nested too deeply") from None
    too_deep = nesting_problem(data, "manifest", MAX_MANIFEST_DEPTH)
    if too_deep:
        raise ValueError(f"its {too_deep}")
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        raise ValueError(f"its manifest is invalid: {where}: {error['msg']}") from None



def store(cache_key: CacheKey, files: dict[str, Path], extra: dict[str, Any] | None = None) -> Entry | None:
    """Copy the built files into a new entry (written aside, then renamed into place); None when caching is off."""
    directory = _entry_dir(cache_key)
    if directory is None:
        return None
    staging: Path | None = None
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{cache_key.digest}-", dir=directory.parent))
        for name, source in files.items():
            shutil.copyfile(source, staging / name)
        manifest = {
            "key": json.loads(cache_key.canonical()),
            "files": {name: _sha256(staging / name) for name in files},
            "extra": extra or {},
            "created": time.time(),
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
        shutil.rmtree(directory, ignore_errors=True)
        staging.rename(directory)
    except OSError as exc:  # a full or read-only disk costs the next run a rebuild, never this cell
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        print(f"segbench cache: could not store {cache_key.kind} entry ({exc})", file=sys.stderr, flush=True)
        return None
    return Entry(directory, extra or {})


# ---- what a user sees: the entries, their sizes, the file a cell ran -------------------------------------

# The kinds that hold the model as a cell ran it, a file another program can load; the last one a cell used is its
# artefact (ov-int8 converts, then quantizes). OpenVINO's compiled blobs and inductor's code are this machine's only.
DEPLOYABLE_KINDS = ("onnx-export", "ort-int8", "pt2e-int8", "openvino-model", "openvino-ov-int8")


@dataclass(frozen=True)
class EntryInfo:
    """One cache entry as `segbench cache` lists it."""

    kind: str
    digest: str
    path: Path
    size_bytes: int
    created: float | None
    key: dict[str, Any]

    @property
    def describes(self) -> str:
        """The cell it was built for, in a few words (model, resolution, batch, precision, backend)."""
        parts = [str(self.key.get(name)) for name in ("model", "resolution", "batch_size", "precision", "backend")]
        return " ".join(part for part in parts if part not in ("None", ""))


def _folder_size(path: Path) -> int:
    total = 0
    for item in path.rglob("*"):
        try:
            if item.is_file() and not item.is_symlink():
                total += item.stat().st_size
        except OSError:
            continue
    return total


def _manifest_of(folder: Path) -> dict[str, Any]:
    """An entry's manifest, or {} when it is missing or unreadable (listed as such, never an error)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def list_entries(base: Path) -> list[EntryInfo]:
    """segbench's entries under a cache root, newest first; inductor's cache is one pseudo-entry."""
    found = []
    for kind_dir in sorted((base / ENTRIES_DIR).glob("*")) if (base / ENTRIES_DIR).is_dir() else []:
        for folder in sorted(kind_dir.iterdir()) if kind_dir.is_dir() else []:
            if not folder.is_dir() or folder.name.startswith("."):
                continue
            manifest = _manifest_of(folder)
            key, created = manifest.get("key"), manifest.get("created")
            found.append(
                EntryInfo(
                    kind_dir.name,
                    folder.name,
                    folder,
                    _folder_size(folder),
                    float(created) if isinstance(created, (int, float)) else None,
                    key if isinstance(key, dict) else {},
                )
            )
    if (base / INDUCTOR_DIR).is_dir():
        found.append(EntryInfo(INDUCTOR_DIR, "-", base / INDUCTOR_DIR, _folder_size(base / INDUCTOR_DIR), None, {}))
    return sorted(found, key=lambda entry: entry.created or 0.0, reverse=True)


def remove_entries(entries: Iterable[EntryInfo]) -> int:
    """Delete these entries; the bytes freed."""
    freed = 0
    for entry in entries:
        freed += entry.size_bytes
        shutil.rmtree(entry.path, ignore_errors=True)
    return freed


def artefact_event(cache_events: Any) -> dict[str, Any] | None:
    """The cache event of the file a cell ran (the last deployable kind it used), from its record's `cache_events`."""
    if not isinstance(cache_events, list):
        return None
    usable = [
        event
        for event in cache_events
        if isinstance(event, dict) and event.get("kind") in DEPLOYABLE_KINDS and event.get("status") in ("hit", "miss")
    ]
    return usable[-1] if usable else None


def artefact_files(entry_dir: Path) -> dict[str, Path]:
    """The files of an entry a deployment needs (its manifest's files), checked against their checksums."""
    manifest = _manifest_of(entry_dir)
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise ValueError(f"{entry_dir}: no readable manifest (the entry was cleared or is damaged)")
    checked = {}
    for name, expected in files.items():
        path = entry_dir / str(name)
        if not path.is_file() or _sha256(path) != expected:
            raise ValueError(f"{path}: missing or does not match its checksum")
        checked[str(name)] = path
    return checked
