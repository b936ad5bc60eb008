{{/* The name of the release's objects: the release name when it holds the chart's name, else <release>-rerank. */}}
{{- define "rerank.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object's metadata (not of pod templates or selectors, which stay as in deploy/k8s). */}}
{{- define "rerank.labels" -}}
app.kubernetes.io/name: rerank
app.kubernetes.io/component: {{ .component }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{- end -}}

{{- define "rerank.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}

{{/* A value as TOML: strings quoted, lists of strings in brackets, the rest bare. */}}
{{- define "rerank.toml" -}}
{{- if kindIs "slice" . -}}
[{{ range $i, $v := . }}{{ if $i }}, {{ end }}{{ $v | toString | quote }}{{ end }}]
{{- else if kindIs "string" . -}}
{{ . | quote }}
{{- else -}}
{{ . }}
{{- end -}}
{{- end -}}

{{/* A component's NATS user and extra variables (the env entries), from its .nats and .extraEnv values. */}}
{{- define "rerank.natsEnv" -}}
{{- with .nats.credsKey }}
- name: RERANK_NATS_CREDS
  value: /etc/rerank-nats/{{ . }}
{{- end }}
{{- with .nats.nkeyKey }}
- name: RERANK_NATS_NKEY
  value: /etc/rerank-nats/{{ . }}
{{- end }}
{{- with .nats.inboxPrefix }}
- name: RERANK_NATS_INBOX_PREFIX
  value: {{ . | quote }}
{{- end }}
{{- with .extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}
