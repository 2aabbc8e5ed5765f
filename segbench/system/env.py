"""The hardware and software fingerprint stored with every run (and printed by `segbench env`)."""

from __future__ import annotations

import hashlib
import platform
import socket
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

import segbench
from segbench.device import is_gpu
from segbench.errors import SegbenchError
from segbench.measure import nvml

GIB = 1024**3
TRACKED_PACKAGES = (
    "torch",
    "torchvision",
    "ultralytics-opencv-headless",
    "ultralytics",
    "transformers",
    "torchao",
    "onnxruntime",
    "openvino",
    "nncf",
    "nvidia-ml-py",
    "numpy",
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The SIMD extensions that decide CPU inference speed."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "f16c")))
    except OSError:
        pass
    return []


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _git(source: Path, *args: str) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(["git", "-C", str(source), *args], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None


def git_state(source: Path | None = None) -> dict[str, Any]:
    """The segbench source tree a run came from: commit, and whether (and how) it differed from it.

    `diff_sha256` hashes `git diff HEAD` (staged and unstaged changes to tracked files), so two runs from the same
    dirty tree can be told from runs of different edits; `untracked_files` says whether files git does not track
    exist (their content is not hashed). All None outside a checkout. `source`: segbench's own tree by default.
    """
    source = source or Path(segbench.__file__).resolve().parent.parent
    state: dict[str, Any] = dict.fromkeys(("commit", "dirty", "diff_sha256", "untracked_files"))
    head = _git(source, "rev-parse", "HEAD")
    if head is None or head.returncode != 0:
        return state
    diff = _git(source, "diff", "HEAD", "--no-ext-diff", "--binary")
    untracked = _git(source, "ls-files", "--others", "--exclude-standard")
    changes = diff.stdout if diff is not None and diff.returncode == 0 else ""
    state.update(
        commit=head.stdout.strip(),
        dirty=bool(changes.strip()),
        diff_sha256=hashlib.sha256(changes.encode()).hexdigest() if changes.strip() else None,
        untracked_files=bool(untracked.stdout.strip()) if untracked is not None else None,
    )
    return state


def git_commit() -> str | None:
    """The commit of the segbench source tree, '-dirty' appended when tracked files differ from it."""
    state = git_state()
    if state["commit"] is None:
        return None
    return state["commit"] + ("-dirty" if state["dirty"] else "")


def gpu_fingerprint() -> list[dict[str, Any]]:
    import torch

    if not torch.cuda.is_available():
        return []
    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        handle = nvml.handle_for(index)
        driver = None
        if handle is not None:
            import pynvml

            try:
                driver = pynvml.nvmlSystemGetDriverVersion()
            except Exception:
                driver = None
        gpus.append(
            {
                "index": index,
                "name": props.name,
                "uuid": f"GPU-{props.uuid}" if getattr(props, "uuid", None) else None,
                "memory_mb": props.total_memory / 2**20,
                "compute_capability": f"{props.major}.{props.minor}",
                "multiprocessors": props.multi_processor_count,
                "driver": driver,
            }
        )
    return gpus


def machine_identity(stored: dict[str, Any]) -> tuple[Any, ...] | None:
    """What makes two runs' costs comparable, from a fingerprint: the CPU (model, logical cores, SIMD flags), the RAM
    and the GPUs' names. The hostname is left out (a rebuilt VM of the same type is the same machine for timing).
    None when the fingerprint lacks the CPU."""
    cpu, ram_gb = stored.get("cpu"), stored.get("ram_gb")
    if not isinstance(cpu, dict) or not cpu.get("model"):
        return None
    flags = cpu.get("flags")
    gpus = stored.get("gpus")
    return (
        str(cpu["model"]),
        cpu.get("logical_cores"),
        tuple(sorted(str(flag) for flag in flags)) if isinstance(flags, list) else (),
        round(float(ram_gb)) if isinstance(ram_gb, (int, float)) else None,
        tuple(str(gpu.get("name")) for gpu in gpus if isinstance(gpu, dict)) if isinstance(gpus, list) else (),
    )


def fingerprint() -> dict[str, Any]:
    import torch

    gpus = gpu_fingerprint()
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "machine": gpus[0]["name"] if gpus else cpu_model(),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": {
            "model": cpu_model(),
            "physical_cores": psutil.cpu_count(logical=False),
            "logical_cores": psutil.cpu_count(logical=True),
            "flags": cpu_flags(),
        },
        "ram_gb": round(psutil.virtual_memory().total / GIB, 1),
        "gpus": gpus,
        "nvml": nvml.unavailable_reason() or "available",
        "cuda": {
            "available": torch.cuda.is_available(),
            "torch_cuda_build": torch.version.cuda,
            "cudnn": cudnn,
        },
        "torch_threads": torch.get_num_threads(),
        "packages": package_versions(),
        "segbench": _segbench_source(),
    }


