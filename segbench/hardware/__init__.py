"""Hardware profiling: card profiles, memory-budget emulation and roofline figures."""

from segbench.hardware.budget import BudgetError, BudgetInfo, allocator_budget_mb, apply_budget, memory_fraction
from segbench.hardware.profiles import (
    HardwareError,
    HardwareProfile,
    list_profiles,
    load_profile,
    load_profile_file,
    profile_for_device,
)

__all__ = [
    "BudgetError",
    "BudgetInfo",
    "HardwareError",
    "HardwareProfile",
    "allocator_budget_mb",
    "apply_budget",
    "list_profiles",
    "load_profile",
    "load_profile_file",
    "memory_fraction",
    "profile_for_device",
]
