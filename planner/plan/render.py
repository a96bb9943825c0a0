"""Human renderings of a plan: terminal text (``+ - ~ -/+``) and Markdown for a PR comment.

Pure: returns strings; colour is asked for by the caller (the CLI, only on a terminal).
Changes are grouped by GPU (branch) and, inside the host branch, by domain; no-ops are
counted but not listed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from planner.plan.review import PlanReview
from planner.vocab import Action, Kind, Reason
from planner.vocab.address import domain_name_of
from planner.vocab.plan import HOOK_PHASES, SUMMARY_KEYS, Plan, summarize_json

# A change as the renderings read it: its plan-file values (``PlanReview.actions``).
Change = dict[str, Any]

SYMBOL = {"create": "+", "delete": "-", "update": "~", "replace": "-/+"}
_COLOUR = {"create": "\x1b[32m", "delete": "\x1b[31m", "update": "\x1b[33m",
           "replace": "\x1b[35m"}
_RESET = "\x1b[0m"
_BOLD = "\x1b[1m"


def review(plan: Plan | PlanReview) -> PlanReview:
    """What the renderings read: a loaded review as it is, a typed plan as its values."""
    return plan if isinstance(plan, PlanReview) else PlanReview.of(plan)


def _shown(plan: PlanReview) -> list[Change]:
    """The changes a reader cares about (no-ops are only counted)."""
    return plan.changes


def repacks(plan: Plan | PlanReview) -> list[str]:
    """One line per VM whose slice a repack moves (its hostdev change says where)."""
    return [a["reason"] for a in review(plan).actions if a["reason_code"] == Reason.REPACK
            and a["kind"] == Kind.HOSTDEV and a["action"] in (Action.CREATE, Action.REPLACE)]


def _groups(actions: Iterable[Change]) -> list[tuple[str, list[Change]]]:
    groups: dict[str, list[Change]] = {}
    for a in actions:
        if a["kind"] in (Kind.HOSTDEV, Kind.DOMAIN):
            title = f"domain {domain_name_of(a['address'])}"
        else:
            title = f"GPU {a['branch']}"
        groups.setdefault(title, []).append(a)
    return sorted(groups.items(), key=lambda kv: (kv[0].startswith("domain"), kv[0]))


def _fmt(value: Any) -> str:
    if isinstance(value, str):
        return value
    if type(value) is int:  # what json.dumps writes for one, without its machinery
        return str(value)
    return json.dumps(value, sort_keys=True)


# Attributes too long to print whole: a domain's persistent XML (kept in the plan so an
# undo can define it again) is shown as what a reviewer checks, the rest folded.
_FOLDED = ("xml",)


def _changed(a: Change) -> list[str]:
    action = a["action"]
    before = a["before"] or {}
    after = a["after"] or {}
    if action in (Action.CREATE, Action.DELETE):
        side = after if action == Action.CREATE else before
        shown = [f"{k}={_fmt(v)}" for k, v in sorted(side.items())
                 if v is not None and k not in _FOLDED]
        folded = [line for k in _FOLDED if k in side for line in
                  (_fold(k, None, side[k]) if side is after else _fold(k, side[k], None))]
        return ([" ".join(shown)] if shown else []) + folded
    keys = sorted(set(before) | set(after))
    folded = [line for k in _FOLDED if k in before or k in after
              for line in _fold(k, before.get(k), after.get(k))]
    return [f"{k}: {_fmt(before.get(k))} -> {_fmt(after.get(k))}"
            for k in keys if k not in _FOLDED and before.get(k) != after.get(k)] + folded


def _fold(key: str, before: Any, after: Any) -> list[str]:
    """A long text attribute as a few lines: for domain XML, what it gives the guest."""
    lines: list[str] = []
    both = isinstance(before, str) and isinstance(after, str) and before != after
    if not both and before == after:
        return lines
    for side, value in ((" before", before), (" after", after)):
        if not isinstance(value, str) or not value:
            continue
        label = key + (side if both else "")
        lines += [f"{label}: {line}" for line in domain_xml_summary(value)]
        count = value.count("\n") + (not value.endswith("\n"))
        lines.append(f"{label}: ({count} lines folded; the plan file has the whole text)")
    return lines


def domain_xml_summary(xml: str) -> list[str]:
    """The parts of a libvirt domain XML a reviewer checks: identity, CPUs and memory,
    GPU devices, disks and networks. Falls back to nothing on XML it cannot read."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return []
    out = []
    head = [f"name={root.findtext('name') or '?'}", f"uuid={root.findtext('uuid') or '?'}"]
    vcpu = root.findtext("vcpu")
    if vcpu:
        head.append(f"vcpu={vcpu.strip()}")
    mem = root.find("memory")
    if mem is not None and (mem.text or "").strip().isdigit():
        factor = {"KiB": 1, "k": 1, "MiB": 1024, "M": 1024, "GiB": 1024 ** 2, "G": 1024 ** 2}
        kib = int((mem.text or "0").strip()) * factor.get(mem.get("unit", "KiB"), 1)
        head.append(f"memory={kib / 1024 ** 2:g}GiB")
    out.append(" ".join(head))
    for dev in root.iterfind("./devices/hostdev"):
        addr = dev.find("./source/address")
        if dev.get("type") == "mdev" and addr is not None:
            out.append(f"hostdev mdev {addr.get('uuid')}")
        elif addr is not None:
            parts = [addr.get(k, "") for k in ("domain", "bus", "slot", "function")]
            pci = "{}:{}:{}.{}".format(*(p.replace("0x", "") for p in parts))
            out.append(f"hostdev pci {pci}")
    for disk in root.iterfind("./devices/disk"):
        src = disk.find("source")
        where = None
        if src is not None:
            volume = f"{src.get('pool')}/{src.get('volume')}" if src.get("volume") else None
            where = src.get("file") or src.get("dev") or src.get("name") or volume
        target = disk.find("target")
        out.append(f"disk {target.get('dev') if target is not None else '?'} "
                   f"{where or '(no source)'}")
    for nic in root.iterfind("./devices/interface"):
        src = nic.find("source")
        net = (src.get("bridge") or src.get("network")) if src is not None else None
        mac = nic.find("mac")
        out.append(f"interface {nic.get('type')} {net or '?'}"
                   + (f" mac {mac.get('address')}" if mac is not None else ""))
    return out


