#!/usr/bin/env bash
# `make local-down`: delete the kind cluster of `make local`, and with it everything in it.
set -euo pipefail

here=${BASH_SOURCE[0]%/*}; [[ $here != "${BASH_SOURCE[0]}" ]] || here=.
# shellcheck source=lib.sh
source "$here/lib.sh"

command -v kind >/dev/null 2>&1 || die "kind is not installed: nothing to delete (see local/kind/check-prereqs.sh)"
log "deleting kind cluster '$KIND_CLUSTER'"
run kind delete cluster --name "$KIND_CLUSTER"
