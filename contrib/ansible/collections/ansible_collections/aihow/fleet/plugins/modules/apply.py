#!/usr/bin/python
# Copyright: aihow contributors
# Apache License 2.0 (see the repository's LICENSE)
"""aihow.fleet.apply: plan (check mode) or apply an aihow cluster config on the target."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: apply
short_description: Plan or apply an aihow GPU layout on the target host
version_added: "0.1.0"
description:
  - Runs C(aihow plan) for O(config) against O(host) on the target and, unless in check
    mode, C(aihow apply) of exactly that plan file.
  - In check mode only the plan is made; the task reports C(changed) when the plan has any
    change. With C(--diff) the plan's text rendering is returned as the diff.
  - A plan that deletes, replaces or undefines anything, takes a device from a running
    domain (destructive) or resets a GPU is applied only with O(auto_approve=true), the
    same changes C(aihow apply) asks about at its prompt; a GPU reset also needs
    O(allow_reset=true), which aihow itself checks. Otherwise the task fails before
    anything changes, naming those changes.
  - When the apply fails, aihow has already rolled the host back; the task fails with
    aihow's one-line error and says whether the host is back at the plan's starting
    fingerprint.
options:
  config:
    description: Path of the cluster config YAML on the target.
    type: path
    required: true
  host:
    description: The aihow host URI (C(local), or C(sim:DIR) for a simulated host).
    type: str
    default: local
  auto_approve:
    description:
      - Approve a plan that deletes, replaces or undefines something, takes a device from
        a running domain or resets a GPU, as C(aihow apply --auto-approve) does at its
        prompt. Plans that only create or update apply without it.
    type: bool
    default: false
  allow_reset:
    description: Allow the GPU resets that MIG mode changes need (C(--allow-reset)).
    type: bool
    default: false
  restart_running_vms:
    description:
      - Let apply shut down (ACPI, then destroy after a timeout) the running domains
        whose slice the plan changes or whose domain it deletes, and start them again
        after (C(--restart-running-vms)). Without it such a plan fails on the host,
        which aihow leaves as it was.
    type: bool
    default: false
  libvirt_uri:
    description: libvirt URI to use instead of the host's (C(--libvirt-uri)).
    type: str
  plan_dest:
    description:
      - Also keep the plan file (JSON) at this path on the target, in check mode too, so
        the controller can fetch each host's plan for a fleet review
        (C(aihow show --format markdown PLAN...)).
    type: path
  executable:
    description: The aihow command (default C(aihow) on the target's PATH).
    type: path
  timeout:
    description: Seconds each aihow command may run before the task fails.
    type: int
    default: 1800
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
author:
  - aihow contributors
"""

EXAMPLES = r"""
- name: Review what would change (check mode), keeping the plan for the fleet review
  aihow.fleet.apply:
    config: /etc/aihow/cluster.yaml
    plan_dest: /var/lib/aihow/review/plan.json
  check_mode: true

- name: Converge the host, approving MIG mode changes that reset a GPU
  aihow.fleet.apply:
    config: /etc/aihow/cluster.yaml
    auto_approve: true
    allow_reset: true
"""

RETURN = r"""
summary:
  description: The plan's counts (create, update, replace, delete, no-op, needs_reset,
    destructive).
  returned: success or after a plan was made
  type: dict
plan_sha256:
  description: The digest of the plan made (and applied, outside check mode).
  returned: success or after a plan was made
  type: str
fingerprint:
  description: The host's fingerprint now (after the apply; in check mode or without
    changes, the one the plan was made from).
  returned: always, once the host could be probed
  type: str
generation:
  description: The latest generation recorded on the host (the one this apply wrote, if it
    applied); null when none was ever recorded.
  returned: success
  type: int
plan_path:
  description: Where the plan file was kept (O(plan_dest)).
  returned: when O(plan_dest) is set
  type: str
rolled_back:
  description: After a failed apply, whether the host is back at the plan's starting
    fingerprint.
  returned: failure of the apply step
  type: bool
stdout_lines:
  description: aihow's output of the last command run.
  returned: always
  type: list
  elements: str
stderr_lines:
  description: aihow's error output of the last command run.
  returned: always
  type: list
  elements: str
"""

import json
import os
import subprocess
import tempfile

from ansible.module_utils.basic import AnsibleModule

ARGUMENT_SPEC = {
    "config": {"type": "path", "required": True},
    "host": {"type": "str", "default": "local"},
    "auto_approve": {"type": "bool", "default": False},
    "allow_reset": {"type": "bool", "default": False},
    "restart_running_vms": {"type": "bool", "default": False},
    "libvirt_uri": {"type": "str"},
    "plan_dest": {"type": "path"},
    "executable": {"type": "path"},
    "timeout": {"type": "int", "default": 1800},
}


class _Failed(Exception):
    """An aihow command failed: message is its first error line."""

    def __init__(self, message, out, err):
        super().__init__(message)
        self.out, self.err = out, err


def _first_error(err, out):
    """aihow prints one ``error: ...`` line (config errors: ``FILE:LINE:COL: ...``)."""
    for line in err.splitlines():
        if line.startswith("error:"):
            return line[len("error:"):].strip()
    lines = [ln for ln in err.splitlines() if ln.strip()] or out.splitlines()[-1:]
    return lines[0].strip() if lines else "aihow failed without a message"


