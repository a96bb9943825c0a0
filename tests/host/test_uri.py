from __future__ import annotations

from pathlib import Path

import pytest

from planner.host.errors import HostError
from planner.host.uri import parse_host_uri, require_sim_dir


def test_local() -> None:
    uri = parse_host_uri(" local ")
    assert (uri.kind, uri.sim_dir, uri.text) == ("local", None, "local")


def test_sim_relative_dir_becomes_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    uri = parse_host_uri("sim:hostdir")
    assert uri.kind == "sim"
    assert uri.sim_dir == tmp_path / "hostdir"
    assert uri.text == "sim:hostdir"


@pytest.mark.parametrize("text", ["qemu:///system", "sim", "ssh://gpu1", "", "LOCAL"])
def test_anything_else_is_refused_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(HostError, match="expected 'local' or 'sim:DIR'"):
        parse_host_uri(text)


def test_sim_without_directory() -> None:
    with pytest.raises(HostError, match="sim: needs a directory"):
        parse_host_uri("sim:")


def test_require_sim_dir_names_the_missing_host(tmp_path: Path) -> None:
    with pytest.raises(HostError, match="no simulated host in .*aihow sim init"):
        require_sim_dir(parse_host_uri(f"sim:{tmp_path}"))
    (tmp_path / "state.json").write_text("{}")
    assert require_sim_dir(parse_host_uri(f"sim:{tmp_path}")) == tmp_path
