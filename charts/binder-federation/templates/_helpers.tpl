{{/* Names, labels and computed settings shared by the templates. */}}

{{- define "binder-federation.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "binder-federation.fullname" -}}
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

{{- define "binder-federation.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "binder-federation.selectorLabels" -}}
app.kubernetes.io/name: {{ include "binder-federation.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "binder-federation.labels" -}}
helm.sh/chart: {{ include "binder-federation.chart" . }}
{{ include "binder-federation.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: binder-federation
{{- end }}

{{- define "binder-federation.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The router listens here inside the pod; the Service maps its port to it. */}}
{{- define "binder-federation.containerPort" -}}
8080
{{- end }}

{{- define "binder-federation.redisName" -}}
{{- printf "%s-redis" (include "binder-federation.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "binder-federation.adminSecretName" -}}
{{- default (printf "%s-admin" (include "binder-federation.fullname" .)) .Values.adminToken.existingSecret }}
{{- end }}

{{- define "binder-federation.replicaSecretName" -}}
{{- default (printf "%s-replicas" (include "binder-federation.fullname" .)) .Values.replicaSecrets.existingSecret }}
{{- end }}

{{- define "binder-federation.hasAdminToken" -}}
{{- if or .Values.adminToken.existingSecret .Values.adminToken.value }}true{{ end }}
{{- end }}

{{/*
store.url written into the router config. Empty when the URL comes from a Secret
(redis.external.existingSecret): the router then gets it with --store-url.
A password of the in-cluster Redis is never written here either; see storeUrlFlag.
*/}}
{{- define "binder-federation.storeUrl" -}}
{{- if .Values.redis.enabled }}
{{- printf "redis://%s:6379/0" (include "binder-federation.redisName" .) }}
{{- else if .Values.redis.external.existingSecret }}
{{- else if .Values.redis.external.url }}
{{- .Values.redis.external.url }}
{{- else }}
{{- "memory://" }}
{{- end }}
{{- end }}

{{/* --store-url argument carrying credentials from a Secret (kubelet expands $(VAR)). */}}
{{- define "binder-federation.storeUrlFlag" -}}
{{- if and .Values.redis.enabled .Values.redis.auth.existingSecret }}
{{- printf "--store-url=redis://:$(BINDERFED_REDIS_PASSWORD)@%s:6379/0" (include "binder-federation.redisName" .) }}
{{- else if and (not .Values.redis.enabled) .Values.redis.external.existingSecret }}
{{- "--store-url=$(BINDERFED_STORE_URL)" }}
{{- end }}
{{- end }}

{{/* Seconds the pod gets to stop: the router's shutdown grace and stream deadline (config.router.shutdown) + 10. */}}
{{- define "binder-federation.terminationGracePeriod" -}}
{{- $shutdown := ((.Values.config.router | default dict).shutdown | default dict) }}
{{- $grace := hasKey $shutdown "grace" | ternary $shutdown.grace 5 }}
{{- $streams := hasKey $shutdown "stream_deadline" | ternary $shutdown.stream_deadline 30 }}
{{- add (ceil (addf $grace $streams)) 10 }}
{{- end }}

{{/* Router replicas at the least: replicaCount, or autoscaling.minReplicas with autoscaling. */}}
{{- define "binder-federation.minReplicas" -}}
{{- if .Values.autoscaling.enabled }}{{ .Values.autoscaling.minReplicas }}{{ else }}{{ .Values.replicaCount }}{{ end }}
{{- end }}

{{/* Settings the chart refuses, with the reason, before anything is applied. */}}
{{- define "binder-federation.validate" -}}
{{- $shared := or .Values.redis.enabled .Values.redis.external.url .Values.redis.external.existingSecret }}
{{- if and (not $shared) (or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1)) }}
{{- fail "more than one router replica needs the shared store: set redis.enabled=true or redis.external.url (or redis.external.existingSecret), or replicaCount=1 with autoscaling.enabled=false" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail (printf "autoscaling.minReplicas (%v) is above autoscaling.maxReplicas (%v)" .Values.autoscaling.minReplicas .Values.autoscaling.maxReplicas) }}
{{- end }}
{{- $replicas := int (include "binder-federation.minReplicas" .) }}
{{- if and .Values.podDisruptionBudget.enabled (gt $replicas 1) (ge (int .Values.podDisruptionBudget.minAvailable) $replicas) }}
{{- fail (printf "podDisruptionBudget.minAvailable (%v) must be below the replica count (%v), or no node could ever be drained" .Values.podDisruptionBudget.minAvailable $replicas) }}
{{- end }}
{{- if and .Values.ingress.enabled (not .Values.ingress.host) }}
{{- fail "ingress.enabled=true needs ingress.host (the federation's launch domain, e.g. mybinder.org)" }}
{{- end }}
{{- end }}
