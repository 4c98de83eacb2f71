#!/usr/bin/env bash
# Vexa on a local kind cluster with Knative: what `make local` runs (see local/kind/README.md).
#
#   local/kind/up.sh [STEP...]        no STEP: every step, in this order
#
#   create-cluster   kind cluster "vexa" from cluster.yaml, node image pinned in versions.env
#   install-knative  Knative Serving + Kourier (the ingress), Eventing + in-memory channel +
#                    MT-channel-based broker, at the versions in versions.env; waits for them
#   build-images     make images REGISTRY=kind.local TAG=<version>: kind.local/vexa-<component>:<version>
#   load-images      kind load docker-image, the five images
#   install-chart    namespace vexa, labelled to enforce the "restricted" Pod Security Standard;
#                    helm upgrade --install vexa helm/vexa -n vexa --set image.registry=kind.local
#                    (and image.tag, transcription.engine) -f values-kind.yaml (bots may fetch the
#                    in-cluster sample); waits for every Knative Service to be Ready
#   smoke-test       serves local/sample/meeting.ogg inside the cluster, sends a bot to it through
#                    the gateway and waits for the meeting to complete with a transcript;
#                    prints the gateway URL
#
# Environment: TAG (image tag; default: the version in pyproject.toml), ENGINE (transcription
# engine, faster-whisper or whisperx; default faster-whisper), HELM_EXTRA_ARGS (more helm arguments,
# e.g. "-f my-values.yaml"), DRY_RUN=1 (print the commands that change something instead).
# Every step can be run again: it leaves what is already there in place.
set -euo pipefail

