"""A plan is a reviewed artefact: an edited plan whose ``plan_sha256`` was recomputed
must not make apply do what review did not see (issue 16, item 2).

Each attack edits an honest plan, re-seals it (a correct digest), and runs the real
CLI: apply must refuse with one ``error:`` line naming the offending change, exit 1, and
leave the host exactly as it was.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from planner.cli.host_opts import open_environment
from planner.plan.model import load_plan
from planner.vocab import Action, Address, Kind
from planner.vocab.attrs import DomainAttrs, HostdevAttrs
from planner.vocab.plan import Change, Plan, summarize
from planner.vocab.reasons import Reason
from tests.apply.simhost import SimHost, write_config
from tests.clirun import aihow

G0, G1 = "0000:17:00.0", "0000:65:00.0"
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "example-mig-cluster.yaml"
INJECTED = ("<domain type='kvm'><name>hpc-controller</name><memory>1024</memory>"
            "<os><type>hvm</type></os><devices><disk type='file' device='disk'>"
            "<source file='/etc/shadow'/><target dev='vda'/></disk></devices>"
            "<metadata><aihow:vm xmlns:aihow='https://aihow.invalid/schemas/vm/1'>"
            "<aihow:defined-by>aihow</aihow:defined-by><aihow:cluster>hpc</aihow:cluster>"
            "</aihow:vm></metadata></domain>")


def _write(plan: Plan, path: Path) -> Path:
    path.write_text(plan.sealed().to_json())
    return path


def _with_actions(plan: Plan, actions: tuple[Change, ...]) -> Plan:
    return plan.model_copy(update={"actions": actions, "summary": summarize(actions)})


def _refused(host: SimHost, plan_file: Path, *fragments: str) -> str:
    before = host.layout(), _domains(host)
    res = aihow("apply", str(plan_file), "--auto-approve", "--allow-reset")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    first = res.stderr.splitlines()[0]
    assert first.startswith("error: ") and "nothing was changed" in first, res.stderr
    for fragment in fragments:
        assert fragment in res.stderr, res.stderr
    assert (host.layout(), _domains(host)) == before  # nothing changed on the host
    assert not (host.state_dir / "journal.jsonl").exists()
    return res.stderr


def _domains(host: SimHost) -> dict[str, str]:
    with open_environment(host.uri).libvirt(read_only=True) as session:
        return {d.name(): d.XMLDesc(2) for d in session.conn.listAllDomains()}


@pytest.fixture()
def two_gpus(tmp_path: Path) -> tuple[SimHost, Path]:
    """G0 managed by the config; G1 holds a GPU instance the config never selects."""
    both = write_config(tmp_path / "both.yaml", {G0: "3g.20gb", G1: "2*1g.5gb"})
    host = SimHost.build(tmp_path / "h", [("a100-40gb", G0, False), ("a100-40gb", G1, False)],
                         both)
    return host, write_config(tmp_path / "only-g0.yaml", {G0: "3g.20gb"})


def test_a_delete_on_a_gpu_the_config_does_not_select_is_refused(
        two_gpus: tuple[SimHost, Path], tmp_path: Path) -> None:
    host, only_g0 = two_gpus
    honest = host.plan(only_g0)
    assert not honest.has_changes and all(a.branch != G1 for a in honest.actions)
    # the plan of a config that drops G1's instances, passed off as the G0-only config's
    drop_g1 = host.plan(write_config(tmp_path / "drop.yaml", {G0: "3g.20gb", G1: ""}))
    deletes = [a for a in drop_g1.actions if a.action is Action.DELETE and a.branch == G1]
    assert deletes
    forged = drop_g1.model_copy(update={"config": honest.config, "host": honest.host})
    err = _refused(host, _write(forged, tmp_path / "forged.json"),
                   f"touches GPU {G1}, which the config does not select",
                   str(deletes[0].address))
    assert "Make a new plan" in err


def test_a_left_out_change_is_refused(two_gpus: tuple[SimHost, Path], tmp_path: Path) -> None:
    host, _ = two_gpus
    cfg = write_config(tmp_path / "more.yaml", {G0: "3g.20gb + 1g.5gb", G1: "2*1g.5gb"})
    honest = host.plan(cfg)
    creates = [a for a in honest.actions if a.action is Action.CREATE]
    assert creates
    last = creates[-1]
    forged = _with_actions(honest, tuple(a for a in honest.actions if a is not last))
    _refused(host, _write(forged, tmp_path / "forged.json"),
             f"{last.address}: the config asks for create, which the plan leaves out")


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> SimHost:
    sim = tmp_path_factory.mktemp("forged") / "sim"
    init = aihow("sim", "init", str(sim), "--spec", str(ROOT / "config" / "sim-a100.toml"))
    assert init.returncode == 0, init.stderr
    return SimHost(sim)


def test_injected_domain_xml_is_refused(example: SimHost, tmp_path: Path) -> None:
    honest = example.plan(EXAMPLE)
    define = next(a for a in honest.actions if a.address == "domain[hpc-controller]")
    assert define.action is Action.CREATE
    evil = define.model_copy(update={"after": DomainAttrs(name="hpc-controller",
                                                          state="shut off", xml=INJECTED)})
    forged = _with_actions(honest, tuple(evil if a is define else a for a in honest.actions))
    _refused(example, _write(forged, tmp_path / "forged.json"),
             "domain[hpc-controller]: create is not what the config plans")
    assert not any("/etc/shadow" in xml for xml in _domains(example).values())


def test_a_detach_from_a_domain_aihow_did_not_define_is_refused(example: SimHost,
                                                               tmp_path: Path) -> None:
    key = "0f0f0f0f-0000-4000-8000-000000000001"
    legacy = ("<domain type='kvm'><name>legacy-vm</name><memory>1048576</memory>"
              "<os><type arch='x86_64'>hvm</type></os><devices>"
              "<hostdev mode='subsystem' type='mdev' model='vfio-pci'>"
              f"<source><address uuid='{key}'/></source></hostdev></devices></domain>")
    with open_environment(example.uri).libvirt(read_only=False) as session:
        session.conn.defineXML(legacy)
        session.commit()
    try:
        honest = example.plan(EXAMPLE)
        assert not any("legacy-vm" in a.address for a in honest.actions)
        detach = Change(
            id=max(a.id for a in honest.actions) + 1,
            address=Address.domain("legacy-vm").hostdev(key), kind=Kind.HOSTDEV,
            action=Action.DELETE, before=HostdevAttrs(domain="legacy-vm", type="mdev",
                                                      device=key),
            after=None, reason="detach", reason_code=Reason.DEVICE_REMOVED, branch=G0)
        forged = _with_actions(honest, (*honest.actions, detach))
        _refused(example, _write(forged, tmp_path / "forged.json"),
                 "touches domain legacy-vm, which the config does not declare and aihow "
                 "did not define")
    finally:
        with open_environment(example.uri).libvirt(read_only=False) as session:
            session.conn.lookupByName("legacy-vm").undefine()
            session.commit()


def test_a_forged_summary_cannot_hide_deletes(two_gpus: tuple[SimHost, Path],
                                              tmp_path: Path) -> None:
    host, _ = two_gpus
    drop = host.plan(write_config(tmp_path / "drop.yaml", {G0: "3g.20gb", G1: ""}))
    assert drop.summary["delete"] > 0
    quiet = dict(drop.summary, delete=0, destructive=0)
    forged = _write(drop.model_copy(update={"summary": quiet}), tmp_path / "forged.json")
    assert json.loads(forged.read_text())["summary"]["delete"] == 0
    for command in ("show", "apply"):
        extra = ("--auto-approve",) if command == "apply" else ()
        res = aihow(command, str(forged), *extra)
        assert res.returncode == 1, res.stdout + res.stderr
        assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr
        assert "does not count the plan's changes" in res.stderr
        assert f"{forged}: summary" in res.stderr
    # the honest plan's summary is the one `show` prints, counted from its changes
    honest = _write(drop, tmp_path / "honest.json")
    shown = aihow("show", str(honest))
    assert shown.returncode == 0, shown.stderr
    assert f"{drop.summary['delete']} to delete" in shown.stdout, shown.stdout
    assert load_plan(honest).summary == summarize(drop.actions)