def _nvml_identity(index: int) -> tuple[str | None, str | None]:
    """(name, UUID) of GPU `index` from NVML alone: no CUDA context in the asking process (the fit search's parent
    must leave the card's memory to its probes). NVML orders by PCI bus; CUDA does too under CUDA_DEVICE_ORDER."""
    pynvml = nvml.module()
    if pynvml is None:
        return None, None
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        name, uuid = pynvml.nvmlDeviceGetName(handle), pynvml.nvmlDeviceGetUUID(handle)
    except Exception:  # NVMLError subclasses vary by driver
        return None, None
    decode = lambda value: value.decode() if isinstance(value, bytes) else str(value)  # noqa: E731 (old pynvml: bytes)
    return decode(name), decode(uuid)


def device_identity(device: str, cuda_context: bool = True) -> dict[str, Any]:
    """Which physical device a log or probe is about, and when: its name, its UUID (GPUs) and the UTC time.

    `cuda_context=False` asks NVML only, so the caller never creates a CUDA context.
    """
    identity: dict[str, Any] = {
        "device": device,
        "name": None,
        "uuid": None,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if not is_gpu(device):
        identity["name"] = cpu_model()
        return identity
    index = int(device.split(":")[1]) if ":" in device else 0
    identity["name"], identity["uuid"] = _nvml_identity(index)
    if cuda_context and identity["uuid"] is None:
        import torch

        if torch.cuda.is_available() and index < torch.cuda.device_count():
            props = torch.cuda.get_device_properties(index)
            identity["name"] = props.name
            identity["uuid"] = f"GPU-{props.uuid}" if getattr(props, "uuid", None) else None
    return identity


def identity_line(identity: dict[str, Any]) -> str:
    """'cuda:0: NVIDIA H200 (GPU-5f3c…), 2026-12-02T02:13:00+00:00': the line a log or probe table starts with."""
    uuid = f" ({identity['uuid']})" if identity.get("uuid") else ""
    return f"{identity['device']}: {identity.get('name') or 'unknown device'}{uuid}, {identity['time']}"


def _segbench_source() -> dict[str, Any]:
    state = git_state()
    commit = state["commit"] and state["commit"] + ("-dirty" if state["dirty"] else "")
    return {"version": segbench.__version__, **state, "commit": commit}


def resolve_device(requested: str) -> str:
    """'auto' picks cuda when present; asking for a GPU the machine lacks is the user's error to fix."""
    import torch

    if requested == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if is_gpu(requested):
        if not torch.cuda.is_available():
            raise SegbenchError(
                f"'{requested}' requested but CUDA is not available on this machine (torch {torch.__version__}, no "
                "NVIDIA GPU found); pass --device cpu to run it on the CPU, or use suites/quick.yaml"
            )
        index = int(requested.split(":")[1]) if ":" in requested else 0
        if index >= torch.cuda.device_count():
            raise SegbenchError(
                f"'{requested}' requested but only {torch.cuda.device_count()} CUDA device(s) exist; use cuda:0 … "
                f"cuda:{torch.cuda.device_count() - 1}"
            )
        return f"cuda:{index}"
    return requested
