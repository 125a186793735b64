#!/usr/bin/env bash
# Static checks of the Helm chart, the plain manifests and the chart's CRDs.
# Needs no cluster. Uses ${HELM:-helm}; run from anywhere.
#
#   1. helm lint --strict with the default values and every charts/rebalancer/ci/*.yaml
#   2. helm template with default and non-default values, and assertions on
#      what is rendered (RBAC mode and rules, args, securityContext, ...)
#   3. helm template must FAIL for invalid values
#   4. hack/sync-crds.sh --check and hack/render-manifests.sh --check
#
# Prints one line per assertion and ends with "helm-check: N passed, N failed".
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

HELM="${HELM:-helm}"
export HELM
CHART="charts/rebalancer"
NS="rebalancer-system"
RELEASE="rebalancer"
NS_VALUES="$CHART/ci/namespaced-values.yaml"

if ! command -v "$HELM" >/dev/null 2>&1; then
  echo "error: helm not found (set HELM=/path/to/helm)" >&2
  exit 1
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

passed=0
failed=0
ok() { passed=$((passed + 1)); printf '  ok    %s\n' "$1"; }
nok() { failed=$((failed + 1)); printf '  FAIL  %s\n' "$1"; }
# check DESCRIPTION COMMAND...: run COMMAND, count it as a pass if it succeeds.
check() {
  local desc="$1"
  shift
  if "$@"; then ok "$desc"; else nok "$desc"; fi
}
section() { printf '\n== %s\n' "$*"; }

# ---------------------------------------------------------------------------
# Helpers working on rendered multi-document YAML (helm template output).

