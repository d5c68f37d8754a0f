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

{{/* The hami image; HAMi's global.imageRegistry rewrites its registry, and HAMi's per-component tags
     and global.imageTag stand in for image.tag (_compat.tpl) */}}
{{- define "hami.image" -}}
{{- $repository := include "hami.compat.withRegistry" (list .Values.image.repository (dig "global" "imageRegistry" "" .Values.AsMap)) -}}
{{- printf "%s:%s" $repository (include "hami.imageTag" .) -}}
{{- end -}}

{{- define "hami.imageTag" -}}
{{- $v := .Values.AsMap -}}
{{- $monitor := dig "devicePlugin" "monitor" nil $v -}}
{{- $monitorTag := "" -}}{{- if kindIs "map" $monitor -}}{{- $monitorTag = dig "image" "tag" "" $monitor -}}{{- end -}}
{{- $component := include "hami.compat.one" (list
  (list "image.tag" .Values.image.tag)
  (list "scheduler.extender.image.tag" (dig "scheduler" "extender" "image" "tag" nil $v))
  (list "devicePlugin.image.tag" (dig "devicePlugin" "image" "tag" nil $v))
  (list "devicePlugin.monitor.image.tag" $monitorTag)) -}}
{{- /* HAMi's default global.imageTag names HAMi's own release, not an image of ours: no choice of the user's */ -}}
{{- $global := dig "global" "imageTag" "" $v -}}
{{- if eq (toJson $global) (get (.Files.Get "compat/hami-v2.10-defaults.yaml" | fromYaml) "global.imageTag") -}}{{- $global = "" -}}{{- end -}}
{{- $global = toString $global -}}
{{- $component | default $global | default .Chart.AppVersion -}}
{{- end -}}

{{/* kube-scheduler's image: scheduler.kubeScheduler.image is HAMi's {registry, repository, tag} or a full reference */}}
{{- define "hami.kubeSchedulerImage" -}}
{{- $image := .Values.scheduler.kubeScheduler.image -}}
{{- $registry := dig "global" "imageRegistry" "" .Values.AsMap -}}
{{- $ref := "" -}}
{{- if kindIs "map" $image -}}
{{- $ref = printf "%s/%s" (default "registry.k8s.io" ($registry | default $image.registry)) (default "kube-scheduler" $image.repository) -}}
{{- else -}}
{{- $ref = include "hami.compat.withRegistry" (list (default "registry.k8s.io/kube-scheduler" $image) $registry) -}}
{{- end -}}
{{- printf "%s:%s" $ref (include "hami.kubeSchedulerTag" .) -}}
{{- end -}}

{{- define "hami.kubeSchedulerPullPolicy" -}}
{{- $image := .Values.scheduler.kubeScheduler.image -}}
{{- (and (kindIs "map" $image) $image.pullPolicy) | default .Values.image.pullPolicy -}}
{{- end -}}

{{/* Default policies: ours, or HAMi's scheduler.defaultSchedulerPolicy when given */}}
{{- define "hami.nodePolicy" -}}
{{- dig "scheduler" "defaultSchedulerPolicy" "nodeSchedulerPolicy" "" .Values.AsMap | default .Values.scheduler.nodePolicy -}}
{{- end -}}
{{- define "hami.devicePolicy" -}}
{{- dig "scheduler" "defaultSchedulerPolicy" "gpuSchedulerPolicy" "" .Values.AsMap | default .Values.scheduler.devicePolicy -}}
{{- end -}}

{{/* The version suffix of the libvgpu.so the hami-core init container installs (agent.hamiCore) */}}
{{- define "hami.libvgpuVersion" -}}
{{- .Values.agent.hamiCore.libvgpuVersion | default .Values.agent.hamiCore.image.tag -}}
{{- end -}}

{{/* HAMi-core's host directory: agent.hookPath, or HAMi's global.gpuHookPath when given */}}
{{- define "hami.hookPath" -}}
{{- dig "global" "gpuHookPath" "" .Values.AsMap | default .Values.agent.hookPath -}}
{{- end -}}

