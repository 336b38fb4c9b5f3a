{{/*
Where spotq's pods run and how they rank against other pods: the pod template's affinity, topology spread and
priority class. The chart's defaults are added to the operator's `affinity` (never instead of it); each has a switch.
*/}}

{{/* Spot capacity as the common provisioners label it; a node with none of these labels is not known to be Spot. */}}
{{- define "spotq.spotLabels" -}}
eks.amazonaws.com/capacityType: SPOT
karpenter.sh/capacity-type: spot
lifecycle: Ec2Spot
{{- end }}

{{- define "spotq.spreadsReplicas" -}}
{{- if and (eq .Values.mode "queue") .Values.placement.spreadReplicas (gt (int .Values.replicas) 1) }}true{{ end }}
{{- end }}

{{/* The pod's affinity as YAML (empty when there is none): the operator's, plus the chart's defaults. */}}
{{- define "spotq.affinity" -}}
{{- $affinity := deepCopy (.Values.affinity | default dict) }}
{{- if and (eq .Values.mode "queue") .Values.placement.avoidSpot }}
{{- /* The consumer keeps the other nodes alive: it should not share their two-minute fate. */}}
{{- $expressions := list }}
{{- range $key, $value := include "spotq.spotLabels" . | fromYaml }}
{{- $expressions = append $expressions (dict "key" $key "operator" "NotIn" "values" (list $value)) }}
{{- end }}
{{- $term := dict "weight" 100 "preference" (dict "matchExpressions" $expressions) }}
{{- $node := get $affinity "nodeAffinity" | default dict }}
{{- $preferred := get $node "preferredDuringSchedulingIgnoredDuringExecution" | default list }}
{{- $_ := set $node "preferredDuringSchedulingIgnoredDuringExecution" (append $preferred $term) }}
{{- $_ = set $affinity "nodeAffinity" $node }}
{{- end }}
{{- if include "spotq.spreadsReplicas" . }}
{{- $selector := dict "matchLabels" (include "spotq.selectorLabels" . | fromYaml) }}
{{- $term := dict "weight" 100 "podAffinityTerm" (dict "topologyKey" "kubernetes.io/hostname" "labelSelector" $selector) }}
{{- $anti := get $affinity "podAntiAffinity" | default dict }}
{{- $preferred := get $anti "preferredDuringSchedulingIgnoredDuringExecution" | default list }}
{{- $_ := set $anti "preferredDuringSchedulingIgnoredDuringExecution" (append $preferred $term) }}
{{- $_ = set $affinity "podAntiAffinity" $anti }}
{{- end }}
{{- if and (eq .Values.mode "imds") .Values.daemonset.excludeFargate }}
{{- /* Fargate has no DaemonSets and no Spot, and the DaemonSet tolerates every taint, Fargate's included. */}}
{{- $notFargate := dict "key" "eks.amazonaws.com/compute-type" "operator" "NotIn" "values" (list "fargate") }}
{{- $node := get $affinity "nodeAffinity" | default dict }}
{{- $required := get $node "requiredDuringSchedulingIgnoredDuringExecution" | default dict }}
{{- $terms := list }}
{{- range $required.nodeSelectorTerms | default (list dict) }}
{{- $terms = append $terms (set . "matchExpressions" (append (.matchExpressions | default list) $notFargate)) }}
{{- end }}
{{- $_ := set $required "nodeSelectorTerms" $terms }}
{{- $_ = set $node "requiredDuringSchedulingIgnoredDuringExecution" $required }}
{{- $_ = set $affinity "nodeAffinity" $node }}
{{- end }}
{{- with $affinity }}{{ toYaml . }}{{ end }}
{{- end }}

{{/* Queue mode: the operator's constraints as given, else (replicas > 1) one zone spread that never blocks. */}}
{{- define "spotq.topologySpreadConstraints" -}}
{{- if eq .Values.mode "queue" }}
{{- if .Values.topologySpreadConstraints }}
{{- toYaml .Values.topologySpreadConstraints }}
{{- else if include "spotq.spreadsReplicas" . }}
- maxSkew: 1
  topologyKey: topology.kubernetes.io/zone
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- include "spotq.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end }}
{{- end }}

{{/* null: system-cluster-critical (queue) or system-node-critical (imds); "": none; else the name given. */}}
{{- define "spotq.priorityClassName" -}}
{{- $given := .Values.priorityClassName }}
{{- if kindIs "invalid" $given }}
{{- if eq .Values.mode "imds" }}system-node-critical{{ else }}system-cluster-critical{{ end }}
{{- else }}
{{- $given }}
{{- end }}
{{- end }}
