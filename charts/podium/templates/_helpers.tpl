{{/*
The name of the chart's objects: fullnameOverride, else the release name when it contains the
chart's name ("podium"), else <release>-podium.
*/}}
{{- define "podium.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/*
The label on every object and the pods' selector, one line (templates put it in a flow map).
Deliberately only the name, as in the plain manifests: a Deployment's selector cannot change, so
an install from config/ stays upgradable.
*/}}
{{- define "podium.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
{{- end -}}

{{/*
The controller's rules on ElectionGroups, pods, Events and Leases: those of the ClusterRole, or
of the Role in watchNamespace.
*/}}
{{- define "podium.rules" -}}
# Watch groups; add/remove the finalizer and clear the handoff annotation.
- apiGroups: [podium.dev]
  resources: [electiongroups]
  verbs: [get, list, watch, patch]
- apiGroups: [podium.dev]
  resources: [electiongroups/status]
  verbs: [patch]
# Lets the Lease mirror name its group as owner (blockOwnerDeletion).
- apiGroups: [podium.dev]
  resources: [electiongroups/finalizers]
  verbs: [update]
# Read member pods; write podium's own labels and annotations on them.
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, patch]
# The owned route (spec.service): the Services podium creates for groups and the EndpointSlices
# it writes for them, watched by podium's managed-by label; created, updated or patched on the
# version read, deleted when the spec drops them.
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch, create, update, patch, delete]
# One new Event per occurrence (never a patched series).
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create]
{{- if .Values.watchNamespace }}
# The per-group Lease mirror (publishLease).
{{- else }}
# The controller's own election Lease, the per-group mirror (publishLease), and reading the
# node Leases in kube-node-lease of the nodes hosting leaders (node loss).
{{- end }}
# Leases are created and then replaced whole, conditionally on their resourceVersion.
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, list, watch, create, update]
{{- end -}}