def hook_lines(plan: Plan | PlanReview) -> list[str]:
    """The hooks apply will run, phase by phase, each command as its argv and timeout;
    a phase this plan does not reach says so (reset hooks run only around a GPU reset,
    and no hook runs for a plan with no changes)."""
    lines = []
    plan = review(plan)
    for phase in HOOK_PHASES:
        hooks = plan.plan.hooks.phase(phase)
        if not hooks:
            continue
        why = ""
        if not plan.has_changes:
            why = " (not run: the plan has no changes)"
        elif phase in ("pre_reset", "post_reset") and not any(
                a["needs_reset"] for a in plan.changes):
            why = " (not run: the plan resets no GPU)"
        lines.append(f"{phase.replace('_', '-')}{why}:")
        lines += [f"  {h.describe()}  (timeout {h.timeout:g}s)" for h in hooks]
    return lines


def _counts(plan: PlanReview) -> dict[str, int]:
    """The plan's counts: its ``summary``, which plan-making counts and loading checks
    against the actions (counting again would walk every change once more)."""
    return {**dict.fromkeys(SUMMARY_KEYS, 0), **plan.plan.summary}


def summary_line(plan: Plan | PlanReview) -> str:
    s = _counts(review(plan))
    return (f"Plan: {s['create']} to create, {s['update']} to update, {s['replace']} to replace, "
            f"{s['delete']} to delete.")


