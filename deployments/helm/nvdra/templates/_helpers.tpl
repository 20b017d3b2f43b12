{{/* Names, labels and small computed values shared by the templates. */}}

{{- define "nvdra.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "nvdra.fullname" -}}
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

{{- define "nvdra.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride -}}
{{- end -}}

{{- define "nvdra.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "nvdra.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nvdra.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "nvdra.labels" -}}
helm.sh/chart: {{ include "nvdra.chart" . }}
{{ include "nvdra.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Labels of one component; call with (dict "ctx" $ "component" "kubelet-plugin"). */}}
{{- define "nvdra.componentSelectorLabels" -}}
{{ include "nvdra.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "nvdra.componentLabels" -}}
{{ include "nvdra.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "nvdra.image" -}}
{{- printf "%s:%s" .Values.image.repository (default (printf "v%s" .Chart.AppVersion) .Values.image.tag) -}}
{{- end -}}

{{/*
Service accounts. Every pod runs as "<base>-<component>"; the ValidatingAdmissionPolicy names the
kubelet plugin's account through the same helper, so the two cannot drift apart (upstream's chart
matches the base name while its plugin pods run as "<base>-kubeletplugin").
*/}}
{{- define "nvdra.serviceAccountBase" -}}
{{- default (include "nvdra.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}
{{- define "nvdra.kubeletPluginServiceAccount" -}}
{{- printf "%s-kubeletplugin" (include "nvdra.serviceAccountBase" .) -}}
{{- end -}}
{{- define "nvdra.controllerServiceAccount" -}}
{{- printf "%s-controller" (include "nvdra.serviceAccountBase" .) -}}
{{- end -}}
{{- define "nvdra.webhookServiceAccount" -}}
{{- printf "%s-webhook" (include "nvdra.serviceAccountBase" .) -}}
{{- end -}}
{{/* The account the ComputeDomain controller gives the daemons it starts (upstream's name). */}}
{{- define "nvdra.computeDomainDaemonServiceAccount" -}}
compute-domain-daemon-service-account
{{- end -}}

{{/* resource.k8s.io version for DeviceClasses: the forced one, else the highest the cluster serves. */}}
{{- define "nvdra.resourceApiVersion" -}}
{{- if .Values.resourceApiVersion -}}
{{- .Values.resourceApiVersion -}}
{{- else if .Capabilities.APIVersions.Has "resource.k8s.io/v1" -}}
resource.k8s.io/v1
{{- else if .Capabilities.APIVersions.Has "resource.k8s.io/v1beta2" -}}
resource.k8s.io/v1beta2
{{- else if .Capabilities.APIVersions.Has "resource.k8s.io/v1beta1" -}}
resource.k8s.io/v1beta1
{{- else -}}
{{- fail "the cluster serves no resource.k8s.io API (v1, v1beta2 or v1beta1): enable DynamicResourceAllocation (Kubernetes >= 1.32), or set resourceApiVersion" -}}
{{- end -}}
{{- end -}}

{{/* featureGates map → "A=true,B=false" (sorted by name, as Helm ranges maps). */}}
{{- define "nvdra.featureGates" -}}
{{- $pairs := list -}}
{{- range $name, $on := .Values.featureGates -}}
{{- $pairs = append $pairs (printf "%s=%t" $name $on) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}

{{/* logVerbosity N → "-vvvv" (the components count -v flags); empty for 0. */}}
{{- define "nvdra.verbosityFlag" -}}
{{- $n := int .Values.logVerbosity -}}
{{- if gt $n 0 -}}
{{- printf "-%s" (repeat $n "v") -}}
{{- end -}}
{{- end -}}

{{/* Environment shared by the kubelet plugin containers. */}}
{{- define "nvdra.pluginEnv" -}}
- name: NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
- name: NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: CDI_ROOT
  value: /var/run/cdi
- name: NVIDIA_DRIVER_ROOT
  value: {{ .Values.nvidiaDriverRoot | quote }}
- name: DRIVER_ROOT_CTR_PATH
  value: /driver-root
- name: NVIDIA_CDI_HOOK_PATH
  value: {{ .Values.nvidiaCDIHookPath | quote }}
- name: KUBELET_REGISTRAR_DIRECTORY_PATH
  value: {{ .Values.kubeletPlugin.kubeletRegistrarDirectoryPath | quote }}
- name: KUBELET_PLUGINS_DIRECTORY_PATH
  value: {{ .Values.kubeletPlugin.kubeletPluginsDirectoryPath | quote }}
- name: FEATURE_GATES
  value: {{ include "nvdra.featureGates" . | quote }}
- name: NVDRA_SIMULATE
  value: {{ .Values.simulate | quote }}
# The plugin itself needs no GPU; keep the NVIDIA runtime (if it is the default) from injecting any.
- name: NVIDIA_VISIBLE_DEVICES
  value: void
{{- end -}}

{{/* Feature gates nvdra knows (nvdra.core.featuregates, aliases included); tests keep this in sync. */}}
{{- define "nvdra.knownFeatureGates" -}}
{{- list "AllAlpha" "AllBeta" "ComputeDomainCliques" "ConsumableShares" "ContextualLogging" "CrashOnNVLinkFabricErrors" "DRAListTypeAttributes" "DeviceBindingConditions" "DeviceMetadata" "DynamicMIG" "FabricManagerPartitioning" "FabricTopologySupport" "HostManagedIMEXDaemon" "IMEXDaemonsWithDNSNames" "LoggingAlphaOptions" "LoggingBetaOptions" "MPSSupport" "NVMLDeviceHealthCheck" "PassthroughSupport" "TimeSlicingSettings" | toJson -}}
{{- end -}}

{{/* Built-in simulated node profiles (nvdra.nvml.PROFILE_NAMES); tests keep this in sync. */}}
{{- define "nvdra.simulateProfiles" -}}
{{- list "a100-mig" "dgx-a100" "dgx-h100" "gb200-nvl72-tray" "hgx-h200" "pcie-a100-nvlink" "pcie-l4" | toJson -}}
{{- end -}}

{{/* Mounts of both kubelet plugin containers: registration, plugin dirs, CDI specs, driver root. */}}
{{- define "nvdra.pluginMounts" -}}
- name: plugins-registry
  mountPath: {{ .Values.kubeletPlugin.kubeletRegistrarDirectoryPath }}
# Bidirectional: sockets and files the plugin creates here must be visible to the kubelet.
- name: plugins
  mountPath: {{ .Values.kubeletPlugin.kubeletPluginsDirectoryPath }}
  mountPropagation: Bidirectional
- name: cdi
  mountPath: /var/run/cdi
{{- if not .Values.simulate }}
# The driver root (nvidiaDriverRoot); a simulated node has its own, in the plugin directory.
- name: driver-root
  mountPath: /driver-root
  readOnly: true
  mountPropagation: HostToContainer
{{- end }}
{{- end -}}

{{/* imagePullSecrets ([{name: a}, {name: b}]) → "a,b". */}}
{{- define "nvdra.imagePullSecretNames" -}}
{{- $names := list -}}
{{- range .Values.imagePullSecrets -}}
{{- $names = append $names .name -}}
{{- end -}}
{{- join "," $names -}}
{{- end -}}
