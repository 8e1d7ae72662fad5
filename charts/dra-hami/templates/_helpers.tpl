{{/* Names, labels and shared snippets of the dra-hami chart. */}}

{{- define "dra-hami.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "dra-hami.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of one component's objects: <fullname>-<component>, kept within 63 characters. */}}
{{- define "dra-hami.componentName" -}}
{{- printf "%s-%s" (include "dra-hami.fullname" .root | trunc (int (sub 62 (len .component))) | trimSuffix "-") .component -}}
{{- end -}}

{{- define "dra-hami.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "dra-hami.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "dra-hami.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dra-hami.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "dra-hami.componentLabels" -}}
{{ include "dra-hami.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "dra-hami.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The options every dra-hami command shares (cli-contract: logging and driver name). */}}
{{- define "dra-hami.commonArgs" -}}
- --driver-name={{ .Values.driverName }}
- --log-level={{ .Values.logging.level }}
- --log-format={{ .Values.logging.format }}
{{- end -}}

{{- define "dra-hami.webhookServiceName" -}}
{{- include "dra-hami.componentName" (dict "root" . "component" "webhook") -}}
{{- end -}}

{{- define "dra-hami.webhookSecretName" -}}
{{- .Values.webhook.tls.existingSecret | default (include "dra-hami.componentName" (dict "root" . "component" "webhook-tls")) -}}
{{- end -}}

{{/* Namespaces the webhooks never see: the system and our own (our pods must start without us). */}}
{{- define "dra-hami.webhookNamespaceSelector" -}}
matchExpressions:
- key: kubernetes.io/metadata.name
  operator: NotIn
  values: {{ list "kube-system" .Release.Namespace | uniq | sortAlpha | toJson }}
{{- with .Values.webhook.namespaceSelector.matchExpressions }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- /* CEL: does any container in the list ``.`` ask for an nvidia.com/* resource, in limits or requests? */ -}}
{{- define "dra-hami.usesNvidia" -}}
{{ . }}.exists(c, has(c.resources) && ((has(c.resources.limits) && c.resources.limits.exists(k, k.startsWith('nvidia.com/'))) || (has(c.resources.requests) && c.resources.requests.exists(k, k.startsWith('nvidia.com/')))))
{{- end -}}

{{- /* CEL: `|| @@.startsWith('<prefix>')` for each prefix of the list ``.``; the caller replaces @@. */ -}}
{{- define "dra-hami.celPrefixes" -}}
{{- range . }} || @@.startsWith('{{ . }}'){{ end }}
{{- end -}}

{{- /* CEL: every field path of the list ``.`` is the same in object and oldObject (absent in both counts). */ -}}
{{- define "dra-hami.celUnchanged" -}}
{{- $parts := list }}
{{- range . }}
{{- $parts = append $parts (printf "(has(object.%[1]s) == has(oldObject.%[1]s) && (!has(object.%[1]s) || object.%[1]s == oldObject.%[1]s))" .) }}
{{- end }}
{{- join " && " $parts }}
{{- end -}}
