#!/usr/bin/env bash
# Enable (or disable) MIG mode on NVIDIA GPUs, safely and idempotently.
set -euo pipefail

PROG="$(basename "$0")"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/gpu/mig-common.sh
. "${HERE}/mig-common.sh"

# Exit codes (documented in --help).
readonly EXIT_NOTHING=0 EXIT_ERROR=1 EXIT_CHANGED=2 EXIT_PENDING=3

PROC_ROOT="${PROC_ROOT:-/proc}"

usage() {
    cat <<EOF
Usage: ${PROG} [--gpu INDEX|PCI|all] [--disable] [--reset] [--dry-run]
       [--detailed-exitcode] [--help]

Turn MIG mode on (or off with --disable) for the selected GPUs. GPUs that are not
MIG-capable are skipped with a line saying so. Running it again changes nothing.

  --gpu SPEC   GPU index (0), PCI address (0000:17:00.0, 17:00.0) or 'all' (default: all)
  --disable    turn MIG mode off instead of on
  --reset      when a mode change is pending, try 'nvidia-smi -r' on that GPU; if the GPU
               is held, list what holds it (processes, nvidia-persistenced, DCGM; never
               Fabric Manager, which an HGX A100 needs for the reset) instead of failing
               vaguely
  --dry-run    only say what would be done (does not need root)
  --detailed-exitcode
               exit ${EXIT_CHANGED} when something changed and ${EXIT_PENDING} when a change is pending (below)
  -h, --help   this text

A mode change can stay pending: on Ampere (A100, A30) the driver must reset the GPU,
which fails while anything holds it; then --reset (after stopping the holders) or a
reboot makes it effective. On Ampere MIG mode survives reboots (InfoROM). On Hopper and
later (H100, H200, B200, ...) it does NOT survive a reboot or driver reload: run this
again at boot. GPU and compute instances never survive a reboot on any GPU.

Environment: NVIDIA_SMI (default nvidia-smi), PROC_ROOT (default /proc; where holders
are looked for).

Exit status:
  ${EXIT_NOTHING}  success: the mode is in effect, was already, or is pending (the output says)
  ${EXIT_ERROR}  error (bad arguments, not root, nvidia-smi missing or failing, reset refused)
With --detailed-exitcode, success is told apart:
  ${EXIT_NOTHING}  nothing to do: every selected MIG-capable GPU is already in that mode
  ${EXIT_CHANGED}  changed: the mode is now in effect on at least one GPU (dry run: would change)
  ${EXIT_PENDING}  needs reset or reboot: a change is pending on at least one GPU
EOF
}

GPU_SPEC="all"
WANT="Enabled"
DO_RESET=0
DRY_RUN=0
DETAILED=0

while [[ $# -gt 0 ]]; do
    case "$1" in
        --gpu)
            [[ $# -ge 2 ]] || die "${EXIT_ERROR}" "--gpu needs a value (INDEX, PCI address or all)"
            GPU_SPEC="$2"
            shift 2
            ;;
        --gpu=*)
            GPU_SPEC="${1#--gpu=}"
            shift
            ;;
        --disable)
            WANT="Disabled"
            shift
            ;;
        --reset)
            DO_RESET=1
            shift
            ;;
        --dry-run)
            DRY_RUN=1
            shift
            ;;
        --detailed-exitcode)
            DETAILED=1
            shift
            ;;
        -h | --help)
            usage
            exit "${EXIT_NOTHING}"
            ;;
        *)
            die "${EXIT_ERROR}" "unknown argument '$1' (see --help)"
            ;;
    esac
done

check_prerequisites "${DRY_RUN}"

