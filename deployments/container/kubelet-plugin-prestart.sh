#!/usr/bin/env bash
# Init container of the kubelet-plugin DaemonSet: wait until the NVIDIA driver root mounted at
# $DRIVER_ROOT_CTR_PATH holds a working driver (nvidia-smi and libnvidia-ml.so.1, and nvidia-smi runs),
# so that the plugins start against a driver rather than crash-looping while it is being installed.
# While it waits it says what it looked for and what to set when the driver lives elsewhere.
#
# Environment: NVIDIA_DRIVER_ROOT (host path, for messages), DRIVER_ROOT_CTR_PATH (default
# /driver-root), PRESTART_INTERVAL_SECONDS (default 10), PRESTART_MAX_ATTEMPTS (default 0 = forever).
set -o nounset -o pipefail

root="${DRIVER_ROOT_CTR_PATH:-/driver-root}"
host_root="${NVIDIA_DRIVER_ROOT:-/}"
interval="${PRESTART_INTERVAL_SECONDS:-10}"
max_attempts="${PRESTART_MAX_ATTEMPTS:-0}"

# The directories upstream's plugin searches, relative to the driver root.
bin_dirs=("" opt/bin usr/bin usr/sbin bin sbin)
lib_dirs=(usr/lib64 usr/lib/x86_64-linux-gnu usr/lib/aarch64-linux-gnu lib64 lib/x86_64-linux-gnu lib/aarch64-linux-gnu)

find_in() {  # find_in NAME DIR... : print the first "$root/DIR/NAME" that exists
    local name="$1" dir candidate
    shift
    for dir in "$@"; do
        candidate="${root}/${dir:+${dir}/}${name}"
        if [[ -e "$candidate" ]]; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    return 1
}

hint() {
    cat <<HINT
The NVIDIA driver was not found under nvidiaDriverRoot=${host_root} (mounted at ${root}).
Set the chart value nvidiaDriverRoot to where the driver is installed on the host:
  /                           driver installed on the host (the default)
  /run/nvidia/driver          driver installed by the NVIDIA GPU Operator
  /home/kubernetes/bin/nvidia GKE
To try the chart on a node without GPUs, set simulate=<profile> (for example simulate=dgx-h100).
HINT
}

attempt=0
while :; do
    attempt=$((attempt + 1))
    smi="$(find_in nvidia-smi "${bin_dirs[@]}")"
    lib="$(find_in libnvidia-ml.so.1 "${lib_dirs[@]}")"
    if [[ -n "$smi" && -n "$lib" ]]; then
        # Run nvidia-smi with the driver root's NVML, in a clean environment, as upstream does.
        if out="$(env -i LD_PRELOAD="$lib" "$smi" --version 2>&1)"; then
            echo "driver root ${host_root} is ready: ${smi}, ${lib}"
            printf '%s\n' "$out"
            exit 0
        fi
        echo "attempt ${attempt}: ${smi} --version failed: ${out}"
    else
        echo "attempt ${attempt}: nvidia-smi: ${smi:-not found}; libnvidia-ml.so.1: ${lib:-not found}"
    fi
    if [[ "$attempt" -eq 1 || $((attempt % 6)) -eq 0 ]]; then
        hint
    fi
    if [[ "$max_attempts" -gt 0 && "$attempt" -ge "$max_attempts" ]]; then
        echo "giving up after ${attempt} attempts"
        exit 1
    fi
    sleep "$interval"
done
