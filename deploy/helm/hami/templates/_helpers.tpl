{{/* Names, labels and the values every template derives from. */}}

{{- define "hami.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hami.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "hami.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "hami.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "hami.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "hami.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* selector labels of one component: include "hami.selectorLabels" (list . "scheduler") */}}
{{- define "hami.selectorLabels" -}}
{{- $ := index . 0 -}}
app.kubernetes.io/name: {{ include "hami.name" $ }}
app.kubernetes.io/instance: {{ $.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "hami.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "hami.schedulerName" -}}{{ include "hami.fullname" . }}-scheduler{{- end -}}
{{- define "hami.agentName" -}}{{ include "hami.fullname" . }}-agent{{- end -}}
{{- define "hami.certsName" -}}{{ include "hami.fullname" . }}-certs{{- end -}}
{{- define "hami.webhookName" -}}{{ include "hami.fullname" . }}-webhook{{- end -}}
{{- define "hami.tlsSecret" -}}{{ default (printf "%s-tls" (include "hami.fullname" .)) .Values.tls.secretName }}{{- end -}}
{{- define "hami.signingSecret" -}}{{ default (printf "%s-signing-key" (include "hami.fullname" .)) .Values.signing.existingSecret }}{{- end -}}

{{/* HAMI_BACKENDS: the enabled backends, comma separated, in name order */}}
{{- define "hami.enabledBackends" -}}
{{- $names := list -}}
{{- range $name, $b := .Values.backends -}}
{{- if $b.enabled -}}{{- $names = append $names $name -}}{{- end -}}
{{- end -}}
{{- join "," $names -}}
{{- end -}}

{{/* The operator's configuration file read by `--config` (hami.settings): `backends:` settings of the enabled backends */}}
{{- define "hami.configFile" -}}
{{- $backends := dict -}}
{{- range $name, $b := .Values.backends -}}
{{- if $b.enabled -}}{{- $_ := set $backends $name (include "hami.backendConfig" (list $ $name $b) | fromJson) -}}{{- end -}}
{{- end -}}
{{- toYaml (dict "backends" $backends) -}}
{{- end -}}

{{/* The node agent's --config file (hami.node.cli.read_config): backend name -> settings, no wrapper */}}
{{- /* The node agent reads the same settings file as the scheduler (hami.settings). */ -}}
{{- define "hami.agentConfigFile" -}}
{{- include "hami.configFile" . -}}
{{- end -}}

{{- define "hami.leaderElect" -}}
{{- if eq (toString .Values.scheduler.leaderElect) "" -}}
{{- gt (int .Values.scheduler.replicas) 1 -}}
{{- else -}}
{{- .Values.scheduler.leaderElect -}}
{{- end -}}
{{- end -}}

{{/* kube-scheduler follows the cluster: v1.31.4-eks-xyz -> v1.31.4 */}}
{{- define "hami.kubeSchedulerTag" -}}
{{- if .Values.scheduler.kubeScheduler.tag -}}
{{- .Values.scheduler.kubeScheduler.tag -}}
{{- else -}}
{{- regexFind "^v?[0-9]+\\.[0-9]+\\.[0-9]+" .Capabilities.KubeVersion.Version -}}
{{- end -}}
{{- end -}}

{{/* Host paths the agent mounts, each once: NVIDIA's <hookPath>/vgpu (never the whole hook path: it
     would hide the image's /usr/local) and the hostPaths of the enabled backends */}}
{{- define "hami.agentHostPaths" -}}
{{- $paths := list -}}
{{- range $name, $b := .Values.backends -}}
{{- if $b.enabled -}}
{{- if eq $name "nvidia" -}}{{- $paths = append $paths (printf "%s/vgpu" (trimSuffix "/" $.Values.agent.hookPath)) -}}{{- end -}}
{{- range $b.hostPaths -}}{{- $paths = append $paths . -}}{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson (uniq $paths) -}}
{{- end -}}

{{/* Settings of one enabled backend; NVIDIA's hook_path follows agent.hookPath unless set, and a
     hook path other than the default is allowed as a host path (extra_host_paths) */}}
{{- define "hami.backendConfig" -}}
{{- $ := index . 0 -}}{{- $name := index . 1 -}}{{- $b := index . 2 -}}
{{- $cfg := deepCopy (default (dict) $b.config) -}}
{{- if and (eq $name "nvidia") (not (hasKey $cfg "hook_path")) -}}{{- $_ := set $cfg "hook_path" $.Values.agent.hookPath -}}{{- end -}}
{{- if and (eq $name "nvidia") (ne (trimSuffix "/" (toString $cfg.hook_path)) "/usr/local") (not (hasKey $cfg "extra_host_paths")) -}}
{{- $_ := set $cfg "extra_host_paths" (list (printf "%s/vgpu" (trimSuffix "/" (toString $cfg.hook_path)))) -}}
{{- end -}}
{{- toJson $cfg -}}
{{- end -}}

{{- define "hami.restrictedContainer" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{- define "hami.restrictedPod" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}
