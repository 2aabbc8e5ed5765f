"""GPU card profiles: one YAML data file per card in `profiles/`, validated by a strict pydantic model.

Every figure in a profile carries its source (copied from shared/reference-numbers.md, section 6).
A figure nobody published is `null`; a figure computed from sourced numbers says "[D]" and shows the
arithmetic in its source; "[M]" is a figure segbench measured on the card itself. `cuda_context_mb` is
always an estimate (see its field description).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from segbench import safe_yaml
from segbench.errors import SegbenchError
from segbench.naming import unknown_name_message

PROFILE_DIR = Path(__file__).parent / "profiles"
MIB_PER_GB = 1024  # GPU memory sizes are binary: a "12 GB" card has 12 x 1024 MiB of DRAM

# Every figure is finite, positive and below ten million of its unit (GB, GB/s, TFLOP/s, W, MiB): no card comes
# near that, and an infinite or 300-digit figure would turn every budget and percentage derived from it into noise.
MAX_FIGURE = 1e7
Positive = Annotated[float, Field(gt=0, le=MAX_FIGURE, allow_inf_nan=False)]

# The figures of a profile that must each have a `sources` entry when they are not null.
FIGURES = (
    "memory_gb",
    "memory_bandwidth_gbs",
    "fp32_tflops",
    "tf32_tensor_tflops",
    "fp16_tensor_tflops",
    "fp16_acc16_tensor_tflops",
    "bf16_tensor_tflops",
    "int8_tensor_tops",
    "tdp_w",
    "compute_capability",
    "cuda_total_mb",
    "cuda_context_mb",
)


class HardwareError(SegbenchError):
    """A hardware profile name or file that cannot be used."""


class HardwareProfile(BaseModel):
    """One card. Throughput figures are dense (no 2:4 sparsity) peaks; null where unknown or unsupported."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$")]
    title: Annotated[str, Field(min_length=1)]
    architecture: str
    # The names the driver reports for this card (torch.cuda.get_device_name): how a run finds the profile of the card
    # it ran on.
    device_names: list[str] = Field(default_factory=list)
    budget_only: bool = Field(description="throughput peaks unknown: use the card as a memory budget only")
    memory_gb: Positive
    cuda_total_mb: Positive | None = Field(
        None,
        description=(
            "the total the driver reports to CUDA on this card (torch.cuda.get_device_properties().total_memory, MiB): "
            "less than memory_gb x 1024 (ECC, driver-reserved memory); null where nobody measured it"
        ),
    )
    memory_shared_with_cpu: bool = False
    memory_bandwidth_gbs: Positive | None
    fp32_tflops: Positive | None
    tf32_tensor_tflops: Positive | None
    fp16_tensor_tflops: Positive | None = Field(
        description="dense fp16 tensor-core rate with fp32 accumulation: what PyTorch's fp16 GEMMs use"
    )
    fp16_acc16_tensor_tflops: Positive | None = Field(
        description="dense fp16 rate with fp16 accumulation; differs from the above on GeForce cards only"
    )
    bf16_tensor_tflops: Positive | None
    int8_tensor_tops: Positive | None
    tdp_w: Positive | None
    compute_capability: Annotated[str, Field(pattern=r"^\d+\.\d$")]
    cuda_context_mb: Positive = Field(
        description="ESTIMATE of the memory the CUDA context and libraries take outside PyTorch's allocator"
    )
    notes: str = ""
    sources: dict[str, str]

    @field_validator("cuda_total_mb")
    @classmethod
    def _total_within_the_dram(cls, total_mb: float | None, info: ValidationInfo) -> float | None:
        memory_gb = info.data.get("memory_gb")
        if total_mb is not None and memory_gb is not None and total_mb > memory_gb * MIB_PER_GB:
            raise ValueError(
                f"{total_mb:g} MiB is more than memory_gb ({memory_gb:g} GB = {memory_gb * MIB_PER_GB:g} MiB); the "
                "driver reports less than the card's DRAM, never more"
            )
        return total_mb

    @field_validator("cuda_context_mb")
    @classmethod
    def _context_smaller_than_the_card(cls, context_mb: float, info: ValidationInfo) -> float:
        memory_gb, total_mb = info.data.get("memory_gb"), info.data.get("cuda_total_mb")
        card_mb = total_mb if total_mb is not None else memory_gb * MIB_PER_GB if memory_gb is not None else None
        if card_mb is not None and context_mb >= card_mb:
            raise ValueError(
                f"{context_mb:g} MiB is not smaller than the card's {card_mb:g} MiB; a CUDA context takes a few "
                "hundred MiB"
            )
        return context_mb

    @model_validator(mode="after")
    def _every_figure_has_a_source(self) -> HardwareProfile:
        unknown = sorted(set(self.sources) - set(FIGURES))
        if unknown:
            raise ValueError(f"sources names unknown figure(s) {unknown}; allowed: {', '.join(FIGURES)}")
        missing = [name for name in FIGURES if getattr(self, name) is not None and not self.sources.get(name)]
        if missing:
            raise ValueError(f"figure(s) without a source: {', '.join(missing)}; add them under sources")
        return self

    @property
    def memory_mb(self) -> float:
        return self.memory_gb * MIB_PER_GB

    @property
    def total_mb(self) -> float:
        """What a process on this card could see as total: the driver-reported figure, else the nominal size."""
        return self.cuda_total_mb if self.cuda_total_mb is not None else self.memory_mb

    @property
    def total_basis(self) -> str:
        """Where `total_mb` comes from, for notes beside a budget."""
        if self.cuda_total_mb is None:
            return f"nominal {self.memory_gb:g} GB: no driver-reported total in the profile (a real card reports less)"
        return f"driver-reported total {self.cuda_total_mb:.0f} MiB ({self.sources.get('cuda_total_mb', '')})"

    def source_of(self, figure: str) -> str | None:
        return self.sources.get(figure)


