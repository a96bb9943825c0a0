"""The plan file's models: a Plan is a list of Changes, one per resource address.

A change carries its address, kind, action, ``before`` and ``after`` (the kind's
attribute model, ``planner.vocab.attrs``), a reason in words and as a code, and the
ids of the steps it waits for. Ids number the steps apply runs, in execution order: a
create, update or delete is one step (the change's ``id``); a replace is two, its delete
step (``delete_step``: its own id and dependencies, in the delete phase, before the
deletes of what the resource depends on) and its create step (the change's ``id``,
after the delete and the new dependencies). Changes are listed by ``id``.

Canonical JSON (``plan_text``) and the digest live here too: same plan, same bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    field_serializer,
    model_validator,
)

from planner.vocab.address import Address
from planner.vocab.attrs import Attrs, attrs_from_json
from planner.vocab.kinds import Action, Kind
from planner.vocab.reasons import Reason

FORMAT_VERSION = "2.0"
SUMMARY_KEYS = ("create", "update", "replace", "delete", "no-op")


def _address(value: Any) -> Address:
    if isinstance(value, Address):
        return value
    return Address.parse(value)


AddressField = Annotated[Address, PlainValidator(_address), PlainSerializer(str)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class HostRef(_Frozen):
    uri: str
    fingerprint: str
    # The canonical fingerprint input (``fingerprint_data``) the digest was made from, so
    # apply can show every host change since the plan.
    snapshot: dict[str, Any] | None = None


class ConfigRef(_Frozen):
    path: str
    sha256: str


class DeleteStep(_Frozen):
    """The first step of a replace: the old resource goes, in the delete phase."""

    id: int
    depends_on: tuple[int, ...] = ()


_KINDS = {k.value: k for k in Kind}


class Change(_Frozen):
    """What the plan does to one resource (see the module docstring)."""

    id: int
    address: AddressField
    kind: Kind
    action: Action
    before: Attrs | None
    after: Attrs | None
    depends_on: tuple[int, ...] = ()
    reason: str
    reason_code: Reason
    needs_reset: bool = False
    destructive: bool = False
    branch: str
    blocked_by: tuple[str, ...] = ()
    delete_step: DeleteStep | None = None

    @model_validator(mode="before")
    @classmethod
    def _typed_attrs(cls, data: Any) -> Any:
        """Read ``before``/``after`` as the models of the change's kind."""
        if not isinstance(data, dict):
            return data
        value = data.get("kind")
        kind = _KINDS.get(value) if isinstance(value, str) else None  # a list: unhashable
        if kind is None:
            return data  # the kind field's own error says what is wrong
        out = dict(data)
        for side in ("before", "after"):
            value = out.get(side)
            if isinstance(value, dict):
                out[side] = attrs_from_json(kind, value)
        return out

    @model_validator(mode="after")
    def _consistent(self) -> Change:
        if self.address.kind is not self.kind:
            raise ValueError(f"{self.address} is not a {self.kind} address")
        if (self.action is Action.REPLACE) != (self.delete_step is not None):
            raise ValueError("a replace, and only a replace, has a delete_step")
        return self

    @field_serializer("before", "after")
    def _attrs_json(self, value: Attrs | None) -> dict[str, Any] | None:
        return None if value is None else value.to_json()

    @property
    def step_ids(self) -> tuple[int, ...]:
        """The ids of the steps apply runs for this change, in order."""
        if self.action is Action.NO_OP:
            return ()
        if self.delete_step is not None:
            return (self.delete_step.id, self.id)
        return (self.id,)


class Note(_Frozen):
    """A fact the plan does not act on but its reviewer must see (a VM name that now means
    another node; a domain aihow leaves alone), with a code a program can match on."""

    code: Reason
    subject: str  # the address it is about, e.g. "domain[hpc-compute-02]"
    message: str


HOOK_PHASES = ("pre_apply", "pre_reset", "post_reset", "post_apply", "on_failure")


class Hook(_Frozen):
    """One command of a hook phase, as reviewed: its argv and its timeout in seconds."""

    command: tuple[str, ...]
    timeout: float

    def describe(self) -> str:
        return " ".join(json.dumps(a) if not a or any(c in a for c in " \"'\\$") else a
                        for a in self.command)


