# shellcheck shell=bash
# Helpers shared by enable-mig.sh and create-mig-slices.sh. Sourced, never run.
# Everything here reads nvidia-smi's documented output formats; nothing changes the GPU.

if ((BASH_VERSINFO[0] < 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] < 4))); then
    printf '%s: error: bash 4.4 or later is needed (this is %s)\n' "$0" "${BASH_VERSION}" >&2
    exit 1
fi

NVIDIA_SMI="${NVIDIA_SMI:-nvidia-smi}"
SMI_TIMEOUT="${SMI_TIMEOUT:-120}"

smi() {
    # smi ARGS...: nvidia-smi with a time limit (a wedged driver must not hang the script;
    # exit 124 when it ran out).
    timeout "${SMI_TIMEOUT}" "${NVIDIA_SMI}" "$@"
}

die() {
    # die CODE MESSAGE...: one line on stderr, then exit CODE.
    local code="$1"
    shift
    printf '%s: error: %s\n' "${PROG}" "$*" >&2
    exit "${code}"
}

say() {
    printf '%s\n' "$*"
}

trim() {
    local s="$1"
    s="${s#"${s%%[![:space:]]*}"}"
    s="${s%"${s##*[![:space:]]}"}"
    printf '%s' "${s}"
}

# normalize_pci TEXT: 17:00.0 / 0000:17:00.0 / 00000000:17:00.0 -> 0000:17:00.0 (lowercase).
# Prints nothing and returns 1 when TEXT is not a PCI address.
normalize_pci() {
    local text="${1,,}"
    local re='^(([0-9a-f]{4,8}):)?([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$'
    if [[ ! "${text}" =~ ${re} ]]; then
        return 1
    fi
    local domain="${BASH_REMATCH[2]:-0000}"
    domain="$(printf '%08x' "$((16#${domain}))")"
    if [[ "${domain:0:4}" != "0000" ]]; then
        return 1
    fi
    printf '%s:%s:%s.%s' "${domain:4:4}" "${BASH_REMATCH[3]}" "${BASH_REMATCH[4]}" "${BASH_REMATCH[5]}"
}

require_nvidia_smi() {
    if ! command -v "${NVIDIA_SMI}" >/dev/null 2>&1; then
        die 1 "nvidia-smi not found in PATH; install the NVIDIA driver (or the vGPU manager)"
    fi
}

require_root() {
    if [[ "$(id -u)" -ne 0 ]]; then
        die 1 "must run as root (MIG changes need root); use --dry-run to only look"
    fi
}

# check_prerequisites DRY_RUN: root unless DRY_RUN is 1 (a dry run only looks), and nvidia-smi.
check_prerequisites() {
    if [[ "$1" -eq 0 ]]; then
        require_root
    fi
    require_nvidia_smi
}

# GPU table: fills the parallel arrays GPU_INDEX, GPU_PCI, GPU_NAME, GPU_MIG_CUR, GPU_MIG_PEND
# from 'nvidia-smi -q', which lists the GPUs in index order. MIG mode is "Enabled",
# "Disabled" or "N/A" (not MIG-capable).
load_gpus() {
    GPU_INDEX=()
    GPU_PCI=()
    GPU_NAME=()
    GPU_MIG_CUR=()
    GPU_MIG_PEND=()
    local out line key value pci section="" n=-1
    if ! out="$(smi -q 2>&1)"; then
        die 1 "nvidia-smi -q failed: ${out//$'\n'/ }"
    fi
    local re_gpu='^GPU[[:space:]]+([0-9A-Fa-f:.]+)[[:space:]]*$'
    local re_kv='^[[:space:]]+([^:]*[^[:space:]:])[[:space:]]*:[[:space:]]*(.*)$'
    while IFS= read -r line; do
        if [[ "${line}" =~ ${re_gpu} ]]; then
            pci="$(normalize_pci "${BASH_REMATCH[1]}")" || die 1 "unexpected nvidia-smi -q line: ${line}"
            n=$((n + 1))
            GPU_INDEX+=("${n}")
            GPU_PCI+=("${pci}")
            GPU_NAME+=("?")
            GPU_MIG_CUR+=("N/A")
            GPU_MIG_PEND+=("N/A")
            section=""
            continue
        fi
        [[ "${n}" -ge 0 ]] || continue
        if [[ "${line}" =~ ^[[:space:]]{4}([A-Za-z][^:]*[^[:space:]:])[[:space:]]*$ ]]; then
            section="${BASH_REMATCH[1]}" # a section header such as "    MIG Mode"
            continue
        fi
        [[ "${line}" =~ ${re_kv} ]] || continue
        key="$(trim "${BASH_REMATCH[1]}")"
        value="$(trim "${BASH_REMATCH[2]}")"
        case "${section}/${key}" in
            */"Product Name") GPU_NAME[n]="${value}" ;;
            "MIG Mode/Current") GPU_MIG_CUR[n]="${value}" ;;
            "MIG Mode/Pending") GPU_MIG_PEND[n]="${value}" ;;
        esac
    done <<<"${out}"
    if [[ "${#GPU_INDEX[@]}" -eq 0 ]]; then
        die 1 "nvidia-smi lists no GPUs"
    fi
}

# select_gpus SPEC: sets SELECTED to the positions (in the GPU_* arrays) that SPEC names:
# "all", an index ("0"), or a PCI address in any common spelling.
select_gpus() {
    local spec="$1" i pci
    SELECTED=()
    if [[ "${spec}" == "all" ]]; then
        for i in "${!GPU_INDEX[@]}"; do
            SELECTED+=("${i}")
        done
        return 0
    fi
    if [[ "${spec}" =~ ^[0-9]+$ ]]; then
        for i in "${!GPU_INDEX[@]}"; do
            if [[ "${GPU_INDEX[${i}]}" == "${spec}" ]]; then
                SELECTED+=("${i}")
                return 0
            fi
        done
        die 1 "--gpu ${spec}: no GPU with that index (have: ${GPU_INDEX[*]})"
    fi
    pci="$(normalize_pci "${spec}")" || die 1 "--gpu ${spec}: not an index, a PCI address or 'all'"
    for i in "${!GPU_PCI[@]}"; do
        if [[ "${GPU_PCI[${i}]}" == "${pci}" ]]; then
            SELECTED+=("${i}")
            return 0
        fi
    done
    die 1 "--gpu ${spec}: no GPU at ${pci} (have: ${GPU_PCI[*]})"
}

# is_ampere NAME: MIG-capable Ampere parts keep MIG mode in the InfoROM and need a GPU reset
# to apply a mode change; Hopper and later do neither.
is_ampere() {
    case "$1" in
        *A100* | *A30* | *A800*) return 0 ;;
        *) return 1 ;;
    esac
}
