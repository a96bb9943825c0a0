"""The read-only NVML view: only query functions get through."""

from __future__ import annotations

import re

import pynvml
import pytest

from planner.host.nvml import MUTATING_FUNCTIONS, QUERY_FUNCTIONS, NvmlHost, ReadOnlyNvml


def test_every_listed_name_is_a_real_pynvml_function() -> None:
    for name in QUERY_FUNCTIONS | MUTATING_FUNCTIONS:
        assert callable(getattr(pynvml, name, None)), name
    assert not QUERY_FUNCTIONS & MUTATING_FUNCTIONS


def test_no_changing_function_is_in_the_query_list() -> None:
    changing = re.compile(r"(Set|Create|Destroy|Reset|Clear|Register|Inject|Enable|Disable)")
    assert not [n for n in QUERY_FUNCTIONS if changing.search(n.removeprefix("nvml"))]


@pytest.mark.parametrize("name", sorted(MUTATING_FUNCTIONS))
def test_mutators_are_not_reachable(name: str) -> None:
    view = ReadOnlyNvml(pynvml)
    with pytest.raises(AttributeError, match="read-only"):
        getattr(view, name)


def test_unlisted_functions_are_not_reachable_either() -> None:
    view = ReadOnlyNvml(pynvml)
    with pytest.raises(AttributeError):
        view.nvmlDeviceSetPersistenceMode  # noqa: B018
    with pytest.raises(AttributeError):
        view.nvml = pynvml  # type: ignore[misc]


def test_constants_types_and_errors_pass_through() -> None:
    view = ReadOnlyNvml(pynvml)
    assert view.NVML_DEVICE_MIG_ENABLE == 1
    assert view.c_nvmlGpuInstancePlacement_t is pynvml.c_nvmlGpuInstancePlacement_t
    assert view.NVMLError_InUse is pynvml.NVMLError_InUse
    assert view.nvmlDeviceGetCount is pynvml.nvmlDeviceGetCount


def test_mutating_through_a_read_only_host_fails_before_reaching_nvml() -> None:
    host = NvmlHost(ReadOnlyNvml(pynvml))
    with pytest.raises(AttributeError, match="read-only"):
        host.nvml.nvmlDeviceSetMigMode(None, 1)


def test_no_nvml_library_is_a_clear_one_line_error() -> None:
    from planner.host.errors import HostError

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError_LibraryNotFound:
        pass
    else:  # pragma: no cover - a machine with an NVIDIA driver
        pynvml.nvmlShutdown()
        pytest.skip("this machine has NVML")
    with pytest.raises(HostError, match="NVML library not found") as info:
        NvmlHost(ReadOnlyNvml(pynvml)).open()
    assert "\n" not in str(info.value)
