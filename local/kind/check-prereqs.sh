#!/usr/bin/env bash
# What `make local` needs on this machine: docker (with a daemon that answers, and buildx),
# kind, kubectl, helm and python3. Prints each missing piece and how to install it, and exits
# non-zero if anything is missing. Changes nothing.
set -euo pipefail

here=${BASH_SOURCE[0]%/*}; [[ $here != "${BASH_SOURCE[0]}" ]] || here=.
# shellcheck source=lib.sh
source "$here/lib.sh"

missing=0
report() {  # report WHAT HOW
  printf 'MISSING: %s\n         %s\n' "$1" "$2" >&2
  missing=$((missing + 1))
}
have() { command -v "$1" >/dev/null 2>&1; }

if ! have docker; then
  report docker "Docker Engine 23 or newer with the buildx plugin: https://docs.docker.com/engine/install/ (macOS, Windows: Docker Desktop)"
elif ! docker info >/dev/null 2>&1; then
  report "docker daemon (docker info does not answer)" "start it (Linux: sudo systemctl start docker; Docker Desktop: open it) and make sure your user may use it (Linux: the docker group)"
elif ! docker buildx version >/dev/null 2>&1; then
  report "docker buildx (the images need BuildKit)" "install the buildx plugin: https://docs.docker.com/go/buildx/ (Debian/Ubuntu: apt-get install docker-buildx-plugin)"
fi

if ! have kind; then
  report kind "kind $KIND_VERSION: https://kind.sigs.k8s.io/docs/user/quick-start/#installation (or: go install sigs.k8s.io/kind@$KIND_VERSION)"
else
  found="$(kind version 2>/dev/null || true)"
  read -r _ found_version _ <<<"$found" || true
  if [[ ${found_version:-} != "$KIND_VERSION" ]]; then
    printf 'note: kind %s found; the node image pinned in versions.env is built for kind %s.\n' \
      "${found_version:-(unknown)}" "$KIND_VERSION" >&2
    printf '      If the cluster does not come up, install kind %s.\n' "$KIND_VERSION" >&2
  fi
fi

kubernetes=${KIND_NODE_IMAGE#*:v}; kubernetes=${kubernetes%%@*}
if ! have kubectl; then
  report kubectl "https://kubernetes.io/docs/tasks/tools/#kubectl (a version within one minor of Kubernetes $kubernetes, the node image's)"
fi

if ! have helm; then
  report helm "Helm 3.8 or newer: https://helm.sh/docs/intro/install/ (e.g. brew install helm)"
fi

if ! have python3; then
  report python3 "Python 3.8 or newer (the smoke test uses its standard library): https://www.python.org/downloads/"
fi

if ((missing > 0)); then
  printf '\n%d prerequisite(s) of make local missing: see above.\n' "$missing" >&2
  exit 1
fi
printf 'prerequisites of make local: all found (docker, kind, kubectl, helm, python3)\n'
