{{/* HAMi (Project-HAMi/HAMi charts/hami, v2.10) values keys. Users switching from HAMi pass them with
     --set or keep them in their values files; each is either mapped onto this chart's values (the
     helpers below and in _helpers.tpl read both) or refused by "hami.compat.check" with a message
     naming the key to use. Nothing is ignored silently. docs/migrating-from-hami.md, "Helm values". */}}

{{/* HAMi keys that exist only in HAMi's chart (ours validate them in values.schema.json) */}}
{{- define "hami.compat.roots" -}}
{{- toJson (list "global" "namespaceOverride" "resourceName" "resourceMem" "resourceMemPercentage" "resourceCores" "resourcePriority"
  "mluResourceName" "mluResourceMem" "mluResourceCores" "dcuResourceName" "dcuResourceMem" "dcuResourceCores"
  "metaxResourceName" "metaxResourceCore" "metaxResourceMem" "metaxsGPUTopologyAware" "enflameResourceNameDRSGCU"
  "enflameResourceNameGCUMemory" "enflameResourceNameGCUCore" "kunlunResourceName" "kunlunResourceVCountName"
  "kunlunResourceVMemoryName" "vastaiResourceName" "birenResourceName" "podSecurityPolicy" "devicePlugin"
  "mockDevicePlugin" "devices" "legacyMetrics" "prometheus" "device-config") -}}
{{- end -}}
{{- define "hami.compat.schedulerRoots" -}}
{{- toJson (list "nodeName" "nodeLabelSelector" "overwriteEnv" "defaultSchedulerPolicy" "metricsBindAddress"
  "forceOverwriteDefaultScheduler" "livenessProbe" "extender" "nodeLockExpire" "admissionWebhook" "certManager" "patch" "service") -}}
{{- end -}}

{{/* Keys the chart maps (regular expressions over dotted paths; a map key covers its leaves) */}}
{{- define "hami.compat.mapped" -}}
{{- toJson (list
  "^global\\.(imageRegistry|imageTag|imagePullSecrets|gpuHookPath)$"
  "^legacyMetrics$"
  "^(resource|mluResource|dcuResource)(Name|Mem|MemPercentage|Cores|Priority)$"
  "^scheduler\\.defaultSchedulerPolicy\\.(nodeSchedulerPolicy|gpuSchedulerPolicy)$"
  "^scheduler\\.kubeScheduler\\.imageTag$"
  "^scheduler\\.kubeScheduler\\.image\\.(registry|repository|tag|pullPolicy|pullSecrets)$"
  "^scheduler\\.extender\\.image\\.(tag|pullSecrets)$"
  "^scheduler\\.extender\\.resources(\\.|$)"
  "^scheduler\\.admissionWebhook\\.(failurePolicy|whitelistNamespaces|reinvocationPolicy)$"
  "^scheduler\\.admissionWebhook\\.(namespaceSelector|objectSelector)\\.(matchLabels|matchExpressions)(\\.|$)"
  "^scheduler\\.certManager\\.enabled$"
  "^devicePlugin\\.(image|monitor\\.image)\\.(tag|pullSecrets)$"
  "^devicePlugin\\.(enabled|deviceSplitCount|deviceMemoryScaling|deviceCoreScaling|deviceListStrategy|tolerations|runtimeClassName|pluginPath)$"
  "^devicePlugin\\.(nvidiaNodeSelector|podAnnotations|resources)(\\.|$)"
  "^devices\\.(nvidia|ascend|cambricon|hygon|amd|awsneuron|mthreads|iluvatar|metax|kunlun|enflame|biren|vastai)\\.enabled$"
  "^devices\\.ascend\\.(nodeSelector|tolerations)(\\.|$)"
  "^devices\\.nvidia\\.(gpuCorePolicy|libCudaLogLevel)$"
  ) -}}
{{- end -}}

{{/* Keys with no effect here at the given value (JSON), or at any value ("*"): what they ask for is
     what this chart does anyway */}}
{{- define "hami.compat.noop" -}}
{{- toJson (dict
  "^devices\\.[^.]+\\.customresources$" "*"
  "^scheduler\\.admissionWebhook\\.customURL\\.(host|port|path)$" "*"
  "^scheduler\\.kubeScheduler\\.enabled$" "true"
  "^scheduler\\.admissionWebhook\\.enabled$" "true"
  "^scheduler\\.admissionWebhook\\.customURL\\.enabled$" "false"
  "^scheduler\\.admissionWebhook\\.manageNamespaceSelector$" "true"
  "^scheduler\\.patch\\.enabled$" "true"
  "^scheduler\\.(forceOverwriteDefaultScheduler)$" "true"
  "^scheduler\\.overwriteEnv$" "\"false\""
  "^(mockDevicePlugin|podSecurityPolicy|prometheus)\\.enabled$" "false"
  "^devicePlugin\\.migStrategy$" "\"none\""
  "^devicePlugin\\.libPath$" "\"/usr/local/vgpu\""
  "^(scheduler\\.extender|devicePlugin|devicePlugin\\.monitor)\\.image\\.pullPolicy$" "\"IfNotPresent\""
  "^devices\\.[^.]+\\.enabled$" "false"
  ) -}}
{{- end -}}

