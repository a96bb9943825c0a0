#!/usr/bin/env bash
# Create MIG GPU instances (and their default compute instances) at explicit placements.
set -euo pipefail

PROG="$(basename "$0")"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/gpu/mig-common.sh
. "${HERE}/mig-common.sh"

usage() {
    cat <<EOF
Usage: ${PROG} --gpu INDEX|PCI --profiles LIST [--placements LIST] [--no-ci]
       [--destroy-existing] [--dry-run] [--detailed-exitcode] [--help]

Make the GPU's MIG GPU instances (GIs) be exactly LIST, creating each one with an explicit
placement ('nvidia-smi mig -cgi ID:START'), largest first, so that the creation order
never ends in "Insufficient Resources". Placements are computed here from the GPU's own
'nvidia-smi mig -lgipp' table and the instances that already exist.

  --gpu SPEC            GPU index (0) or PCI address (0000:17:00.0)
  --profiles LIST       comma-separated profile names or ids: "3g.20gb,2g.10gb,19"
  --placements LIST     optional start slice for each profile, same order; empty = choose,
                        e.g. "4,,0"
  --no-ci               do not create the default compute instance in each new GI
  --destroy-existing    first destroy every compute instance, then every GPU instance
  --dry-run             print what would be done, change nothing (does not need root)
  --detailed-exitcode   exit 2 when instances were created or destroyed (below)
  -h, --help            this text

Instances already on the GPU that LIST asks for are kept (a re-run changes nothing);
instances that LIST does not ask for make it stop unless --destroy-existing is given.
At the end it prints each instance with its MIG device UUID (from 'nvidia-smi -L').
GPU and compute instances do not survive a reboot, a GPU reset or a driver reload.
For MIG-backed vGPU, enable the GPU's SR-IOV VFs first ('sriov-manage -e PCI'): the
script unbinds and rebinds the GPU, which destroys its GPU instances.

Environment: NVIDIA_SMI (default nvidia-smi).

Exit status (as enable-mig.sh):
  0  success: the GPU has exactly these instances (made now, or already there)
  1  error: nothing changed, or what this run created was destroyed again
With --detailed-exitcode, success is told apart:
  0  nothing to do: the GPU already has exactly these instances
  2  changed: instances were created or destroyed (dry run: would be)
EOF
}

GPU_SPEC=""
PROFILES=""
PLACEMENTS=""
HAVE_PLACEMENTS=0
WITH_CI=1
DESTROY=0
DRY_RUN=0
DETAILED=0

while [[ $# -gt 0 ]]; do
    case "$1" in
        --gpu | --profiles | --placements)
            [[ $# -ge 2 ]] || die 1 "$1 needs a value (see --help)"
            # a value spanning lines would be read only up to its first newline
            [[ "$2" != *$'\n'* && "$2" != *$'\r'* ]] || die 1 "$1: the value holds a line break; give one comma-separated line"
            case "$1" in
                --gpu) GPU_SPEC="$2" ;;
                --profiles) PROFILES="$2" ;;
                --placements)
                    PLACEMENTS="$2"
                    HAVE_PLACEMENTS=1
                    ;;
            esac
            shift 2
            ;;
        --no-ci)
            WITH_CI=0
            shift
            ;;
        --destroy-existing)
            DESTROY=1
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
            exit 0
            ;;
        *) die 1 "unknown argument '$1' (see --help)" ;;
    esac
done

[[ -n "${GPU_SPEC}" ]] || die 1 "--gpu is required (an index or a PCI address)"
[[ "${GPU_SPEC}" != "all" ]] || die 1 "--gpu all is not supported here; name one GPU"
[[ -n "${PROFILES}" || "${DESTROY}" -eq 1 ]] || die 1 "--profiles is required (e.g. \"3g.20gb,2g.10gb\")"

check_prerequisites "${DRY_RUN}"

load_gpus
select_gpus "${GPU_SPEC}"
G="${SELECTED[0]}"
IDX="${GPU_INDEX[${G}]}"
PCI="${GPU_PCI[${G}]}"
LABEL="GPU ${IDX} (${PCI}, ${GPU_NAME[${G}]})"