# index FILE: one "Kind<TAB>namespace<TAB>name" line per document ("-" when
# the document has no namespace).
index() {
  awk '
    function flush() { if (kind != "") printf "%s\t%s\t%s\n", kind, (ns == "" ? "-" : ns), name }
    /^---/ { flush(); kind = ""; ns = ""; name = ""; inmeta = 0; next }
    /^kind: / { kind = $2; next }
    /^metadata:/ { inmeta = 1; next }
    /^[^ #]/ { inmeta = 0 }
    inmeta && /^  name: / { name = $2 }
    inmeta && /^  namespace: / { ns = $2 }
    END { flush() }
  ' "$1"
}

# count FILE KIND: number of documents of that kind.
count() { index "$1" | awk -F'\t' -v k="$2" '$1 == k { n++ } END { print n + 0 }'; }

# doc FILE KIND NAME [NAMESPACE]: print the matching document(s).
doc() {
  awk -v k="$2" -v n="$3" -v want_ns="${4:-}" '
    function flush() {
      if (kind == k && name == n && (want_ns == "" || ns == want_ns)) printf "%s", buf
    }
    /^---/ { flush(); buf = ""; kind = ""; ns = ""; name = ""; inmeta = 0; next }
    { buf = buf $0 "\n" }
    /^kind: / { kind = $2 }
    /^metadata:/ { inmeta = 1; next }
    /^[^ #]/ { inmeta = 0 }
    inmeta && /^  name: / { name = $2 }
    inmeta && /^  namespace: / { ns = $2 }
    END { flush() }
  ' "$1"
}

# docs_of_kind FILE KIND: print every document of that kind.
docs_of_kind() {
  awk -v k="$2" '
    /^---/ { if (kind == k) printf "%s", buf; buf = ""; kind = ""; next }
    { buf = buf $0 "\n" }
    /^kind: / { kind = $2 }
    END { if (kind == k) printf "%s", buf }
  ' "$1"
}

# rules FILE KIND NAME [NAMESPACE]: the rules: block of a (Cluster)Role.
rules() { doc "$@" | awk '/^rules:/ { on = 1; next } /^[^ ]/ { on = 0 } on'; }

has() { grep -qF -- "$2" <<<"$1"; }     # has TEXT FIXED-STRING
lacks() { ! grep -qF -- "$2" <<<"$1"; } # lacks TEXT FIXED-STRING
has_re() { grep -qE -- "$2" <<<"$1"; }  # has_re TEXT ERE
lacks_re() { ! grep -qE -- "$2" <<<"$1"; } # lacks_re TEXT ERE
eq() { [[ "$1" == "$2" ]]; }            # eq ACTUAL EXPECTED
ge() { (($1 >= $2)); }                  # ge ACTUAL MIN

# same_text ACTUAL EXPECTED: equal, or print a diff.
same_text() {
  if [[ "$1" == "$2" ]]; then return 0; fi
  diff -u --label expected --label rendered <(printf '%s\n' "$2") <(printf '%s\n' "$1") | sed 's/^/        /' || true
  return 1
}

render() { # render OUTFILE [helm template args...]
  local out="$1"
  shift
  "$HELM" template "$RELEASE" "$CHART" --namespace "$NS" "$@" >"$out"
}

# Expected rules of the watch RBAC: exactly these verbs (least privilege).
# Any change to the chart's RBAC must be made here too, on purpose.
NAMESPACED_RULES='  - apiGroups: ["rebalancer.dev"]
    resources: ["topics", "consumergroups"]
    verbs: ["get", "list", "watch"]
  - apiGroups: ["rebalancer.dev"]
    resources: ["topics/status", "consumergroups/status"]
    verbs: ["get", "patch", "update"]
  - apiGroups: [""]
    resources: ["pods"]
    verbs: ["get", "list", "watch", "patch"]
  - apiGroups: ["apps"]
    resources: ["deployments", "statefulsets", "replicasets"]
    verbs: ["get", "list", "watch"]
  - apiGroups: ["apps"]
    resources: ["deployments/scale", "statefulsets/scale", "replicasets/scale"]
    verbs: ["get"]'
EXTRA_SCALE_RULES='  - apiGroups: ["argoproj.io"]
    resources: ["rollouts/scale"]
    verbs: ["get"]
  - apiGroups: ["apps.kruise.io"]
    resources: ["clonesets/scale"]
    verbs: ["get"]'
EVENT_RULES='  - apiGroups: [""]
    resources: ["events"]
    verbs: ["create", "patch"]
  - apiGroups: ["events.k8s.io"]
    resources: ["events"]
    verbs: ["create", "patch"]'
NODE_RULES='  - apiGroups: [""]
    resources: ["nodes"]
    verbs: ["get", "list", "watch"]'
LEASE_RULES='  - apiGroups: ["coordination.k8s.io"]
    resources: ["leases"]
    verbs: ["create"]
  - apiGroups: ["coordination.k8s.io"]
    resources: ["leases"]
    resourceNames: ["rebalancer-leader"]
    verbs: ["get", "update", "patch"]'

APP_VERSION="$(awk -F': *' '$1 == "appVersion" { gsub(/"/, "", $2); print $2 }' "$CHART/Chart.yaml")"
CHART_VERSION="$(awk -F': *' '$1 == "version" { gsub(/"/, "", $2); print $2 }' "$CHART/Chart.yaml")"

echo "helm-check with $("$HELM" version --short 2>/dev/null || echo "$HELM")"

