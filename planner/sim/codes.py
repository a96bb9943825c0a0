"""NVML return codes and the strings NVIDIA's tools print for them.

The values are nvml.h's (and pynvml's ``NVML_ERROR_*``); a test checks they agree, so the
simulator's driver logic needs no pynvml import. The strings are what ``nvmlErrorString``
returns and therefore what nvidia-smi prints after a colon ("...: Insufficient Resources").
"""

from __future__ import annotations

from enum import IntEnum


class Nvml(IntEnum):
    SUCCESS = 0
    UNINITIALIZED = 1
    INVALID_ARGUMENT = 2
    NOT_SUPPORTED = 3
    NO_PERMISSION = 4
    NOT_FOUND = 6
    INSUFFICIENT_SIZE = 7
    DRIVER_NOT_LOADED = 9
    FUNCTION_NOT_FOUND = 13
    GPU_IS_LOST = 15
    RESET_REQUIRED = 16
    IN_USE = 19
    MEMORY = 20
    INSUFFICIENT_RESOURCES = 23
    ARGUMENT_VERSION_MISMATCH = 25
    INVALID_STATE = 29
    UNKNOWN = 999


ERROR_STRINGS: dict[int, str] = {
    Nvml.SUCCESS: "Success",
    Nvml.UNINITIALIZED: "Uninitialized",
    Nvml.INVALID_ARGUMENT: "Invalid Argument",
    Nvml.NOT_SUPPORTED: "Not Supported",
    Nvml.NO_PERMISSION: "Insufficient Permissions",
    Nvml.NOT_FOUND: "Not Found",
    Nvml.INSUFFICIENT_SIZE: "Insufficient Size",
    Nvml.DRIVER_NOT_LOADED: "Driver Not Loaded",
    Nvml.FUNCTION_NOT_FOUND: "Function Not Found",
    Nvml.GPU_IS_LOST: "GPU is lost",
    Nvml.RESET_REQUIRED: "GPU requires restart",
    Nvml.IN_USE: "In use by another client",
    Nvml.MEMORY: "Insufficient Memory",
    Nvml.INSUFFICIENT_RESOURCES: "Insufficient Resources",
    Nvml.ARGUMENT_VERSION_MISMATCH: "Argument version mismatch",
    Nvml.INVALID_STATE: "Invalid state",
    Nvml.UNKNOWN: "Unknown Error",
}


def error_string(code: int) -> str:
    return ERROR_STRINGS.get(code, f"NVML Error with code {code}")


class DriverError(Exception):
    """The simulated driver refused an operation with an NVML return code."""

    def __init__(self, code: int, detail: str = "") -> None:
        self.code = int(code)
        self.detail = detail
        super().__init__(f"{error_string(self.code)}{': ' + detail if detail else ''}")
