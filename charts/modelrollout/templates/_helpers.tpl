{{/* Object names: <release>-<chart>, or the release name when it already holds the chart name. */}}
{{- define "modelrollout.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "modelrollout.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "modelrollout.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "modelrollout.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modelrollout
{{- end -}}

{{/* Selector labels of the controller pods. */}}
{{- define "modelrollout.controller.selector" -}}
app.kubernetes.io/name: {{ include "modelrollout.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end -}}

{{/* Selector labels of the gateway proxy pods. */}}
{{- define "modelrollout.proxy.selector" -}}
app.kubernetes.io/name: {{ include "modelrollout.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: proxy
{{- end -}}

{{- define "modelrollout.controller.name" -}}
{{- printf "%s-controller" (include "modelrollout.fullname" .) -}}
{{- end -}}

{{- define "modelrollout.proxy.name" -}}
{{- printf "%s-proxy" (include "modelrollout.fullname" .) -}}
{{- end -}}

{{/* The controller's ServiceAccount. */}}
{{- define "modelrollout.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "modelrollout.controller.name" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name: with serviceAccount.create=false, name the existing ServiceAccount the controller runs as" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The namespace of the gateway's routing ConfigMap. */}}
{{- define "modelrollout.proxy.routingNamespace" -}}
{{- default .Release.Namespace .Values.proxy.routing.namespace -}}
{{- end -}}

{{/* An image reference: repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "modelrollout.image" -}}
{{- printf "%s:%s" .image.repository (default .chart.AppVersion .image.tag) -}}
{{- end -}}

{{/* Preferred anti-affinity spreading a component's replicas over nodes. */}}
{{- define "modelrollout.spread" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- .selector | nindent 12 }}
{{- end -}}

{{/* Combinations the schema cannot express, refused with the value to change. */}}
{{- define "modelrollout.validate" -}}
{{- if and (gt (int .Values.controller.replicas) 1) (not .Values.controller.leaderElection.enabled) -}}
{{- fail (printf "controller.replicas is %d but controller.leaderElection.enabled is false: two controllers would act on the same rollouts. Set controller.replicas=1 or enable leader election." (int .Values.controller.replicas)) -}}
{{- end -}}
{{- if and .Values.proxy.enabled (eq .Values.proxy.routing.source "mount") (ne (include "modelrollout.proxy.routingNamespace" .) .Release.Namespace) -}}
{{- fail (printf "proxy.routing.source=mount cannot mount a ConfigMap of namespace %s into pods of %s: install the chart there, or use proxy.routing.source=watch." .Values.proxy.routing.namespace .Release.Namespace) -}}
{{- end -}}
{{- if eq .Values.proxy.port .Values.proxy.adminPort -}}
{{- fail (printf "proxy.port and proxy.adminPort are both %d: the API and the admin endpoints need two ports." (int .Values.proxy.port)) -}}
{{- end -}}
{{- end -}}
