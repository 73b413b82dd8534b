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


{{- define "member.secretName" -}}
{{- printf "%s-federation" (include "member.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "member.redisSecretName" -}}
{{- default (include "member.secretName" .) .Values.federation.redis.existingSecret }}
{{- end }}

{{- define "member.tokenSecretName" -}}
{{- default (include "member.secretName" .) .Values.federation.token.existingSecret }}
{{- end }}

{{/*
Keys in the Secrets: the chart's own Secret always holds redis-url and token, so its
two entries can never collide; `key` names the entry in a Secret you manage.
*/}}
{{- define "member.redisSecretKey" -}}
{{- if .Values.federation.redis.existingSecret }}{{ .Values.federation.redis.key }}{{ else }}redis-url{{ end }}
{{- end }}

{{- define "member.tokenSecretKey" -}}
{{- if .Values.federation.token.existingSecret }}{{ .Values.federation.token.key }}{{ else }}token{{ end }}
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
{{- if not .Values.agent.imagePrefix }}
{{- fail "agent.imagePrefix is required: the BinderHub.image_prefix of the BinderHub this agent runs beside (the agent finds this member's images by it)" }}
{{- end }}
{{- if and (eq (include "member.redisSecretName" .) (include "member.tokenSecretName" .)) (eq (include "member.redisSecretKey" .) (include "member.tokenSecretKey" .)) }}
{{- fail (printf "federation.redis and federation.token both read key %q of Secret %q: the Redis URL and the report token need two different keys" (include "member.redisSecretKey" .) (include "member.redisSecretName" .)) }}
{{- end }}
{{- end }}