{{- define "hami.schedulerName" -}}{{ include "hami.fullname" . }}-scheduler{{- end -}}
{{- define "hami.agentName" -}}{{ include "hami.fullname" . }}-agent{{- end -}}
{{- define "hami.certsName" -}}{{ include "hami.fullname" . }}-certs{{- end -}}
{{- define "hami.webhookName" -}}{{ include "hami.fullname" . }}-webhook{{- end -}}
{{- define "hami.tlsSecret" -}}{{ default (printf "%s-tls" (include "hami.fullname" .)) .Values.tls.secretName }}{{- end -}}
{{- define "hami.signingSecret" -}}{{ default (printf "%s-signing-key" (include "hami.fullname" .)) .Values.signing.existingSecret }}{{- end -}}
{{- define "hami.signingPublicKey" -}}{{ default (printf "%s-signing-public-key" (include "hami.fullname" .)) .Values.signing.existingPublicKeyConfigMap }}{{- end -}}
{{/* "true" when the scheduler's Secret (made by this chart, seen by lookup) holds an older release's HMAC key */}}
{{- define "hami.legacyHmac" -}}
{{- if not .Values.signing.existingSecret -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "hami.signingSecret" .) -}}
{{- $data := dict -}}{{- if and $existing $existing.data -}}{{- $data = $existing.data -}}{{- end -}}
{{- $old := index $data "key" | default "" | b64dec -}}
{{- if or (index $data "legacy-hmac-key") (and $old (not (hasPrefix "-----BEGIN" $old))) -}}true{{- end -}}
{{- end -}}
{{- end -}}

{{/* HAMI_BACKENDS: the enabled backends, comma separated, in name order */}}
{{- define "hami.enabledBackends" -}}
{{- $names := list -}}
{{- range $name, $b := .Values.backends -}}
{{- if eq (include "hami.backendOn" (list $ $name)) "true" -}}{{- $names = append $names $name -}}{{- end -}}
{{- end -}}
{{- join "," $names -}}
{{- end -}}

{{/* The operator's configuration file read by `--config` (hami.settings): `backends:` settings of the enabled backends */}}
{{- define "hami.configFile" -}}
{{- $backends := dict -}}
{{- range $name, $b := .Values.backends -}}
{{- if eq (include "hami.backendOn" (list $ $name)) "true" -}}{{- $_ := set $backends $name (include "hami.backendConfig" (list $ $name $b) | fromJson) -}}{{- end -}}
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
{{- $image := .Values.scheduler.kubeScheduler.image -}}
{{- $imageTag := "" -}}{{- if kindIs "map" $image -}}{{- $imageTag = $image.tag -}}{{- end -}}
{{- $pinned := include "hami.compat.one" (list
  (list "scheduler.kubeScheduler.tag" .Values.scheduler.kubeScheduler.tag)
  (list "scheduler.kubeScheduler.image.tag" $imageTag)
  (list "scheduler.kubeScheduler.imageTag" (get .Values.scheduler.kubeScheduler "imageTag"))) -}}
{{- if $pinned -}}
{{- $pinned -}}
{{- else -}}
{{- regexFind "^v?[0-9]+\\.[0-9]+\\.[0-9]+" .Capabilities.KubeVersion.Version -}}
{{- end -}}
{{- end -}}

