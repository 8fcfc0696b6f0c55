{{/*
Names are fixed, not derived from the release name: the control plane looks
for its Lease (k8s-selfhost-repo-controlplane), its state ConfigMap
(selfhost-controlplane-state) and its MutatingWebhookConfiguration
(k8s-selfhost-repo-injector) by these names, and the RBAC rules are limited
to them. So there is one release per cluster.
*/}}
{{- define "selfhost.name" -}}selfhost-controlplane{{- end -}}
{{- define "selfhost.clusterRoleName" -}}k8s-selfhost-repo-controlplane{{- end -}}

{{- define "selfhost.labels" -}}
app.kubernetes.io/name: k8s-selfhost-repo
app.kubernetes.io/component: controlplane
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "selfhost.selectorLabels" -}}
app.kubernetes.io/name: k8s-selfhost-repo
app.kubernetes.io/component: controlplane
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "selfhost.forwarderLabels" -}}
app.kubernetes.io/name: k8s-selfhost-repo
app.kubernetes.io/component: forwarder
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "selfhost.forwarderSelectorLabels" -}}
app.kubernetes.io/name: k8s-selfhost-repo
app.kubernetes.io/component: forwarder
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The Secret holding the S3 keys (accessKeyId, secretAccessKey), or "". */}}
{{- define "selfhost.s3Secret" -}}
{{- $c := .Values.s3Credentials -}}
{{- if $c.existingSecret -}}
{{- $c.existingSecret -}}
{{- else if or $c.accessKeyId $c.secretAccessKey -}}
{{- include "selfhost.name" . }}-s3
{{- end -}}
{{- end -}}

{{/* The Secret holding the Clash subscription URL (subscriptionUrl), or "". */}}
{{- define "selfhost.clashSecret" -}}
{{- if .Values.clash.existingSecret -}}
{{- .Values.clash.existingSecret -}}
{{- else if .Values.clash.subscriptionUrl -}}
{{- include "selfhost.name" . }}-clash
{{- end -}}
{{- end -}}

{{/* requests.cpu=50m,limits.memory=256Mi from a resources map (--edge-resources). */}}
{{- define "selfhost.resourceFlag" -}}
{{- $parts := list -}}
{{- range $kind := list "requests" "limits" -}}
{{- range $name, $q := (get $ $kind | default dict) -}}
{{- $parts = append $parts (printf "%s.%s=%v" $kind $name $q) -}}
{{- end -}}
{{- end -}}
{{- join "," $parts -}}
{{- end -}}

{{/* Checks of combinations the schema cannot express. */}}
{{- define "selfhost.validate" -}}
{{- $c := .Values.s3Credentials -}}
{{- if and $c.existingSecret (or $c.accessKeyId $c.secretAccessKey) -}}
{{- fail "s3Credentials: set existingSecret or accessKeyId/secretAccessKey, not both" -}}
{{- end -}}
{{- if ne (empty $c.accessKeyId) (empty $c.secretAccessKey) -}}
{{- fail "s3Credentials: accessKeyId and secretAccessKey go together" -}}
{{- end -}}
{{- if and (include "selfhost.s3Secret" .) (not .Values.s3.bucket) -}}
{{- fail "s3Credentials are set but s3.bucket is empty" -}}
{{- end -}}
{{- if and .Values.clash.existingSecret .Values.clash.subscriptionUrl -}}
{{- fail "clash: set existingSecret or subscriptionUrl, not both" -}}
{{- end -}}
{{- if and .Values.clash.enabled (not (include "selfhost.clashSecret" .)) -}}
{{- fail "clash.enabled needs clash.subscriptionUrl or clash.existingSecret" -}}
{{- end -}}
{{- end -}}
