"""ctypes plumbing of the simulated NVML: what a C function does with its arguments
(out-parameters behind ``byref``, caller-allocated arrays and string buffers)."""

from __future__ import annotations

import ctypes
from typing import Any

from planner.sim.codes import DriverError, Nvml


def _deref(ref: Any) -> Any:
    """The object behind an out-parameter: ``byref(x)`` or ``pointer(x)`` -> x."""
    if type(ref).__name__ == "CArgObject":
        return ref._obj
    if isinstance(ref, ctypes._Pointer):
        return ref.contents
    raise TypeError(
        f"expected byref(...) or a pointer for an NVML out-parameter, got {type(ref).__name__}"
    )


def _in_struct(ref: Any) -> Any:
    """An input struct passed by reference (C: ``const T *``); by value would crash real NVML."""
    if isinstance(ref, ctypes.Structure):
        raise TypeError(
            f"{type(ref).__name__} passed by value where NVML takes a pointer; pass byref(...)"
        )
    return _deref(ref)


def _int(value: Any) -> int:
    if isinstance(value, int):
        return value
    if hasattr(value, "value"):
        return int(value.value)
    raise TypeError(f"expected an integer argument, got {type(value).__name__}")


def _bytes(value: Any) -> str:
    raw = value.value if hasattr(value, "value") else value
    if raw is None:
        raise DriverError(Nvml.INVALID_ARGUMENT, "NULL string")
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _write_string(buf: Any, length: Any, text: str) -> None:
    data = text.encode()
    if len(data) + 1 > _int(length):
        raise DriverError(Nvml.INSUFFICIENT_SIZE, f"buffer of {_int(length)} for {text!r}")
    buf.value = data


def _array(ref: Any) -> tuple[Any, int | None]:
    """A caller-allocated array (or pointer to its first element) and its length if known."""
    if ref is None:
        return None, 0
    if type(ref).__name__ == "CArgObject":
        ref = ref._obj
    if isinstance(ref, ctypes.Array):
        return ref, len(ref)
    if isinstance(ref, ctypes._Pointer):
        return ref, None
    raise TypeError(f"expected a ctypes array for an NVML list output, got {type(ref).__name__}")
