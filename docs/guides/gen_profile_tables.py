"""Generate the per-GPU MIG profile tables of gpu-partitioning.md from the aihow catalog.

    .venv/bin/python docs/guides/gen_profile_tables.py           # print the tables
    .venv/bin/python docs/guides/gen_profile_tables.py --write   # rewrite them in the guide

The guide keeps the tables between two marker comments; tests/scripts/test_guide.py fails
when they differ from what this prints, so the guide always says what the catalog says.
"""

from __future__ import annotations

import sys
from pathlib import Path

from planner.hardware.catalog import all_models
from planner.hardware.model import GpuModel

GUIDE = Path(__file__).with_name("gpu-partitioning.md")
BEGIN = "<!-- BEGIN generated profile tables (docs/guides/gen_profile_tables.py) -->"
END = "<!-- END generated profile tables -->"


def _placements(starts: tuple[int, ...], size: int) -> str:
    return "{" + ",".join(str(s) for s in starts) + "}:" + str(size)


def model_table(model: GpuModel) -> str:
    persists = "survives reboots (InfoROM)" if model.mig_mode_persists_reboot else (
        "lost on reboot or driver reload")
    reset = "needs a GPU reset" if model.mode_change_needs_reset else "no reset needed"
    lines = [
        f"### {model.display_name} (`{model.id}`)",
        "",
        f"{model.architecture.capitalize()}; {model.memory_slices} memory slices, "
        f"{model.compute_slices} compute slices, at most {model.max_instances} instances; "
        f"driver {model.min_driver} or later. MIG mode change: {reset}; MIG mode "
        f"{persists}.",
        "",
        "| Profile | ID | Max | Memory MiB | SMs | Placements {start}:size | vGPU type |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in sorted(model.gi_profiles, key=lambda p: (-p.placement_size, -p.compute_slices,
                                                        p.id)):
        name = p.name + (f" (driver {p.min_driver}+)" if p.min_driver else "")
        vgpu = p.vgpu_type or "-"
        lines.append(
            f"| {name} | {p.id} | {p.instance_count} | {p.memory_mib} | {p.sm_count} | "
            f"{_placements(p.placements, p.placement_size)} | {vgpu} |"
        )
    return "\n".join(lines)


def tables() -> str:
    return "\n\n".join(model_table(m) for m in all_models())


def splice(text: str, generated: str) -> str:
    head, sep, rest = text.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise SystemExit(f"{GUIDE}: the marker comments {BEGIN!r} / {END!r} are missing")
    return f"{head}{BEGIN}\n{generated}\n{END}{tail}"


def main(argv: list[str]) -> int:
    if "--write" in argv:
        GUIDE.write_text(splice(GUIDE.read_text(), tables()))
    else:
        print(tables())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