{{/* What to use instead, for keys refused at their given value */}}
{{- define "hami.compat.hint" -}}
{{- $p := . -}}
{{- if regexMatch "^(scheduler\\.extender|devicePlugin|devicePlugin\\.monitor|mockDevicePlugin)\\.image\\.(registry|repository)$" $p -}}one image runs every hami container: set image.repository (global.imageRegistry rewrites its registry)
{{- else if regexMatch "\\.image\\.pullPolicy$" $p -}}set image.pullPolicy
{{- else if eq $p "scheduler.nodeLockExpire" -}}set scheduler.lockExpirySeconds (seconds)
{{- else if eq $p "scheduler.admissionWebhook.enabled" -}}the webhook is how pods reach the hami scheduler; keep pods out with webhook.excludeNamespaces or the label hami.io/webhook=ignore
{{- else if eq $p "scheduler.admissionWebhook.customURL.enabled" -}}not supported: the webhook is always reached through the scheduler Service
{{- else if eq $p "scheduler.admissionWebhook.manageNamespaceSelector" -}}not supported: the chart always manages the namespaceSelector (it keeps the webhook out of the release namespace)
{{- else if eq $p "scheduler.kubeScheduler.enabled" -}}not supported: kube-scheduler always runs beside the extender
{{- else if regexMatch "^scheduler\\.(patch|certManager)\\." $p -}}TLS comes from the hami certs jobs (tls.certgen.*) or cert-manager (tls.certManager.enabled, tls.certManager.issuerRef)
{{- else if regexMatch "^scheduler\\.service\\." $p -}}the scheduler Service is a ClusterIP on port 443 → scheduler.port; the extender serves /metrics there
{{- else if regexMatch "^scheduler\\.extender\\.extraArgs$" $p -}}set scheduler.logVerbosity
{{- else if regexMatch "^devicePlugin\\.(extraArgs|extraEnvs)$" $p -}}set agent.logLevel or agent.extraEnv
{{- else if regexMatch "^devicePlugin\\.monitor\\." $p -}}the agent serves the monitor's metrics: agent.metrics.enabled, agent.metrics.port
{{- else if regexMatch "^devicePlugin\\.nodeConfiguration\\." $p -}}per-node settings: backends.nvidia.config.nodes.<node>.{split_count, memory_scaling, core_scaling, mode, include, exclude}
{{- else if regexMatch "^devicePlugin\\.(service\\.|hostPID|hostNetwork|securityContext)" $p -}}the agent's pod is set by agent.privileged and agent.metrics.*
{{- else if regexMatch "^devices\\.[^.]+\\.enabled$" $p -}}no such backend in this chart (backends: nvidia, ascend, cambricon, hygon, amd, awsneuron, mthreads, iluvatar, metax, kunlunxin, enflame, biren, vastai)
{{- else if regexMatch "^(metax|kunlun)" $p -}}the metax and kunlunxin backends use HAMi's default resource names; turn them on with backends.metax.enabled / backends.kunlunxin.enabled (or devices.kunlun.enabled)
{{- else if regexMatch "^(enflame|vastai|biren)" $p -}}the enflame, biren and vastai backends use HAMi's default resource names; turn them on with backends.enflame.enabled / backends.biren.enabled / backends.vastai.enabled (or devices.<name>.enabled)
{{- else if eq $p "namespaceOverride" -}}install into the namespace you want (-n)
{{- else if eq $p "scheduler.metricsBindAddress" -}}the scheduler serves /metrics on scheduler.port
{{- else -}}no equivalent in this chart
{{- end -}}
{{- end -}}

{{/* "path<TAB>json" lines for the leaves under one value (empty maps are leaves; lists are leaves) */}}
{{- define "hami.compat.leaves" -}}
{{- $path := index . 0 -}}{{- $value := index . 1 -}}
{{- if and (kindIs "map" $value) (gt (len $value) 0) -}}
{{- range $k, $v := $value -}}{{- include "hami.compat.leaves" (list (printf "%s.%s" $path $k) $v) -}}{{- end -}}
{{- else -}}
{{- printf "%s\t%s\n" $path (toJson $value) -}}
{{- end -}}
{{- end -}}

