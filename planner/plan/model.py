"""The plan file: Plan/Action models, canonical JSON, and loading with a digest check."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError

from planner.errors import AihowError

FORMAT_VERSION = "1.0"

Kind = Literal["mig_mode", "gpu_instance", "compute_instance", "sriov", "vgpu", "domain",
               "hostdev"]
ActionName = Literal["create", "delete", "update", "replace", "no-op"]
SUMMARY_KEYS = ("create", "update", "replace", "delete", "no-op")


class PlanFileError(AihowError):
    """A plan file that cannot be read, is not a plan, or was edited after it was made."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class HostRef(_Frozen):
    uri: str
    fingerprint: str
    # The canonical fingerprint input (``fingerprint_data``) the digest was made from, so
    # apply can show every host change since the plan. Plans made before it was kept
    # have none; such a plan's text (and digest) carries no ``snapshot`` key.
    snapshot: dict[str, Any] | None = None


class ConfigRef(_Frozen):
    path: str
    sha256: str


class Action(_Frozen):
    """One step. ``replace`` appears as two steps at one address: a ``delete`` (in the
    delete phase, ``replaced_by`` naming the second step) and a ``replace`` that creates
    ``after`` once the delete and the new dependencies are done."""

    id: int
    address: str
    kind: Kind
    action: ActionName
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    depends_on: tuple[int, ...] = ()
    reason: str
    needs_reset: bool = False
    destructive: bool = False
    branch: str
    blocked_by: tuple[str, ...] = ()
    replaced_by: int | None = None


class Plan(_Frozen):
    format_version: str = FORMAT_VERSION
    aihow_version: str
    host: HostRef
    config: ConfigRef
    actions: tuple[Action, ...]
    summary: dict[str, int]
    plan_sha256: str = ""
    _text: str | None = PrivateAttr(default=None)  # the file text, kept by sealed()

    @property
    def has_changes(self) -> bool:
        return any(a.action != "no-op" for a in self.actions)

    def body(self) -> dict[str, Any]:
        """Everything but the digest, as plain JSON values."""
        return _without_empty_snapshot(self.model_dump(mode="json", exclude={"plan_sha256"}))

    def sealed(self) -> Plan:
        """This plan with its digest set (serialised once: the text is kept for to_json)."""
        data = self.body()
        lines = [canonical_json(a) for a in data["actions"]]
        # compact canonical JSON of a list is "[" + ",".join(items) + "]": reuse the lines
        rest = {k: v for k, v in data.items() if k != "actions"}
        compact = canonical_json({**rest, "actions": []}).replace(
            '"actions":[]', '"actions":[' + ",".join(lines) + "]", 1)
        data["plan_sha256"] = hashlib.sha256(compact.encode()).hexdigest()
        plan = self.model_copy(update={"plan_sha256": data["plan_sha256"]})
        plan._text = plan_text(data, lines)
        return plan

    def to_json(self) -> str:
        if self._text is not None:
            return self._text
        return plan_text(_without_empty_snapshot(self.model_dump(mode="json")))


def _without_empty_snapshot(data: dict[str, Any]) -> dict[str, Any]:
    if data.get("host", {}).get("snapshot", ...) is None:
        del data["host"]["snapshot"]
    return data


def dump_plan(plan: Plan) -> str:
    """The plan file's text: canonical JSON, same plan -> same bytes."""
    return plan.to_json()


_COMPACT = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def canonical_json(value: Any, *, indent: int | None = None) -> str:
    """Sorted keys, no float/whitespace ambiguity; pretty with ``indent`` (ends with a newline)."""
    if indent is None:
        return _COMPACT.encode(value)
    return json.dumps(value, sort_keys=True, indent=indent, ensure_ascii=True) + "\n"


def plan_text(data: dict[str, Any], action_lines: list[str] | None = None) -> str:
    """The plan file's layout: top-level keys sorted, one per line, and each action on a
    line of its own (compact canonical JSON), so a changed action is a one-line diff."""
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


def summarize(actions: tuple[Action, ...] | list[Action]) -> dict[str, int]:
    """Counts per resource: a replace (delete + replace steps) counts once, as a replace."""
    counts = dict.fromkeys(SUMMARY_KEYS, 0)
    for a in actions:
        if a.action == "delete" and a.replaced_by is not None:
            continue
        counts[a.action] += 1
    counts["destructive"] = sum(1 for a in actions if a.destructive)
    counts["needs_reset"] = sum(1 for a in actions if a.needs_reset)
    return counts


def plan_schema() -> dict[str, Any]:
    """The JSON Schema of the plan file (shipped as planner/plan/plan.schema.json)."""
    from importlib import resources

    text = resources.files("planner.plan").joinpath("plan.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def parse_plan(text: str, where: str = "plan") -> Plan:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanFileError(f"{where}:{exc.lineno}:{exc.colno}: not JSON: {exc.msg}") from None
    if not isinstance(data, dict) or "format_version" not in data:
        raise PlanFileError(f"{where}: not an aihow plan (no format_version)")
    major = str(data["format_version"]).split(".")[0]
    if major != FORMAT_VERSION.split(".")[0]:
        raise PlanFileError(f"{where}: plan format {data['format_version']} is not supported "
                            f"(this aihow reads {FORMAT_VERSION})")
    try:
        plan = Plan.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise PlanFileError(f"{where}: {loc}: {err['msg']}") from None
    if digest(plan.body()) != plan.plan_sha256:
        raise PlanFileError(f"{where}: plan_sha256 does not match the plan's content "
                            f"(the file was edited or damaged)")
    return plan


def load_plan(path: str | Path) -> Plan:
    """Read a plan file and verify its digest."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise PlanFileError(f"{p}: cannot read plan: {exc.strerror}") from None
    return parse_plan(text, str(p))
