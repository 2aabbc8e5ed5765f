"""A plugin of test models: a tiny real network, and models that hang, crash or run out of memory.

Suites in the tests name this file under `plugins:`, exactly as a user registers their own models,
so the spawned cell process imports it too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from segbench.models.base import InputConstraints, ModelCard, SegmentationAdapter
from segbench.models.registry import register


class TinyNet(nn.Module):
    def __init__(self, num_classes: int = 4):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.interpolate(self.body(x), size=x.shape[-2:], mode="bilinear", align_corners=False)


class TinyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sleep_ms: float = 0.0
    gemm_size: int = 0  # > 0: each forward also multiplies two n x n matrices (work that scales with the threads)


class TinyAdapter(SegmentationAdapter):
    constraints = InputConstraints(min_size=8)
    options_schema = TinyOptions

    def build_module(self) -> nn.Module:
        return TinyNet(self.card.num_classes)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.options.sleep_ms:
            time.sleep(self.options.sleep_ms / 1000)
        if self.options.gemm_size:
            matrix = torch.ones(self.options.gemm_size, self.options.gemm_size)
            for _ in range(4):
                matrix = torch.mm(matrix, matrix) * (1.0 / self.options.gemm_size)
        return super().forward(inputs)


class ColdStartAdapter(TinyAdapter):
    """Its first postprocess sleeps, as a library's lazy initialisation does (the H200's first Fast-SCNN postprocess:
    14.78 ms against a 1.16 ms median)."""

    COLD_S = 0.5

    def postprocess(self, outputs: Any, size: tuple[int, int]) -> torch.Tensor:
        if not getattr(self, "_warm", False):
            self._warm = True
            time.sleep(self.COLD_S)
        return super().postprocess(outputs, size)


class HangAdapter(TinyAdapter):
    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        time.sleep(3600)
        return super().forward(inputs)


class SegfaultAdapter(TinyAdapter):
    def build_module(self) -> nn.Module:
        os.kill(os.getpid(), signal.SIGSEGV)
        return super().build_module()


class HostOOMAdapter(TinyAdapter):
    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        # A real allocator failure: a petabyte activation cannot be allocated on any host.
        torch.empty(2**50, dtype=torch.uint8)
        return super().forward(inputs)


class RaisingAdapter(TinyAdapter):
    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        raise ValueError("first line\nthe last line of a multi-line failure")


class BracketErrorAdapter(TinyAdapter):
    """An error whose text looks like rich markup, as real library errors often do."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        raise FileNotFoundError("cannot open [/data/frames/0001.png] [enforce fail at alloc_cpu.cpp:127]")


class GrandchildOptions(TinyOptions):
    pid_file: str = ""
    hang: bool = False


class GrandchildAdapter(TinyAdapter):
    """A cell that starts a process of its own (as data loaders and compilers do), then maybe hangs."""

    options_schema = GrandchildOptions

    def build_module(self) -> nn.Module:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        Path(self.options.pid_file).write_text(str(child.pid))
        return super().build_module()

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.options.hang:
            time.sleep(3600)
        return super().forward(inputs)


EXPORT_LEFTOVERS: list[object] = []
EXPORT_LEFTOVER_MB = 256


class ExportLeakNet(TinyNet):
    """Keeps 256 MiB alive in a module global whenever it is traced for export, as exporters' caches do."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_exporting() or type(x) is not torch.Tensor:  # traced: a fake or proxied input
            import numpy

            EXPORT_LEFTOVERS.append(numpy.ones(EXPORT_LEFTOVER_MB * 2**20, dtype=numpy.uint8))  # resident pages
        return super().forward(x)


class ExportLeakAdapter(TinyAdapter):
    def build_module(self) -> nn.Module:
        return ExportLeakNet(self.card.num_classes)


def _card(name: str) -> ModelCard:
    return ModelCard(name=name, family="test", variant=name, source="tests", num_classes=4, dataset="synthetic")


for _name, _adapter in {
    "test-tiny": TinyAdapter,
    "test-cold-start": ColdStartAdapter,
    "test-hang": HangAdapter,
    "test-segfault": SegfaultAdapter,
    "test-oom": HostOOMAdapter,
    "test-raise": RaisingAdapter,
    "test-bracket-error": BracketErrorAdapter,
    "test-grandchild": GrandchildAdapter,
    "test-export-leak": ExportLeakAdapter,
}.items():
    register(_card(_name), _adapter)