def _flags(a: Change) -> str:
    if not (a["destructive"] or a["needs_reset"]):
        return ""
    flags = []
    if a["destructive"]:
        flags.append("DESTRUCTIVE")
    if a["needs_reset"]:
        flags.append("GPU RESET")
    return f" [{', '.join(flags)}]" if flags else ""


def render_text(plan: Plan | PlanReview, *, colour: bool = False,
                color: bool | None = None) -> str:
    if color is not None:
        colour = color
    plan = review(plan)
    head = plan.plan
    lines = [f"Host {head.host.uri} (fingerprint {head.host.fingerprint[:12]})",
             f"Config {head.config.path} (sha256 {head.config.sha256[:12]})", ""]
    shown = _shown(plan)
    if not shown:
        lines.append("No changes. The host matches the config.")
    destructive = [a for a in plan.actions if a["destructive"]]
    if destructive:
        warn = (f"Warning: {len(destructive)} step(s) take a device from a running domain; "
                "apply refuses them unless given --restart-running-vms (which shuts each "
                "such domain down first and starts again those the config keeps).")
        lines += [f"{_BOLD}{warn}{_RESET}" if colour else warn, ""]
    moves = repacks(plan)
    for move in moves:
        text = f"Repack: {move}"
        lines += [f"{_BOLD}{text}{_RESET}" if colour else text]
    for note in head.notes:
        text = f"Note [{note.code}] {note.subject}: {note.message}"
        lines += [f"{_BOLD}{text}{_RESET}" if colour else text]
    if head.notes or moves:
        lines.append("")
    hooks = hook_lines(plan)
    if hooks:
        title = "Hooks apply runs (as the user running aihow):"
        lines += [f"{_BOLD}{title}{_RESET}" if colour else title]
        lines += [f"  {line}" for line in hooks] + [""]
    for title, actions in _groups(shown):
        lines.append(f"{_BOLD}{title}{_RESET}" if colour else title)
        for a in actions:
            sym = SYMBOL[a["action"]]
            line = f"  {sym:>3} {a['address']}{_flags(a)}"
            if colour:
                line = f"{_COLOUR[a['action']]}{line}{_RESET}"
            lines.append(line)
            lines.append(f"        # {a['reason']}")
            lines += [f"        {change}" for change in _changed(a)]
        lines.append("")
    unchanged = _counts(plan).get("no-op", 0)
    if unchanged:
        lines.append(f"{unchanged} resource(s) unchanged.")
    lines.append(summary_line(plan))
    return "\n".join(lines) + "\n"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(plan: Plan | PlanReview) -> str:
    return "### aihow plan\n\n" + _markdown_body(review(plan))