case "${GPU_MIG_CUR[${G}]}" in
    Enabled) ;;
    Disabled)
        if [[ "${GPU_MIG_PEND[${G}]}" == "Enabled" ]]; then
            die 1 "${LABEL}: MIG enable is pending; apply it first: enable-mig.sh --gpu ${PCI} --reset (or reboot)"
        fi
        die 1 "${LABEL}: MIG mode is disabled; enable it first: enable-mig.sh --gpu ${PCI}"
        ;;
    *) die 1 "${LABEL}: not MIG-capable (MIG mode ${GPU_MIG_CUR[${G}]}); nothing can be created on it" ;;
esac

smi() {
    # smi ARGS...: nvidia-smi under the time limit of mig-common.sh, output in SMI_OUT, status
    # returned. (It replaces the common smi(), so it must not call smi itself.)
    local rc=0
    SMI_OUT="$(timeout "${SMI_TIMEOUT}" "${NVIDIA_SMI}" "$@" 2>&1)" || rc=$?
    return "${rc}"
}

# ---- what the GPU offers: -lgip (names, ids, counts) and -lgipp (placements) ----------
declare -a P_NAME=() P_ID=() P_TOTAL=()
declare -A PL_STARTS=() PL_SIZE=()
smi mig -i "${IDX}" -lgip || die 1 "${LABEL}: nvidia-smi mig -lgip failed: ${SMI_OUT//$'\n'/ }"
# A profile name ends in a letter ("1g.5gb", "1g.24gb+me.all", "2g.48gb-me", "4g.96gb+gfx"),
# so a name that fills its column and touches the ID ("MIG 1g.24gb+me.all65", as narrower
# tables of some driver releases print it) still splits into name and ID.
re_lgip='^\|[[:space:]]+[0-9]+[[:space:]]+MIG[[:space:]]+([0-9]+g\.[0-9]+gb([+-][a-z.]*[a-z])?)[[:space:]]*([0-9]+)[[:space:]]+([0-9]+)/([0-9]+)'
while IFS= read -r line; do
    if [[ "${line}" =~ ${re_lgip} ]]; then
        P_NAME+=("${BASH_REMATCH[1]}")
        P_ID+=("${BASH_REMATCH[3]}")
        P_TOTAL+=("${BASH_REMATCH[5]}")
    fi
done <<<"${SMI_OUT}"
[[ "${#P_ID[@]}" -gt 0 ]] || die 1 "${LABEL}: no GPU instance profiles in nvidia-smi mig -lgip output"

smi mig -i "${IDX}" -lgipp || die 1 "${LABEL}: nvidia-smi mig -lgipp failed: ${SMI_OUT//$'\n'/ }"
re_lgipp='Profile ID[[:space:]]+([0-9]+)[[:space:]]+Placements?[[:space:]]*:[[:space:]]*\{([0-9,]+)\}:([0-9]+)'
while IFS= read -r line; do
    if [[ "${line}" =~ ${re_lgipp} ]]; then
        PL_STARTS["${BASH_REMATCH[1]}"]="${BASH_REMATCH[2]//,/ }"
        PL_SIZE["${BASH_REMATCH[1]}"]="${BASH_REMATCH[3]}"
    fi
done <<<"${SMI_OUT}"

offered() {
    local k out=""
    for k in "${!P_ID[@]}"; do
        out+="${out:+, }${P_NAME[${k}]} (ID ${P_ID[${k}]})"
    done
    printf '%s' "${out}"
}

# profile_id TOKEN: the profile id for a name ("3g.20gb", "MIG 3g.20gb") or an id ("9").
profile_id() {
    local tok k
    tok="$(trim "$1")"
    tok="${tok#MIG }"
    for k in "${!P_ID[@]}"; do
        if [[ "${P_NAME[${k}]}" == "${tok}" || "${P_ID[${k}]}" == "${tok}" ]]; then
            printf '%s' "${P_ID[${k}]}"
            return 0
        fi
    done
    return 1
}

name_of() {
    local k
    for k in "${!P_ID[@]}"; do
        if [[ "${P_ID[${k}]}" == "$1" ]]; then
            printf '%s' "${P_NAME[${k}]}"
            return 0
        fi
    done
    printf 'ID %s' "$1"
}

span_mask() {
    # span_mask START SIZE: bit mask of the memory slices a placement occupies.
    printf '%s' "$((((1 << $2) - 1) << $1))"
}

