"""enable-mig.sh against the simulator's nvidia-smi."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

from .conftest import A100, L40S, SCRIPTS, SimHost

NOTHING, ERROR, CHANGED, PENDING = 0, 1, 2, 3


def test_help_documents_the_exit_codes(host: SimHost) -> None:
    r = host.script("enable-mig.sh", "--help")
    assert r.returncode == 0
    for code, words in ((NOTHING, "nothing to do"), (CHANGED, "changed"),
                        (PENDING, "needs reset or reboot"), (ERROR, "error")):
        assert re.search(rf"^\s+{code}\s+{words}", r.stdout, re.M | re.I), (code, r.stdout)


def test_enable_then_rerun_is_idempotent(host: SimHost) -> None:
    assert host.mig_mode() == ("Disabled", "Disabled")
    first = host.script("enable-mig.sh", "--gpu", A100)
    assert first.returncode == CHANGED, first.stdout + first.stderr
    assert "MIG mode enabled" in first.stdout
    assert host.mig_mode() == ("Enabled", "Enabled")
    again = host.script("enable-mig.sh", "--gpu", "17:00.0")
    assert again.returncode == NOTHING, again.stdout + again.stderr
    assert "already enabled, nothing to do" in again.stdout
    assert host.mig_mode() == ("Enabled", "Enabled")


def test_dry_run_changes_nothing(host: SimHost) -> None:
    r = host.script("enable-mig.sh", "--gpu", "0", "--dry-run")
    assert r.returncode == CHANGED
    assert f"would run: nvidia-smi -i {A100} -mig 1" in r.stdout
    assert host.mig_mode() == ("Disabled", "Disabled")


def test_non_mig_gpu_is_skipped_with_a_clear_line(host: SimHost) -> None:
    r = host.script("enable-mig.sh", "--gpu", L40S)
    assert r.returncode == NOTHING
    assert re.search(rf"GPU 1 \({L40S}, NVIDIA L40S\): skipped, not MIG-capable", r.stdout)
    every = host.script("enable-mig.sh", "--gpu", "all")
    assert every.returncode == CHANGED
    assert "skipped, not MIG-capable" in every.stdout and "MIG mode enabled" in every.stdout


def test_held_gpu_stays_pending_and_reset_names_the_holder(host: SimHost) -> None:
    host.hold("python3")
    host.process(3100, "/usr/bin/python3", "/dev/nvidiactl", "/dev/nvidia0")
    host.process(3200, "/usr/sbin/sshd")
    pending = host.script("enable-mig.sh", "--gpu", A100)
    assert pending.returncode == PENDING, pending.stdout + pending.stderr
    assert "pending" in pending.stdout and "--reset" in pending.stdout
    assert "reboot" in pending.stdout
    assert host.mig_mode() == ("Disabled", "Enabled")

    refused = host.script("enable-mig.sh", "--gpu", A100, "--reset")
    assert refused.returncode == ERROR
    assert "pid 3100: python3 has /dev/nvidiactl /dev/nvidia0 open" in refused.stdout
    assert "sshd" not in refused.stdout
    assert host.mig_mode() == ("Disabled", "Enabled")


def test_reset_names_services_from_the_process_table(host: SimHost) -> None:
    host.hold("nvidia-persistenced")
    host.process(4242, "/usr/bin/nvidia-persistenced")
    host.process(4343, "/usr/bin/nv-hostengine")
    host.process(4444, "/usr/bin/sshd")
    assert host.script("enable-mig.sh", "--gpu", A100).returncode == PENDING
    r = host.script("enable-mig.sh", "--gpu", A100, "--reset")
    assert r.returncode == ERROR
    assert "pid 4242: nvidia-persistenced" in r.stdout
    assert "pid 4343: DCGM nv-hostengine" in r.stdout
    assert "sshd" not in r.stdout


def test_reset_applies_the_pending_mode_once_free(host: SimHost) -> None:
    host.hold("python3")
    assert host.script("enable-mig.sh", "--gpu", A100).returncode == PENDING
    host.release()
    r = host.script("enable-mig.sh", "--gpu", A100, "--reset")
    assert r.returncode == CHANGED, r.stdout + r.stderr
    assert "reset done" in r.stdout
    assert host.mig_mode() == ("Enabled", "Enabled")


def test_hopper_note_about_reboots(script_host: Callable[..., SimHost]) -> None:
    h = script_host(f"h100-80gb@{A100}")
    r = h.script("enable-mig.sh")
    assert r.returncode == CHANGED, r.stdout + r.stderr
    assert "does not survive a reboot" in r.stdout


def test_ampere_has_no_reboot_note(host: SimHost) -> None:
    r = host.script("enable-mig.sh", "--gpu", A100)
    assert "does not survive" not in r.stdout


def test_disable(host: SimHost) -> None:
    assert host.script("enable-mig.sh", "--gpu", A100).returncode == CHANGED
    r = host.script("enable-mig.sh", "--gpu", A100, "--disable")
    assert r.returncode == CHANGED and "MIG mode disabled" in r.stdout
    assert host.mig_mode() == ("Disabled", "Disabled")


def test_disable_with_instances_says_to_destroy_them(host: SimHost) -> None:
    assert host.script("enable-mig.sh", "--gpu", A100).returncode == CHANGED
    assert host.smi("mig", "-i", "0", "-cgi", "19", "-C").returncode == 0
    r = host.script("enable-mig.sh", "--gpu", A100, "--disable")
    assert r.returncode == ERROR
    assert "create-mig-slices.sh" in r.stderr + r.stdout
    assert host.mig_mode() == ("Enabled", "Enabled")


def test_bad_arguments_are_one_line_errors(host: SimHost) -> None:
    for args, words in ((["--gpu", "7"], "no GPU with that index"),
                        (["--gpu", "0000:99:00.0"], "no GPU at 0000:99:00.0"),
                        (["--gpu", "banana"], "not an index"),
                        (["--frobnicate"], "unknown argument")):
        r = host.script("enable-mig.sh", *args)
        assert r.returncode == ERROR, args
        assert r.stderr.count("\n") == 1 and words in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr
    assert host.mig_mode() == ("Disabled", "Disabled")


def test_missing_nvidia_smi(host: SimHost) -> None:
    r = host.script("enable-mig.sh", PATH="/usr/bin:/bin", NVIDIA_SMI="nvidia-smi-absent")
    assert r.returncode == ERROR and "nvidia-smi not found" in r.stderr


# The "Processes" section of 'nvidia-smi -q' on a real driver (the simulator does not print
# one); appended to the simulator's own -q output for the GPU by a pass-through wrapper.
REAL_PROCESSES = """\
    Processes
        GPU instance ID                   : N/A
        Compute instance ID               : N/A
        Process ID                        : 28411
            Type                          : C
            Name                          : /usr/bin/python3
            Used GPU Memory               : 1024 MiB
