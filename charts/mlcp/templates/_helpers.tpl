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

{{/* An image reference from (dict "image" .Values.x.image "root" $): repository@digest when the image's digest is set (a sha256:<64 hex> digest, checked), else repository:tag, the tag defaulting to appVersion. */}}
{{- define "mlcp.image" -}}
{{- with .image.digest }}
{{- if not (regexMatch "^sha256:[0-9a-f]{64}$" .) }}
{{- fail (printf "the digest of image %s must be sha256:<64 hex digits>, got %v" $.image.repository .) }}
{{- end }}
{{- printf "%s@%s" $.image.repository . }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}
{{- end }}

{{- define "mlcp.tritonName" -}}
{{- printf "%s-triton" (include "mlcp.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mlcp.mlserverName" -}}
{{- printf "%s-mlserver" (include "mlcp.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mlcp.mlserverReplicasName" -}}
{{- printf "%s-replicas" (include "mlcp.mlserverName" . | trunc 54 | trimSuffix "-") }}
{{- end }}

{{- /* The claim and mount of MLServer's repository as the generated templates declare them
(mlcp_tabular.serving's Volume). */ -}}
{{- define "mlcp.generatedMlserverClaim" -}}mlcp-mlserver-models{{- end }}
{{- define "mlcp.mlserverMount" -}}/mlserver-models{{- end }}

{{- define "mlcp.routerName" -}}
{{- printf "%s-router" (include "mlcp.fullname" .) | trunc 63 | trimSuffix "-" }}
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

{{- /* host:port of Triton's gRPC endpoint, where model loads go (a load over HTTP holds
Triton's HTTP workers, and the inference requests on them wait for the whole load). */ -}}
{{- define "mlcp.tritonGrpcUrl" -}}
{{- if .Values.config.tritonGrpcUrl }}
{{- .Values.config.tritonGrpcUrl }}
{{- else if .Values.triton.enabled }}
{{- printf "%s.%s.svc:%v" (include "mlcp.tritonName" .) .Release.Namespace .Values.triton.service.grpcPort }}
{{- end }}
{{- end }}

{{- define "mlcp.tritonReplicasName" -}}
{{- printf "%s-replicas" (include "mlcp.tritonName" . | trunc 54 | trimSuffix "-") }}
{{- end }}

{{- /* MLCP_TRITON_REPLICAS: every Triton server a load must reach, as HOST:HTTP_PORT/GRPC_PORT.
The headless Service's name resolves to each pod's address; the ports are the container's
(8000, 8001), as a headless Service does not forward. */ -}}
{{- define "mlcp.tritonReplicas" -}}
{{- if .Values.config.tritonReplicas }}
{{- .Values.config.tritonReplicas }}
{{- else if .Values.triton.enabled }}
{{- printf "%s.%s.svc:8000/8001" (include "mlcp.tritonReplicasName" .) .Release.Namespace }}
{{- end }}
{{- end }}

{{- define "mlcp.vllmReplicasName" -}}
{{- printf "%s-replicas" (include "mlcp.vllmName" . | trunc 54 | trimSuffix "-") }}
{{- end }}

{{- /* MLCP_VLLM_REPLICAS: every vLLM server a load must reach. The headless Service's name
resolves to each pod's address; the port is the container's (8000), as a headless Service
does not forward. */ -}}
{{- define "mlcp.vllmReplicas" -}}
{{- if .Values.config.vllmReplicas }}
{{- .Values.config.vllmReplicas }}
{{- else if .Values.vllm.enabled }}
{{- include "mlcp.serviceUrl" (dict "root" . "name" (include "mlcp.vllmReplicasName" .) "port" 8000) }}
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

{{/* Secrets as files (steps/base/secrets.py): every pod of the chart mounts the Secrets it needs as read-only files here and is given only their paths; no Secret reaches a container through its environment. */}}
{{- define "mlcp.secretsMount" -}}/var/run/secrets/mlcp{{- end }}
{{/* The Secret the generated templates mount (workflows/common.py SECRET), rewritten to credentials.existingSecret. */}}
{{- define "mlcp.generatedSecret" -}}mlcp-credentials{{- end }}
{{/* The credentials Secret's keys holding files in a library's own format: an AWS shared credentials file (AWS_SHARED_CREDENTIALS_FILE) and MLflow's credentials file (~/.mlflow/credentials). */}}
{{- define "mlcp.awsCredentialsKey" -}}aws-credentials{{- end }}
{{- define "mlcp.mlflowCredentialsKey" -}}mlflow-credentials{{- end }}
{{/* The mode of mounted Secret files, 0440: the owner and the pod's fsGroup read them. */}}
{{- define "mlcp.secretFileMode" -}}288{{- end }}

{{/* A projected volume named "secrets" of Secret keys as files: (dict "root" $ "files" (list (dict "secret" NAME "key" KEY "path" FILE "optional" BOOL) ...)). */}}
{{- define "mlcp.secretsVolume" -}}
- name: secrets
  projected:
    defaultMode: {{ include "mlcp.secretFileMode" .root }}
    sources:
      {{- range .files }}
      - secret:
          name: {{ .secret }}
          {{- if .optional }}
          optional: true
          {{- end }}
          items:
            - key: {{ .key }}
              path: {{ .path }}
      {{- end }}
{{- end }}

{{/* Its mount, read-only. */}}
{{- define "mlcp.secretsVolumeMount" -}}
- name: secrets
  mountPath: {{ include "mlcp.secretsMount" . }}
  readOnly: true
{{- end }}

{{/* The credentials Secret's AWS shared credentials file, as a source of mlcp.secretsVolume (optional: a Secret without it leaves the AWS clients to their other sources, e.g. a cloud role). */}}
{{- define "mlcp.awsCredentialsFile" -}}
{{- toJson (dict "secret" .Values.credentials.existingSecret "key" (include "mlcp.awsCredentialsKey" .) "path" (include "mlcp.awsCredentialsKey" .) "optional" true) }}
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

{{/* The GPU resource name the generated files use (workflows/common.py GPU_RESOURCE). */}}
{{- define "mlcp.generatedGpuResource" -}}nvidia.com/gpu{{- end }}

{{/*
The training placement of workflows.training, applied in place to one container template of
a document labelled mlcp.io/role=training: (dict "root" $ "template" $template "pipeline" "cv").
In order: another gpuResource renames the generated GPU requests, limits and toleration key;
a gpus count of the pipeline sets that many requested = limited (0: none) and, unless
tolerations are given, tolerates the gpuResource NoSchedule taint (as a GPU step is
generated); then nodeSelector, affinity and tolerations, when given, are set (tolerations
replace the generated ones). Prints nothing.
*/}}
{{- define "mlcp.trainingPlacement" -}}
{{- $template := .template }}
{{- $values := .root.Values.workflows.training | default dict }}
{{- $generated := include "mlcp.generatedGpuResource" .root }}
{{- $gpu := $values.gpuResource | default $generated }}
{{- $resources := $template.container.resources | default dict }}
{{- if ne $gpu $generated }}
{{- range $kind := list "requests" "limits" }}
{{- $amounts := index $resources $kind }}
{{- if and $amounts (hasKey $amounts $generated) }}
{{- $_ := set $amounts $gpu (index $amounts $generated) }}
{{- $_ := unset $amounts $generated }}
{{- end }}
{{- end }}
{{- range ($template.tolerations | default list) }}
{{- if eq (.key | default "") $generated }}
{{- $_ := set . "key" $gpu }}
{{- end }}
{{- end }}
{{- end }}
{{- $count := index ($values.gpus | default dict) .pipeline }}
{{- if not (kindIs "invalid" $count) }}
{{- $text := toString $count }}
{{- if not (regexMatch "^(0|[1-9][0-9]*)$" $text) }}
{{- fail (printf "workflows.training.gpus.%s must be a whole number of %s (or null: as generated), got %v" .pipeline $gpu $count) }}
{{- end }}
{{- range $kind := list "requests" "limits" }}
{{- $amounts := index $resources $kind | default dict }}
{{- if eq $text "0" }}
{{- $_ := unset $amounts $gpu }}
{{- else }}
{{- $_ := set $amounts $gpu $text }}
{{- end }}
{{- if $amounts }}
{{- $_ := set $resources $kind $amounts }}
{{- end }}
{{- end }}
{{- if $resources }}
{{- $_ := set $template.container "resources" $resources }}
{{- end }}
{{- $tolerations := list }}
{{- $tolerated := false }}
{{- range ($template.tolerations | default list) }}
{{- if eq (.key | default "") $gpu }}
{{- $tolerated = true }}
{{- if ne $text "0" }}
{{- $tolerations = append $tolerations . }}
{{- end }}
{{- else }}
{{- $tolerations = append $tolerations . }}
{{- end }}
{{- end }}
{{- if and (ne $text "0") (not $tolerated) }}
{{- $tolerations = append $tolerations (dict "key" $gpu "operator" "Exists" "effect" "NoSchedule") }}
{{- end }}
{{- if $tolerations }}
{{- $_ := set $template "tolerations" $tolerations }}
{{- else }}
{{- $_ := unset $template "tolerations" }}
{{- end }}
{{- end }}
{{- with $values.nodeSelector }}
{{- $_ := set $template "nodeSelector" (deepCopy .) }}
{{- end }}
{{- with $values.affinity }}
{{- $_ := set $template "affinity" (deepCopy .) }}
{{- end }}
{{- with $values.tolerations }}
{{- $_ := set $template "tolerations" (deepCopy .) }}
{{- end }}
{{- end }}

{{/*
The semaphores the installed workflow documents hold, as JSON: {configMap: {key: size}}.
Collected from every synchronization (workflow level and template level) of every installed
file's semaphores[].configMapKeyRef; each key is sized by
workflows.concurrency.training[<the document's mlcp.io/pipeline label>], which must be a
positive whole number. Empty ({}) when workflows are off or nothing holds a semaphore.
*/}}
{{- define "mlcp.semaphores" -}}
{{- $root := . }}
{{- $maps := dict }}
{{- if .Values.workflows.enabled }}
{{- $sizes := dig "concurrency" "training" dict .Values.workflows }}
{{- range $path, $_ := .Files.Glob "files/workflows/*.yaml" }}
{{- $file := base $path }}
{{- if include "mlcp.workflowFileEnabled" (dict "root" $root "file" $file) }}
{{- $doc := $root.Files.Get $path | fromYaml }}
{{- $spec := $doc.spec | default dict }}
{{- if eq $doc.kind "CronWorkflow" }}
{{- $spec = $spec.workflowSpec | default dict }}
{{- end }}
{{- $syncs := list }}
{{- with $spec.synchronization }}
{{- $syncs = append $syncs . }}
{{- end }}
{{- range ($spec.templates | default list) }}
{{- with .synchronization }}
{{- $syncs = append $syncs . }}
{{- end }}
{{- end }}
{{- $pipeline := index ($doc.metadata.labels | default dict) "mlcp.io/pipeline" | default "" | toString }}
{{- range $sync := $syncs }}
{{- range $ref := ($sync.semaphores | default list) }}
{{- with $ref.configMapKeyRef }}
{{- if not $pipeline }}
{{- fail (printf "files/workflows/%s holds the semaphore %s of ConfigMap %s but has no mlcp.io/pipeline label to size it by (workflows.concurrency.training)" $file .key .name) }}
{{- end }}
{{- $size := index $sizes $pipeline }}
{{- if kindIs "invalid" $size }}
{{- fail (printf "workflows.concurrency.training.%s is required: files/workflows/%s holds the semaphore %s of ConfigMap %s" $pipeline $file .key .name) }}
{{- end }}
{{- $text := toString $size }}
{{- if not (regexMatch "^[1-9][0-9]*$" $text) }}
{{- fail (printf "workflows.concurrency.training.%s must be a positive whole number (the trainings that may run at once), got %v" $pipeline $size) }}
{{- end }}
{{- $keys := get $maps .name | default dict }}
{{- $_ := set $keys .key $text }}
{{- $_ := set $maps .name $keys }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- toJson $maps }}
{{- end }}

{{/* MLflow's default permission under its basic-auth app (steps/local/mlflow_auth.py DEFAULT_PERMISSION): a user sees only what a role grants. */}}
{{- define "mlcp.mlflowDefaultPermission" -}}NO_PERMISSIONS{{- end }}

{{/* The labels of the workflow pods (spec.podMetadata, added when networkPolicy.enabled): what the NetworkPolicies admit to the servers. */}}
{{- define "mlcp.workflowPodLabels" -}}
{{ include "mlcp.selectorLabels" (dict "root" . "component" "workflows") }}
{{- end }}

