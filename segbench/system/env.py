"""The hardware and software fingerprint stored with every run (and printed by `segbench env`)."""

from __future__ import annotations

import platform
import socket
import subprocess
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


def git_commit() -> str | None:
    """The commit of the segbench source tree, when it runs from a checkout."""
    source = Path(segbench.__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(
            ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


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
        "segbench": {"version": segbench.__version__, "commit": git_commit()},
    }


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
