"""User-facing errors: each carries one line that names what is wrong and how to fix it."""

from __future__ import annotations


class SegbenchError(Exception):
    """A mistake in the user's input or environment. The CLI prints it as one line and exits 2."""

    exit_code = 2


class SuiteError(SegbenchError):
    """A suite file that cannot be loaded or validated."""


class ResultsError(SegbenchError):
    """A results directory or file that cannot be read."""


class UnknownModelError(SegbenchError):
    """A model name that is not in the registry."""


class UnsupportedError(Exception):
    """A cell the device or model cannot run (recorded as `status: unsupported`, not a failure)."""


class WeightsError(SegbenchError):
    """A weights file that is missing, unreadable or does not match the model."""