{{/* Fails the install on a HAMi key the chart cannot honour, or on two keys that disagree */}}
{{- define "hami.compat.check" -}}
{{- $v := .Values.AsMap -}}
{{- $lines := "" -}}
{{- range (include "hami.compat.roots" . | fromJsonArray) -}}
{{- if hasKey $v . -}}{{- $lines = print $lines (include "hami.compat.leaves" (list . (get $v .))) -}}{{- end -}}
{{- end -}}
{{- range (include "hami.compat.schedulerRoots" . | fromJsonArray) -}}
{{- if hasKey $.Values.scheduler . -}}{{- $lines = print $lines (include "hami.compat.leaves" (list (printf "scheduler.%s" .) (get $.Values.scheduler .))) -}}{{- end -}}
{{- end -}}
{{- range $k := list "imageTag" "extraNewArgs" "enabled" -}}
{{- if hasKey $.Values.scheduler.kubeScheduler $k -}}{{- $lines = print $lines (include "hami.compat.leaves" (list (printf "scheduler.kubeScheduler.%s" $k) (get $.Values.scheduler.kubeScheduler $k))) -}}{{- end -}}
{{- end -}}
{{- $mapped := include "hami.compat.mapped" . | fromJsonArray -}}
{{- $noop := include "hami.compat.noop" . | fromJson -}}
{{- $defaults := .Files.Get "compat/hami-v2.10-defaults.yaml" | fromYaml -}}
{{- $refused := list -}}
{{- range (splitList "\n" (trimSuffix "\n" $lines)) -}}
{{- if . -}}
{{- $parts := splitn "\t" 2 . -}}{{- $path := $parts._0 -}}{{- $json := $parts._1 -}}
{{- $ok := or (has $json (list "\"\"" "null" "[]" "{}")) (eq (get $defaults $path | default "-") $json) -}}
{{- range $mapped -}}{{- if regexMatch . $path -}}{{- $ok = true -}}{{- end -}}{{- end -}}
{{- range $re, $want := $noop -}}{{- if and (regexMatch $re $path) (or (eq $want "*") (eq $want $json)) -}}{{- $ok = true -}}{{- end -}}{{- end -}}
{{- if not $ok -}}{{- $refused = append $refused (printf "  %s=%s: %s" $path ($json | trunc 60) (include "hami.compat.hint" $path)) -}}{{- end -}}
{{- end -}}
{{- end -}}
{{- if $refused -}}
{{- fail (printf "\nHAMi chart values this chart cannot honour (see docs/migrating-from-hami.md, Helm values):\n%s" (join "\n" $refused)) -}}
{{- end -}}
{{- $_ := include "hami.kubeSchedulerTag" . -}}
{{- $_ := include "hami.imageTag" . -}}
{{- $_ := include "hami.backendConfig" (list . "nvidia" .Values.backends.nvidia) -}}
{{- end -}}

{{/* One value from several keys: the given ones must agree. Argument: list of (key name, value) pairs; "" when none is given */}}
{{- define "hami.compat.one" -}}
{{- $found := dict -}}
{{- range . -}}
{{- $val := index . 1 -}}
{{- if not (or (kindIs "invalid" $val) (eq (toString $val) "")) -}}{{- $_ := set $found (index . 0) (toString $val) -}}{{- end -}}
{{- end -}}
{{- if gt (len (uniq (values $found))) 1 -}}
{{- $given := list -}}{{- range $k, $val := $found -}}{{- $given = append $given (printf "%s=%s" $k $val) -}}{{- end -}}
{{- fail (printf "values disagree: %s; set one of them (docs/migrating-from-hami.md, Helm values)" (join ", " $given)) -}}
{{- end -}}
{{- values $found | first | default "" -}}
{{- end -}}

{{/* <registry>/<path> of an image reference with its registry replaced (global.imageRegistry) */}}
{{- define "hami.compat.withRegistry" -}}
{{- $ref := index . 0 -}}{{- $registry := index . 1 -}}
{{- if $registry -}}
{{- $parts := splitList "/" $ref -}}
{{- if and (gt (len $parts) 1) (regexMatch "[.:]|^localhost$" (first $parts)) -}}{{- $parts = rest $parts -}}{{- end -}}
{{- printf "%s/%s" (trimSuffix "/" $registry) (join "/" $parts) -}}
{{- else -}}
{{- $ref -}}
{{- end -}}
{{- end -}}