# ---- what exists: -lgi and -lci -------------------------------------------------------
declare -a E_GI=() E_PID=() E_START=() E_SIZE=()
declare -A CI_COUNT=()
read_instances() {
    E_GI=()
    E_PID=()
    E_START=()
    E_SIZE=()
    CI_COUNT=()
    CI_LIST=()
    local re_lgi re_lci line
    re_lgi='^\|[[:space:]]+[0-9]+[[:space:]]+MIG[[:space:]]+[^[:space:]]+[[:space:]]+([0-9]+)[[:space:]]+([0-9]+)[[:space:]]+([0-9]+):([0-9]+)'
    if ! smi mig -i "${IDX}" -lgi && [[ "${SMI_OUT}" != *"No GPU instances found"* ]]; then
        die 1 "${LABEL}: nvidia-smi mig -lgi failed: ${SMI_OUT//$'\n'/ }"
    fi
    while IFS= read -r line; do
        if [[ "${line}" =~ ${re_lgi} ]]; then
            E_PID+=("${BASH_REMATCH[1]}")
            E_GI+=("${BASH_REMATCH[2]}")
            E_START+=("${BASH_REMATCH[3]}")
            E_SIZE+=("${BASH_REMATCH[4]}")
        fi
    done <<<"${SMI_OUT}"
    re_lci='^\|[[:space:]]+[0-9]+[[:space:]]+([0-9]+)[[:space:]]+MIG[[:space:]]+[^[:space:]]+[[:space:]]+([0-9]+)[[:space:]]+([0-9]+)[[:space:]]+[0-9]+:[0-9]+'
    if ! smi mig -i "${IDX}" -lci && [[ "${SMI_OUT}" != *"No compute instances found"* ]]; then
        die 1 "${LABEL}: nvidia-smi mig -lci failed: ${SMI_OUT//$'\n'/ }"
    fi
    while IFS= read -r line; do
        if [[ "${line}" =~ ${re_lci} ]]; then
            CI_COUNT["${BASH_REMATCH[1]}"]=$((${CI_COUNT["${BASH_REMATCH[1]}"]:-0} + 1))
            CI_LIST+=("${BASH_REMATCH[1]} ${BASH_REMATCH[3]}")
        fi
    done <<<"${SMI_OUT}"
}
declare -a CI_LIST=()
read_instances

# ---- the wanted instances --------------------------------------------------------------
declare -a W_ID=() W_PIN=()
if [[ -n "${PROFILES}" ]]; then
    IFS=',' read -r -a tokens <<<"${PROFILES}"
    pins=()
    if [[ "${HAVE_PLACEMENTS}" -eq 1 ]]; then
        IFS=',' read -r -a pins <<<"${PLACEMENTS},"
        # "a,b," splits into a b (the trailing comma keeps an empty last field).
        if [[ "${#pins[@]}" -ne "${#tokens[@]}" ]]; then
            die 1 "--placements has ${#pins[@]} entries but --profiles has ${#tokens[@]}"
        fi
    fi
    for k in "${!tokens[@]}"; do
        tok="$(trim "${tokens[${k}]}")"
        id="$(profile_id "${tok}")" || die 1 "${LABEL}: profile '${tok}' is not offered by this GPU; it offers: $(offered)"
        [[ -n "${PL_SIZE[${id}]:-}" ]] || die 1 "${LABEL}: no placements listed for profile ${tok} (ID ${id}) in -lgipp"
        pin=""
        if [[ "${HAVE_PLACEMENTS}" -eq 1 ]]; then
            pin="$(trim "${pins[${k}]}")"
        fi
        if [[ -n "${pin}" ]]; then
            [[ "${pin}" =~ ^[0-9]+$ ]] || die 1 "--placements: '${pin}' is not a slice number"
            if [[ " ${PL_STARTS[${id}]} " != *" ${pin} "* ]]; then
                die 1 "${LABEL}: ${tok} cannot start at slice ${pin}; its placements are {${PL_STARTS[${id}]// /,}}"
            fi
        fi
        W_ID+=("${id}")
        W_PIN+=("${pin}")
    done
    # Never more of a profile than the GPU's Total column allows.
    for k in "${!P_ID[@]}"; do
        n=0
        for id in "${W_ID[@]}"; do
            [[ "${id}" == "${P_ID[${k}]}" ]] && n=$((n + 1))
        done
        if [[ "${n}" -gt "${P_TOTAL[${k}]}" ]]; then
            die 1 "${LABEL}: ${n} x ${P_NAME[${k}]} asked, the GPU allows at most ${P_TOTAL[${k}]}"
        fi
    done