def _format_errors(path: Path, exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        if error["type"] == "extra_forbidden":
            message = f"unknown key; allowed keys: {', '.join(HardwareProfile.model_fields)}"
        elif error["type"] == "missing":
            message = "required field is missing; add it (null if the figure is unknown)"
        else:
            message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: {where}: {message}")
    return "\n".join(lines)


def load_profile_file(path: Path | str) -> HardwareProfile:
    """Read and validate one profile file; a mistake raises HardwareError naming the file and the field."""
    path = Path(path)
    try:
        data: Any = safe_yaml.load_file(path)
    except safe_yaml.YamlRefused as exc:
        raise HardwareError(f"{path}: {exc}") from None
    except OSError as exc:
        raise HardwareError(f"{path}: cannot read hardware profile: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise HardwareError(f"{path}: invalid YAML: {str(exc).splitlines()[0]}; fix the syntax") from None
    if not isinstance(data, dict):
        raise HardwareError(f"{path}: a hardware profile must be a mapping of fields")
    try:
        profile = HardwareProfile.model_validate(data)
    except ValidationError as exc:
        raise HardwareError(_format_errors(path, exc)) from None
    if path.parent == PROFILE_DIR and profile.name != path.stem:
        raise HardwareError(f"{path}: name: '{profile.name}' differs from the file name; rename one of them")
    return profile


def list_profiles() -> list[str]:
    """Names of the bundled profiles (file stems), sorted."""
    return sorted(path.stem for path in PROFILE_DIR.glob("*.yaml"))


def profile_for_device(device_name: str) -> HardwareProfile | None:
    """The bundled profile of the card the driver names `device_name` (exact, case-insensitive), or None."""
    wanted = device_name.strip().lower()
    for name in list_profiles():
        profile = load_profile_file(PROFILE_DIR / f"{name}.yaml")
        if any(known.lower() == wanted for known in profile.device_names):
            return profile
    return None


def load_profile(name: str) -> HardwareProfile:
    """A bundled profile by name (e.g. 'rtx3060'), or a profile file when `name` is a path to a .yaml file."""
    if name.endswith((".yaml", ".yml")) and Path(name).is_file():
        return load_profile_file(name)
    key = name.strip().lower()
    if key not in list_profiles():
        raise HardwareError(unknown_name_message("hardware profile", name, list_profiles()))
    return load_profile_file(PROFILE_DIR / f"{key}.yaml")