{{/* The pull secrets of every pod: imagePullSecrets, HAMi's global.imagePullSecrets (names or {name}) and the per-image pullSecrets */}}
{{- define "hami.pullSecrets" -}}
{{- $v := .Values.AsMap -}}
{{- $all := concat (default (list) .Values.imagePullSecrets) (default (list) (dig "global" "imagePullSecrets" (list) $v)) -}}
{{- $monitor := dig "devicePlugin" "monitor" nil $v -}}
{{- range $image := list (dig "scheduler" "extender" "image" nil $v) .Values.scheduler.kubeScheduler.image (dig "devicePlugin" "image" nil $v) (and (kindIs "map" $monitor) (get $monitor "image")) -}}
{{- if kindIs "map" $image -}}{{- $all = concat $all (default (list) $image.pullSecrets) -}}{{- end -}}
{{- end -}}
{{- $names := list -}}
{{- range $all -}}{{- if kindIs "map" . -}}{{- $names = append $names .name -}}{{- else -}}{{- $names = append $names . -}}{{- end -}}{{- end -}}
{{- $out := list -}}
{{- range (uniq $names) -}}{{- $out = append $out (dict "name" .) -}}{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* The backends in use: backends.<name>.enabled, or HAMi's devices.<name>.enabled when given (kunlunxin: devices.kunlun) */}}
{{- define "hami.backendOn" -}}
{{- $ := index . 0 -}}{{- $name := index . 1 -}}
{{- $up := dig "devices" (get (dict "kunlunxin" "kunlun") $name | default $name) "enabled" nil $.Values.AsMap -}}
{{- if kindIs "bool" $up -}}{{- $up -}}{{- else -}}{{- (get $.Values.backends $name).enabled | default false -}}{{- end -}}
{{- end -}}

{{/* Where the agent runs: agent.nodeSelector, or HAMi's devicePlugin.nvidiaNodeSelector /
     devices.ascend.nodeSelector of the backends in use, when given (HAMi runs a DaemonSet per vendor
     with its own selector; one agent serves them all: several selectors become node affinity terms,
     any of which places it) */}}
{{- define "hami.agentPlacement" -}}
{{- $v := .Values.AsMap -}}
{{- $selectors := list -}}
{{- range $pair := list (list "nvidia" (dig "devicePlugin" "nvidiaNodeSelector" nil $v)) (list "ascend" (dig "devices" "ascend" "nodeSelector" nil $v)) -}}
{{- if and (index $pair 1) (eq (include "hami.backendOn" (list $ (index $pair 0))) "true") -}}{{- $selectors = append $selectors (index $pair 1) -}}{{- end -}}
{{- end -}}
{{- $selectors = uniq $selectors -}}
{{- if eq (len $selectors) 0 -}}
{{- toJson (dict "nodeSelector" .Values.agent.nodeSelector "affinity" .Values.agent.affinity) -}}
{{- else if eq (len $selectors) 1 -}}
{{- toJson (dict "nodeSelector" (first $selectors) "affinity" .Values.agent.affinity) -}}
{{- else -}}
{{- if .Values.agent.affinity -}}{{- fail "devicePlugin.nvidiaNodeSelector and devices.ascend.nodeSelector become the agent's node affinity: leave agent.affinity empty" -}}{{- end -}}
{{- $terms := list -}}
{{- range $selectors -}}
{{- $exprs := list -}}
{{- range $k, $val := . -}}{{- $exprs = append $exprs (dict "key" $k "operator" "In" "values" (list (toString $val))) -}}{{- end -}}
{{- $terms = append $terms (dict "matchExpressions" $exprs) -}}
{{- end -}}
{{- toJson (dict "nodeSelector" (dict) "affinity" (dict "nodeAffinity" (dict "requiredDuringSchedulingIgnoredDuringExecution" (dict "nodeSelectorTerms" $terms)))) -}}
{{- end -}}
{{- end -}}

{{/* The node agent runs: agent.enabled, or HAMi's devicePlugin.enabled when given */}}
{{- define "hami.agentOn" -}}
{{- $up := dig "devicePlugin" "enabled" nil .Values.AsMap -}}
{{- if kindIs "bool" $up -}}{{- $up -}}{{- else -}}{{- .Values.agent.enabled -}}{{- end -}}
{{- end -}}

{{/* kube-scheduler's extra arguments. HAMi's chart passes its scheduler.kubeScheduler.extraArgs only to
     clusters older than 1.22 (templates/scheduler/deployment.yaml); at HAMi's default they are no choice
     of the user's, and --policy-config-file no longer exists in any kube-scheduler this chart supports */}}
{{- define "hami.kubeSchedulerExtraArgs" -}}
{{- $args := .Values.scheduler.kubeScheduler.extraArgs | default (list) -}}
{{- if eq (toJson $args) (get (.Files.Get "compat/hami-v2.10-defaults.yaml" | fromYaml) "scheduler.kubeScheduler.extraArgs") -}}{{- $args = list -}}{{- end -}}
{{- range $args -}}
{{- if hasPrefix "--policy-config-file" (toString .) -}}{{- fail (printf "scheduler.kubeScheduler.extraArgs: %s: kube-scheduler has no policy files since 1.23; this chart generates its KubeSchedulerConfiguration (docs/deployment.md)" .) -}}{{- end -}}
{{- end -}}
{{- toJson $args -}}
{{- end -}}