class Hooks(_Frozen):
    """The commands apply runs around its changes (``global.hooks`` of the config), by
    phase. The plan carries them so that apply runs exactly what review saw: apply's
    vetting refuses a plan whose hooks are not its config's."""

    pre_apply: tuple[Hook, ...] = ()
    pre_reset: tuple[Hook, ...] = ()
    post_reset: tuple[Hook, ...] = ()
    post_apply: tuple[Hook, ...] = ()
    on_failure: tuple[Hook, ...] = ()

    def phase(self, name: str) -> tuple[Hook, ...]:
        hooks: tuple[Hook, ...] = getattr(self, name)
        return hooks

    @property
    def empty(self) -> bool:
        return not any(self.phase(p) for p in HOOK_PHASES)


class Plan(_Frozen):
    format_version: str = FORMAT_VERSION
    aihow_version: str
    host: HostRef
    config: ConfigRef
    actions: tuple[Change, ...]
    summary: dict[str, int]
    notes: tuple[Note, ...] = ()  # left out of the file when empty
    hooks: Hooks = Hooks()  # left out of the file when there are none
    plan_sha256: str = ""
    _text: str | None = PrivateAttr(default=None)  # the file text, kept by sealed()

    @model_validator(mode="after")
    def _steps_form_a_graph(self) -> Plan:
        """Step ids are unique, every ``depends_on`` names a step of the plan, and the
        dependencies have no cycle (apply could never start such a step)."""
        deps_of: dict[int, tuple[int, ...]] = {}
        at: dict[int, int] = {}  # step id -> index of its change (named only in errors)

        def where(step_id: int) -> str:
            n = at[step_id]
            return f"actions[{n}] ({self.actions[n].address})"

        for n, change in enumerate(self.actions):
            steps = [(change.id, change.depends_on)]
            if change.delete_step is not None:
                steps.append((change.delete_step.id, change.delete_step.depends_on))
            for step_id, deps in steps:
                if step_id in deps_of:
                    raise ValueError(f"actions[{n}] ({change.address}): step id {step_id} "
                                     f"is also {where(step_id)}'s")
                deps_of[step_id] = deps
                at[step_id] = n
        for step_id, deps in deps_of.items():
            for dep in deps:
                if dep not in deps_of:
                    raise ValueError(f"{where(step_id)}: depends_on {dep}, which is no step "
                                     "of the plan")
        cycle = [] if _ordered(deps_of) else _cycle(deps_of)
        if cycle:
            raise ValueError(f"{where(cycle[0])}: depends_on forms a cycle (steps "
                             f"{' -> '.join(map(str, cycle))})")
        return self

    @property
    def has_changes(self) -> bool:
        return any(a.action is not Action.NO_OP for a in self.actions)

    @property
    def changes(self) -> list[Change]:
        """The changes apply carries out (no-op entries are for review only)."""
        return [a for a in self.actions if a.action is not Action.NO_OP]

    def body(self) -> dict[str, Any]:
        """Everything but the digest, as plain JSON values."""
        return _without_empty_snapshot(self.model_dump(mode="json", exclude={"plan_sha256"}))

    def sealed(self, action_lines: Sequence[str] | None = None) -> Plan:
        """This plan with its digest set and its file text kept for ``to_json``.

        ``action_lines``: each change's compact canonical JSON, in order, when the caller
        made them already (plan-making writes each change's line once, from its values,
        as it builds the change). Nothing here builds the whole plan as one dict or one
        compact string: the digest is fed line by line and the text is joined once."""
        lines = action_lines if action_lines is not None else [
            canonical_json(change_json(a)) for a in self.actions]
        rest = _without_empty_snapshot(
            self.model_dump(mode="json", exclude={"plan_sha256", "actions"}))
        plan = self.model_copy(update={"plan_sha256": body_digest(rest, lines)})
        rest["plan_sha256"] = plan.plan_sha256
        plan._text = _file_text(rest, lines)
        return plan

    def to_json(self) -> str:
        if self._text is not None:
            return self._text
        return plan_text(_without_empty_snapshot(self.model_dump(mode="json")))


