from __future__ import annotations

from pathlib import Path

import pytest

from planner.host.errors import HostError
from planner.host.uri import parse_host_uri


def test_local() -> None:
    uri = parse_host_uri(" local ")
    assert (uri.kind, uri.path, uri.text) == ("local", None, "local")


def test_sim_relative_dir_becomes_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    uri = parse_host_uri("sim:hostdir")
    assert uri.kind == "sim"
    assert uri.path == tmp_path / "hostdir"
    assert uri.text == "sim:hostdir"


def test_snapshot_names_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    uri = parse_host_uri("snapshot:host.json")
    assert (uri.kind, uri.path, uri.text) == ("snapshot", tmp_path / "host.json",
                                              "snapshot:host.json")


@pytest.mark.parametrize("text", ["qemu:///system", "sim", "ssh://gpu1", "", "LOCAL",
                                  "snapshot"])
def test_anything_else_is_refused_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(HostError, match="expected 'local', 'sim:DIR' or 'snapshot:FILE'"):
        parse_host_uri(text)


def test_sim_without_directory() -> None:
    with pytest.raises(HostError, match="sim: needs a directory"):
        parse_host_uri("sim:")


def test_snapshot_without_file() -> None:
    with pytest.raises(HostError, match="snapshot: needs a file"):
        parse_host_uri("snapshot:")
