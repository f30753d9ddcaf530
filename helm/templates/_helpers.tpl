{{/* Names, labels and the pieces several templates share. */}}

{{- define "di.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "di.fullname" -}}
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

{{- define "di.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "di.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one component: call with (list $ "node"). */}}
{{- define "di.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "di.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "di.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "di.clusterSecret" -}}
{{- default (printf "%s-cluster-secret" (include "di.fullname" .)) .Values.clusterSecret.existingSecret }}
{{- end }}

{{/* The tracker reads its secret at start: a new secret value restarts it. */}}
{{- define "di.secretChecksum" -}}
checksum/cluster-secret: {{ printf "%s/%s" .Values.clusterSecret.value .Values.clusterSecret.existingSecret | sha256sum | trunc 16 | quote }}
{{- end }}

{{- define "di.trackerTLSSecret" -}}
{{- default (printf "%s-tracker-tls" (include "di.fullname" .)) .Values.tracker.tls.existingSecret }}
{{- end }}

{{/* Whether the tracker keeps its state in a store its replicas share ("true" or ""). */}}
{{- define "di.trackerShared" -}}
{{- if or .Values.tracker.store.existingSecret .Values.redis.enabled }}true{{ end }}
{{- end }}

{{- define "di.trackerReplicas" -}}
{{- if .Values.tracker.replicas }}{{ int .Values.tracker.replicas }}
{{- else if include "di.trackerShared" . }}3
{{- else }}1
{{- end }}
{{- end }}

{{/* The Secret and key holding the store's URL. */}}
{{- define "di.storeSecret" -}}
{{- default (printf "%s-redis" (include "di.fullname" .)) .Values.tracker.store.existingSecret }}
{{- end }}

{{- define "di.storeKey" -}}
{{- if .Values.tracker.store.existingSecret }}{{ .Values.tracker.store.key }}{{ else }}url{{ end }}
{{- end }}

{{/* Nodes reach every replica: a headless Service's name resolves to all of them (nodes move
     to another when theirs fails); a single tracker is reached through its Service. */}}
{{- define "di.trackerAddress" -}}
{{- $service := printf "%s-tracker" (include "di.fullname" .) }}
{{- if include "di.trackerShared" . }}
{{- $service = printf "%s-tracker-headless" (include "di.fullname" .) }}
{{- end }}
{{- printf "%s.%s.svc.%s:%d" $service .Release.Namespace .Values.clusterDomain (int .Values.tracker.grpcPort) }}
{{- end }}

{{/* Whether the registry API listens on the host's loopback only (hostNetwork). */}}
{{- define "di.loopback" -}}
{{- if and .Values.node.hostNetwork .Values.node.registryOnLoopback }}true{{ end }}
{{- end }}

{{/* The node's registry API as this host reaches it: its loopback, or the host's IP. */}}
{{- define "di.nodeURL" -}}
{{- printf "http://%s:%d" (ternary "127.0.0.1" "$(NODE_IP)" (eq (include "di.loopback" .) "true")) (int .Values.node.port) }}
{{- end }}

{{/* The named container port of /metrics, /healthz and /readyz. */}}
{{- define "di.probePort" -}}
{{- if include "di.loopback" . }}metrics{{ else }}registry{{ end }}
{{- end }}

{{/* The mirror URL containerd is given: the node on this host. */}}
{{- define "di.mirror" -}}
{{- default (include "di.nodeURL" .) .Values.containerd.mirror }}
{{- end }}

{{/* `containerd-config` arguments shared by the init container and the uninstall hook. */}}
{{- define "di.containerdConfigArgs" -}}
- containerd-config
- --hosts-dir={{ .Values.containerd.hostsDir }}
- --mirror={{ include "di.mirror" . }}
- --dial-timeout={{ .Values.containerd.dialTimeout }}
{{- range .Values.node.registries }}
- --registry={{ . }}
{{- end }}
{{- end }}

{{- define "di.nodeIPEnv" -}}
- name: NODE_IP
  valueFrom:
    fieldRef:
      fieldPath: status.hostIP
{{- end }}

{{/* A container that runs as root only to write host files; call with a list of capabilities
     to add (empty: none, as root owns the files it writes). */}}
{{- define "di.rootSecurityContext" -}}
runAsUser: 0
runAsNonRoot: false
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
  {{- with . }}
  add: {{ toJson . }}
  {{- end }}
{{- end }}

{{- define "di.nonRootSecurityContext" -}}
runAsUser: {{ . }}
runAsGroup: {{ . }}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end }}
