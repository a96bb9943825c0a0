"""What changed on a host since a plan was made: a readable diff of two canonical
fingerprint inputs (nested dicts and lists of JSON values)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(", ", ": "))


def _key(item: Any) -> str | None:
    """A stable identity for list items that are records: address, pci, name, uuid..."""
    if isinstance(item, dict):
        if "profile" in item and "start" in item:
            return f"{item['profile']}@{item['start']}"
        for name in ("address", "pci", "name", "uuid", "key", "id"):
            if name in item and isinstance(item[name], str | int):
                return str(item[name])
    return None


def _item_path(list_path: str, key: str) -> str:
    return f"{list_path}[{key}]"


def diff_values(old: Any, new: Any, path: str = "", *,
                item_path: Callable[[str, str], str] = _item_path) -> list[str]:
    """Lines ``- path: old``, ``+ path: new``, ``~ path: old -> new`` in a stable order.
    ``item_path(list_path, key)`` names a keyed list item (by default ``list[key]``)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return _diff_keyed(old, new, lambda k: f"{path}.{k}" if path else str(k), item_path)
    if isinstance(old, list) and isinstance(new, list):
        okeys, nkeys = [_key(i) for i in old], [_key(i) for i in new]
        if all(okeys) and all(nkeys) and len(set(okeys)) == len(okeys) \
                and len(set(nkeys)) == len(nkeys):
            return _diff_keyed(dict(zip(okeys, old, strict=True)),
                               dict(zip(nkeys, new, strict=True)),
                               lambda k: item_path(path, str(k)), item_path)
        if len(old) == len(new) and all(isinstance(i, dict) for i in old + new):
            out: list[str] = []
            for i, (a, b) in enumerate(zip(old, new, strict=True)):
                out.extend(diff_values(a, b, f"{path}[{i}]", item_path=item_path))
            return out
        gone = [i for i in old if i not in new]
        came = [i for i in new if i not in old]
        return [f"- {path}[]: {_show(i)}" for i in gone] + \
               [f"+ {path}[]: {_show(i)}" for i in came]
    if old != new:
        return [f"~ {path}: {_show(old)} -> {_show(new)}"]
    return []


def _diff_keyed(old: dict[Any, Any], new: dict[Any, Any], where: Callable[[Any], str],
                item_path: Callable[[str, str], str]) -> list[str]:
    """Entries removed, added and changed, by key; ``where(key)`` is an entry's path."""
    lines: list[str] = []
    for k in sorted(set(old) | set(new), key=str):
        sub = where(k)
        if k not in new:
            lines.append(f"- {sub}: {_show(old[k])}")
        elif k not in old:
            lines.append(f"+ {sub}: {_show(new[k])}")
        else:
            lines.extend(diff_values(old[k], new[k], sub, item_path=item_path))
    return lines
