"""The simulated GPU host: how aihow runs (and is tested) without NVIDIA hardware.

A simulated host is a directory DIR:

* ``state.json``: the whole host (GPUs, MIG modes, GPU/compute instances, holders, SR-IOV VFs,
  vGPUs, armed faults), changed only in transactions under an flock on ``DIR/.lock`` and
  written atomically (``state.py``);
* ``sys/`` and ``proc/``: the kernel's views, re-rendered after every change (``sysfs.py``);
  writes to kernel-action attributes go through ``kernel.sysfs_write``;
* ``bin/nvidia-smi``: the fake nvidia-smi (``nvidia_smi.py``).

``driver.py`` holds the NVIDIA driver's rules (pure functions over the state, refusals as
NVML codes); ``fake_nvml.py`` exposes them at the C-symbol level under pynvml's own
wrapper code; ``vgpu.py`` the MIG-backed vGPU rules; ``faults.py`` injected failures;
``host.py`` creates a host from ``--gpu`` arguments or a TOML spec.
"""
