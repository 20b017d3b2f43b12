#!/usr/bin/env bash
# Remove the kind demo cluster.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

kind delete cluster --name "${KIND_CLUSTER_NAME}"
