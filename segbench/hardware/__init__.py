"""Hardware profiling: card profiles, memory-budget emulation and roofline figures."""

from segbench.hardware.budget import BudgetError, BudgetInfo, allocator_budget_mb, apply_budget, occupy_mb, over_budget
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
    "occupy_mb",
    "over_budget",
    "profile_for_device",
]
