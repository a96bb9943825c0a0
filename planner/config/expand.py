"""``${VAR}`` expansion as ai-how does it (ai-how uses the ``expandvars`` package with
``nounset=True``): ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
``${VAR:=default}``, ``${VAR:+alt}``, ``${VAR:?message}``, ``$$`` (the process id, as in
bash) and ``\\$`` (a literal ``$``). Defaults may nest (``${A:-${B}}``).

Pure: the environment is passed in. An unset variable without a default raises
:class:`ExpandError` carrying the 0-based offset of the ``$`` that failed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ExpandError(ValueError):
    def __init__(self, message: str, offset: int) -> None:
        self.offset = offset
        super().__init__(message)


def repo_root(config_dir: Path) -> Path:
    """ai-how's ``TOT``: the nearest ancestor holding ``.git``, else the config's directory."""
    start = config_dir.resolve()
    for candidate in (start, *start.parents):
        if (candidate / ".git").exists():
            return candidate
    return start


def config_environment(
    config_path: Path, base: Mapping[str, str] | None = None, root: Path | None = None
) -> dict[str, str]:
    """The variables a config sees: the process environment plus ``TOT`` and ``PWD``.

    ``root`` pins ``TOT`` (plans/regen.py does, so committed plans do not depend on where
    the repository is checked out); by default it is found as ai-how finds it."""
    env = dict(os.environ if base is None else base)
    env["TOT"] = str(root if root is not None else repo_root(config_path.parent))
    env["PWD"] = os.getcwd()
    return env


def expand(text: str, env: Mapping[str, str]) -> str:
    """Expand every variable reference in ``text``."""
    out, _ = _expand(text, 0, env, stop=None)
    return out


def _expand(text: str, pos: int, env: Mapping[str, str], stop: str | None) -> tuple[str, int]:
    """Expand from ``pos`` until end of text (or an unnested ``stop`` char); return (text, end)."""
    out: list[str] = []
    n = len(text)
    while pos < n:
        ch = text[pos]
        if stop is not None and ch == stop:
            return "".join(out), pos
        if ch == "\\" and pos + 1 < n and text[pos + 1] == "$":
            out.append("$")
            pos += 2
        elif ch == "$":
            value, pos = _reference(text, pos, env)
            out.append(value)
        else:
            out.append(ch)
            pos += 1
    if stop is not None:
        raise ExpandError("unterminated '${': missing '}'", n)
    return "".join(out), pos


def _reference(text: str, start: int, env: Mapping[str, str]) -> tuple[str, int]:
    """Expand the reference beginning with the ``$`` at ``start``."""
    pos = start + 1
    if pos >= len(text):
        return "$", pos
    nxt = text[pos]
    if nxt == "$":
        return str(os.getpid()), pos + 1
    if nxt != "{":
        m = _NAME.match(text, pos)
        if not m:  # a lone '$' stays literal, as in bash
            return "$", pos
        name = m.group()
        if name not in env:
            raise ExpandError(f"${name}: unbound variable", start)
        return env[name], m.end()
    m = _NAME.match(text, pos + 1)
    if not m:
        raise ExpandError("bad substitution: expected a variable name after '${'", start)
    name = m.group()
    pos = m.end()
    if pos >= len(text):
        raise ExpandError("unterminated '${': missing '}'", start)
    op = text[pos]
    if op == "}":
        if name not in env:
            raise ExpandError(f"${{{name}}}: unbound variable (give a default: ${{{name}:-...}})",
                              start)
        return env[name], pos + 1
    colon = op == ":"
    if colon:
        pos += 1
        op = text[pos] if pos < len(text) else ""
    if op not in ("-", "=", "+", "?"):
        raise ExpandError(f"bad substitution in '${{{name}': unsupported operator", start)
    word, end = _expand(text, pos + 1, env, stop="}")
    is_set = name in env and (not colon or env[name] != "")
    if op in ("-", "="):
        return (env[name] if is_set else word), end + 1
    if op == "+":
        return (word if is_set else ""), end + 1
    if not is_set:  # '?'
        raise ExpandError(f"{name}: {word or 'parameter null or not set'}", start)
    return env[name], end + 1