# ---------------------------------------------------------------------------
section "helm lint --strict"
check "lint: default values" "$HELM" lint --strict "$CHART" --namespace "$NS"
shopt -s nullglob
ci_values=("$CHART"/ci/*.yaml)
shopt -u nullglob
check "there is at least one non-default values file in $CHART/ci/" ge "${#ci_values[@]}" 1
for values in "${ci_values[@]}"; do
  check "lint: -f $values" "$HELM" lint --strict "$CHART" --namespace "$NS" -f "$values"
done

# ---------------------------------------------------------------------------
section "default values (all namespaces, ClusterRole)"
D="$WORK/default.yaml"
if render "$D"; then ok "helm template renders"; else nok "helm template renders"; : >"$D"; fi
DEP="$(doc "$D" Deployment "$RELEASE" "$NS")"
CR_NAME="$NS-$RELEASE"

check "one Deployment" eq "$(count "$D" Deployment)" 1
check "one ServiceAccount" eq "$(count "$D" ServiceAccount)" 1
check "one Service" eq "$(count "$D" Service)" 1
check "one ClusterRole" eq "$(count "$D" ClusterRole)" 1
check "one ClusterRoleBinding" eq "$(count "$D" ClusterRoleBinding)" 1
check "one Role (leader election only)" eq "$(count "$D" Role)" 1
check "one RoleBinding (leader election only)" eq "$(count "$D" RoleBinding)" 1
check "no ServiceMonitor by default" eq "$(count "$D" ServiceMonitor)" 0
check "no PodDisruptionBudget by default" eq "$(count "$D" PodDisruptionBudget)" 0
check "nothing rendered outside $NS (except cluster-scoped)" \
  eq "$(index "$D" | awk -F'\t' '$1 !~ /^Cluster/ && $2 != "'"$NS"'"' | wc -l | tr -d ' ')" 0

check "ClusterRole $CR_NAME has exactly the expected rules" \
  same_text "$(rules "$D" ClusterRole "$CR_NAME")" "$NAMESPACED_RULES
$EVENT_RULES
$NODE_RULES"
check "ClusterRoleBinding binds ClusterRole $CR_NAME to ServiceAccount $NS/$RELEASE" \
  has_re "$(doc "$D" ClusterRoleBinding "$CR_NAME" | tr '\n' ' ')" \
  "kind: ClusterRole +name: $CR_NAME .*kind: ServiceAccount +name: $RELEASE +namespace: $NS"
check "leader-election Role in $NS has exactly the Lease rules" \
  same_text "$(rules "$D" Role "$RELEASE-leader-election" "$NS")" "$LEASE_RULES"
check "no wildcard in any RBAC rule" lacks "$(cat "$D")" '"*"'

check "replicas: 2" has "$DEP" "  replicas: 2"
check "image defaults to ghcr.io/rebalancer-dev/rebalancer:$APP_VERSION" \
  has "$DEP" "image: \"ghcr.io/rebalancer-dev/rebalancer:$APP_VERSION\""
check "args: run" has "$DEP" "            - run"
check "args: --leader-elect" has "$DEP" "- --leader-elect"
check "args: --lease-name=rebalancer-leader" has "$DEP" "- --lease-name=rebalancer-leader"
check "args: --lease-namespace=$NS" has "$DEP" "- --lease-namespace=$NS"
check "args: --metrics-addr=0.0.0.0:8080" has "$DEP" "- --metrics-addr=0.0.0.0:8080"
check "args: --log-format=json" has "$DEP" "- --log-format=json"
check "args: no --namespace (all namespaces)" lacks "$DEP" "--namespace"
check "args: no --sync-period (the operator's default)" lacks "$DEP" "--sync-period"
check "args: no --max-concurrent-reconciles (the operator's default)" \
  lacks "$DEP" "--max-concurrent-reconciles"
check "args: no --client-grace (the operator's default)" lacks "$DEP" "--client-grace"
check "args: no --client-probe-languages (the operator's default)" lacks "$DEP" "--client-probe-languages"
check "args: no --broker-requests-per-second (the operator's default)" \
  lacks "$DEP" "--broker-requests-per-second"
check "args: no --startup-timeout (the operator's default)" lacks "$DEP" "--startup-timeout"
check "env POD_NAME from metadata.name" \
  has_re "$(tr '\n' ' ' <<<"$DEP")" "name: POD_NAME +valueFrom: +fieldRef: +fieldPath: metadata.name "
check "env POD_NAMESPACE from metadata.namespace" \
  has_re "$(tr '\n' ' ' <<<"$DEP")" "name: POD_NAMESPACE +valueFrom: +fieldRef: +fieldPath: metadata.namespace "
check "env RUST_LOG=info" has_re "$(tr '\n' ' ' <<<"$DEP")" 'name: RUST_LOG +value: "info"'
check "container port 8080 named metrics" \
  has_re "$(tr '\n' ' ' <<<"$DEP")" "- name: metrics +containerPort: 8080 "
check "liveness probe GET /healthz on port metrics" \
  has_re "$(tr '\n' ' ' <<<"$DEP")" "livenessProbe: +httpGet: +path: /healthz +port: metrics "
check "readiness probe GET /readyz on port metrics" \
  has_re "$(tr '\n' ' ' <<<"$DEP")" "readinessProbe: +httpGet: +path: /readyz +port: metrics "
check "resources set" has_re "$(tr '\n' ' ' <<<"$DEP")" "resources: +limits: +memory: "
check "securityContext: runAsNonRoot (pod and container)" ge "$(grep -c 'runAsNonRoot: true' <<<"$DEP")" 2
check "securityContext: runAsUser 65532 (pod and container)" ge "$(grep -c 'runAsUser: 65532' <<<"$DEP")" 2
check "securityContext: readOnlyRootFilesystem" has "$DEP" "readOnlyRootFilesystem: true"
check "securityContext: allowPrivilegeEscalation false" has "$DEP" "allowPrivilegeEscalation: false"
check "securityContext: capabilities drop ALL" \
  has_re "$(tr '\n' ' ' <<<"$DEP")" "capabilities: +drop: +- ALL "
check "securityContext: seccompProfile RuntimeDefault (pod and container)" \
  ge "$(grep -A1 'seccompProfile:' <<<"$DEP" | grep -c 'type: RuntimeDefault')" 2
check "ServiceAccount token mounted (the operator talks to the API)" \
  has "$DEP" "automountServiceAccountToken: true"
check "Service port 8080 named metrics -> targetPort metrics" \
  has_re "$(doc "$D" Service "$RELEASE-metrics" "$NS" | tr '\n' ' ')" \
  "- name: metrics +port: 8080 +targetPort: metrics "
docs_total="$(index "$D" | wc -l | tr -d ' ')"
for label in "helm.sh/chart: $RELEASE-$CHART_VERSION" "app.kubernetes.io/name: rebalancer" \
  "app.kubernetes.io/instance: $RELEASE" "app.kubernetes.io/managed-by: Helm" \
  "app.kubernetes.io/version: $APP_VERSION"; do
  # Every object carries it (the Deployment twice: object and pod template).
  check "label on every object: $label" ge "$(grep -cF "    $label" "$D")" "$docs_total"
done

# ---------------------------------------------------------------------------
section "non-default values ($NS_VALUES: namespaced mode, 3 replicas, ServiceMonitor, PDB)"
N="$WORK/namespaced.yaml"
if render "$N" -f "$NS_VALUES"; then ok "helm template renders"; else nok "helm template renders"; : >"$N"; fi
DEP="$(doc "$N" Deployment "$RELEASE" "$NS")"
SA="rebalancer-operator"

for ns in team-a team-b; do
  check "Role in $ns has exactly the namespaced rules (+ extra scale resources)" \
    same_text "$(rules "$N" Role "$RELEASE" "$ns")" "$NAMESPACED_RULES
$EXTRA_SCALE_RULES
$EVENT_RULES"
  check "RoleBinding in $ns binds Role $RELEASE to ServiceAccount $NS/$SA" \
    has_re "$(doc "$N" RoleBinding "$RELEASE" "$ns" | tr '\n' ' ')" \
    "kind: Role +name: $RELEASE .*kind: ServiceAccount +name: $SA +namespace: $NS"
  check "args: --namespace=$ns" has "$DEP" "- --namespace=$ns"
done
check "exactly 3 Roles (2 watched namespaces + leader election)" eq "$(count "$N" Role)" 3
check "exactly 3 RoleBindings" eq "$(count "$N" RoleBinding)" 3
check "leader-election Role stays in the release namespace" \
  eq "$(index "$N" | awk -F'\t' '$1 == "Role" && $3 == "'"$RELEASE"'-leader-election" { print $2 }')" "$NS"
check "leader-election Role limited to Lease rebalancer-ci-leader" \
  has "$(rules "$N" Role "$RELEASE-leader-election" "$NS")" 'resourceNames: ["rebalancer-ci-leader"]'
check "only one ClusterRole: $NS-$RELEASE-nodes" \
  eq "$(index "$N" | awk -F'\t' '$1 == "ClusterRole" { print $3 }' | tr '\n' ' ')" "$NS-$RELEASE-nodes "
check "the ClusterRole grants only nodes get/list/watch" \
  same_text "$(rules "$N" ClusterRole "$NS-$RELEASE-nodes")" "$NODE_RULES"
check "only one ClusterRoleBinding (nodes)" eq "$(count "$N" ClusterRoleBinding)" 1
check "no ClusterRole mentions pods, events or rebalancer.dev" \
  lacks_re "$(docs_of_kind "$N" ClusterRole)" 'pods|events|rebalancer\.dev|leases'
check "replicas: 3" has "$DEP" "  replicas: 3"
check "args: --leader-elect" has "$DEP" "- --leader-elect"
check "args: --lease-name=rebalancer-ci-leader" has "$DEP" "- --lease-name=rebalancer-ci-leader"
check "args: --log-format=text" has "$DEP" "- --log-format=text"
check "args: --sync-period=10" has "$DEP" "- --sync-period=10"
check "args: --max-concurrent-reconciles=32" has "$DEP" "- --max-concurrent-reconciles=32"
check "args: --client-grace=120" has "$DEP" "- --client-grace=120"
check "args: --client-probe-languages=JAVA,GO" has "$DEP" "- --client-probe-languages=JAVA,GO"
check "args: --broker-requests-per-second=50" has "$DEP" "- --broker-requests-per-second=50"
check "args: --startup-timeout=300" has "$DEP" "- --startup-timeout=300"
Z="$WORK/no-retry.yaml"
render "$Z" --set startupTimeoutSeconds=0 || : >"$Z"
check "args: --startup-timeout=0 (0 is a value: no retry)" \
  has "$(doc "$Z" Deployment "$RELEASE" "$NS")" "- --startup-timeout=0"
check "serviceAccountName: $SA" has "$DEP" "serviceAccountName: $SA"
check "image from values" has "$DEP" 'image: "registry.example.com/platform/rebalancer:0.1.0-rc.1"'
check "imagePullPolicy: Always" has "$DEP" "imagePullPolicy: Always"
check "imagePullSecrets" has_re "$(tr '\n' ' ' <<<"$DEP")" "imagePullSecrets: +- name: registry-credentials "
check "priorityClassName" has "$DEP" "priorityClassName: system-cluster-critical"
check "podLabels on the pod template" has "$DEP" "        tier: control-plane"
check "podAnnotations on the pod template" has "$DEP" 'example.com/scrape: "false"'
check "nodeSelector" has_re "$(tr '\n' ' ' <<<"$DEP")" "nodeSelector: +kubernetes.io/os: linux "
check "tolerations" has "$DEP" "key: dedicated"
check "affinity" has "$DEP" "node-role.kubernetes.io/platform"
check "topologySpreadConstraints get the selector labels filled in" \
  has_re "$(tr '\n' ' ' <<<"$DEP")" "topologySpreadConstraints: +- labelSelector: +matchLabels: +app.kubernetes.io/instance: $RELEASE "
check "extraEnv" has_re "$(tr '\n' ' ' <<<"$DEP")" 'name: EXAMPLE +value: "1"'
check "securityContext still hardened" has "$DEP" "readOnlyRootFilesystem: true"
check "one ServiceMonitor" eq "$(count "$N" ServiceMonitor)" 1
SM="$(doc "$N" ServiceMonitor "$RELEASE" "$NS")"
check "ServiceMonitor scrapes port metrics every 15s" \
  has_re "$(tr '\n' ' ' <<<"$SM")" "- port: metrics +path: /metrics .*interval: 15s "
check "ServiceMonitor carries its extra labels" has "$SM" "release: kube-prometheus-stack"
check "ServiceMonitor selects the release's pods' Service" \
  has "$SM" "app.kubernetes.io/instance: $RELEASE"
check "one PodDisruptionBudget with minAvailable: 2" \
  has "$(doc "$N" PodDisruptionBudget "$RELEASE" "$NS")" "minAvailable: 2"
check "commonLabels on every object" ge "$(grep -c '^    team: platform' "$N")" "$(index "$N" | wc -l | tr -d ' ')"
check "ServiceAccount annotations" \
  has "$(doc "$N" ServiceAccount "$SA" "$NS")" "example.com/owner: platform-team"

# ---------------------------------------------------------------------------
section "other value combinations"
V="$WORK/v.yaml"
if render "$V" -f "$NS_VALUES" --set rbac.nodes=false; then
  check "namespaced + rbac.nodes=false: no ClusterRole" eq "$(count "$V" ClusterRole)" 0
  check "namespaced + rbac.nodes=false: no ClusterRoleBinding" eq "$(count "$V" ClusterRoleBinding)" 0
else nok "namespaced + rbac.nodes=false renders"; fi

if render "$V" --set rbac.nodes=false; then
  check "all namespaces + rbac.nodes=false: ClusterRole without nodes" \
    lacks "$(rules "$V" ClusterRole "$CR_NAME")" '"nodes"'
else nok "rbac.nodes=false renders"; fi

if render "$V" --set 'rbac.extraScaleResources[0].apiGroup=argoproj.io' \
  --set 'rbac.extraScaleResources[0].resource=rollouts'; then
  check "all namespaces + extraScaleResources: ClusterRole gets rollouts/scale get" \
    has_re "$(rules "$V" ClusterRole "$CR_NAME" | tr '\n' ' ')" \
    'apiGroups: \["argoproj.io"\] +resources: \["rollouts/scale"\] +verbs: \["get"\]'
else nok "extraScaleResources renders"; fi

if render "$V" --set replicaCount=1 --set leaderElection.enabled=false --set podDisruptionBudget.enabled=true; then
  DEP1="$(doc "$V" Deployment "$RELEASE" "$NS")"
  check "replicaCount=1 without leader election: no --leader-elect" lacks "$DEP1" "--leader-elect"
  check "replicaCount=1 without leader election: no --lease-name" lacks "$DEP1" "--lease-"
  check "replicaCount=1 without leader election: no Lease Role" eq "$(count "$V" Role)" 0
  check "replicaCount=1: no PodDisruptionBudget even when enabled" eq "$(count "$V" PodDisruptionBudget)" 0
else nok "replicaCount=1 leaderElection.enabled=false renders"; fi

if render "$V" --set rbac.create=false --set serviceAccount.create=false --set serviceAccount.name=existing-sa; then
  check "rbac.create=false: no RBAC objects" \
    eq "$(index "$V" | awk -F'\t' '$1 ~ /Role/' | wc -l | tr -d ' ')" 0
  check "serviceAccount.create=false: no ServiceAccount" eq "$(count "$V" ServiceAccount)" 0
  check "serviceAccount.create=false: uses serviceAccount.name" \
    has "$(doc "$V" Deployment "$RELEASE" "$NS")" "serviceAccountName: existing-sa"
else nok "rbac.create=false serviceAccount.create=false renders"; fi

digest="sha256:$(printf '%064d' 0)"
if render "$V" --set image.digest="$digest" --set service.enabled=false; then
  check "image.digest: image is repository@digest" \
    has "$(doc "$V" Deployment "$RELEASE" "$NS")" "image: \"ghcr.io/rebalancer-dev/rebalancer@$digest\""
  check "service.enabled=false: no Service" eq "$(count "$V" Service)" 0
else nok "image.digest renders"; fi

if render "$V" --set podDisruptionBudget.enabled=true; then
  check "podDisruptionBudget.enabled with 2 replicas: maxUnavailable: 1" \
    has "$(doc "$V" PodDisruptionBudget "$RELEASE" "$NS")" "maxUnavailable: 1"
else nok "podDisruptionBudget.enabled renders"; fi

if "$HELM" template "$RELEASE" "$CHART" --namespace "$NS" --include-crds >"$V"; then
  shopt -s nullglob
  chart_crds=("$CHART"/crds/*.yaml)
  shopt -u nullglob
  check "--include-crds renders one CRD per $CHART/crds/*.yaml (${#chart_crds[@]})" \
    eq "$(grep -c '^kind: CustomResourceDefinition' "$V" || true)" "${#chart_crds[@]}"
  check "the chart carries CRDs" ge "${#chart_crds[@]}" 1
else nok "--include-crds renders"; fi

if "$HELM" package "$CHART" --destination "$WORK" >/dev/null; then
  pkg="$WORK/rebalancer-$CHART_VERSION.tgz"
  check "helm package includes the CRDs" has "$(tar -tzf "$pkg")" "rebalancer/crds/"
  check "helm package includes values.schema.json" has "$(tar -tzf "$pkg")" "rebalancer/values.schema.json"
else nok "helm package"; fi

# ---------------------------------------------------------------------------
section "invalid values are rejected"
# must_fail DESCRIPTION EXPECTED-SUBSTRING-OF-ERROR helm-template-args...
must_fail() {
  local desc="$1" expect="$2" err="$WORK/err.txt"
  shift 2
  if "$HELM" template "$RELEASE" "$CHART" --namespace "$NS" "$@" >/dev/null 2>"$err"; then
    nok "rejects $desc (helm template succeeded)"
  elif grep -qF -- "$expect" "$err"; then
    ok "rejects $desc"
  else
    nok "rejects $desc (failed, but the error does not mention '$expect')"
    sed 's/^/        /' "$err"
  fi
}
must_fail "replicaCount=0" replicaCount --set replicaCount=0
must_fail "replicaCount=1.5" replicaCount --set replicaCount=1.5
must_fail "replicaCount=two" replicaCount --set replicaCount=two
must_fail "logFormat=xml" logFormat --set logFormat=xml
must_fail "syncPeriodSeconds=0" syncPeriodSeconds --set syncPeriodSeconds=0
must_fail "syncPeriodSeconds=30s" syncPeriodSeconds --set syncPeriodSeconds=30s
must_fail "maxConcurrentReconciles=0" maxConcurrentReconciles --set maxConcurrentReconciles=0
must_fail "clientGraceSeconds=0" clientGraceSeconds --set clientGraceSeconds=0
must_fail "clientProbeLanguages=JAVA;GO" clientProbeLanguages --set-string "clientProbeLanguages=JAVA;GO"
must_fail "brokerRequestsPerSecond=0" brokerRequestsPerSecond --set brokerRequestsPerSecond=0
must_fail "startupTimeoutSeconds=-1" startupTimeoutSeconds --set startupTimeoutSeconds=-1
must_fail "startupTimeoutSeconds=2m" startupTimeoutSeconds --set startupTimeoutSeconds=2m
must_fail "replicaCount=2 with leaderElection.enabled=false" \
  "requires leaderElection.enabled=true" --set replicaCount=2 --set leaderElection.enabled=false
must_fail "replicaCount=3 with leaderElection.enabled=false" \
  "requires leaderElection.enabled=true" --set replicaCount=3 --set leaderElection.enabled=false
must_fail "image.pullPolicy=Sometimes" pullPolicy --set image.pullPolicy=Sometimes
must_fail "image.digest=latest" digest --set image.digest=latest
must_fail "watchNamespaces with an invalid name" watchNamespaces --set 'watchNamespaces={Team_A}'
must_fail "watchNamespaces with duplicates" watchNamespaces --set 'watchNamespaces={team-a,team-a}'
must_fail "an unknown top-level key" unknownKey --set unknownKey=1
must_fail "an unknown nested key" replicas --set leaderElection.replicas=2
must_fail "a misspelt key (serviceMonitor.enable)" enable --set serviceMonitor.enable=true
must_fail "extraScaleResources entry without resource" extraScaleResources \
  --set 'rbac.extraScaleResources[0].apiGroup=argoproj.io'
must_fail "extraScaleResources resource with /scale" extraScaleResources \
  --set 'rbac.extraScaleResources[0].apiGroup=argoproj.io' --set 'rbac.extraScaleResources[0].resource=rollouts/scale'
must_fail "serviceMonitor.interval=fast" interval --set serviceMonitor.interval=fast
must_fail "metrics.port=70000" port --set metrics.port=70000
must_fail "service.type=Ingress" type --set service.type=Ingress
must_fail "podDisruptionBudget.maxUnavailable=0" maxUnavailable --set podDisruptionBudget.maxUnavailable=0
must_fail "rbac.nodes=maybe" nodes --set rbac.nodes=maybe
must_fail "leaderElection.leaseName with uppercase" leaseName --set leaderElection.leaseName=Leader
must_fail "serviceMonitor without the Service" "requires service.enabled=true" \
  --set serviceMonitor.enabled=true --set service.enabled=false

# ---------------------------------------------------------------------------
section "CRDs and plain manifests are in sync"
check "hack/sync-crds.sh --check" bash hack/sync-crds.sh --check
check "hack/render-manifests.sh --check" bash hack/render-manifests.sh --check

echo
echo "helm-check: $passed passed, $failed failed"
if ((failed > 0)); then
  exit 1
fi
