"""Optional plan signing: HMAC-SHA256 with a shared key file, for teams that want only
plans made by a key holder (a CI job, a release manager) to be applied.

The signature sits beside the plan, in ``PLAN.sig`` (one line, ``hmac-sha256:HEX``), so
a plan's bytes are the same signed or not. It is the HMAC of the plan's
``plan_sha256``, which covers every other byte of the plan, so it signs the whole plan.

The key file holds at least 32 bytes of secret (``head -c 32 /dev/urandom > plan.key``)
and must be readable by its owner only (mode 0600 or stricter): a key others can read
signs nothing. Vetting (``planner.apply.vet``) still runs on a signed plan: a signature
says who made the plan, vetting that it is what the config plans on the host.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path

from planner.errors import AihowError

SCHEME = "hmac-sha256"
MIN_KEY_BYTES = 32
MAX_KEY_BYTES = 4096
KEY_ENV = "AIHOW_PLAN_KEY_FILE"  # the key file, when no --key is given


class SigningError(AihowError):
    """A key that cannot be used, or a plan whose signature is missing or wrong."""


def signature_path(plan_file: Path) -> Path:
    return plan_file.with_name(plan_file.name + ".sig")


def read_key(path: Path) -> bytes:
    """The key's bytes; SigningError naming the file when it is unusable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise SigningError(f"{path}: cannot read the plan key: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SigningError(f"{path}: the plan key is not a regular file")
        if st.st_mode & 0o077:
            raise SigningError(f"{path}: the plan key is readable by others (mode "
                               f"{stat.S_IMODE(st.st_mode):04o}); chmod 600 it")
        key = os.read(fd, MAX_KEY_BYTES + 1)
    finally:
        os.close(fd)
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise SigningError(f"{path}: a plan key is {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes "
                           f"(this one is {len(key)})")
    return key


def signature(plan_sha256: str, key: bytes) -> str:
    mac = hmac.new(key, plan_sha256.encode(), hashlib.sha256).hexdigest()
    return f"{SCHEME}:{mac}"


def write_signature(plan_file: Path, plan_sha256: str, key: bytes) -> Path:
    sig = signature_path(plan_file)
    try:
        sig.write_text(signature(plan_sha256, key) + "\n")
    except OSError as exc:
        raise SigningError(f"{sig}: cannot write the signature: {exc.strerror}") from None
    return sig


def verify(plan_file: Path, plan_sha256: str, key: bytes) -> None:
    """SigningError unless ``PLAN.sig`` is this key's signature of the plan."""
    sig = signature_path(plan_file)
    try:
        text = sig.read_text(encoding="ascii", errors="replace")[:200].strip()
    except OSError as exc:
        raise SigningError(f"{sig}: the plan is not signed ({exc.strerror}); a plan key is "
                           "set, so only signed plans are applied") from None
    if not hmac.compare_digest(text.encode(), signature(plan_sha256, key).encode()):
        raise SigningError(f"{sig}: the signature does not match the plan and key (the "
                           "plan was edited, or signed with another key); nothing was changed")
