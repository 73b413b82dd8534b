{{/* Names, labels and checks shared by the templates. */}}

{{- define "member.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "member.fullname" -}}
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

{{- define "member.agentName" -}}
{{- printf "%s-agent" (include "member.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "member.selectorLabels" -}}
app.kubernetes.io/name: {{ include "member.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: agent
{{- end }}

{{- define "member.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "member.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: binder-federation
binder-federation/member: {{ .Values.member.name | quote }}
{{- end }}

{{- define "member.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "member.agentName" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Namespace of the BinderHub the agent watches. */}}
{{- define "member.binderhubNamespace" -}}
{{- default .Release.Namespace .Values.agent.binderhubNamespace }}
{{- end }}

{{- define "member.imagePrefix" -}}
{{- default .Values.binderhub.config.BinderHub.image_prefix .Values.agent.imagePrefix }}
{{- end }}

{{- define "member.secretName" -}}
{{- printf "%s-federation" (include "member.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "member.redisSecretName" -}}
{{- default (include "member.secretName" .) .Values.federation.redis.existingSecret }}
{{- end }}

{{- define "member.tokenSecretName" -}}
{{- default (include "member.secretName" .) .Values.federation.token.existingSecret }}
{{- end }}

{{/* Settings the chart refuses, with the reason, before anything is applied. */}}
{{- define "member.validate" -}}
{{- $_ := required "member.name is required (this member's short name in the federation)" .Values.member.name }}
{{- $_ := required "member.url is required (public base URL of this member's BinderHub)" .Values.member.url }}
{{- if not (or .Values.federation.redis.url .Values.federation.redis.existingSecret) }}
{{- fail "federation.redis.url or federation.redis.existingSecret is required: the agent publishes its reports to the federation's Redis" }}
{{- end }}
{{- if not (or .Values.federation.token.value .Values.federation.token.existingSecret) }}
{{- fail "federation.token.value or federation.token.existingSecret is required: the federation rejects unsigned reports" }}
{{- end }}
{{- if not (include "member.imagePrefix" .) }}
{{- fail "agent.imagePrefix (or binderhub.config.BinderHub.image_prefix) is required: the agent finds this member's images by it" }}
{{- end }}
{{- if .Values.binderhubEnabled }}
{{- $bh := .Values.binderhub.config.BinderHub }}
{{- if ne (toString $bh.pod_quota) (toString .Values.member.capacity) }}
{{- fail (printf "binderhub.config.BinderHub.pod_quota (%v) must equal member.capacity (%v): the quota is the capacity the member reports" $bh.pod_quota .Values.member.capacity) }}
{{- end }}
{{- if ne $bh.cors_allow_origin .Values.federation.origin }}
{{- fail (printf "binderhub.config.BinderHub.cors_allow_origin (%q) must equal federation.origin (%q)" $bh.cors_allow_origin .Values.federation.origin) }}
{{- end }}
{{- $spawner := .Values.binderhub.jupyterhub.hub.config.BinderSpawner }}
{{- if ne $spawner.cors_allow_origin .Values.federation.origin }}
{{- fail (printf "binderhub.jupyterhub.hub.config.BinderSpawner.cors_allow_origin (%q) must equal federation.origin (%q)" $spawner.cors_allow_origin .Values.federation.origin) }}
{{- end }}
{{- if ne $bh.base_url "/" }}
{{- fail "binderhub.config.BinderHub.base_url must be / so the router finds <member.url>/health and /versions" }}
{{- end }}
{{- $host := (urlParse .Values.member.url).host }}
{{- if and .Values.binderhub.ingress.enabled (not (has $host .Values.binderhub.ingress.hosts)) }}
{{- fail (printf "binderhub.ingress.hosts must contain %q, the host of member.url, so the federation can reach /health, /versions and /build/" $host) }}
{{- end }}
{{- end }}
{{- end }}