"""


def test_reset_names_processes_nvidia_smi_reports(host: SimHost, tmp_path: Path) -> None:
    (tmp_path / "processes.txt").write_text(REAL_PROCESSES)
    wrapper = tmp_path / "smi-with-processes"
    wrapper.write_text(f"""#!/bin/bash
if [ "$1" = "-q" ] && [ "$2" = "-i" ]; then
    "{host.dir}/bin/nvidia-smi" "$@" && cat "{tmp_path}/processes.txt"
    exit
fi
exec "{host.dir}/bin/nvidia-smi" "$@"
""")
    wrapper.chmod(0o755)
    host.hold("python3")
    assert host.script("enable-mig.sh", "--gpu", A100).returncode == PENDING
    r = host.script("enable-mig.sh", "--gpu", A100, "--reset", NVIDIA_SMI=str(wrapper))
    assert r.returncode == ERROR
    assert "pid 28411: /usr/bin/python3 (a process on the GPU: stop it)" in r.stdout


def test_success_is_exit_0_without_detailed_exitcode(host: SimHost) -> None:
    """Shell convention: a `set -e` caller goes on after a run that changed something or
    left the change pending; only errors are non-zero."""
    host.hold("python3")
    pending = host.script("enable-mig.sh", "--gpu", A100, detailed=False)
    assert pending.returncode == NOTHING and "reboot" in pending.stdout, pending.stdout
    assert host.mig_mode() == ("Disabled", "Enabled")
    refused = host.script("enable-mig.sh", "--gpu", A100, "--reset", detailed=False)
    assert refused.returncode == ERROR
    host.release()
    changed = host.script("enable-mig.sh", "--gpu", A100, "--reset", detailed=False)
    assert changed.returncode == NOTHING and host.mig_mode() == ("Enabled", "Enabled"), \
        changed.stdout + changed.stderr
    assert host.script("enable-mig.sh", "--gpu", A100, detailed=False).returncode == NOTHING
    shell = subprocess.run(
        ["bash", "-c", f"set -e; {SCRIPTS / 'enable-mig.sh'} --gpu {L40S}; echo after"],
        capture_output=True, text=True, env=host.env(), check=False)
    assert shell.returncode == 0 and shell.stdout.endswith("after\n"), shell.stderr