def _run(argv, timeout):
    """stdout of aihow; _Failed on a non-zero exit or a timeout."""
    env = dict(os.environ, NO_COLOR="1")
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              check=False, env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise _Failed(f"{' '.join(argv[:2])} did not finish within {timeout}s", "", "") \
            from None
    except OSError as exc:
        raise _Failed(f"cannot run {argv[0]}: {exc.strerror}", "", "") from None
    if done.returncode != 0:
        raise _Failed(_first_error(done.stderr, done.stdout), done.stdout, done.stderr)
    return done.stdout, done.stderr


class Aihow:
    def __init__(self, module):
        p = module.params
        self.exe = p["executable"] or module.get_bin_path("aihow", required=True)
        self.host, self.timeout = p["host"], p["timeout"]
        self.libvirt = ["--libvirt-uri", p["libvirt_uri"]] if p["libvirt_uri"] else []
        self.out, self.err = "", ""

    def __call__(self, *args):
        try:
            self.out, self.err = _run([self.exe, *args], self.timeout)
        except _Failed as exc:
            self.out, self.err = exc.out, exc.err
            raise
        return self.out

    def plan(self, config, dest):
        """(plan dict, plan text) for config against the host, the JSON kept at dest."""
        text = self("plan", config, "--host", self.host, *self.libvirt, "-o", dest)
        with open(dest) as f:
            return json.load(f), text

    def fingerprint(self, config):
        out = self("plan", config, "--host", self.host, *self.libvirt, "--format", "json")
        return json.loads(out)["host"]["fingerprint"]

    def latest_generation(self):
        gens = json.loads(self("generations", "--host", self.host, "--format", "json"))
        return gens[-1] if gens else None


def _has_changes(plan):
    return any(a.get("action") != "no-op" for a in plan.get("actions", []))


APPROVAL_SHOWN = 5  # changes named in the refusal; the rest are counted


def needs_approval(plan):
    """The changes aihow apply asks about before it acts (its own rule, in
    planner/cli/apply_cmds.py): deletes (a domain's delete undefines it), replaces, steps
    that take a device from a running domain, and GPU resets; each as aihow's prompt
    words it."""
    risky = []
    for a in plan.get("actions", []):
        action = a.get("action")
        if action not in ("delete", "replace") and not a.get("destructive") \
                and not a.get("needs_reset"):
            continue
        address = a.get("address", "?")
        verb = "undefine" if action == "delete" and a.get("kind") == "domain" else action
        notes = [n for n, on in (("GPU reset", a.get("needs_reset")),
                                 ("used by a running VM", a.get("destructive"))) if on]
        risky.append(f"{verb} {address}" + (f" ({', '.join(notes)})" if notes else ""))
    return risky


def approval_message(risky):
    shown = risky[:APPROVAL_SHOWN]
    more = len(risky) - len(shown)
    listed = "; ".join(shown) + (f"; and {more} more" if more else "")
    return (f"the plan has {len(risky)} change(s) that delete, replace, undefine or reset "
            f"({listed}); set auto_approve: true to apply it (nothing was changed)")


def main():
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        supports_check_mode=True,
    )
    p = module.params
    aihow = Aihow(module)
    result = {"changed": False}

    def fail(msg, **extra):
        module.fail_json(msg=msg, stdout_lines=aihow.out.splitlines(),
                         stderr_lines=aihow.err.splitlines(), **result, **extra)

    dest = p["plan_dest"]
    if dest:
        os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
        result["plan_path"] = dest
    else:
        fd, dest = tempfile.mkstemp(prefix="aihow-plan-", suffix=".json", dir=module.tmpdir)
        os.close(fd)

    try:
        plan, text = aihow.plan(p["config"], dest)
    except _Failed as exc:
        fail(str(exc))
    changes = _has_changes(plan)
    summary = plan.get("summary", {})
    result.update(changed=changes, summary=summary, plan_sha256=plan["plan_sha256"],
                  fingerprint=plan["host"]["fingerprint"])
    if module._diff:
        result["diff"] = {"prepared": text}

    if module.check_mode or not changes:
        try:
            gen = aihow.latest_generation()
        except _Failed as exc:
            fail(str(exc))
        module.exit_json(generation=gen["number"] if gen else None,
                         stdout_lines=text.splitlines(), stderr_lines=[], **result)

    risky = needs_approval(plan)
    if risky and not p["auto_approve"]:
        result["changed"] = False
        fail(approval_message(risky))

    argv = ["apply", dest, "--host", p["host"], "--auto-approve", *aihow.libvirt]
    if p["allow_reset"]:
        argv.append("--allow-reset")
    if p["restart_running_vms"]:
        argv.append("--restart-running-vms")
    try:
        aihow(*argv)
    except _Failed as exc:
        # aihow rolled the host back; check that against the host itself.
        message, out, err = str(exc), aihow.out, aihow.err
        try:
            now = aihow.fingerprint(p["config"])
        except _Failed as probe_exc:
            now = None
            message += f" (and the host could not be probed after: {probe_exc})"
        aihow.out, aihow.err = out, err
        back = now == plan["host"]["fingerprint"]
        result.update(fingerprint=now, changed=not back)
        fail(message, rolled_back=back)
    applied_out, applied_err = aihow.out, aihow.err
    try:
        gen = aihow.latest_generation()
    except _Failed as exc:
        fail(str(exc))
    result.update(fingerprint=gen["fingerprint"] if gen else None)
    module.exit_json(generation=gen["number"] if gen else None,
                     stdout_lines=applied_out.splitlines(),
                     stderr_lines=applied_err.splitlines(), **result)


if __name__ == "__main__":
    main()