def body_digest(rest: dict[str, Any], action_lines: Iterable[str]) -> str:
    """``digest`` of a plan's body given as everything but its actions (``rest``) and
    each action's compact canonical JSON, fed line by line: the same value as
    ``digest({**rest, "actions": [...]})`` without building that text whole."""
    head, tail = _around_actions(rest)
    sha = hashlib.sha256(head)
    for n, line in enumerate(action_lines):
        if n:
            sha.update(b",")
        sha.update(line.encode())
    sha.update(tail)
    return sha.hexdigest()


def _around_actions(rest: dict[str, Any]) -> tuple[bytes, bytes]:
    """The compact body's text before and after its actions' lines."""
    # the compact body is the rest with "actions":[LINE,LINE,...]; "actions" sorts
    # first, so its key is the first, unescaped, occurrence
    head, tail = canonical_json({**rest, "actions": []}).split('"actions":[]', 1)
    return (head + '"actions":[').encode(), ("]" + tail).encode()


def file_digest(text: str, data: dict[str, Any]) -> str | None:
    """The digest of a plan file's body read off its text as written, when the text has
    the plan file's layout (``plan_text``: one change per line of the actions array, then
    one line per other key, in order); else None. ``data`` is the text parsed. The
    compact body is the file's text with its line breaks and indentation taken out (JSON
    strings hold no raw newline, so those separators are only ever between values), the
    ``plan_sha256`` line left out: hashing it as written costs a fraction of encoding the
    parsed plan again, and any edit to the text changes it as an edit to the values does."""
    end = text.rfind("\n  ]")
    if (not text.startswith(_ACTIONS_OPEN) or end < 0
            or not isinstance(data.get("actions"), list)):
        return None
    entries = _key_lines(text[end + 4:])
    if entries is None:
        return None
    sha = hashlib.sha256(b'{"actions":[')
    block = text[len(_ACTIONS_OPEN):end]
    sha.update(block.replace(_ACTION_SEP, ",").encode())
    sha.update(b"]")
    for key, value in entries:
        if key != "plan_sha256":
            sha.update(f',"{key}":{value}'.encode())
    sha.update(b"}")
    return sha.hexdigest()


_ACTIONS_OPEN = '{\n  "actions": [\n    '
_ACTION_SEP = ",\n    "


def _key_lines(text: str) -> list[tuple[str, str]] | None:
    """The (key, value text) of each line after the actions array in the plan layout
    (``,``, then ``  "KEY": VALUE`` lines in key order, all but the last ending with a
    comma, then ``}``); None for any other text."""
    lines = text.split("\n")
    if lines[0] != "," or lines[-2:] != ["}", ""]:
        return None
    out: list[tuple[str, str]] = []
    last = len(lines) - 3
    for n, line in enumerate(lines[1:-2], 1):
        cut = line.find('": ')
        key = line[3:cut]
        if not line.startswith('  "') or cut < 0 or not key.isidentifier() or (
                out and key <= out[-1][0]):
            return None
        if n < last:
            if not line.endswith(","):
                return None
            line = line[:-1]
        out.append((key, line[cut + 3:]))
    return out


def change_json(change: Change) -> dict[str, Any]:
    """A change's values in the plan file (what ``model_dump(mode="json")`` gives), built
    straight from its fields."""
    step = change.delete_step
    return {
        "action": change.action.value,
        "address": str(change.address),
        "after": None if change.after is None else change.after.to_json(),
        "before": None if change.before is None else change.before.to_json(),
        "blocked_by": list(change.blocked_by),
        "branch": change.branch,
        "delete_step": None if step is None else {"depends_on": list(step.depends_on),
                                                  "id": step.id},
        "depends_on": list(change.depends_on),
        "destructive": change.destructive,
        "id": change.id,
        "kind": change.kind.value,
        "needs_reset": change.needs_reset,
        "reason": change.reason,
        "reason_code": change.reason_code.value,
    }


