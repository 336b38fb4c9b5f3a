{{/* Names: the usual Helm shape, truncated to the 63 characters a label or DNS name allows. */}}
{{- define "spotq.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "spotq.fullname" -}}
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

{{- define "spotq.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels never change for a release (Deployment and DaemonSet selectors are immutable). */}}
{{- define "spotq.selectorLabels" -}}
app.kubernetes.io/name: {{ include "spotq.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "spotq.labels" -}}
helm.sh/chart: {{ include "spotq.chart" . }}
{{ include "spotq.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/component: {{ include "spotq.component" . }}
app.kubernetes.io/part-of: spotq
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "spotq.component" -}}
{{- if eq .Values.mode "imds" }}imds-monitor{{ else }}queue-consumer{{ end }}
{{- end }}

{{- define "spotq.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "spotq.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "spotq.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* The settings groups of spotq/settings.py. A new setting in a known group needs no chart change. */}}
{{- define "spotq.settingsGroups" -}}
queue aws kube policy drain server log imds webhook audit
{{- end }}

{{/* Settings the chart itself provides: the pod's own identity from the downward API, in-cluster config. */}}
{{- define "spotq.reservedSettings" -}}
SPOTQ_KUBE__POD_NAME SPOTQ_KUBE__POD_NAMESPACE SPOTQ_KUBE__KUBECONFIG SPOTQ_KUBE__CONTEXT SPOTQ_AWS__REGION SPOTQ_WEBHOOK__URL_SECRET SPOTQ_WEBHOOK__URL_FILE
{{- end }}

{{/* The webhook URL's file, mounted from webhook.urlSecret (the URL never appears in the pod spec). */}}
{{- define "spotq.webhookUrlDir" -}}
/etc/spotq/webhook
{{- end }}

{{- define "spotq.webhookSecret" -}}
{{- $webhook := .Values.webhook | default dict }}
{{- $secret := $webhook.urlSecret | default dict }}
{{- if $secret.name }}
{{- if $webhook.url }}
{{- fail "set webhook.url or webhook.urlSecret.name, not both (the Secret is the place for a URL that carries a token)" }}
{{- end }}
{{- $secret.name }}
{{- end }}
{{- end }}

{{/* A setting as an env value: strings as they are, numbers and booleans as JSON (1209600, never 1.2096e+06). */}}
{{- define "spotq.envValue" -}}
{{- if kindIs "string" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{- define "spotq.float" -}}
{{- if kindIs "invalid" . }}0{{ else }}{{ toJson . | trimAll "\"" }}{{ end }}
{{- end }}

{{- define "spotq.stopGraceSeconds" -}}
{{- $value := .Values.queue.stopGraceSeconds }}
{{- if or (kindIs "invalid" $value) (eq (toString $value) "") }}20{{ else }}{{ include "spotq.float" $value }}{{ end }}
{{- end }}

{{/* Deletes pods (and so needs RBAC for it) only with the force option on, or completing admitted evictions. */}}
{{- define "spotq.deletesPods" -}}
{{- $value := .Values.drain.forceDeleteBeforeDeadlineSeconds }}
{{- $complete := (.Values.drain).completeAdmittedEvictions }}
{{- if and (not (kindIs "invalid" $value)) (ne (toString $value) "") (gt (float64 (include "spotq.float" $value)) 0.0) }}true
{{- else if or (kindIs "invalid" $complete) (eq (toString $complete) "true") }}true{{ end }}
{{- end }}

{{- define "spotq.terminationGracePeriodSeconds" -}}
{{- $stop := float64 (include "spotq.stopGraceSeconds" .) }}
{{- $given := .Values.terminationGracePeriodSeconds }}
{{- if kindIs "invalid" $given }}
{{- add (ceil $stop | int) 15 }}
{{- else }}
{{- if le (float64 $given) $stop }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be longer than queue.stopGraceSeconds (%v): in-flight messages need time to be handed back" $given $stop) }}
{{- end }}
{{- int64 $given }}
{{- end }}
{{- end }}

{{/* The region: aws.region, else the one in a queue URL like https://sqs.eu-west-1.amazonaws.com/123/name. */}}
{{- define "spotq.region" -}}
{{- if .Values.aws.region }}
{{- .Values.aws.region }}
{{- else if .Values.queue.url }}
{{- $found := regexFind "^https://sqs\\.[a-z0-9-]+\\.amazonaws\\.com" .Values.queue.url }}
{{- if $found }}{{ $found | trimPrefix "https://sqs." | trimSuffix ".amazonaws.com" }}{{ end }}
{{- end }}
{{- end }}

{{/* Environment of the container: settings from the group maps, the region, the pod's identity, extras. */}}
{{- define "spotq.env" -}}
{{- $root := . }}
{{- $reserved := splitList " " (include "spotq.reservedSettings" .) }}
{{- range $group := splitList " " (include "spotq.settingsGroups" .) }}
{{- range $key, $value := (index $root.Values $group) | default dict }}
{{- $name := printf "SPOTQ_%s__%s" $group (snakecase $key) | upper }}
{{- if and (not (has $name $reserved)) (not (kindIs "invalid" $value)) (ne (toString $value) "") (not (and (kindIs "map" $value) (empty $value))) }}
- name: {{ $name }}
  value: {{ include "spotq.envValue" $value | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- if include "spotq.webhookSecret" . }}
- name: SPOTQ_WEBHOOK__URL_FILE
  value: {{ printf "%s/url" (include "spotq.webhookUrlDir" .) | quote }}
{{- end }}
{{- with include "spotq.region" . }}
- name: SPOTQ_AWS__REGION
  value: {{ . | quote }}
{{- end }}
- name: SPOTQ_KUBE__POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: SPOTQ_KUBE__POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- if eq .Values.mode "imds" }}
- name: NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
{{- end }}
{{- range $name, $value := .Values.env }}
- name: {{ $name }}
  value: {{ include "spotq.envValue" $value | quote }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The pod template shared by the Deployment (queue mode) and the DaemonSet (IMDS mode). */}}
{{- define "spotq.podTemplate" -}}
metadata:
  labels:
    {{- include "spotq.labels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  serviceAccountName: {{ include "spotq.serviceAccountName" . }}
  automountServiceAccountToken: true
  terminationGracePeriodSeconds: {{ include "spotq.terminationGracePeriodSeconds" . }}
  {{- with include "spotq.priorityClassName" . }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if and (eq .Values.mode "imds") .Values.daemonset.hostNetwork }}
  hostNetwork: true
  dnsPolicy: ClusterFirstWithHostNet
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  containers:
    - name: spotq
      image: {{ include "spotq.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args: [{{ if eq .Values.mode "imds" }}imds{{ else }}run{{ end }}]
      env:
        {{- include "spotq.env" . | trim | nindent 8 }}
      ports:
        - name: http-metrics
          containerPort: {{ .Values.server.port | default 8080 }}
          protocol: TCP
      livenessProbe:
        httpGet:
          path: /healthz
          port: http-metrics
        {{- toYaml .Values.livenessProbe | nindent 8 }}
      readinessProbe:
        httpGet:
          path: /readyz
          port: http-metrics
        {{- toYaml .Values.readinessProbe | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      volumeMounts:
        # The root filesystem is read-only; client libraries may still want a scratch directory.
        - name: tmp
          mountPath: /tmp
        {{- if include "spotq.webhookSecret" . }}
        - name: webhook-url
          mountPath: {{ include "spotq.webhookUrlDir" . }}
          readOnly: true
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: 16Mi
    {{- with include "spotq.webhookSecret" . }}
    - name: webhook-url
      secret:
        secretName: {{ . }}
        defaultMode: 0440
        items:
          - key: {{ $.Values.webhook.urlSecret.key | default "url" }}
            path: url
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with include "spotq.affinity" . }}
  affinity:
    {{- . | nindent 4 }}
  {{- end }}
  {{- $tolerations := .Values.tolerations }}
  {{- if eq .Values.mode "imds" }}
  {{- $tolerations = concat .Values.tolerations .Values.daemonset.tolerations }}
  {{- end }}
  {{- with $tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with include "spotq.topologySpreadConstraints" . }}
  topologySpreadConstraints:
    {{- . | nindent 4 }}
  {{- end }}
{{- end }}

{{/* The periodic audit runs (queue mode, audit.intervalSeconds > 0): it lists the workloads that own pods. */}}
{{- define "spotq.audits" -}}
{{- if and (eq .Values.mode "queue") (gt (float64 ((.Values.audit).intervalSeconds | default 0)) 0.0) }}true{{ end }}
{{- end }}
