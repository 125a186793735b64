#!/usr/bin/env bash
# End-to-end test on a throwaway kind cluster:
#   1. create the cluster from deploy/kind-config.yaml (1 control plane,
#      2 workers in zones az1 and az2), or reuse one of the same name;
#   2. build the image rebalancer:e2e (deploy/Dockerfile) and load it;
#   3. apply crds/, install charts/rebalancer with that image and wait;
#   4. run the Rust e2e tests: REBALANCER_E2E=1 cargo test --test e2e;
#   5. on failure, dump the operator's logs and the custom resources;
#   6. always delete the cluster, unless KEEP_CLUSTER=1.
#
# Environment:
#   KIND_CLUSTER     cluster name (default rebalancer-e2e)
#   KEEP_CLUSTER=1   keep the cluster afterwards (the kubeconfig path is printed)
#   KIND_NODE_IMAGE  override the node image of deploy/kind-config.yaml
#   HELM, KIND, KUBECTL, DOCKER, CARGO   tool commands (default: from PATH)
#   E2E_HELM_ARGS    extra arguments for helm, e.g. "--set logLevel=debug"
#
# Needs docker (with BuildKit), kind, kubectl, helm and cargo.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

KIND_CLUSTER="${KIND_CLUSTER:-rebalancer-e2e}"
KEEP_CLUSTER="${KEEP_CLUSTER:-0}"
HELM="${HELM:-helm}"
KIND="${KIND:-kind}"
KUBECTL="${KUBECTL:-kubectl}"
DOCKER="${DOCKER:-docker}"
CARGO="${CARGO:-cargo}"
IMAGE_REPOSITORY="rebalancer"
IMAGE_TAG="e2e"
IMAGE="$IMAGE_REPOSITORY:$IMAGE_TAG"
RELEASE="rebalancer"
NAMESPACE="rebalancer-system"
DEPLOYMENT="rebalancer" # the chart's fullname for release "rebalancer"
SELECTOR="app.kubernetes.io/name=rebalancer,app.kubernetes.io/instance=$RELEASE"

# A kubeconfig of its own: the user's ~/.kube/config and current context are
# left alone. The e2e tests (kube-rs) read it through KUBECONFIG.
mkdir -p "$ROOT/target"
export KUBECONFIG="$ROOT/target/kind-$KIND_CLUSTER.kubeconfig"
export DOCKER_BUILDKIT=1

log() { printf '\n==> %s\n' "$*"; }

for tool in "$DOCKER" "$KIND" "$KUBECTL" "$HELM" "$CARGO"; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "error: $tool not found in PATH" >&2
    exit 1
  fi
