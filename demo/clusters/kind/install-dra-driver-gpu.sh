#!/usr/bin/env bash
# Step 3 of the kind demo: install the nvdra chart with the GPU plugin enabled. On a machine without
# GPUs the plugins run on a simulated node profile (NVDRA_SIMULATE, see common.sh).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

args=(
    upgrade --install "${HELM_RELEASE}" "${REPO_ROOT}/deployments/helm/nvdra"
    --kube-context "kind-${KIND_CLUSTER_NAME}"
    --namespace "${HELM_NAMESPACE}" --create-namespace
    --set "image.repository=${DRIVER_IMAGE%:*}"
    --set "image.tag=${DRIVER_IMAGE##*:}"
    --set image.pullPolicy=IfNotPresent
    --set resources.gpus.enabled=true
    --wait --timeout 5m
)
if [[ -n "${NVDRA_SIMULATE}" ]]; then
    echo "no NVIDIA GPU on this machine: the plugins run on the simulated profile ${NVDRA_SIMULATE}"
    args+=(--set "simulate=${NVDRA_SIMULATE}")
fi
helm "${args[@]}" "$@"
