"""Errors raised by the host adapters: user-facing, one line, naming the host part."""

from __future__ import annotations

from planner.errors import AihowError


class HostError(AihowError):
    """The host (real or simulated) could not be read or changed as asked."""


class NvmlOperationError(HostError):
    """An NVML call failed; ``nvml_code`` keeps NVML's return code for the executor."""

    def __init__(self, message: str, nvml_code: int | None = None) -> None:
        super().__init__(message)
        self.nvml_code = nvml_code
