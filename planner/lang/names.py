"""The one rule for names aihow gives to libvirt: VM (domain) names, cluster names (a
VM's name starts with its cluster's) and bridge names. `validate` checks it at the
config's position; the VM layer checks it again before rendering, with the same words.
"""

from __future__ import annotations

import re

NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")
NAME_RULE = ("use 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter "
             "or digit")


def name_ok(name: object) -> bool:
    return isinstance(name, str) and NAME.fullmatch(name) is not None
