{{/*
Chart name, truncated to 63 characters (DNS-1123 label limit).
*/}}
{{- define "rebalancer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name, truncated to 63 characters.
If the release name contains the chart name it is used as is.
*/}}
{{- define "rebalancer.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Name of cluster-scoped objects (ClusterRole, ClusterRoleBinding). They carry
the release namespace so that two releases of the same name in different
namespaces (e.g. one per team in namespaced mode) do not collide.
*/}}
{{- define "rebalancer.clusterResourceName" -}}
{{- printf "%s-%s" .Release.Namespace (include "rebalancer.fullname" .) }}
{{- end }}

{{/*
Chart name and version, as used by the helm.sh/chart label.
*/}}
{{- define "rebalancer.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels. commonLabels are added but cannot override the chart's own.
*/}}
{{- define "rebalancer.labels" -}}
{{- $labels := include "rebalancer.selectorLabels" . | fromYaml }}
{{- $_ := set $labels "helm.sh/chart" (include "rebalancer.chart" .) }}
{{- $_ = set $labels "app.kubernetes.io/version" ((default .Chart.AppVersion .Values.image.tag) | trunc 63 | trimSuffix "-") }}
{{- $_ = set $labels "app.kubernetes.io/component" "operator" }}
{{- $_ = set $labels "app.kubernetes.io/part-of" "rebalancer" }}
{{- $_ = set $labels "app.kubernetes.io/managed-by" .Release.Service }}
{{- toYaml (merge $labels .Values.commonLabels) }}
{{- end }}

{{/*
Pod template labels: the common labels plus podLabels (which cannot override
the common labels, in particular not the selector labels).
*/}}
{{- define "rebalancer.podLabels" -}}
{{- toYaml (merge (include "rebalancer.labels" . | fromYaml) .Values.podLabels) }}
{{- end }}

{{/*
Selector labels (immutable on the Deployment: never add to these).
*/}}
{{- define "rebalancer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rebalancer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Name of the ServiceAccount to use.
*/}}
{{- define "rebalancer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rebalancer.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Container image reference: repository@digest when a digest is set,
otherwise repository:tag (tag defaults to the chart's appVersion).
*/}}
{{- define "rebalancer.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
RBAC rules for the namespaced resources the operator works with. Shared by
the ClusterRole (all namespaces) and the per-namespace Roles (watchNamespaces).
Least privilege: the custom resources are read-only except for their status.
*/}}
{{- define "rebalancer.namespacedRules" -}}
- apiGroups: ["rebalancer.dev"]
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
  verbs: ["get"]
{{- range .Values.rbac.extraScaleResources }}
- apiGroups: [{{ .apiGroup | quote }}]
  resources: [{{ printf "%s/scale" .resource | quote }}]
  verbs: ["get"]
{{- end }}
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/*
RBAC rule for nodes (cluster-scoped; only the zone label is read).
*/}}
{{- define "rebalancer.nodeRules" -}}
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["get", "list", "watch"]
{{- end }}

{{/*
Cross-value checks that values.schema.json cannot express.
*/}}
{{- define "rebalancer.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail (printf "replicaCount=%d requires leaderElection.enabled=true: without leader election every replica would reconcile and they would fight over the assignments. Set replicaCount=1 or enable leader election." (int .Values.replicaCount)) }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled (not .Values.service.enabled) }}
{{- fail "serviceMonitor.enabled=true requires service.enabled=true (the ServiceMonitor scrapes the metrics Service)." }}
{{- end }}
{{- end }}