{{/* Host paths the agent mounts, each once: NVIDIA's <hookPath>/vgpu (never the whole hook path: it
     would hide the image's /usr/local) and the hostPaths of the enabled backends */}}
{{- define "hami.agentHostPaths" -}}
{{- $paths := list -}}
{{- range $name, $b := .Values.backends -}}
{{- if eq (include "hami.backendOn" (list $ $name)) "true" -}}
{{- if eq $name "nvidia" -}}{{- $paths = append $paths (printf "%s/vgpu" (trimSuffix "/" (include "hami.hookPath" $))) -}}{{- end -}}
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
{{- $v := $.Values.AsMap -}}
{{- /* HAMi's devicePlugin.* and devices.nvidia.* (charts/hami/templates/scheduler/device-configmap.yaml: the nvidia section) */ -}}
{{- if eq $name "nvidia" -}}
{{- $strategies := dict "envvar" "envvar" "cdi-annotations" "cdi" "cdi-cri" "cdi" -}}
{{- range $pair := list (list "devicePlugin" "deviceSplitCount" "split_count") (list "devicePlugin" "deviceMemoryScaling" "memory_scaling") (list "devicePlugin" "deviceCoreScaling" "core_scaling") (list "devicePlugin" "deviceListStrategy" "device_list_strategy") (list "devices.nvidia" "gpuCorePolicy" "core_utilization_policy") (list "devices.nvidia" "libCudaLogLevel" "libcuda_log_level") -}}
{{- $section := index $pair 0 -}}{{- $key := index $pair 1 -}}{{- $ours := index $pair 2 -}}
{{- $up := "" -}}
{{- if eq $section "devicePlugin" -}}{{- $up = dig "devicePlugin" $key nil $v -}}{{- else -}}{{- $up = dig "devices" "nvidia" $key nil $v -}}{{- end -}}
{{- if and (not (kindIs "invalid" $up)) (ne (toString $up) "") -}}
{{- if eq $ours "device_list_strategy" -}}
{{- if not (hasKey $strategies (toString $up)) -}}{{- fail (printf "devicePlugin.deviceListStrategy=%s: supported here: envvar, cdi-annotations (backends.nvidia.config.device_list_strategy: envvar or cdi)" (toString $up)) -}}{{- end -}}
{{- $up = get $strategies (toString $up) -}}
{{- end -}}
{{- if eq $ours "libcuda_log_level" -}}{{- $up = toString $up -}}{{- end -}}
{{- /* --set hands numbers over as strings except integers; the backend wants numbers */ -}}
{{- if eq $ours "split_count" -}}{{- $up = int $up -}}{{- end -}}
{{- if has $ours (list "memory_scaling" "core_scaling") -}}{{- $up = float64 $up -}}{{- end -}}
{{- if and (hasKey $cfg $ours) (ne (toString (get $cfg $ours)) (toString $up)) -}}
{{- fail (printf "values disagree: %s.%s=%v and backends.nvidia.config.%s=%v; set one of them" $section $key $up $ours (get $cfg $ours)) -}}
{{- end -}}
{{- $_ := set $cfg $ours $up -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- /* HAMi's resource name keys (device-configmap.yaml: resourceCountName & co.) → resource_names */ -}}
{{- $prefix := get (dict "nvidia" "resource" "cambricon" "mluResource" "hygon" "dcuResource") $name -}}
{{- if $prefix -}}
{{- $names := dict -}}
{{- range $pair := list (list "Name" "count") (list "Mem" "memory") (list "MemPercentage" "memory_percentage") (list "Cores" "cores") (list "Priority" "priority") -}}
{{- $given := get $v (printf "%s%s" $prefix (index $pair 0)) -}}
{{- if $given -}}{{- $_ := set $names (index $pair 1) $given -}}{{- end -}}
{{- end -}}
{{- if $names -}}
{{- if and (hasKey $cfg "resource_names") (ne (toJson (get $cfg "resource_names")) (toJson (merge (deepCopy $names) (get $cfg "resource_names")))) -}}
{{- fail (printf "values disagree: HAMi's %s* keys and backends.%s.config.resource_names; set one of them" $prefix $name) -}}
{{- end -}}
{{- $_ := set $cfg "resource_names" (merge (default (dict) (get $cfg "resource_names")) $names) -}}
{{- end -}}
{{- end -}}
{{- if and (eq $name "nvidia") $.Values.agent.hamiCore.enabled (not (hasKey $cfg "libvgpu_version")) -}}{{- $_ := set $cfg "libvgpu_version" (include "hami.libvgpuVersion" $) -}}{{- end -}}
{{- if and (eq $name "nvidia") (not (hasKey $cfg "hook_path")) -}}{{- $_ := set $cfg "hook_path" (include "hami.hookPath" $) -}}{{- end -}}
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