def _file_text(rest: dict[str, Any], action_lines: Sequence[str]) -> str:
    """``plan_text`` of ``rest`` plus the actions given as their lines, joined once."""
    parts: list[str] = ["{\n"]
    data_keys = sorted([*rest, "actions"])
    for n, key in enumerate(data_keys):
        comma = ",\n" if n < len(data_keys) - 1 else "\n"
        if key == "actions" and action_lines:
            parts.append(f"  {json.dumps(key)}: [\n    ")
            for i, line in enumerate(action_lines):
                if i:
                    parts.append(",\n    ")
                parts.append(line)
            parts.append("\n  ]" + comma)
        else:
            value = rest.get(key, []) if key == "actions" else rest[key]
            parts.append(f"  {json.dumps(key)}: {canonical_json(value)}{comma}")
    parts.append("}\n")
    return "".join(parts)


def _ordered(deps_of: dict[int, tuple[int, ...]]) -> bool:
    """Whether every step depends only on steps met before it (in ``deps_of``'s order):
    then there is no cycle, and the search for one can be skipped."""
    seen: set[int] = set()
    for step_id, deps in deps_of.items():
        if not seen.issuperset(deps):
            return False
        seen.add(step_id)
    return True


def _cycle(deps_of: dict[int, tuple[int, ...]]) -> list[int]:
    """A dependency cycle among the steps (ids, closing on the first), or []."""
    state: dict[int, int] = {}  # 1: on the current path, 2: finished
    for root in deps_of:
        if state.get(root):
            continue
        path: list[int] = []
        stack: list[tuple[int, int]] = [(root, 0)]
        while stack:
            node, i = stack.pop()
            if i == 0:
                state[node] = 1
                path.append(node)
            deps = deps_of.get(node, ())
            if i < len(deps):
                stack.append((node, i + 1))
                nxt = deps[i]
                if state.get(nxt) == 1:
                    return path[path.index(nxt):] + [nxt]
                if not state.get(nxt):
                    stack.append((nxt, 0))
            else:
                state[node] = 2
                path.pop()
    return []


def _without_empty_snapshot(data: dict[str, Any]) -> dict[str, Any]:
    host = data.get("host")
    if isinstance(host, dict) and host.get("snapshot", ...) is None:
        del data["host"]["snapshot"]
    if "notes" in data and not data["notes"]:
        del data["notes"]
    if isinstance(data.get("hooks"), dict) and not any(data["hooks"].values()):
        del data["hooks"]
    return data


_COMPACT = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def canonical_json(value: Any, *, indent: int | None = None) -> str:
    """Sorted keys, no float/whitespace ambiguity; pretty with ``indent`` (ends with a newline)."""
    if indent is None:
        return _COMPACT.encode(value)
    return json.dumps(value, sort_keys=True, indent=indent, ensure_ascii=True) + "\n"


def plan_text(data: dict[str, Any], action_lines: list[str] | None = None) -> str:
    """The plan file's layout: top-level keys sorted, one per line, and each change on a
    line of its own (compact canonical JSON), so a changed change is a one-line diff."""
    lines = ["{"]
    keys = sorted(data)
    for n, key in enumerate(keys):
        value = data[key]
        comma = "," if n < len(keys) - 1 else ""
        if key == "actions" and isinstance(value, list) and value:
            if action_lines is None:
                action_lines = [canonical_json(item) for item in value]
            items = ",\n".join("    " + line for line in action_lines)
            lines.append(f"  {json.dumps(key)}: [\n{items}\n  ]{comma}")
        else:
            lines.append(f"  {json.dumps(key)}: {canonical_json(value)}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def digest(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def summarize(changes: tuple[Change, ...] | list[Change]) -> dict[str, int]:
    """Counts per action (a replace is one change), plus destructive and needs_reset."""
    return _count((a.action.value, a.destructive, a.needs_reset) for a in changes)


def summarize_json(changes: Iterable[dict[str, Any]]) -> dict[str, int]:
    """``summarize`` of changes given as their plan-file values (``change_json``)."""
    return _count((a["action"], a["destructive"], a["needs_reset"]) for a in changes)


def _count(rows: Iterable[tuple[str, bool, bool]]) -> dict[str, int]:
    counts = dict.fromkeys(SUMMARY_KEYS, 0)
    destructive = needs_reset = 0
    for action, is_destructive, resets in rows:
        counts[action] += 1
        destructive += is_destructive
        needs_reset += resets
    counts["destructive"] = destructive
    counts["needs_reset"] = needs_reset
    return counts
