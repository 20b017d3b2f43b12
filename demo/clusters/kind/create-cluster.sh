#!/usr/bin/env bash
# Step 2 of the kind demo: a kind cluster (one control-plane node, one worker) with CDI enabled in
# containerd, and the nvdra image loaded into its nodes.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if kind get clusters 2>/dev/null | grep -qx "${KIND_CLUSTER_NAME}"; then
    echo "kind cluster ${KIND_CLUSTER_NAME} exists already"
else
    config="${KIND_DIR}/kind-cluster-config.yaml"
    if [[ -z "${NVDRA_SIMULATE}" ]]; then
        # With real GPUs, the worker sees them through the NVIDIA runtime (see the config's comment).
        config="${KIND_DIR}/kind-cluster-config-gpus.yaml"
    fi
    kind create cluster \
        --name "${KIND_CLUSTER_NAME}" \
        --image "${KIND_IMAGE}" \
        --config "${config}" \
        --wait 2m
fi
kind load docker-image --name "${KIND_CLUSTER_NAME}" "${DRIVER_IMAGE}"
