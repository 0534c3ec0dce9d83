{{/* Names, labels, images and security settings shared by every template. */}}

{{- define "mlcp.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of the chart's namespaced object names: release-chart, or the release alone when it already holds the chart name. */}}
{{- define "mlcp.fullname" -}}
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

{{- define "mlcp.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels of one component: call with (dict "root" $ "component" "triton"). */}}
{{- define "mlcp.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlcp.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Every label of one component's objects: call with (dict "root" $ "component" "..."). */}}
{{- define "mlcp.labels" -}}
helm.sh/chart: {{ include "mlcp.chart" .root }}
{{ include "mlcp.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: mlflow-control-plane
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "mlcp.serviceAccountName" -}}
{{- default (printf "%s-workflow" (include "mlcp.fullname" .)) .Values.serviceAccount.name }}
{{- end }}

{{/* An image reference from (dict "image" .Values.x.image "root" $): the tag defaults to appVersion. */}}
{{- define "mlcp.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}

{{- define "mlcp.tritonName" -}}
{{- printf "%s-triton" (include "mlcp.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mlcp.vllmName" -}}
{{- printf "%s-vllm" (include "mlcp.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The claim name the generated templates mount, and where (declared by the vLLM back end, steps/llm/serving.py). */}}
{{- define "mlcp.generatedAdapterClaim" -}}mlcp-vllm-adapters{{- end }}
{{- define "mlcp.adapterMount" -}}/adapters{{- end }}

{{/* Whether the LLM side needs the adapter volume: vLLM in the release or the llm templates installed. */}}
{{- define "mlcp.adaptersUsed" -}}
{{- if or .Values.vllm.enabled (and .Values.workflows.enabled (include "mlcp.workflowFileEnabled" (dict "root" . "file" "llm-deploy.yaml"))) }}true{{ end }}
{{- end }}

{{- define "mlcp.mlflowName" -}}
{{- printf "%s-mlflow" (include "mlcp.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mlcp.postgresqlName" -}}
{{- printf "%s-postgresql" (include "mlcp.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The in-cluster URL of one of the chart's Services: (dict "root" $ "name" "..." "port" 8000). */}}
{{- define "mlcp.serviceUrl" -}}
{{- printf "http://%s.%s.svc:%v" .name .root.Release.Namespace .port }}
{{- end }}

{{- define "mlcp.mlflowTrackingUri" -}}
{{- if .Values.config.mlflowTrackingUri }}
{{- .Values.config.mlflowTrackingUri }}
{{- else if .Values.mlflow.enabled }}
{{- include "mlcp.serviceUrl" (dict "root" . "name" (include "mlcp.mlflowName" .) "port" .Values.mlflow.service.port) }}
{{- else }}
{{- required "config.mlflowTrackingUri is required unless mlflow.enabled" .Values.config.mlflowTrackingUri }}
{{- end }}
{{- end }}

{{- define "mlcp.tritonUrl" -}}
{{- if .Values.config.tritonUrl }}
{{- .Values.config.tritonUrl }}
{{- else if .Values.triton.enabled }}
{{- include "mlcp.serviceUrl" (dict "root" . "name" (include "mlcp.tritonName" .) "port" .Values.triton.service.httpPort) }}
{{- end }}
{{- end }}

{{- define "mlcp.vllmUrl" -}}
{{- if .Values.config.vllmUrl }}
{{- .Values.config.vllmUrl }}
{{- else if .Values.vllm.enabled }}
{{- include "mlcp.serviceUrl" (dict "root" . "name" (include "mlcp.vllmName" .) "port" .Values.vllm.service.port) }}
{{- end }}
{{- end }}

{{/* Triton's form of an S3 repository on a custom endpoint: s3://host:port/bucket/prefix (s3://https://host:port/... for TLS). */}}
{{- define "mlcp.tritonModelRepository" -}}
{{- if .Values.triton.modelRepository }}
{{- .Values.triton.modelRepository }}
{{- else }}
{{- $path := trimPrefix "s3://" .Values.config.tritonRepository }}
{{- $endpoint := .Values.config.s3Endpoint | trimSuffix "/" }}
{{- if not (hasPrefix "s3://" .Values.config.tritonRepository) }}
{{- fail "triton.modelRepository is required when config.tritonRepository is not an s3:// URI" }}
{{- else if not $endpoint }}
{{- printf "s3://%s" $path }}
{{- else if hasPrefix "http://" $endpoint }}
{{- printf "s3://%s/%s" (trimPrefix "http://" $endpoint) $path }}
{{- else }}
{{- printf "s3://%s/%s" $endpoint $path }}
{{- end }}
{{- end }}
{{- end }}

{{/* Whether a WorkflowTemplate/CronWorkflow file is installed: (dict "root" $ "file" "cv-train.yaml"). */}}
{{- define "mlcp.workflowFileEnabled" -}}
{{- $set := first (splitList "-" (trimSuffix ".yaml" .file)) }}
{{- if hasKey .root.Values.workflows.sets $set }}
{{- if index .root.Values.workflows.sets $set }}true{{ end }}
{{- else }}true{{ end }}
{{- end }}

{{/* The volumes every serving pod shares: a writable /tmp (the root filesystem is read-only). */}}
{{- define "mlcp.tmpVolume" -}}
- name: tmp
  emptyDir: {}
{{- end }}

{{- define "mlcp.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end }}