def _markdown_body(plan: PlanReview) -> str:
    """One plan's Markdown under its heading: host line, counts, warnings, changes."""
    s = _counts(plan)
    shown = _shown(plan)
    head = plan.plan
    out = [f"Host `{head.host.uri}` · fingerprint `{head.host.fingerprint[:12]}` · "
           f"config `{head.config.path}` · aihow {head.aihow_version}", "",
           "| create | update | replace | delete | unchanged |",
           "| ---: | ---: | ---: | ---: | ---: |",
           f"| {s['create']} | {s['update']} | {s['replace']} | {s['delete']} | {s['no-op']} |",
           ""]
    destructive = [a for a in plan.actions if a["destructive"]]
    resets = [a for a in plan.actions if a["needs_reset"]]
    if destructive:
        out.append(f"> [!CAUTION]\n> **{len(destructive)} destructive step(s)**: they take a "
                   f"device from a running domain.")
        out += [f"> - `{a['address']}` ({a['action']}): {_md_escape(a['reason'])}"
                for a in destructive]
        out.append("")
    if resets:
        out.append(f"> [!WARNING]\n> **{len(resets)} GPU reset(s)** needed for a MIG mode change.")
        out += [f"> - `{a['address']}`: {_md_escape(a['reason'])}" for a in resets]
        out.append("")
    moves = repacks(plan)
    if moves:
        out.append(f"> [!IMPORTANT]\n> **{len(moves)} repack move(s)**: slices of shut-off "
                   "VMs move to make room (`repack: shut-off`).")
        out += [f"> - {_md_escape(m)}" for m in moves]
        out.append("")
    if head.notes:
        out.append(f"> [!NOTE]\n> **{len(head.notes)} note(s)**: facts the plan does not act on.")
        out += [f"> - `{n.code}` `{n.subject}`: {_md_escape(n.message)}" for n in head.notes]
        out.append("")
    hooks = hook_lines(plan)
    if hooks:
        out.append("> [!IMPORTANT]\n> **Hooks**: commands apply runs around these changes.")
        out += ["> ```", *[f"> {line}" for line in hooks], "> ```", ""]
    if not shown:
        out += ["No changes. The host matches the config.", ""]
    for title, actions in _groups(shown):
        out += [f"<details><summary>{title}: {len(actions)} change(s)</summary>", "", "```diff"]
        for a in actions:
            sym = {"create": "+", "delete": "-", "update": "!", "replace": "!"}[a["action"]]
            out.append(f"{sym} {SYMBOL[a['action']]} {a['address']}{_flags(a)}")
            out.append(f"#   {a['reason']}")
            out += [f"    {c}" for c in _changed(a)]
        out += ["```", "", "</details>", ""]
    out.append(f"**{summary_line(plan)}**")
    return "\n".join(out) + "\n"


def fleet_labels(paths: list[str]) -> list[str]:
    """A name per plan file for the fleet review: the file's stem (the Ansible example
    fetches each host's plan as ``NAME.json``), or the path as given when stems repeat."""
    stems = [Path(p).stem for p in paths]
    return stems if len(set(stems)) == len(stems) else list(paths)


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def render_fleet_markdown(plans: Sequence[tuple[str, Plan | PlanReview]]) -> str:
    """One review document for several hosts' plans (one PR comment): a fleet summary
    table, a row per host in the order given, then each host's plan as its own section.
    Real hosts all call themselves ``local``, so hosts are named by the caller's labels."""
    keys = ("create", "update", "replace", "delete", "no-op", "needs_reset", "destructive")
    reviews = [(label, review(p)) for label, p in plans]
    counts = [summarize_json(r.actions) for _, r in reviews]
    total = {k: sum(s.get(k, 0) for s in counts) for k in keys}
    changing = sum(1 for _, r in reviews if r.has_changes)
    out = ["## aihow fleet plan", "",
           f"{_count(len(plans), 'host')}, {changing} with changes · "
           f"{_count(total['needs_reset'], 'GPU reset')} · "
           f"{_count(total['destructive'], 'destructive step')}", "",
           "| host | create | update | replace | delete | unchanged | GPU resets "
           "| destructive | fingerprint |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for (label, r), s in zip(reviews, counts, strict=True):
        out.append(f"| {_md_escape(label)} | " + " | ".join(str(s.get(k, 0)) for k in keys)
                   + f" | `{r.plan.host.fingerprint[:12]}` |")
    out.append("| **total** | " + " | ".join(f"**{total[k]}**" for k in keys) + " | |")
    out.append("")
    for label, r in reviews:
        out += [f"### {_md_escape(label)}", "", _markdown_body(r)]
    return "\n".join(out)


def render_fleet_text(plans: Sequence[tuple[str, Plan | PlanReview]], *,
                      colour: bool = False) -> str:
    """Several plans for a terminal: each under a ``== NAME ==`` line."""
    return "\n".join(f"== {label} ==\n{render_text(p, colour=colour)}" for label, p in plans)


def render(plan: Plan | PlanReview, fmt: str, *, colour: bool = False) -> str:
    if fmt == "json":
        return plan.to_json()  # a typed plan made here keeps the text it was sealed with
    if fmt == "markdown":
        return render_markdown(plan)
    return render_text(plan, colour=colour)
