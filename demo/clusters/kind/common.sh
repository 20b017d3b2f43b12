#!/usr/bin/env bash
# Settings shared by the kind demo scripts; each can be overridden from the environment.
set -o errexit -o nounset -o pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
KIND_DIR="${REPO_ROOT}/demo/clusters/kind"

# The version in pyproject.toml names the image tag, as the chart's appVersion does.
NVDRA_VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' "${REPO_ROOT}/pyproject.toml" | head -n1)"

: "${KIND_CLUSTER_NAME:=nvdra-kind}"
# A kind node image with DRA on by default (resource.k8s.io/v1 is GA from 1.34).
: "${KIND_IMAGE:=kindest/node:v1.34.0}"
: "${DRIVER_IMAGE_NAME:=nvdra}"
: "${DRIVER_IMAGE_TAG:=v${NVDRA_VERSION}}"
: "${DRIVER_IMAGE:=${DRIVER_IMAGE_NAME}:${DRIVER_IMAGE_TAG}}"
: "${HELM_RELEASE:=nvdra}"
: "${HELM_NAMESPACE:=nvdra}"
# Simulated node profile for the plugins. Unset: dgx-h100 when this machine has no NVIDIA GPU
# (nvidia-smi missing or failing), real GPUs otherwise. Set it to "" to force real GPUs.
if [[ -z "${NVDRA_SIMULATE+set}" ]]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        NVDRA_SIMULATE=""
    else
        NVDRA_SIMULATE="dgx-h100"
    fi
fi

export KIND_CLUSTER_NAME KIND_IMAGE DRIVER_IMAGE HELM_RELEASE HELM_NAMESPACE NVDRA_SIMULATE
