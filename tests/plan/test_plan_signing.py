"""Optional plan signing (HMAC with a key file): `plan --sign-key` writes PLAN.sig;
`apply --key` (or AIHOW_PLAN_KEY_FILE) applies only a plan signed with that key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from planner.plan.signing import SigningError, read_key
from tests.apply.simhost import SimHost, write_config
from tests.clirun import aihow

G0 = "0000:17:00.0"


def _key(path: Path, data: bytes = b"k" * 32, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


@pytest.fixture()
def signed(tmp_path: Path) -> tuple[SimHost, Path, Path]:
    host = SimHost.create(tmp_path / "h", [("a100-40gb", G0, False)])
    cfg = write_config(tmp_path / "c.yaml", {G0: "3g.20gb"})
    key = _key(tmp_path / "plan.key")
    plan = tmp_path / "p.json"
    res = aihow("plan", str(cfg), "--host", host.uri, "-o", str(plan), "--sign-key", str(key))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "p.json.sig").read_text().startswith("hmac-sha256:")
    return host, plan, key


def test_a_signed_plan_applies_with_its_key(signed: tuple[SimHost, Path, Path]) -> None:
    host, plan, key = signed
    res = aihow("apply", str(plan), "--auto-approve", "--allow-reset",
                env={"AIHOW_PLAN_KEY_FILE": str(key)})
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("attack", ["unsigned", "other-key", "edited-and-resealed"])
def test_without_a_valid_signature_nothing_is_applied(signed: tuple[SimHost, Path, Path],
                                                      tmp_path: Path, attack: str) -> None:
    host, plan, key = signed
    before = host.layout()
    if attack == "unsigned":
        (tmp_path / "p.json.sig").unlink()
    elif attack == "other-key":
        key = _key(tmp_path / "other.key", b"o" * 32)
    else:
        from planner.vocab.plan import digest, plan_text

        data = json.loads(plan.read_text())
        data["aihow_version"] = "9.9.9"
        del data["plan_sha256"]
        data["plan_sha256"] = digest(data)
        plan.write_text(plan_text(data))
    res = aihow("apply", str(plan), "--key", str(key), "--auto-approve", "--allow-reset")
    assert res.returncode == 1 and res.stderr.count("\n") == 1, res.stderr
    assert f"{tmp_path / 'p.json.sig'}: " in res.stderr
    assert host.layout() == before


def test_a_key_others_can_read_or_too_short_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SigningError, match="readable by others"):
        read_key(_key(tmp_path / "a.key", mode=0o644))
    with pytest.raises(SigningError, match="32 to 4096 bytes"):
        read_key(_key(tmp_path / "b.key", b"short"))
    res = aihow("plan", "c.yaml", "--sign-key", str(_key(tmp_path / "c.key")), cwd=tmp_path)
    assert res.returncode == 1 and "give -o too" in res.stderr
