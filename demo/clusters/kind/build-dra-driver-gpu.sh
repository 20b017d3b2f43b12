#!/usr/bin/env bash
# Step 1 of the kind demo: build the nvdra image from deployments/container/Dockerfile.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

echo "building ${DRIVER_IMAGE} from ${REPO_ROOT}"
docker build \
    --file "${REPO_ROOT}/deployments/container/Dockerfile" \
    --tag "${DRIVER_IMAGE}" \
    "${REPO_ROOT}"