# list_holders PCI: one line per thing holding the GPU, for the reset error message.
# Sources: the "Processes" section of 'nvidia-smi -q -i PCI' (compute and graphics
# processes), then the process table: known services by name, and any process with an
# NVIDIA device file open (what 'fuser -v /dev/nvidia*' shows).
list_holders() {
    local pci="$1" out line pid="" name found=0 dir argv0 comm what fd target devs
    local -A listed=()
    if out="$(smi -q -i "${pci}" 2>/dev/null)"; then
        local re_pid='^[[:space:]]+Process ID[[:space:]]*:[[:space:]]*([0-9]+)'
        local re_name='^[[:space:]]+Name[[:space:]]*:[[:space:]]*(.*[^[:space:]])'
        while IFS= read -r line; do
            if [[ "${line}" =~ ${re_pid} ]]; then
                pid="${BASH_REMATCH[1]}"
            elif [[ -n "${pid}" && "${line}" =~ ${re_name} ]]; then
                name="${BASH_REMATCH[1]}"
                say "    pid ${pid}: ${name} (a process on the GPU: stop it)"
                listed["${pid}"]=1
                found=1
                pid=""
            fi
        done <<<"${out}"
    fi
    for dir in "${PROC_ROOT}"/[0-9]*; do
        [[ -d "${dir}" ]] || continue
        pid="${dir##*/}"
        [[ -z "${listed[${pid}]:-}" ]] || continue
        argv0=""
        if [[ -r "${dir}/cmdline" ]]; then
            IFS= read -r -d '' argv0 <"${dir}/cmdline" || true
        fi
        # comm is cut at 15 characters, so argv[0] is used when there is one.
        if [[ -n "${argv0}" ]]; then
            comm="$(basename -- "${argv0}")"
        elif [[ -r "${dir}/comm" ]]; then
            comm="$(<"${dir}/comm")"
        else
            continue
        fi
        case "${comm}" in
            nvidia-persistenced) what="nvidia-persistenced (systemctl stop nvidia-persistenced, or nvidia-smi -pm 0)" ;;
            nv-hostengine) what="DCGM nv-hostengine (systemctl stop nvidia-dcgm)" ;;
            dcgm-exporter) what="dcgm-exporter (systemctl stop dcgm-exporter)" ;;
            # Fabric Manager must keep running: on an HGX A100 the reset needs it (without it
            # every NVLink peer must be reset together); later boards reset without it.
            nv-fabricmanager | nvidia-fabricmanager) continue ;;
            nvsm*) what="NVSM ${comm} (systemctl stop nvsm)" ;;
            *) what="" ;;
        esac
        devs=""
        for fd in "${dir}"/fd/*; do
            [[ -L "${fd}" ]] || continue
            target="$(readlink "${fd}")" || continue
            case "${target}" in
                /dev/nvidia[0-9]* | /dev/nvidiactl | /dev/nvidia-caps/*)
                    [[ " ${devs} " == *" ${target} "* ]] || devs="${devs:+${devs} }${target}"
                    ;;
            esac
        done
        if [[ -n "${what}" ]]; then
            say "    pid ${pid}: ${what}"
        elif [[ -n "${devs}" ]]; then
            say "    pid ${pid}: ${comm} has ${devs} open (stop it)"
        else
            continue
        fi
        found=1
    done
    # On the real process table, systemd can name the units to stop as well.
    if [[ "${PROC_ROOT}" == "/proc" ]] && command -v systemctl >/dev/null 2>&1; then
        local unit
        for unit in nvidia-persistenced nvidia-dcgm dcgm dcgm-exporter nvsm; do
            if timeout 5 systemctl is-active --quiet "${unit}.service" 2>/dev/null; then
                say "    systemd unit ${unit}.service is active (systemctl stop ${unit})"
                found=1
            fi
        done
    fi
    if [[ -r "${PROC_ROOT}/modules" ]] && grep -q '^nvidia_drm ' "${PROC_ROOT}/modules"; then
        say "    kernel module nvidia_drm is loaded (rmmod nvidia_drm if no display uses it)"
        found=1
    fi
    if [[ "${found}" -eq 0 ]]; then
        say "    nothing found holding it here; a container, a VM or another host namespace may; or reboot"
    fi
}

# try_reset POSITION: 0 when the reset worked and the mode is now current.
try_reset() {
    local i="$1" pci="${GPU_PCI[$1]}" out
    if [[ "${DRY_RUN}" -eq 1 ]]; then
        say "GPU ${GPU_INDEX[${i}]} (${pci}): would run: ${NVIDIA_SMI} -r -i ${pci}"
        return 0
    fi
    if out="$(smi -r -i "${pci}" 2>&1)"; then
        say "GPU ${GPU_INDEX[${i}]} (${pci}): reset done"
        return 0
    fi
    say "GPU ${GPU_INDEX[${i}]} (${pci}): reset failed: $(head -n 2 <<<"${out}" | tr -s '\n ' '  ' | sed 's/ *$//')"
    say "  the GPU is held by:"
    list_holders "${pci}"
    return 1
}

hopper_note() {
    local name="$1"
    if [[ "${WANT}" == "Enabled" ]] && ! is_ampere "${name}"; then
        say "  note: on Hopper and later MIG mode does not survive a reboot or driver reload; re-run ${PROG} at boot"
    fi
}

load_gpus
select_gpus "${GPU_SPEC}"

status="${EXIT_NOTHING}"
raise_status() {
    # Worst outcome wins: error > pending > changed > nothing.
    local new="$1"
    case "${status}:${new}" in
        "${EXIT_ERROR}":*) ;;
        *:"${EXIT_ERROR}") status="${EXIT_ERROR}" ;;
        "${EXIT_PENDING}":*) ;;
        *:"${EXIT_PENDING}") status="${EXIT_PENDING}" ;;
        *:"${EXIT_CHANGED}") status="${EXIT_CHANGED}" ;;
    esac
}

verb="enable"
[[ "${WANT}" == "Disabled" ]] && verb="disable"
flag="1"
[[ "${WANT}" == "Disabled" ]] && flag="0"

for i in "${SELECTED[@]}"; do
    idx="${GPU_INDEX[${i}]}"
    pci="${GPU_PCI[${i}]}"
    name="${GPU_NAME[${i}]}"
    cur="${GPU_MIG_CUR[${i}]}"
    pend="${GPU_MIG_PEND[${i}]}"
    label="GPU ${idx} (${pci}, ${name})"
    if [[ "${cur}" != "Enabled" && "${cur}" != "Disabled" ]]; then
        say "${label}: skipped, not MIG-capable (MIG mode ${cur})"
        continue
    fi
    if [[ "${cur}" == "${WANT}" && "${pend}" == "${WANT}" ]]; then
        say "${label}: MIG mode already ${WANT,,}, nothing to do"
        continue
    fi
    if [[ "${pend}" != "${WANT}" ]]; then
        if [[ "${DRY_RUN}" -eq 1 ]]; then
            say "${label}: would run: ${NVIDIA_SMI} -i ${pci} -mig ${flag}"
            if [[ "${cur}" != "${WANT}" ]] && is_ampere "${name}"; then
                say "  the driver resets the GPU to apply it; if anything holds the GPU the change stays pending"
            fi
            hopper_note "${name}"
            raise_status "${EXIT_CHANGED}"
            continue
        fi
        rc=0
        out="$(smi -i "${pci}" -mig "${flag}" 2>&1)" || rc=$?
        if [[ "${rc}" -ne 0 || "${out}" == *"Unable to"* ]]; then
            say "${PROG}: error: ${label}: nvidia-smi -mig ${flag} failed: ${out//$'\n'/ }" >&2
            if [[ "${WANT}" == "Disabled" && "${out}" == *"In use"* ]]; then
                say "  GPU instances still exist: destroy them first (create-mig-slices.sh --gpu ${pci} --destroy-existing, or nvidia-smi mig -i ${idx} -dci; nvidia-smi mig -i ${idx} -dgi)" >&2
            fi
            raise_status "${EXIT_ERROR}"
            continue
        fi
        # Read the mode back rather than trusting the message.
        load_gpus
        cur="${GPU_MIG_CUR[${i}]}"
        pend="${GPU_MIG_PEND[${i}]}"
        if [[ "${cur}" == "${WANT}" ]]; then
            say "${label}: MIG mode ${WANT,,}"
            hopper_note "${name}"
            raise_status "${EXIT_CHANGED}"
            continue
        fi
    fi
    # Here: current != wanted, pending == wanted.
    say "${label}: MIG ${verb} is pending (current ${cur}, pending ${pend})"
    if [[ "${DO_RESET}" -eq 1 ]]; then
        if try_reset "${i}"; then
            if [[ "${DRY_RUN}" -eq 1 ]]; then
                raise_status "${EXIT_CHANGED}"
                continue
            fi
            load_gpus
            if [[ "${GPU_MIG_CUR[${i}]}" == "${WANT}" ]]; then
                say "${label}: MIG mode ${WANT,,}"
                hopper_note "${name}"
                raise_status "${EXIT_CHANGED}"
                continue
            fi
            say "${label}: still pending after the reset; reboot the host to apply it"
            raise_status "${EXIT_PENDING}"
        else
            say "  stop those, then run: ${PROG} --gpu ${pci} --reset   (or reboot the host)"
            raise_status "${EXIT_ERROR}"
        fi
        continue
    fi
    say "  to apply it: stop what uses the GPU and run ${PROG} --gpu ${pci} --reset, or reboot the host"
    raise_status "${EXIT_PENDING}"
done

# Shell convention: 0 is success, changed or not (a `set -e` caller goes on); the
# changed/pending distinction only when asked for.
if [[ "${DETAILED}" -eq 0 && "${status}" -ne "${EXIT_ERROR}" ]]; then
    exit "${EXIT_NOTHING}"
fi
exit "${status}"
