"""Compute instances made from inside a guest (``aihow sim guest-ci``).

NVIDIA's AI Enterprise guide (docs/reference/vgpu-on-mig.md section 3): host compute
instances are optional for a MIG-backed vGPU; a guest may delete them and make its own
with ``nvidia-smi mig -cci`` / ``-dci`` inside the VM (as root, with no process using the
GPU instance), where its vGPU shows as GPU instance 0; the host must not make CIs on a GI
whose guest runs. So a guest CI change needs the guest running, acts on the GI that backs
the guest's vGPU, and follows the driver's CI rules (placements, in-use checks).

ASSUMED, no source either way: that the host's NVML lists the CIs a guest made (the
planner does not depend on it). Not modelled: the guest driver's automatic first CI, and
the removal of the extra ones at guest shutdown.
"""

from __future__ import annotations

from pathlib import Path

from planner.host.libvirt_domains import hostdevs_in_xml
from planner.sim import driver
from planner.sim.libvirt_store import STATE_RUNNING, load_sim_domains
from planner.sim.state import SimCi, SimError, SimGi, SimGpu, SimState

GUEST_GI_ID = 0  # what the guest's nvidia-smi calls its GPU instance


def guest_gi(state: SimState, sim_dir: Path, domain: str) -> tuple[SimGpu, SimGi]:
    """The GPU instance behind the vGPU of running ``domain``."""
    rec = next((r for r in load_sim_domains(sim_dir) if r.name == domain), None)
    if rec is None:
        raise SimError(f"no domain {domain} on the simulated host {sim_dir}")
    xml = rec.live_xml or rec.persistent_xml
    if rec.state != STATE_RUNNING or not xml:
        raise SimError(f"domain {domain} is not running: a guest's nvidia-smi runs inside it")
    keys = {hd.key.lower() for hd in hostdevs_in_xml(xml)}
    for m in state.mdevs:
        if m.uuid.lower() in keys:
            g = state.gpu(m.gpu)
            gi = driver.find_gi_serial(g, m.gi_serial) if g and m.gi_serial else None
            if g is not None and gi is not None:
                return g, gi
    for g in state.gpus:
        for vf, v in g.vf_vgpus.items():
            if vf.lower() in keys and v.gi_serial is not None:
                gi = driver.find_gi_serial(g, v.gi_serial)
                if gi is not None:
                    return g, gi
    raise SimError(f"domain {domain} holds no MIG-backed vGPU on the simulated host")


def create_ci(state: SimState, gpu: SimGpu, gi: SimGi, profile_id: int | None) -> SimCi:
    """``nvidia-smi mig -cci [ID] -gi 0`` in the guest; no ID means the default profile."""
    if profile_id is None:
        cps = driver.ci_profiles(state, gpu, gi)
        default = [c for c in cps if c.is_default] or [
            c for c in cps if c.slice_count == driver.profile_of(state, gpu, gi).compute_slices]
        profile_id = default[0].id
    return driver.create_ci(state, gpu, gi, profile_id, None)


def destroy_ci(state: SimState, gpu: SimGpu, gi: SimGi, ci_id: int) -> None:
    """``nvidia-smi mig -dci -ci ID -gi 0`` in the guest."""
    driver.destroy_ci(state, gpu, gi, driver.find_ci(gi, ci_id))

