"""Which device measured a record, and which card it only stood in for.

A suite's `hardware: rtx3060` on a bigger GPU caps the allocator to the card's memory budget: the memory
figures are emulated, every speed is the bigger GPU's. Expectations and the Answer read both from here, so
a claim about one card is never confirmed by another card's speed, and the Answer says whose speed it shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from segbench.device import gpu_index, is_gpu


def ran_on(record: dict[str, Any], meta: dict[str, Any] | None) -> str:
    """The name of the device a cell ran on, from the fingerprint of its node (Ray) or of the run; where that lists
    no such GPU, the card its budget was emulated on, the fingerprint's machine (its first GPU), else the device
    string ('cuda:0')."""
    meta = meta or {}
    fingerprint = (record.get("node") or {}).get("fingerprint") or meta.get("fingerprint") or {}
    device = record.get("device") or meta.get("device")
    if not is_gpu(device):
        return str((fingerprint.get("cpu") or {}).get("model") or "a CPU")
    index = gpu_index(device)
    gpus = [gpu for gpu in fingerprint.get("gpus") or [] if gpu.get("index") == index]
    if gpus:
        return str(gpus[0]["name"])
    budget = record.get("budget")
    emulated_on = budget.get("emulated_on") if isinstance(budget, dict) else None
    return str(emulated_on or fingerprint.get("machine") or device)


def ran_on_cpu(record: dict[str, Any], meta: dict[str, Any] | None) -> bool:
    return not is_gpu(record.get("device") or (meta or {}).get("device"))


def emulated_budget(record: dict[str, Any]) -> dict[str, Any] | None:
    """The record's `budget` when it was really applied (memory occupied, or an older record's allocator cap), else
    None (no target, a CPU cell, or a real card smaller than the target)."""
    budget = record.get("budget")
    # occupied_mb: the card's total emulated (current); fraction: an allocator cap (records before issue 27)
    applied = isinstance(budget, dict) and (budget.get("occupied_mb") is not None or budget.get("fraction") is not None)
    return budget if applied else None


@dataclass(frozen=True)
class Card:
    """The card a suite (and so its claims) is about: a hardware profile's name, title and driver names."""

    name: str
    title: str
    device_names: tuple[str, ...] = ()

    def is_device(self, device_name: str) -> bool:
        """Whether the driver name of a measured device is this card (the profile's `device_names`)."""
        wanted = device_name.strip().lower()
        return any(known.lower() == wanted for known in self.device_names)


def target_card(hardware: Any) -> Card | None:
    """The one card a suite's `hardware:` names (a profile name, a profile file, or a list of one), else None: no
    card, or several (a Ray run over several cards measures each on the real card)."""
    if isinstance(hardware, list) and len(hardware) == 1:
        hardware = hardware[0]
    if not isinstance(hardware, str) or not hardware.strip():
        return None
    return _card(hardware.strip())


@lru_cache(maxsize=32)
def _card(name: str) -> Card:
    from segbench.hardware import HardwareError, load_profile  # lazy: the hardware package imports torch

    try:
        profile = load_profile(name)
    except HardwareError:
        return Card(name, name)  # a profile this machine cannot read: no driver name can match it
    return Card(profile.name, profile.title, tuple(profile.device_names))


def measured_devices(records: list[dict[str, Any]], meta: dict[str, Any] | None) -> list[str]:
    """The devices that measured the finished cells (every cell's when none finished), in order of appearance."""
    chosen = [r for r in records if r.get("status") == "ok"] or records
    return list(dict.fromkeys(ran_on(record, meta) for record in chosen))


def measured_on_line(records: list[dict[str, Any]], meta: dict[str, Any] | None, hardware: Any) -> str:
    """One sentence: the device(s) every speed was measured on, and what of the suite's target card was only
    emulated. Empty when there are no records."""
    devices = measured_devices(records, meta)
    if not devices:
        return ""
    chosen = [r for r in records if r.get("status") == "ok"] or records
    on_cpu = all(ran_on_cpu(record, meta) for record in chosen)
    where = f"the CPU ({devices[0]})" if on_cpu and len(devices) == 1 else ", ".join(devices)
    card = target_card(hardware)
    if card is None:
        if len(devices) > 1:
            return f"Measured on {where}: each figure below is from the device its cell ran on."
        return f"Measured on {where}: every figure below is that device's."
    if all(card.is_device(device) for device in devices):
        return f"Measured on {where}, the {card.title} the suite targets."
    budgets = [budget for record in chosen if (budget := emulated_budget(record)) is not None]
    owner = "the CPU's" if on_cpu else f"{devices[0]}'s" if len(devices) == 1 else "those devices'"
    head = f"Measured on {where}, not on the {card.title} the suite targets: every speed below is {owner}"
    if not budgets:
        return f"{head}, and nothing of the {card.title} was emulated."
    share = "" if len(budgets) == len(chosen) else f" in {len(budgets)} of {len(chosen)} cells"
    return f"{head}; only the {card.title}'s memory budget was emulated ({_budget_words(budgets[0])}{share})."


def _budget_words(budget: dict[str, Any]) -> str:
    """'12042 MiB total, 11400 MiB free' (the card's total emulated) or '11592 MiB for PyTorch's allocator' (an older
    record's cap)."""
    if budget.get("occupied_mb") is not None:
        return f"{float(budget['budget_mb']):.0f} MiB total, {float(budget['target_free_mb']):.0f} MiB free"
    return f"{float(budget['budget_mb']):.0f} MiB for PyTorch's allocator"
