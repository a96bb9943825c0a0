"""The plan file on disk: loading with a version and digest check, and the JSON Schema.
The models and the canonical JSON are the plan vocabulary's (``planner.vocab.plan``)."""

from __future__ import annotations

import json
from importlib import resources
from locale import getpreferredencoding
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from planner.config.limits import MAX_PLAN_BYTES, InputTooLarge, read_text_limited
from planner.errors import AihowError
from planner.vocab.plan import (
    FORMAT_VERSION,
    Change,
    ConfigRef,
    HostRef,
    Plan,
    canonical_json,
    digest,
    file_digest,
    plan_text,
    summarize,
)

__all__ = ["FORMAT_VERSION", "Change", "ConfigRef", "HostRef", "Plan", "PlanFileError",
           "canonical_json", "digest", "digest_matches", "dump_plan", "load_plan", "parse_plan",
           "plan_schema", "plan_text", "read_plan_text", "summarize", "supported_version"]


class PlanFileError(AihowError):
    """A plan file that cannot be read, is not a plan, or was edited after it was made."""


def dump_plan(plan: Plan) -> str:
    """The plan file's text: canonical JSON, same plan -> same bytes."""
    return plan.to_json()


def plan_schema() -> dict[str, Any]:
    """The JSON Schema of the plan file (shipped as planner/plan/plan.schema.json)."""
    text = resources.files("planner.plan").joinpath("plan.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def parse_plan(text: str, where: str = "plan") -> Plan:
    if not text.strip():
        raise PlanFileError(f"{where}: empty file, not an aihow plan")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanFileError(f"{where}:{exc.lineno}:{exc.colno}: not JSON: {exc.msg}") from None
    except RecursionError:
        raise PlanFileError(f"{where}: not an aihow plan (JSON nested too deeply)") from None
    if not isinstance(data, dict) or "format_version" not in data:
        raise PlanFileError(f"{where}: not an aihow plan (no format_version)")
    if not supported_version(data):
        raise PlanFileError(f"{where}: plan format {data['format_version']} is not supported "
                            f"(this aihow reads {FORMAT_VERSION}); make a new plan with "
                            f"`aihow plan`")
    try:
        plan = Plan.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise PlanFileError(f"{where}: {loc}: {msg}" if loc else f"{where}: {msg}") from None
    if not digest_matches(text, data, plan.plan_sha256):
        raise PlanFileError(f"{where}: plan_sha256 does not match the plan's content "
                            f"(the file was edited or damaged)")
    counted = summarize(plan.actions)
    if dict(plan.summary) != counted:
        raise PlanFileError(f"{where}: summary {canonical_json(dict(plan.summary))} does not "
                            f"count the plan's changes ({canonical_json(counted)}); the file "
                            "was edited")
    return plan


def supported_version(data: dict[str, Any]) -> bool:
    """Whether the plan's ``format_version`` has this aihow's major version."""
    return str(data["format_version"]).split(".")[0] == FORMAT_VERSION.split(".")[0]


def digest_matches(text: str, data: dict[str, Any], want: str) -> bool:
    """Whether ``want`` is the digest of the plan's content: read off the text's lines
    when it has the plan file's layout, else of the parsed values encoded again (a
    file reformatted by a tool keeps its meaning, and its digest)."""
    if file_digest(text, data) == want:
        return True
    return digest(_body_of(data)) == want


def _body_of(data: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in data.items() if k != "plan_sha256"}
    host = body.get("host")
    if isinstance(host, dict) and host.get("snapshot", ...) is None:
        body["host"] = {k: v for k, v in host.items() if k != "snapshot"}
    return body


def load_plan(path: str | Path) -> Plan:
    """Read a plan file and verify its digest."""
    return parse_plan(read_plan_text(path), str(Path(path)))


def read_plan_text(path: str | Path) -> str:
    """A plan file's text; PlanFileError when it cannot be read (or is too large)."""
    p = Path(path)
    try:
        return read_text_limited(p, MAX_PLAN_BYTES, "plan", encoding=getpreferredencoding(False))
    except InputTooLarge as exc:
        raise PlanFileError(str(exc)) from None
    except UnicodeDecodeError:
        raise PlanFileError(f"{p}: not an aihow plan (not UTF-8 text)") from None
    except OSError as exc:
        raise PlanFileError(f"{p}: cannot read plan: {exc.strerror}") from None
