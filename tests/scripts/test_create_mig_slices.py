"""create-mig-slices.sh against the simulator's nvidia-smi."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.clirun import aihow

from .conftest import A100, L40S, SCRIPTS, SimHost

LGI_ROW = re.compile(r"^\|\s+\d+\s+MIG\s+(\S+)\s+(\d+)\s+(\d+)\s+(\d+):(\d+)", re.M)
MIG_UUID = re.compile(r"MIG-[0-9a-fA-F-]{36}")
FOUR = "3g.20gb,2g.10gb,1g.5gb,1g.5gb"
NOTHING, ERROR, CHANGED = 0, 1, 2


@pytest.fixture
def mig_host(host: SimHost) -> SimHost:
    r = host.script("enable-mig.sh", "--gpu", A100)
    assert r.returncode == 2, r.stdout + r.stderr
    return host


def instances(h: SimHost) -> list[tuple[str, int, int, int]]:
    """(profile, GI id, start, size) for each GPU instance, from nvidia-smi mig -lgi."""
    out = h.smi("mig", "-i", "0", "-lgi").stdout
    return sorted((m[1], int(m[3]), int(m[4]), int(m[5])) for m in LGI_ROW.finditer(out))


def layout(h: SimHost) -> list[tuple[str, int]]:
    return sorted((name, start) for name, _gi, start, _size in instances(h))


def listed_uuids(h: SimHost) -> set[str]:
    return set(MIG_UUID.findall(h.smi("-L").stdout))


def no_overlap(h: SimHost) -> bool:
    used = [s for _n, _g, start, size in instances(h) for s in range(start, start + size)]
    return len(used) == len(set(used))


def test_creates_every_profile_with_its_uuid(mig_host: SimHost) -> None:
    r = mig_host.script("create-mig-slices.sh", "--gpu", A100, "--profiles", FOUR)
    assert r.returncode == CHANGED, r.stdout + r.stderr
    assert sorted(n for n, _s in layout(mig_host)) == ["1g.5gb", "1g.5gb", "2g.10gb", "3g.20gb"]
    assert no_overlap(mig_host)
    # Largest first, at explicit placements.
    created = re.findall(r"using profile MIG (\S+)", r.stdout)
    assert created[0] == "3g.20gb"
    printed = set(MIG_UUID.findall(r.stdout))
    assert len(printed) == 4 and printed == listed_uuids(mig_host)
    # Each printed row pairs a GI with the UUID nvidia-smi -L gives it.
    for name, _gi, start, size in instances(mig_host):
        assert re.search(rf"^\s+{re.escape(name)}\s+\d+\s+{start}:{size}\s+0\s+MIG-", r.stdout,
                         re.M), (name, r.stdout)


def test_rerun_changes_nothing(mig_host: SimHost) -> None:
    made = mig_host.script("create-mig-slices.sh", "--gpu", "0", "--profiles", FOUR)
    assert made.returncode == CHANGED
    before, uuids = instances(mig_host), listed_uuids(mig_host)
    r = mig_host.script("create-mig-slices.sh", "--gpu", "0", "--profiles", FOUR)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "nothing to do" in r.stdout
    assert "Successfully created" not in r.stdout
    assert instances(mig_host) == before and listed_uuids(mig_host) == uuids


def test_adds_only_what_is_missing(mig_host: SimHost) -> None:
    assert mig_host.script("create-mig-slices.sh", "--gpu", "0", "--profiles", "3g.20gb",
                           "--placements", "4").returncode == CHANGED
    kept = instances(mig_host)
    r = mig_host.script("create-mig-slices.sh", "--gpu", "0", "--profiles", FOUR)
    assert r.returncode == CHANGED, r.stdout + r.stderr
    assert set(kept) <= set(instances(mig_host)) and len(instances(mig_host)) == 4


def test_dry_run_prints_the_commands_and_changes_nothing(mig_host: SimHost) -> None:
    r = mig_host.script("create-mig-slices.sh", "--gpu", "0", "--profiles", FOUR, "--dry-run")
    assert r.returncode == CHANGED, r.stdout + r.stderr
    cmds = re.findall(r"would run: nvidia-smi mig -i 0 -cgi (\d+):(\d+) -C", r.stdout)
    assert [c[0] for c in cmds] == ["9", "14", "19", "19"]
    assert len({c[1] for c in cmds}) >= 3
    assert instances(mig_host) == []


def test_driver_order_trap_is_avoided(mig_host: SimHost) -> None:
    """-cgi 19,19,14,9 fails with Insufficient Resources; the script places them all."""
    raw = mig_host.smi("mig", "-i", "0", "-cgi", "19,19,14,9")
    assert raw.returncode != 0 and "Insufficient Resources" in raw.stdout + raw.stderr
    assert mig_host.smi("mig", "-i", "0", "-dgi").returncode == 0
    r = mig_host.script("create-mig-slices.sh", "--gpu", "0", "--profiles", "19,19,14,9")
    assert r.returncode == CHANGED, r.stdout + r.stderr
    assert layout(mig_host) == [("1g.5gb", 2), ("1g.5gb", 3), ("2g.10gb", 0), ("3g.20gb", 4)]


def test_pinned_placements(mig_host: SimHost) -> None:
    r = mig_host.script("create-mig-slices.sh", "--gpu", "0", "--profiles", "3g.20gb,1g.5gb",
                        "--placements", "0,6")
    assert r.returncode == CHANGED, r.stdout + r.stderr
    assert layout(mig_host) == [("1g.5gb", 6), ("3g.20gb", 0)]
    bad = mig_host.script("create-mig-slices.sh", "--gpu", "0", "--profiles", "3g.20gb",
                          "--placements", "2", "--destroy-existing")
    assert bad.returncode == 1 and "cannot start at slice 2" in bad.stderr
    assert layout(mig_host) == [("1g.5gb", 6), ("3g.20gb", 0)]


def test_no_ci(mig_host: SimHost) -> None:
    r = mig_host.script("create-mig-slices.sh", "--gpu", "0", "--profiles", "2g.10gb", "--no-ci")
    assert r.returncode == CHANGED, r.stdout + r.stderr
    assert len(instances(mig_host)) == 1 and listed_uuids(mig_host) == set()
    assert "no compute instance" in r.stdout


def test_unsupported_profile_is_refused(mig_host: SimHost) -> None:
    r = mig_host.script("create-mig-slices.sh", "--gpu", "0", "--profiles", "3g.20gb,3g.40gb")
    assert r.returncode == 1
    assert "profile '3g.40gb' is not offered by this GPU" in r.stderr
    assert "1g.5gb (ID 19)" in r.stderr and r.stderr.count("\n") == 1
    assert instances(mig_host) == []


def test_profiles_that_cannot_fit_are_refused(mig_host: SimHost) -> None:
    r = mig_host.script("create-mig-slices.sh", "--gpu", "0",
                        "--profiles", "4g.20gb,3g.20gb,1g.5gb")
    assert r.returncode == 1 and "do not fit together" in r.stderr
    assert instances(mig_host) == []


def test_non_mig_gpu_is_refused(mig_host: SimHost) -> None:
    r = mig_host.script("create-mig-slices.sh", "--gpu", L40S, "--profiles", "1g.5gb")
    assert r.returncode == 1 and "not MIG-capable" in r.stderr


def test_mig_disabled_is_refused(host: SimHost) -> None:
    r = host.script("create-mig-slices.sh", "--gpu", "0", "--profiles", "1g.5gb")
    assert r.returncode == 1 and "enable-mig.sh" in r.stderr


def test_other_instances_need_destroy_existing(mig_host: SimHost) -> None:
    assert mig_host.script("create-mig-slices.sh", "--gpu", "0",
                           "--profiles", "7g.40gb").returncode == CHANGED
    r = mig_host.script("create-mig-slices.sh", "--gpu", "0", "--profiles", FOUR)
    assert r.returncode == 1 and "--destroy-existing" in r.stderr
    assert layout(mig_host) == [("7g.40gb", 0)]
    r = mig_host.script("create-mig-slices.sh", "--gpu", "0", "--profiles", FOUR,
                        "--destroy-existing")
    assert r.returncode == CHANGED, r.stdout + r.stderr
    # Compute instances are destroyed before GPU instances.
    assert r.stdout.index("destroyed compute instance") < r.stdout.index("destroyed GPU instance")
    assert len(instances(mig_host)) == 4


def test_held_instance_is_not_destroyed(mig_host: SimHost) -> None:
    assert mig_host.script("create-mig-slices.sh", "--gpu", "0",
                           "--profiles", "7g.40gb").returncode == CHANGED
    (uuid,) = listed_uuids(mig_host)
    mig_host.hold("python3", A100, "--mig", uuid)
    r = mig_host.script("create-mig-slices.sh", "--gpu", "0", "--profiles", FOUR,
                        "--destroy-existing")
    assert r.returncode == 1
    assert "In use by another client" in r.stderr
    assert layout(mig_host) == [("7g.40gb", 0)]


def test_kept_instances_that_block_the_rest_are_named(mig_host: SimHost) -> None:
    """3g.20gb@0 leaves no room for 2g+1g+1g; the script says so and changes nothing."""
    assert mig_host.script("create-mig-slices.sh", "--gpu", "0", "--profiles", "3g.20gb",
                           "--placements", "0").returncode == CHANGED
    r = mig_host.script("create-mig-slices.sh", "--gpu", "0", "--profiles", FOUR)
    assert r.returncode == 1
    assert "do not fit beside the ones kept (3g.20gb@0)" in r.stderr
    assert layout(mig_host) == [("3g.20gb", 0)]


def test_failure_midway_destroys_what_this_run_created(mig_host: SimHost) -> None:
    aihow("sim", "fail", mig_host.dir, "--op", "nvmlDeviceCreateGpuInstanceWithPlacement",
          "--at", "3", ok=True)
    r = mig_host.script("create-mig-slices.sh", "--gpu", "0", "--profiles", FOUR)
    assert r.returncode == 1
    assert "creating 1g.5gb at slice" in r.stderr and "Insufficient Resources" in r.stderr
    assert instances(mig_host) == [] and listed_uuids(mig_host) == set()


def test_kept_instances_get_their_missing_compute_instance(mig_host: SimHost) -> None:
    r = mig_host.script("create-mig-slices.sh", "--gpu", "0", "--profiles", "2g.10gb,1g.5gb",
                        "--no-ci")
    assert r.returncode == CHANGED and listed_uuids(mig_host) == set()
    gis = instances(mig_host)
    r = mig_host.script("create-mig-slices.sh", "--gpu", "0", "--profiles", "2g.10gb,1g.5gb")
    assert r.returncode == CHANGED, r.stdout + r.stderr
    assert "Successfully created GPU instance" not in r.stdout
    assert r.stdout.count("Successfully created compute instance") == 2
    assert instances(mig_host) == gis and len(listed_uuids(mig_host)) == 2


def test_destroy_existing_alone_empties_the_gpu(mig_host: SimHost) -> None:
    made = mig_host.script("create-mig-slices.sh", "--gpu", "0", "--profiles", FOUR)
    assert made.returncode == CHANGED
    dry = mig_host.script("create-mig-slices.sh", "--gpu", "0", "--destroy-existing", "--dry-run")
    assert dry.returncode == CHANGED
    assert dry.stdout.splitlines() == ["would run: nvidia-smi mig -i 0 -dci",
                                       "would run: nvidia-smi mig -i 0 -dgi"]
    assert len(instances(mig_host)) == 4
    r = mig_host.script("create-mig-slices.sh", "--gpu", "0", "--destroy-existing")
    assert r.returncode == CHANGED, r.stdout + r.stderr
    assert instances(mig_host) == [] and listed_uuids(mig_host) == set()


def test_refuses_to_run_as_a_normal_user(mig_host: SimHost) -> None:
    env = mig_host.env()
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           str(SCRIPTS / "create-mig-slices.sh"), "--gpu", "0",
                           "--profiles", "1g.5gb"],
                          capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 1 and "must run as root" in proc.stderr
    assert instances(mig_host) == []


def test_help_documents_the_exit_codes(host: SimHost) -> None:
    r = host.script("create-mig-slices.sh", "--help")
    assert r.returncode == NOTHING
    for code, words in ((NOTHING, "nothing to do"), (CHANGED, "changed"), (ERROR, "error")):
        assert re.search(rf"^\s+{code}\s+{words}", r.stdout, re.M), (code, r.stdout)


def test_dry_run_on_a_matching_gpu_verifies_it(mig_host: SimHost) -> None:
    assert mig_host.script("create-mig-slices.sh", "--gpu", "0",
                           "--profiles", FOUR).returncode == CHANGED
    r = mig_host.script("create-mig-slices.sh", "--gpu", "0", "--profiles", "9,14,19,19",
                        "--dry-run")
    assert r.returncode == NOTHING and "would run" not in r.stdout
    assert "nothing to do" in r.stdout


RTX = "0000:01:00.0"
# The real -lgip table of an RTX PRO 6000 (driver 610.43.02), first row of each profile:
# the simulator prints the same layout, +me.all names included.
RTX_LGIP_ROWS = [
    "|   0  MIG 1g.24gb         14     4/4        23.62      No     46     1     1   |",
    "|   0  MIG 1g.24gb+me.all  65     1/1        23.62      No     46     4     4   |",
    "|   0  MIG 4g.96gb          0     1/1        95.12      No     188    4     4   |",
]


@pytest.fixture
def rtx_host(script_host: Callable[..., SimHost]) -> SimHost:
    h = script_host(f"rtx-pro-6000@{RTX}")
    r = h.script("enable-mig.sh", "--gpu", RTX)
    assert r.returncode == CHANGED, r.stdout + r.stderr
    return h


def test_me_all_and_minus_me_profiles_on_rtx_pro_6000(rtx_host: SimHost) -> None:
    lgip = rtx_host.smi("mig", "-i", "0", "-lgip").stdout.splitlines()
    assert all(row in lgip for row in RTX_LGIP_ROWS), "\n".join(lgip)
    wanted = "1g.24gb+me.all,1g.24gb-me,2g.48gb-me"
    r = rtx_host.script("create-mig-slices.sh", "--gpu", RTX, "--profiles", wanted)
    assert r.returncode == CHANGED, r.stdout + r.stderr
    assert sorted(n for n, _s in layout(rtx_host)) == ["1g.24gb+me.all", "1g.24gb-me",
                                                       "2g.48gb-me"]
    assert no_overlap(rtx_host)
    printed = set(MIG_UUID.findall(r.stdout))
    assert len(printed) == 3 and printed == listed_uuids(rtx_host)
    assert re.search(r"^\s+1g\.24gb\+me\.all\s+\d+\s+\d+:3\s+0\s+MIG-", r.stdout, re.M), r.stdout
    again = rtx_host.script("create-mig-slices.sh", "--gpu", RTX, "--profiles", wanted)
    assert again.returncode == NOTHING, again.stdout + again.stderr


def test_a_name_touching_its_id_column_still_parses(rtx_host: SimHost, tmp_path: Path) -> None:
    """Narrower tables (older drivers) let an 18-character name touch the next column:
    "MIG 1g.24gb+me.all65", "MIG 1g.24gb+me.allDevice  0:". The script still reads them."""
    wrapper = tmp_path / "narrow-bin" / "nvidia-smi"
    wrapper.parent.mkdir()
    real = rtx_host.dir / "bin" / "nvidia-smi"
    wrapper.write_text(
        "#!/bin/bash\n"
        f"{real} \"$@\" | sed -E -e 's/(MIG [^ ]+)  ([0-9]{{2}})  /\\1\\2    /' "
        "-e 's/^(  MIG [^ ]{14,}) Device/\\1Device/'\n"
        "exit ${PIPESTATUS[0]}\n")
    wrapper.chmod(0o755)
    glued = subprocess.run([str(wrapper), "mig", "-i", "0", "-lgip"], capture_output=True,
                           text=True, check=False).stdout
    assert "MIG 1g.24gb+me.all65" in glued, glued
    env = {"PATH": f"{wrapper.parent}:{rtx_host.env()['PATH']}"}
    r = rtx_host.script("create-mig-slices.sh", "--gpu", RTX, "--profiles",
                        "1g.24gb+me.all,1g.24gb-me", **env)
    assert r.returncode == CHANGED, r.stdout + r.stderr
    listing = subprocess.run([str(wrapper), "-L"], capture_output=True, text=True,
                             check=False).stdout
    assert "MIG 1g.24gb+me.allDevice" in listing, listing
    assert len(set(MIG_UUID.findall(r.stdout))) == 2, r.stdout


def test_success_is_exit_0_without_detailed_exitcode(mig_host: SimHost) -> None:
    made = mig_host.script("create-mig-slices.sh", "--gpu", A100, "--profiles", FOUR,
                           detailed=False)
    assert made.returncode == NOTHING and len(instances(mig_host)) == 4, made.stdout + made.stderr
    again = mig_host.script("create-mig-slices.sh", "--gpu", A100, "--profiles", FOUR,
                            detailed=False)
    assert again.returncode == NOTHING and "nothing to do" in again.stdout
    bad = mig_host.script("create-mig-slices.sh", "--gpu", A100, "--profiles", "9g.99gb",
                          detailed=False)
    assert bad.returncode == ERROR