fi

# ---- keep what already matches ---------------------------------------------------------
declare -a KEEP=() EXTRA=()
declare -A E_USED=()
W_MATCH=()
for k in "${!W_ID[@]}"; do
    W_MATCH+=("")
done
if [[ "${DESTROY}" -eq 0 ]]; then
    # Pinned wants first (exact profile and start), then unpinned (any start).
    for pass in pinned free; do
        for k in "${!W_ID[@]}"; do
            [[ -z "${W_MATCH[${k}]}" ]] || continue
            if [[ "${pass}" == pinned && -z "${W_PIN[${k}]}" ]] || [[ "${pass}" == free && -n "${W_PIN[${k}]}" ]]; then
                continue
            fi
            for e in "${!E_GI[@]}"; do
                [[ -z "${E_USED[${e}]:-}" ]] || continue
                [[ "${E_PID[${e}]}" == "${W_ID[${k}]}" ]] || continue
                [[ -z "${W_PIN[${k}]}" || "${W_PIN[${k}]}" == "${E_START[${e}]}" ]] || continue
                E_USED["${e}"]=1
                W_MATCH["${k}"]="${e}"
                KEEP+=("${e}")
                break
            done
        done
    done
    for e in "${!E_GI[@]}"; do
        [[ -n "${E_USED[${e}]:-}" ]] || EXTRA+=("${e}")
    done
    if [[ "${#EXTRA[@]}" -gt 0 ]]; then
        desc=""
        for e in "${EXTRA[@]}"; do
            desc+="${desc:+, }$(name_of "${E_PID[${e}]}")@${E_START[${e}]} (GI ${E_GI[${e}]})"
        done
        die 1 "${LABEL}: has instances not in --profiles: ${desc}; use --destroy-existing to replace them"
    fi
fi

# ---- choose placements: pins and kept instances first, then largest first, backtracking -
occupied=0
for e in "${KEEP[@]}"; do
    occupied=$((occupied | $(span_mask "${E_START[${e}]}" "${E_SIZE[${e}]}")))
done
declare -a TODO=()
for k in "${!W_ID[@]}"; do
    [[ -z "${W_MATCH[${k}]}" ]] || continue
    if [[ -n "${W_PIN[${k}]}" ]]; then
        m="$(span_mask "${W_PIN[${k}]}" "${PL_SIZE[${W_ID[${k}]}]}")"
        if ((occupied & m)); then
            die 1 "${LABEL}: $(name_of "${W_ID[${k}]}")@${W_PIN[${k}]} overlaps another instance"
        fi
        occupied=$((occupied | m))
    else
        TODO+=("${k}")
    fi