here=${BASH_SOURCE[0]%/*}; [[ $here != "${BASH_SOURCE[0]}" ]] || here=.
# shellcheck source=lib.sh
source "$here/lib.sh"

VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$REPO_ROOT/pyproject.toml")"
TAG="${TAG:-$VERSION}"
ENGINE="${ENGINE:-faster-whisper}"
[[ $TAG =~ ^[0-9] ]] || die "TAG must be a version (like $VERSION or $VERSION-dev1), got '$TAG'"
[[ $ENGINE == whisperx || $ENGINE == faster-whisper ]] || die "ENGINE must be whisperx or faster-whisper, got '$ENGINE'"

SERVING="https://github.com/knative/serving/releases/download/$KNATIVE_SERVING_VERSION"
KOURIER="https://github.com/knative-extensions/net-kourier/releases/download/$KNATIVE_KOURIER_VERSION"
EVENTING="https://github.com/knative/eventing/releases/download/$KNATIVE_EVENTING_VERSION"
SAMPLE_URL="http://vexa-sample.$NAMESPACE.svc.cluster.local/meeting.ogg"

k() { run kubectl --context "$KUBE_CONTEXT" "$@"; }
k_retry() { retry kubectl --context "$KUBE_CONTEXT" "$@"; }   # for what a webhook validates
wait_deployments() {  # every Deployment in namespace $1 Available
  k wait deployment --all -n "$1" --for=condition=Available --timeout=600s
}

create_cluster() {
  log "kind cluster '$KIND_CLUSTER' ($KIND_NODE_IMAGE)"
  if [[ -z ${DRY_RUN:-} ]] && kind get clusters 2>/dev/null | grep -x "$KIND_CLUSTER" >/dev/null; then
    echo "exists: reusing it (make local-down deletes it)"
  else
    run kind create cluster --name "$KIND_CLUSTER" --image "$KIND_NODE_IMAGE" \
      --config "$KIND_DIR/cluster.yaml" --wait 180s
  fi
}

install_knative() {
  log "Knative Serving $KNATIVE_SERVING_VERSION"
  k_retry apply -f "$SERVING/serving-crds.yaml"
  k wait --for=condition=Established --timeout=120s crd/services.serving.knative.dev \
    crd/configurations.serving.knative.dev crd/revisions.serving.knative.dev crd/routes.serving.knative.dev
  k_retry apply -f "$SERVING/serving-core.yaml"
  wait_deployments knative-serving

  log "Kourier $KNATIVE_KOURIER_VERSION as Knative's ingress, on http://*.$DOMAIN:$KOURIER_HOST_PORT"
  k_retry apply -f "$KOURIER/kourier.yaml"
  wait_deployments kourier-system
  # The kind node publishes NodePort $KOURIER_NODE_PORT on the host's 127.0.0.1:$KOURIER_HOST_PORT (cluster.yaml).
  k patch service/kourier -n kourier-system --type merge -p "{\"spec\": {\"type\": \"NodePort\", \"ports\": [{\"name\": \"http2\", \"port\": 80, \"targetPort\": 8080, \"nodePort\": $KOURIER_NODE_PORT}]}}"
  k_retry patch configmap/config-network -n knative-serving --type merge \
    -p '{"data": {"ingress-class": "kourier.ingress.networking.knative.dev"}}'
  # Services get <name>.<namespace>.127.0.0.1.sslip.io; sslip.io resolves that to 127.0.0.1.
  k_retry patch configmap/config-domain -n knative-serving --type merge \
    -p "{\"data\": {\"$DOMAIN\": \"\"}}"
  # Images loaded with `kind load` are in no registry: Knative must not resolve their tags to digests.
  k_retry patch configmap/config-deployment -n knative-serving --type merge \
    -p '{"data": {"registries-skipping-tag-resolving": "kind.local,ko.local,dev.local"}}'

  log "Knative Eventing $KNATIVE_EVENTING_VERSION, in-memory channel, MT-channel-based broker"
  k_retry apply -f "$EVENTING/eventing-crds.yaml"
  k wait --for=condition=Established --timeout=120s crd/brokers.eventing.knative.dev \
    crd/triggers.eventing.knative.dev
  k_retry apply -f "$EVENTING/eventing-core.yaml"
  wait_deployments knative-eventing
  k_retry apply -f "$EVENTING/in-memory-channel.yaml"
  wait_deployments knative-eventing
  k_retry apply -f "$EVENTING/mt-channel-broker.yaml"
  wait_deployments knative-eventing
}

build_images() {
  log "images $REGISTRY/vexa-{${COMPONENTS[*]}}:$TAG (transcription engine: $ENGINE)"
  run make -C "$REPO_ROOT" images REGISTRY="$REGISTRY" TAG="$TAG" ENGINE="$ENGINE"
}

load_images() {
  local c list=()
  for c in "${COMPONENTS[@]}"; do
    # The whisperx build has an image name of its own (Makefile `images`), which the chart picks.
    [[ $c == transcription && $ENGINE == whisperx ]] && c=transcription-whisperx
    list+=("$REGISTRY/vexa-$c:$TAG")
  done
  log "loading ${#list[@]} images into kind cluster '$KIND_CLUSTER'"
  run kind load docker-image --name "$KIND_CLUSTER" "${list[@]}"
}

install_chart() {
  local extra=()
  read -r -a extra <<<"${HELM_EXTRA_ARGS:-}"
  log "namespace $NAMESPACE, enforcing the restricted Pod Security Standard"
  # Created here, not by helm's --create-namespace, which cannot label it. Every pod of the chart,
  # and each bot and final transcript pass Job the worker creates, meets the restricted profile.
  if [[ -n ${DRY_RUN:-} ]] || ! kubectl --context "$KUBE_CONTEXT" get namespace "$NAMESPACE" >/dev/null 2>&1; then
    k create namespace "$NAMESPACE"
  fi
  k label namespace "$NAMESPACE" pod-security.kubernetes.io/enforce=restricted --overwrite
  log "helm chart helm/vexa into namespace $NAMESPACE (images $REGISTRY/vexa-*:$TAG)"
  run helm upgrade --install vexa "$REPO_ROOT/helm/vexa" --kube-context "$KUBE_CONTEXT" \
    -n "$NAMESPACE" --timeout 15m \
    --set image.registry="$REGISTRY" --set image.tag="$TAG" --set image.pullPolicy=IfNotPresent \
    --set transcription.engine="$ENGINE" -f "$KIND_DIR/values-kind.yaml" \
    ${extra[@]+"${extra[@]}"}
  log "waiting for the Knative Services to be Ready"
  k wait ksvc --all -n "$NAMESPACE" --for=condition=Ready --timeout=900s
  k get ksvc -n "$NAMESPACE"
}

smoke_test() {
  local gateway
  log "smoke test: the sample meeting, served in the cluster at $SAMPLE_URL"
  # A ConfigMap (the recording is 210 KB) served by Python's http.server from the bot image,
  # which is already on the node. Recreated rather than applied: it is too large for the
  # last-applied annotation of a client-side apply.
  k delete configmap vexa-sample -n "$NAMESPACE" --ignore-not-found
  k create configmap vexa-sample -n "$NAMESPACE" --from-file=meeting.ogg="$REPO_ROOT/local/sample/meeting.ogg"
  WORK="$(mktemp -d)"
  trap 'rm -rf "$WORK"' EXIT
  sed "s|__BOT_IMAGE__|$REGISTRY/vexa-bot:$TAG|" "$KIND_DIR/sample-server.yaml" >"$WORK/sample-server.yaml"
  k apply -n "$NAMESPACE" -f "$WORK/sample-server.yaml"
  k rollout status deployment/vexa-sample -n "$NAMESPACE" --timeout=180s

  gateway="http://gateway.$NAMESPACE.$DOMAIN"
  if [[ -z ${DRY_RUN:-} ]]; then
    gateway="$(kubectl --context "$KUBE_CONTEXT" get ksvc gateway -n "$NAMESPACE" -o jsonpath='{.status.url}')"
  fi
  if [[ -z ${DRY_RUN:-} ]]; then
    # The chart's generated admin token: the smoke test creates its user and key with it.
    VEXA_ADMIN_TOKEN="$(kubectl --context "$KUBE_CONTEXT" get secret vexa-admin -n "$NAMESPACE" \
      -o jsonpath='{.data.admin-token}' | base64 -d)"
    export VEXA_ADMIN_TOKEN
  fi
  log "a bot on the sample meeting, through Kourier ($gateway via 127.0.0.1:$KOURIER_HOST_PORT)"
  run python3 "$KIND_DIR/smoke.py" --gateway "$gateway" --connect "127.0.0.1:$KOURIER_HOST_PORT" \
    --recording "$SAMPLE_URL" --expect "$REPO_ROOT/local/sample/meeting.txt"

  log "Vexa is up on kind"
  printf 'gateway:      %s:%s    (sslip.io resolves the name to 127.0.0.1)\n' "$gateway" "$KOURIER_HOST_PORT"
  printf 'without DNS:  curl -H "Host: %s" http://127.0.0.1:%s/healthz\n' "${gateway#*://}" "$KOURIER_HOST_PORT"
  printf 'tear down:    make local-down\n'
}

STEPS=(create-cluster install-knative build-images load-images install-chart smoke-test)
(($# > 0)) || set -- "${STEPS[@]}"
for step in "$@"; do
  case "$step" in
    create-cluster) create_cluster ;;
    install-knative) install_knative ;;
    build-images) build_images ;;
    load-images) load_images ;;
    install-chart) install_chart ;;
    smoke-test) smoke_test ;;
    *) die "unknown step '$step' (steps: ${STEPS[*]})" ;;
  esac
done
