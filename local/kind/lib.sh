# shellcheck shell=bash disable=SC2034  # the variables are used by the scripts that source this file
# Shared by local/kind/*.sh: pinned versions, fixed names, small helpers. Sourced, not run.
# Sourcing it runs no external command, so check-prereqs.sh can report missing tools with any PATH.

if [[ ${BASH_SOURCE[0]} == */* ]]; then KIND_DIR="${BASH_SOURCE[0]%/*}"; else KIND_DIR=.; fi
KIND_DIR="$(cd "$KIND_DIR" && pwd)"
REPO_ROOT="$(cd "$KIND_DIR/../.." && pwd)"
# shellcheck source=versions.env
source "$KIND_DIR/versions.env"

# Names and ports; cluster.yaml repeats the cluster name and the two ports.
KIND_CLUSTER=vexa
KUBE_CONTEXT="kind-$KIND_CLUSTER"   # every kubectl/helm call names it: never another cluster
NAMESPACE=vexa                      # where the chart goes (helm install ... -n vexa)
KOURIER_NODE_PORT=31080
KOURIER_HOST_PORT=8880
DOMAIN=127.0.0.1.sslip.io           # Knative's domain: <service>.<namespace>.127.0.0.1.sslip.io
REGISTRY=kind.local                 # Knative skips tag-to-digest resolution for kind.local
COMPONENTS=(gateway bot-manager transcription bot worker)

log() { printf '\n==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# DRY_RUN=1: print each command that changes something instead of running it.
run() {
  if [[ -n ${DRY_RUN:-} ]]; then
    local arg line='+'
    for arg in "$@"; do
      if [[ $arg =~ ^[A-Za-z0-9_./:=@,+-]+$ ]]; then line+=" $arg"; else line+=" '${arg//\'/\'\\\'\'}'"; fi
    done
    printf '%s\n' "$line"
  else
    "$@"
  fi
}

# A command that may meet a webhook that is not serving yet: a few tries, 5 s apart.
retry() {
  local try
  for try in 1 2 3 4 5 6; do
    if run "$@"; then return 0; fi
    printf 'retrying in 5 s (%s/6): %s\n' "$try" "$*" >&2
    sleep 5
  done
  die "failed 6 times: $*"
}
