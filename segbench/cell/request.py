"""What a cell's process is asked to run: plain data that crosses the process boundary (no torch import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from segbench.data.datasets import CalibrationConfig, DatasetConfig
from segbench.measure.telemetry import CooldownConfig
from segbench.suite.matrix import CellSpec
from segbench.suite.schema import CapacityConfig, EndToEndConfig, ProfileConfig, StreamConfig, Timing
from segbench.suite.targets import Targets


@dataclass(frozen=True)
class ScreeningPlan:
    """A search's screening step, decided in the cell's own process: after the brief timing the cell judges its
    figures as the search's next step would (suite/search_rules.py's `needs_full_timing`, against `leader`, the Answer
    so far for this model) and, where they ask for it, times itself again with `full_timing` before it reports, with
    no second process, build and warm-up (successive halving's promotion)."""

    full_timing: Timing
    targets: Targets
    leader: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "full_timing": self.full_timing.model_dump(),
            "targets": self.targets.model_dump(mode="json"),
            "leader": self.leader,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScreeningPlan:
        return cls(Timing(**data["full_timing"]), Targets(**data["targets"]), data.get("leader"))


@dataclass(frozen=True)
class CellRequest:
    """Everything the child needs, as plain data (it crosses a process boundary)."""

    cell: CellSpec
    device: str
    timing: Timing
    poll_interval_ms: float
    threads: int | None
    plugins: tuple[str, ...] = ()
    suite_dir: str | None = None
    stream: StreamConfig | None = None
    hardware: str | None = None  # a hardware profile whose memory budget is emulated on a bigger GPU
    cooldown: CooldownConfig | None = None
    probe: bool = False  # a fit-search probe: only "does it fit?", so no FLOPs count and no fidelity pass
    dataset: DatasetConfig | None = None  # labelled images: the accuracy pass
    calibration: CalibrationConfig | None = None  # images int8 calibrates on
    launched_at: float | None = None  # wall clock when the runner asked for the cell's process (startup_s)
    cpu_set: tuple[int, ...] | None = None  # logical CPUs, one per physical core, the cell pins its threads to
    end_to_end: EndToEndConfig = EndToEndConfig()  # decode / camera resize in the end-to-end pass; the class map's form
    profile: ProfileConfig | None = None  # the profile pass, after the timed passes (None: no profile)
    capacity: CapacityConfig | None = None  # the capacity scenario: how many cameras the cell's deployment serves
    screening: ScreeningPlan | None = None  # a search's screening step (timing is the brief one), else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "cell": self.cell.to_dict(),
            "device": self.device,
            "timing": self.timing.model_dump(),
            "poll_interval_ms": self.poll_interval_ms,
            "threads": self.threads,
            "plugins": list(self.plugins),
            "suite_dir": self.suite_dir,
            "stream": self.stream.model_dump() if self.stream else None,
            "hardware": self.hardware,
            "cooldown": self.cooldown.model_dump() if self.cooldown else None,
            "probe": self.probe,
            "dataset": self.dataset.model_dump(mode="json") if self.dataset else None,
            "calibration": self.calibration.model_dump(mode="json") if self.calibration else None,
            "launched_at": self.launched_at,
            "cpu_set": list(self.cpu_set) if self.cpu_set else None,
            "end_to_end": self.end_to_end.model_dump(),
            "profile": self.profile.model_dump() if self.profile else None,
            "capacity": self.capacity.model_dump() if self.capacity else None,
            "screening": self.screening.to_dict() if self.screening else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellRequest:
        return cls(
            cell=CellSpec.from_dict(data["cell"]),
            device=data["device"],
            timing=Timing(**data["timing"]),
            poll_interval_ms=data["poll_interval_ms"],
            threads=data["threads"],
            plugins=tuple(data["plugins"]),
            suite_dir=data["suite_dir"],
            stream=StreamConfig(**data["stream"]) if data.get("stream") else None,
            hardware=data.get("hardware"),
            cooldown=CooldownConfig(**data["cooldown"]) if data.get("cooldown") else None,
            probe=data.get("probe", False),
            dataset=DatasetConfig(**data["dataset"]) if data.get("dataset") else None,
            calibration=CalibrationConfig(**data["calibration"]) if data.get("calibration") else None,
            launched_at=data.get("launched_at"),
            cpu_set=tuple(data["cpu_set"]) if data.get("cpu_set") else None,
            end_to_end=EndToEndConfig(**data.get("end_to_end") or {}),
            profile=ProfileConfig(**data["profile"]) if data.get("profile") else None,
            capacity=CapacityConfig(**data["capacity"]) if data.get("capacity") else None,
            screening=ScreeningPlan.from_dict(data["screening"]) if data.get("screening") else None,
        )
