"""The plan file: schema, canonical bytes, digest check, determinism, fingerprint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from hosts import A100, domain, gi, gpu, host, make, manage, mdev, node, pci, type_id, vf

from planner.plan.fingerprint import fingerprint_requests
from planner.plan.model import PlanFileError, dump_plan, load_plan, parse_plan, plan_schema
from planner.plan.request import Requests, mdev_uuid

G17, G18 = pci(0x17), pci(0x18)
HERE = Path(__file__).parent
ROOT = HERE.parents[1]


def _busy_host():  # type: ignore[no-untyped-def]
    old = mdev_uuid("hpc/n1/gpu0")
    return host(
        gpu(0x17, instances=[gi("3g.20gb", 4), gi("1g.5gb", 0)]),
        gpu(0x18, index=1, mig=False, processes=["dcgm"]),
        mdevs=[mdev(old, vf(0x17, 0), type_id(A100, "3g.20gb"), gi_id=2)],
        domains=[domain("n1", old)],
    )


def _busy_plan():  # type: ignore[no-untyped-def]
    return make(_busy_host(), node("n1", "2g.10gb", placement=4), node("n2", "1g.5gb"),
                policies=[manage(G17), manage(G18, "3g.20gb + 2*1g.5gb", i=1)])


def test_plans_validate_against_the_shipped_schema() -> None:
    schema = plan_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    for plan in (_busy_plan(), make(host(gpu(0x17)))):
        jsonschema.validate(json.loads(dump_plan(plan)), schema)


def test_schema_rejects_a_plan_missing_a_field() -> None:
    data = json.loads(dump_plan(_busy_plan()))
    del data["actions"][0]["reason"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, plan_schema())


def test_plan_round_trips_and_the_digest_is_checked(tmp_path: Path) -> None:
    plan = _busy_plan()
    path = tmp_path / "plan.json"
    path.write_text(dump_plan(plan))
    assert dump_plan(load_plan(path)) == dump_plan(plan)
    tampered = path.read_text().replace('"destructive":true', '"destructive":false', 1)
    assert tampered != path.read_text()
    path.write_text(tampered)
    with pytest.raises(PlanFileError, match="plan_sha256 does not match"):
        load_plan(path)


def test_the_digest_is_read_off_the_lines_and_survives_reformatting(tmp_path: Path) -> None:
    """The loader reads the digest off the file's change lines (no re-encoding); a file
    another tool reformatted keeps its meaning and still loads; an edit anywhere, in
    either layout, is refused."""
    from planner.vocab.plan import file_digest

    plan = _busy_plan()
    text = dump_plan(plan)
    assert file_digest(text, json.loads(text)) == plan.plan_sha256
    assert dump_plan(parse_plan(text)) == text
    pretty = json.dumps(json.loads(text), indent=4)
    assert file_digest(pretty, json.loads(pretty)) is None
    assert dump_plan(parse_plan(pretty)) == text
    edits = [text.replace('"reason_code":"wanted"', '"reason_code":"kept"', 1),
             text.replace('"uri":"sim:/test"', '"uri":"sim:/other"', 1),
             pretty.replace('"destructive": true', '"destructive": false', 1)]
    for edited in edits:
        assert edited not in (text, pretty)
        with pytest.raises(PlanFileError, match="plan_sha256 does not match"):
            parse_plan(edited)


def test_unreadable_or_foreign_plan_files_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(PlanFileError, match=r"x\.json:1:2: not JSON"):
        parse_plan("{oops", "x.json")
    with pytest.raises(PlanFileError, match="not an aihow plan"):
        parse_plan("{}", "x.json")
    with pytest.raises(PlanFileError, match="plan format 3.0 is not supported"):
        parse_plan('{"format_version": "3.0"}', "x.json")
    with pytest.raises(PlanFileError, match=r"plan format 1.0 is not supported .*`aihow plan`"):
        parse_plan('{"format_version": "1.0"}', "x.json")
    with pytest.raises(PlanFileError, match="cannot read plan"):
        load_plan(tmp_path / "missing.json")


def test_a_change_whose_kind_is_not_a_string_is_a_one_line_error() -> None:
    # found by the edit test of test_plan_canonical: a list was looked up in a dict
    text = next((ROOT / "plans").glob("*.json")).read_text()
    data = json.loads(text)
    data["actions"][0]["kind"] = []
    with pytest.raises(PlanFileError, match=r"x\.json: actions\.0\.kind: "):
        parse_plan(json.dumps(data), "x.json")


def test_plan_bytes_are_identical_across_processes() -> None:
    code = (
        f"import sys; sys.path.insert(0, {str(HERE)!r})\n"
        "from test_plan_file import _busy_plan\n"
        "from planner.plan.model import dump_plan\n"
        "sys.stdout.write(dump_plan(_busy_plan()))\n"
    )
    outs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={"PYTHONHASHSEED": seed, "PATH": ""}).stdout
            for seed in ("1", "2")]
    assert outs[0] == outs[1] == dump_plan(_busy_plan())
    assert outs[0].endswith("}\n")


def test_fingerprint_ignores_ids_the_driver_reassigns() -> None:
    req = Requests(policies=(manage(G17),), slices=(node("n1", "1g.5gb"),))
    a = host(gpu(0x17, instances=[gi("1g.5gb", 0, gi_id=7, mig_uuid="MIG-aaaa"),
                                  gi("2g.10gb", 2, gi_id=4)]))
    b = host(gpu(0x17, instances=[gi("2g.10gb", 2, gi_id=6),
                                  gi("1g.5gb", 0, gi_id=9, mig_uuid="MIG-bbbb")]))
    assert fingerprint_requests(a, req) == fingerprint_requests(b, req)


def test_fingerprint_tracks_what_the_plan_depends_on() -> None:
    req = Requests(policies=(manage(G17),), slices=(node("n1", "1g.5gb"),))
    base = fingerprint_requests(host(gpu(0x17, instances=[gi("1g.5gb", 0)])), req)
    others = [
        host(gpu(0x17, instances=[gi("1g.5gb", 1)])),  # placement
        host(gpu(0x17, instances=[gi("1g.5gb", 0, ci=False)])),  # compute instance
        host(gpu(0x17, instances=[gi("1g.5gb", 0)], pending=False, mig=False)),  # mode
        host(gpu(0x17, instances=[gi("1g.5gb", 0)]), domains=[domain("x")]),  # domains
        host(gpu(0x17, instances=[gi("1g.5gb", 0)]), domains=[domain("x", running=False)]),
        host(gpu(0x17, instances=[gi("1g.5gb", 0)]),
             mdevs=[mdev("0f0f0f0f-0000-4000-8000-000000000009", vf(0x17, 0), "nvidia-470", 7)]),
    ]
    prints = [fingerprint_requests(h, req) for h in others]
    assert base not in prints and len(set(prints)) == len(prints)


def test_fingerprint_covers_mig_uuids_the_config_names() -> None:
    uuid = "MIG-11111111-2222-3333-4444-555555555555"
    req = Requests(slices=(node("n1", mig_uuid=uuid),))
    with_it = host(gpu(0x17, instances=[gi("1g.5gb", 0, mig_uuid=uuid)]))
    moved = host(gpu(0x17, instances=[gi("1g.5gb", 0, mig_uuid="MIG-other")]))
    assert fingerprint_requests(with_it, req) != fingerprint_requests(moved, req)
    # and a UUID the config does not name is not part of it
    plain = Requests(slices=(node("n1", "1g.5gb"),))
    assert fingerprint_requests(with_it, plain) == fingerprint_requests(moved, plain)


def test_fingerprint_of_the_plan_matches_its_host() -> None:
    plan = _busy_plan()
    req = Requests(policies=(manage(G17), manage(G18, "3g.20gb + 2*1g.5gb", i=1)),
                   slices=(node("n1", "2g.10gb", placement=4), node("n2", "1g.5gb")))
    assert plan.host.fingerprint == fingerprint_requests(_busy_host(), req)


def test_a_replace_is_one_change_with_its_delete_step() -> None:
    plan = _busy_plan()
    counted = sum(plan.summary[k] for k in ("create", "update", "replace", "delete", "no-op"))
    assert counted == len(plan.actions)
    assert len({a.address for a in plan.actions}) == len(plan.actions)  # one per address
    replaces = [a for a in plan.actions if a.action == "replace"]
    assert replaces
    for a in replaces:
        assert a.delete_step is not None and a.before is not None and a.after is not None
        assert a.delete_step.id < a.id and a.delete_step.id in a.depends_on
    assert all(a.delete_step is None for a in plan.actions if a.action != "replace")


def test_plan_making_leaves_nothing_for_the_cyclic_collector() -> None:
    """Plan-making runs with the cyclic collector off (it only costs time there), so a
    reference cycle would keep its whole plan graph, changes and resources alive until
    the process ends: at 4,096 GPUs that was most of the peak memory."""
    import gc

    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        plan = _busy_plan()
        gc.collect()
        ours = [o for o in gc.garbage
                if (getattr(type(o), "__module__", "") or "").startswith("planner")
                or (getattr(o, "__module__", "") or "").startswith("planner")]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert plan.actions
    assert not ours, sorted({type(o).__name__ for o in ours})
