{{/* Names ---------------------------------------------------------------------------- */}}

{{- define "tokentide.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tokentide.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* "<fullname>-<component>", within 63 characters. Call with (list $ "component"). */}}
{{- define "tokentide.componentName" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%s" (include "tokentide.fullname" $root | trunc 50 | trimSuffix "-") (index . 1) -}}
{{- end -}}

{{- define "tokentide.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "tokentide.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tokentide
{{- end -}}

{{/* Labels of one component. Call with (list $ "component"). */}}
{{- define "tokentide.componentLabels" -}}
{{ include "tokentide.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "tokentide.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tokentide.name" (index . 0) }}
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "tokentide.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* Settings and secrets ------------------------------------------------------------- */}}

{{- define "tokentide.kafkaBootstrap" -}}
{{- if .Values.kafka.bundled.enabled -}}
{{- printf "%s:9092" (include "tokentide.componentName" (list . "kafka")) -}}
{{- else -}}
{{- .Values.kafka.bootstrap -}}
{{- end -}}
{{- end -}}

{{- define "tokentide.secretName" -}}
{{- if .Values.secrets.create -}}
{{- include "tokentide.componentName" (list . "secrets") -}}
{{- else -}}
{{- .Values.secrets.existingSecret -}}
{{- end -}}
{{- end -}}

{{/*
Hook phases of the migrate and topics jobs. Before install and upgrade in the normal case; after
the install when what they need is created by the release itself (a bundled dependency, a
chart-made Secret), since pre-install hooks run before any of the release's resources exist.
*/}}
{{- define "tokentide.hookPhases" -}}
{{- if or .Values.kafka.bundled.enabled .Values.database.bundled.enabled .Values.secrets.create -}}
post-install,pre-upgrade
{{- else -}}
pre-install,pre-upgrade
{{- end -}}
{{- end -}}

{{/* Checks that values.schema.json cannot express (it cannot compare two values). */}}
{{- define "tokentide.validate" -}}
{{- if gt (int .Values.streams.replicas) (int .Values.kafka.partitions) -}}
{{- fail (printf "streams.replicas (%d) must not exceed kafka.partitions (%d): a worker without a partition idles" (int .Values.streams.replicas) (int .Values.kafka.partitions)) -}}
{{- end -}}
{{- if and .Values.ingest.autoscaling.enabled (gt (int .Values.ingest.autoscaling.minReplicas) (int .Values.ingest.autoscaling.maxReplicas)) -}}
{{- fail "ingest.autoscaling.minReplicas must not exceed ingest.autoscaling.maxReplicas" -}}
{{- end -}}
{{- end -}}

{{- define "tokentide.env.common" -}}
- name: TOKENTIDE_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
{{- end -}}

{{- define "tokentide.env.kafka" -}}
- name: KAFKA_BOOTSTRAP
  value: {{ include "tokentide.kafkaBootstrap" . | quote }}
- name: TOKENTIDE_TOPIC_PREFIX
  value: {{ .Values.kafka.topicPrefix | quote }}
- name: TOKENTIDE_PARTITIONS
  value: {{ .Values.kafka.partitions | int | quote }}
- name: TOKENTIDE_TOPIC_REPLICATION_FACTOR
  value: {{ ternary 1 .Values.kafka.replicationFactor .Values.kafka.bundled.enabled | int | quote }}
- name: TOKENTIDE_KAFKA_MAX_MESSAGE_BYTES
  value: {{ .Values.kafka.maxMessageBytes | int64 | quote }}
{{- end -}}

{{/* DATABASE_URL: from the existing Secret, or composed for the bundled database. */}}
{{- define "tokentide.env.database" -}}
{{- if .Values.database.bundled.enabled }}
- name: POSTGRES_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "tokentide.secretName" . }}
      key: POSTGRES_PASSWORD
- name: DATABASE_URL
  value: {{ printf "postgresql://tokentide:$(POSTGRES_PASSWORD)@%s:5432/tokentide" (include "tokentide.componentName" (list . "timescaledb")) | quote }}
{{- else }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "tokentide.secretName" . }}
      key: {{ .Values.secrets.keys.databaseUrl }}
{{- end }}
{{- end -}}

{{- define "tokentide.env.redactionKey" -}}
- name: TOKENTIDE_REDACTION_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "tokentide.secretName" . }}
      key: {{ ternary "TOKENTIDE_REDACTION_KEY" .Values.secrets.keys.redactionKey .Values.secrets.create }}
{{- end -}}

{{/* A component's extra settings (a map of TOKENTIDE_* names to values). */}}
{{- define "tokentide.env.extra" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/* Pod-level fields shared by every tokentide pod. */}}
{{- define "tokentide.podCommon" -}}
{{- with .Values.serviceAccount.name }}
serviceAccountName: {{ . }}
{{- end }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "tokentide.podMetadata" -}}
{{- $root := index . 0 -}}
labels:
  {{- include "tokentide.selectorLabels" . | nindent 2 }}
  {{- with $root.Values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with $root.Values.podAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Container fields shared by every tokentide container. */}}
{{- define "tokentide.containerCommon" -}}
image: {{ include "tokentide.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
securityContext:
  {{- toYaml .Values.containerSecurityContext | nindent 2 }}
{{- end -}}

{{/* HTTP probes on the named port "http". */}}
{{- define "tokentide.probes" -}}
livenessProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 6
readinessProbe:
  httpGet: {path: /readyz, port: http}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 3
{{- end -}}
