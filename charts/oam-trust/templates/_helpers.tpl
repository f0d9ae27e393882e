{{/* Name of the chart, overridable. */}}
{{- define "oam-trust.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name: every namespaced and cluster-scoped object of a release carries it, so two
releases (for example in tests) never clash on ClusterRole or ClusterRoleBinding names.
*/}}
{{- define "oam-trust.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else if contains (include "oam-trust.name" .) .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "oam-trust.name" .) | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "oam-trust.selectorLabels" -}}
app.kubernetes.io/name: {{ include "oam-trust.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "oam-trust.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "oam-trust.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: oam-trust
{{- end }}

{{/*
Selector labels of one part's pods (controller or exchange), so each Service, PodDisruptionBudget,
anti-affinity term and NetworkPolicy selects exactly that part: (dict "root" $ "component" "exchange").
*/}}
{{- define "oam-trust.componentSelectorLabels" -}}
{{ include "oam-trust.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "oam-trust.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Secret holding the exchange service's TLS certificate and key (tls.crt, tls.key). */}}
{{- define "oam-trust.tlsSecretName" -}}
{{- default (printf "%s-exchange-tls" (include "oam-trust.fullname" .)) .Values.exchange.tls.secretName }}
{{- end }}

{{/*
Ceiling ClusterRoles: the controller may bind itself to them, one namespace at a time, where its grants
live (see templates/rbac.yaml); the chart binds them to nobody.
*/}}
{{- define "oam-trust.ceilingClusterRoles" -}}
{{- $names := list }}
{{- if .Values.ceiling.create }}{{ $names = append $names .Values.ceiling.name }}{{ end }}
{{- range .Values.ceiling.extraClusterRoles }}{{ $names = append $names . }}{{ end }}
{{- $names | uniq | toJson }}
{{- end }}

{{/*
The operator's two identities: the controller (reconcilers, grants, applier impersonation) and the
exchange (the internet-facing token exchange). Separate ServiceAccounts, so a compromised exchange
holds none of the controller's rights.
*/}}
{{- define "oam-trust.controllerServiceAccountName" -}}
{{- printf "%s-controller" (include "oam-trust.fullname" .) }}
{{- end }}

{{- define "oam-trust.exchangeServiceAccountName" -}}
{{- printf "%s-exchange" (include "oam-trust.fullname" .) }}
{{- end }}

{{/* The ClusterRole the controller binds the exchange to in each namespace where grants live. */}}
{{- define "oam-trust.exchangeNamespaceRole" -}}
{{- printf "%s-exchange-namespace" (include "oam-trust.fullname" .) }}
{{- end }}