done
# Largest placement size first; ties keep the order given (a stable insertion sort).
declare -a ORDER=()
for k in "${TODO[@]}"; do
    pos=${#ORDER[@]}
    while [[ "${pos}" -gt 0 ]] && [[ "${PL_SIZE[${W_ID[${ORDER[$((pos - 1))]}]}]}" -lt "${PL_SIZE[${W_ID[${k}]}]}" ]]; do
        pos=$((pos - 1))
    done
    ORDER=("${ORDER[@]:0:${pos}}" "${k}" "${ORDER[@]:${pos}}")
done
declare -A CHOSEN=()
place() {
    # place N MASK: give ORDER[N..] free starts; 0 when every one fits.
    local n="$1" mask="$2" k id start m
    [[ "${n}" -lt "${#ORDER[@]}" ]] || return 0
    k="${ORDER[${n}]}"
    id="${W_ID[${k}]}"
    for start in ${PL_STARTS[${id}]}; do
        m="$(span_mask "${start}" "${PL_SIZE[${id}]}")"
        if ((mask & m)); then
            continue
        fi
        CHOSEN["${k}"]="${start}"
        if place "$((n + 1))" "$((mask | m))"; then
            return 0
        fi
    done
    return 1
}
if ! place 0 "${occupied}"; then
    if [[ "${#KEEP[@]}" -gt 0 ]]; then
        kept=""
        for e in "${KEEP[@]}"; do
            kept+="${kept:+, }$(name_of "${E_PID[${e}]}")@${E_START[${e}]}"
        done
        die 1 "${LABEL}: the new instances do not fit beside the ones kept (${kept}); use --destroy-existing to place them all afresh"
    fi
    die 1 "${LABEL}: these profiles do not fit together on this GPU (no free placement for all of them); see 'nvidia-smi mig -i ${IDX} -lgipp'"
fi
for k in "${!W_ID[@]}"; do
    if [[ -n "${W_PIN[${k}]}" && -z "${W_MATCH[${k}]}" ]]; then
        CHOSEN["${k}"]="${W_PIN[${k}]}"
    fi
done
# Creation order: largest first, then by start.
declare -a CREATE=()
for k in "${!CHOSEN[@]}"; do
    CREATE+=("$(printf '%03d %03d %s' "$((100 - PL_SIZE[${W_ID[${k}]}]))" "${CHOSEN[${k}]}" "${k}")")
done
if [[ "${#CREATE[@]}" -gt 0 ]]; then
    mapfile -t CREATE < <(printf '%s\n' "${CREATE[@]}" | sort)
fi

# GIs kept that lack their compute instance get the default one.
declare -a NEED_CI=()
if [[ "${WITH_CI}" -eq 1 ]]; then
    for e in "${KEEP[@]}"; do
        [[ -n "${CI_COUNT[${E_GI[${e}]}]:-}" ]] || NEED_CI+=("${E_GI[${e}]}")
    done
fi

# ---- do it (or say it) -----------------------------------------------------------------
ci_flag=()
[[ "${WITH_CI}" -eq 1 ]] && ci_flag=(-C)
CHANGES=1
if [[ "${#CREATE[@]}" -eq 0 && "${#NEED_CI[@]}" -eq 0 ]] && { [[ "${DESTROY}" -eq 0 ]] || [[ "${#E_GI[@]}" -eq 0 ]]; }; then
    CHANGES=0
    say "${LABEL}: already has the instances asked for, nothing to do"
fi
# Shell convention: 0 on success, changed or not; 2 for "changed" only when asked for.
EXIT_DONE=0
[[ "${CHANGES}" -eq 0 || "${DETAILED}" -eq 0 ]] || EXIT_DONE=2

if [[ "${DRY_RUN}" -eq 1 ]]; then
    if [[ "${DESTROY}" -eq 1 && "${#E_GI[@]}" -gt 0 ]]; then
        [[ "${#CI_LIST[@]}" -eq 0 ]] || say "would run: ${NVIDIA_SMI} mig -i ${IDX} -dci"
        say "would run: ${NVIDIA_SMI} mig -i ${IDX} -dgi"
    fi
    for gi in "${NEED_CI[@]}"; do
        say "would run: ${NVIDIA_SMI} mig -i ${IDX} -cci -gi ${gi}"
    done
    for row in "${CREATE[@]}"; do
        k="${row##* }"
        say "would run: ${NVIDIA_SMI} mig -i ${IDX} -cgi ${W_ID[${k}]}:${CHOSEN[${k}]}${ci_flag[*]:+ ${ci_flag[*]}}   # $(name_of "${W_ID[${k}]}") at slices ${CHOSEN[${k}]}..$((CHOSEN[${k}] + PL_SIZE[${W_ID[${k}]}] - 1))"
    done
    exit "${EXIT_DONE}"
fi

if [[ "${DESTROY}" -eq 1 && "${#E_GI[@]}" -gt 0 ]]; then
    # Compute instances first: a GI with a CI cannot be destroyed.
    if [[ "${#CI_LIST[@]}" -gt 0 ]]; then
        smi mig -i "${IDX}" -dci || die 1 "${LABEL}: destroying compute instances failed: ${SMI_OUT//$'\n'/ } (a process may still use them: nvidia-smi --query-compute-apps=pid,process_name,gpu_bus_id --format=csv)"
        say "${SMI_OUT}"
    fi
    smi mig -i "${IDX}" -dgi || die 1 "${LABEL}: destroying GPU instances failed: ${SMI_OUT//$'\n'/ }"
    say "${SMI_OUT}"
fi

declare -a MADE_GI=()
undo() {
    # Destroy what this run created (its CIs, then its GIs), newest first.
    local gi
    for ((j = ${#MADE_GI[@]} - 1; j >= 0; j--)); do
        gi="${MADE_GI[${j}]}"
        smi mig -i "${IDX}" -dci -gi "${gi}" || true
        smi mig -i "${IDX}" -dgi -gi "${gi}" || say "  could not destroy GI ${gi}: ${SMI_OUT//$'\n'/ }" >&2
    done
}

for gi in "${NEED_CI[@]}"; do
    smi mig -i "${IDX}" -cci -gi "${gi}" || die 1 "${LABEL}: creating the compute instance in GI ${gi} failed: ${SMI_OUT//$'\n'/ }"
    say "${SMI_OUT}"
done
for row in "${CREATE[@]}"; do
    k="${row##* }"
    id="${W_ID[${k}]}"
    start="${CHOSEN[${k}]}"
    if ! smi mig -i "${IDX}" -cgi "${id}:${start}" "${ci_flag[@]}"; then
        printf '%s: error: %s: creating %s at slice %s failed: %s\n' "${PROG}" "${LABEL}" \
            "$(name_of "${id}")" "${start}" "${SMI_OUT//$'\n'/ }" >&2
        undo
        exit 1
    fi
    say "${SMI_OUT}"
    re_made='Successfully created GPU instance ID[[:space:]]+([0-9]+)'
    if [[ "${SMI_OUT}" =~ ${re_made} ]]; then
        MADE_GI+=("${BASH_REMATCH[1]}")
    fi
done

# ---- report every instance with its MIG device UUID ------------------------------------
read_instances
smi -L || die 1 "nvidia-smi -L failed: ${SMI_OUT//$'\n'/ }"
# -L lists this GPU's MIG devices in (GI ID, CI ID) order after its "GPU N:" line.
declare -a UUIDS=()
in_gpu=0
re_gpu='^GPU[[:space:]]+([0-9]+):'
# (".*Device": a profile name longer than its column may touch "Device")
re_mig='^[[:space:]]+MIG[[:space:]].*Device[[:space:]]+[0-9]+:[[:space:]]+\(UUID:[[:space:]]+(MIG-[^)]+)\)'
while IFS= read -r line; do
    if [[ "${line}" =~ ${re_gpu} ]]; then
        in_gpu=0
        [[ "${BASH_REMATCH[1]}" == "${IDX}" ]] && in_gpu=1
    elif [[ "${in_gpu}" -eq 1 && "${line}" =~ ${re_mig} ]]; then
        UUIDS+=("${BASH_REMATCH[1]}")
    fi
done <<<"${SMI_OUT}"
mapfile -t SORTED_CI < <(printf '%s\n' "${CI_LIST[@]}" | sort -n -k1,1 -k2,2)
say "${LABEL}: MIG devices:"
printf '  %-14s %-7s %-10s %-6s %s\n' "PROFILE" "GI" "PLACEMENT" "CI" "UUID"
rows=()
for e in "${!E_GI[@]}"; do
    gi="${E_GI[${e}]}"
    found=0
    for n in "${!SORTED_CI[@]}"; do
        [[ -n "${SORTED_CI[${n}]}" ]] || continue
        read -r cgi cci <<<"${SORTED_CI[${n}]}"
        [[ "${cgi}" == "${gi}" ]] || continue
        rows+=("$(printf '%03d %03d|  %-14s %-7s %-10s %-6s %s' "${E_START[${e}]}" "${cci}" \
            "$(name_of "${E_PID[${e}]}")" "${gi}" "${E_START[${e}]}:${E_SIZE[${e}]}" "${cci}" \
            "${UUIDS[${n}]:-?}")")
        found=1
    done
    if [[ "${found}" -eq 0 ]]; then
        rows+=("$(printf '%03d 999|  %-14s %-7s %-10s %-6s %s' "${E_START[${e}]}" \
            "$(name_of "${E_PID[${e}]}")" "${gi}" "${E_START[${e}]}:${E_SIZE[${e}]}" "-" \
            "(no compute instance, no MIG device)")")
    fi
done
# By placement, so the table reads left to right across the GPU's memory slices.
if [[ "${#rows[@]}" -gt 0 ]]; then
    printf '%s\n' "${rows[@]}" | sort | cut -d'|' -f2-
fi
exit "${EXIT_DONE}"
