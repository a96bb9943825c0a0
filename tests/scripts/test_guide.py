"""docs/guides/gpu-partitioning.md stays true: its tables are what the catalog says, and
every command in its ```sh sim``` blocks runs on a simulated host with the exit status
the guide gives (``# exit N``; 0 when not marked)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from .conftest import REPO

GUIDE = REPO / "docs" / "guides" / "gpu-partitioning.md"
BLOCK = re.compile(r"^```sh sim\n(.*?)^```", re.M | re.S)
EXIT = re.compile(r"\s+#\s*exit\s+(\d+)\s*$")
GUIDE_TMP = "/tmp/"  # the guide's hosts live under /tmp/; the test moves them to tmp_path


def guide_commands(text: str) -> list[tuple[str, int]]:
    out = []
    for block in BLOCK.findall(text):
        for line in block.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            m = EXIT.search(line)
            want = int(m[1]) if m else 0
            cmd = line[: m.start()] if m else line
            cmd = re.sub(r"\s+#.*$", "", cmd)
            out.append((cmd.strip(), want))
    return out


def test_guide_has_runnable_blocks() -> None:
    cmds = guide_commands(GUIDE.read_text())
    assert len(cmds) >= 20
    joined = "\n".join(c for c, _ in cmds)
    for needed in ("enable-mig.sh", "create-mig-slices.sh", "-lgip", "-lgipp", "-lgi", "-lci",
                   "-dci", "-dgi", "-cgi", "nvidia-smi -L", "--reset", "aihow sim hold"):
        assert needed in joined, needed


def test_guide_commands_run_on_the_simulator(tmp_path: Path) -> None:
    lines = ["set -u", f"cd {REPO}"]
    for n, (cmd, want) in enumerate(guide_commands(GUIDE.read_text())):
        cmd = cmd.replace(GUIDE_TMP, f"{tmp_path}/")
        lines += [
            f"echo '>>> {n}'",
            cmd,
            f"rc=$?; if [ $rc -ne {want} ]; then "
            f"echo 'guide command {n} exited '$rc' (guide says {want}): '{_quote(cmd)}; "
            "exit 1; fi",
        ]
    script = tmp_path / "guide.sh"
    script.write_text("\n".join(lines) + "\n")
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    env["PROC_ROOT"] = str(tmp_path / "proc")
    (tmp_path / "proc").mkdir()
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env,
                          check=False, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def test_profile_tables_match_the_catalog() -> None:
    sys.path.insert(0, str(GUIDE.parent))
    try:
        import gen_profile_tables as gen
    finally:
        sys.path.remove(str(GUIDE.parent))
    text = GUIDE.read_text()
    assert gen.splice(text, gen.tables()) == text, (
        "profile tables are stale: run .venv/bin/python docs/guides/gen_profile_tables.py --write")
    assert "| 3g.20gb | 9 | 2 |" in text  # and the splice really holds the tables


def test_shellcheck_is_clean() -> None:
    scripts = sorted(str(p) for p in (REPO / "scripts" / "gpu").glob("*.sh"))
    assert len(scripts) >= 3
    proc = subprocess.run(["shellcheck", "-x", *scripts], capture_output=True, text=True,
                          check=False, cwd=REPO)
    assert proc.returncode == 0, proc.stdout


def test_scripts_follow_the_house_rules() -> None:
    for path in (REPO / "scripts" / "gpu").glob("*.sh"):
        text = path.read_text()
        assert not re.search(r"\beval\b", text), path
        if not path.name.startswith("mig-common"):
            assert "set -euo pipefail" in text, path
            assert os.access(path, os.X_OK), path