done
shopt -s nullglob
crd_files=(crds/*.yaml)
shopt -u nullglob
if ((${#crd_files[@]} == 0)); then
  echo "error: no CRDs in crds/*.yaml; generate them first: cargo run -- crds --out-dir crds" >&2
  exit 1
fi

cluster_exists() { "$KIND" get clusters 2>/dev/null | grep -qxF "$KIND_CLUSTER"; }

dump_diagnostics() {
  log "diagnostics (cluster $KIND_CLUSTER)"
  set +e
  "$KUBECTL" get nodes -L topology.kubernetes.io/zone -o wide
  "$KUBECTL" get pods -A -o wide
  "$KUBECTL" -n "$NAMESPACE" describe deployment "$DEPLOYMENT"
  "$KUBECTL" -n "$NAMESPACE" describe pods -l "$SELECTOR"
  "$KUBECTL" -n "$NAMESPACE" get lease -o yaml
  log "operator logs"
  "$KUBECTL" -n "$NAMESPACE" logs -l "$SELECTOR" --all-containers --prefix --tail=-1 --max-log-requests=10
  log "operator logs (previous containers, if any restarted)"
  "$KUBECTL" -n "$NAMESPACE" logs -l "$SELECTOR" --all-containers --prefix --tail=-1 --max-log-requests=10 --previous
  log "kubectl get consumergroups,topics -A -o yaml"
  "$KUBECTL" get consumergroups,topics -A -o yaml
  log "events"
  "$KUBECTL" get events -A --sort-by=.lastTimestamp
  set -e
}

created_or_reused=0
on_exit() {
  local rc=$?
  trap - EXIT
  if ((rc != 0)) && ((created_or_reused)); then
    dump_diagnostics || true
  fi
  if ((created_or_reused)); then
    if [[ "$KEEP_CLUSTER" == "1" ]]; then
      log "keeping cluster $KIND_CLUSTER (KEEP_CLUSTER=1)"
      echo "    export KUBECONFIG=$KUBECONFIG"
      echo "    delete it with: $KIND delete cluster --name $KIND_CLUSTER"
    else
      log "deleting cluster $KIND_CLUSTER"
      "$KIND" delete cluster --name "$KIND_CLUSTER" || true
      rm -f "$KUBECONFIG"
    fi
  fi
  if ((rc == 0)); then log "e2e: passed"; else log "e2e: FAILED (exit $rc)"; fi
  exit "$rc"
}
trap on_exit EXIT

reused=0
if cluster_exists; then
  log "reusing the existing kind cluster $KIND_CLUSTER"
  "$KIND" export kubeconfig --name "$KIND_CLUSTER" --kubeconfig "$KUBECONFIG"
  reused=1
else
  log "creating kind cluster $KIND_CLUSTER from deploy/kind-config.yaml"
  create_args=(create cluster --name "$KIND_CLUSTER" --config deploy/kind-config.yaml
    --kubeconfig "$KUBECONFIG" --wait 180s)
  if [[ -n "${KIND_NODE_IMAGE:-}" ]]; then
    create_args+=(--image "$KIND_NODE_IMAGE")
  fi
  # Set before creating: a half-created cluster is deleted too.
  created_or_reused=1
  "$KIND" "${create_args[@]}"
fi
created_or_reused=1
"$KUBECTL" get nodes -L topology.kubernetes.io/zone

log "building $IMAGE (deploy/Dockerfile)"
"$DOCKER" build -f deploy/Dockerfile -t "$IMAGE" .

log "loading $IMAGE into kind"
"$KIND" load docker-image "$IMAGE" --name "$KIND_CLUSTER"

log "applying the CRDs (crds/)"
"$KUBECTL" apply --server-side --force-conflicts -f crds/
"$KUBECTL" wait --for=condition=Established --timeout=60s -f crds/

log "installing the chart (release $RELEASE in $NAMESPACE)"
helm_args=(upgrade --install "$RELEASE" charts/rebalancer
  --namespace "$NAMESPACE" --create-namespace
  --set image.repository="$IMAGE_REPOSITORY"
  --set image.tag="$IMAGE_TAG"
  --set image.pullPolicy=Never
  --wait --timeout 5m)
if [[ -n "${E2E_HELM_ARGS:-}" ]]; then
  # shellcheck disable=SC2206 # word splitting wanted: a list of arguments
  helm_args+=($E2E_HELM_ARGS)
fi
"$HELM" "${helm_args[@]}"
if ((reused)); then
  # Same tag as before: restart so that the freshly loaded image is used.
  "$KUBECTL" -n "$NAMESPACE" rollout restart deployment "$DEPLOYMENT"
fi

log "waiting for the rollout"
"$KUBECTL" -n "$NAMESPACE" rollout status deployment "$DEPLOYMENT" --timeout=180s
"$KUBECTL" -n "$NAMESPACE" get pods -l "$SELECTOR" -o wide

log "running the e2e tests"
export REBALANCER_E2E=1
export REBALANCER_E2E_NAMESPACE="$NAMESPACE"
export REBALANCER_E2E_DEPLOYMENT="$DEPLOYMENT"
"$CARGO" test --test e2e -- --nocapture --test-threads=1
