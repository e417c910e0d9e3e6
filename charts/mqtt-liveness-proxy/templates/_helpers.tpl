{{/* vim: set filetype=mustache: */}}

{{- define "mlp.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mlp.fullname" -}}
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

{{/* A name derived from the fullname with a suffix, at most 63 characters. */}}
{{- define "mlp.suffixed" -}}
{{- $base := include "mlp.fullname" .ctx | trunc (int (sub 62 (len .suffix))) | trimSuffix "-" -}}
{{- printf "%s-%s" $base .suffix -}}
{{- end -}}

{{- define "mlp.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mlp.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlp.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "mlp.labels" -}}
helm.sh/chart: {{ include "mlp.chart" . }}
{{ include "mlp.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mqtt-liveness-proxy
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "mlp.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mlp.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* registry/repository:tag or @digest; global.imageRegistry wins over image.registry. */}}
{{- define "mlp.image" -}}
{{- $tag := default .root.Chart.AppVersion .image.tag | toString -}}
{{- $registry := ((.root.Values.global | default dict).imageRegistry | default .image.registry) | default "" | trimSuffix "/" -}}
{{- $repository := .image.repository -}}
{{- if $registry -}}
{{- $repository = printf "%s/%s" $registry .image.repository -}}
{{- end -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "mlp.brokerMode" -}}
{{- if eq .Values.mode "broker" }}true{{ end -}}
{{- end -}}

{{- define "mlp.statefulset" -}}
{{- if and (eq .Values.mode "broker") .Values.broker.persistence.enabled }}true{{ end -}}
{{- end -}}

{{/* The proxy's configuration file: values plus what the chart owns. */}}
{{- define "mlp.proxyConfig" -}}
{{- $c := deepCopy (.Values.proxy.config | default dict) -}}
{{- $_ := set $c "listen" (printf "0.0.0.0:%d" (int .Values.proxy.ports.mqtt)) -}}
{{- $_ := set $c "admin" (printf "0.0.0.0:%d" (int .Values.proxy.ports.admin)) -}}
{{- $_ := set $c "broker" "none" -}}
{{- if eq .Values.mode "broker" -}}
{{- $_ := set $c "upstream" (printf "127.0.0.1:%d" (int (include "mlp.brokerUpstreamPort" .))) -}}
{{- else -}}
{{- $_ := set $c "upstream" (required "mode standalone needs proxy.upstream (HOST:PORT of the broker)" .Values.proxy.upstream) -}}
{{- end -}}
{{- if .Values.proxy.tls.enabled -}}
{{- $tls := dict "listen" (printf "0.0.0.0:%d" (int .Values.proxy.tls.port)) "cert" "/etc/mqtt-liveness-proxy/tls/tls.crt" "key" "/etc/mqtt-liveness-proxy/tls/tls.key" "requestCert" .Values.proxy.tls.requestCert -}}
{{- if .Values.proxy.tls.requestCert -}}
{{- $_ := set $tls "ca" (printf "/etc/mqtt-liveness-proxy/tls/%s" .Values.proxy.tls.caKey) -}}
{{- end -}}
{{- $_ := set $c "tls" $tls -}}
{{- end -}}
{{- if .Values.proxy.websocket.enabled -}}
{{- if and .Values.proxy.websocket.tls (not .Values.proxy.tls.enabled) -}}
{{- fail "proxy.websocket.tls (wss) needs proxy.tls.enabled (the certificate)" -}}
{{- end -}}
{{- $_ := set $c "websocket" (dict "listen" (printf "0.0.0.0:%d" (int .Values.proxy.websocket.port)) "path" .Values.proxy.websocket.path "tls" .Values.proxy.websocket.tls) -}}
{{- end -}}
{{- range $k, $v := deepCopy $c -}}
{{- if and (or (kindIs "map" $v) (kindIs "slice" $v)) (empty $v) -}}
{{- $_ := unset $c $k -}}
{{- end -}}
{{- end -}}
{{- toYaml $c -}}
{{- end -}}

{{/*
The part of the proxy configuration that the proxy cannot apply by reloading
its file (docs/operations.md): its hash rolls the pod. Everything else
(keepAlive, rules, tcp, limits, logLevel, ...) is reloaded from the mounted
file within about a minute, so changing it restarts nothing, not the broker.
*/}}
{{- define "mlp.proxyRestartConfig" -}}
{{- $c := .Values.proxy.config | default dict -}}
{{- $probes := omit ($c.probes | default dict) "onBrokerDown" "upstreamProbeIdle" "upstreamProbeTimeout" -}}
{{- $restart := dict "adminToken" ($c.adminToken | default "") "events" ($c.events | default dict) "probes" $probes "upstream" .Values.proxy.upstream -}}
{{- toYaml $restart -}}
{{- end -}}

{{/* Environment variables from proxy.existingSecret (MLP_ + key path, as the proxy reads them). */}}
{{- define "mlp.proxySecretEnv" -}}
{{- $s := .Values.proxy.existingSecret -}}
{{- if and $s.name $s.adminTokenKey }}
- name: MLP_ADMIN_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $s.name }}
      key: {{ $s.adminTokenKey }}
{{- end }}
{{- if and $s.name $s.probesPasswordKey }}
- name: MLP_PROBES__PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $s.name }}
      key: {{ $s.probesPasswordKey }}
{{- end }}
{{- end -}}

{{/* "true" when the proxy configuration holds secrets and goes into a Secret. */}}
{{- define "mlp.proxyConfigIsSecret" -}}
{{- $c := .Values.proxy.config | default dict -}}
{{- $probes := $c.probes | default dict -}}
{{- if or $c.adminToken $probes.password }}true{{ end -}}
{{- end -}}

{{/* "true" when the proxy sends PROXY v2 headers to the broker. */}}
{{- define "mlp.proxyProtocolUpstream" -}}
{{- $pp := (.Values.proxy.config | default dict).proxyProtocol | default dict -}}
{{- if eq (toString ($pp.upstream | default "off")) "v2" }}true{{ end -}}
{{- end -}}

{{/* The broker port the proxy connects to in broker mode: the PROXY listener when upstream is v2. */}}
{{- define "mlp.brokerUpstreamPort" -}}
{{- if include "mlp.proxyProtocolUpstream" . -}}{{ int .Values.broker.proxyProtocolPort }}{{- else -}}{{ int .Values.broker.port }}{{- end -}}
{{- end -}}

{{/* mosquitto.conf */}}
{{- define "mlp.mosquittoConf" -}}
# Mosquitto behind mqtt-liveness-proxy (rendered by the chart).
# Loopback only: clients cannot bypass the proxy.
per_listener_settings false
listener {{ int .Values.broker.port }} 127.0.0.1
{{- if include "mlp.proxyProtocolUpstream" . }}
# The proxy's connections carry a PROXY v2 header with the client's address
# (proxyProtocol.upstream: v2; Mosquitto >= 2.1). The listener above stays
# without it for the probes.
listener {{ int .Values.broker.proxyProtocolPort }} 127.0.0.1
enable_proxy_protocol 2
{{- end }}
# Without it, small packets wait for Nagle's algorithm (40 ms stalls, BENCHMARKS.md).
set_tcp_nodelay true
{{- if .Values.broker.auth.enabled }}
allow_anonymous false
password_file /mosquitto/auth/{{ .Values.broker.auth.secretKey }}
{{- else }}
allow_anonymous true
{{- end }}
{{- if .Values.broker.persistence.enabled }}
persistence true
persistence_location /mosquitto/data/
autosave_interval {{ int .Values.broker.persistence.autosaveInterval }}
{{- else }}
persistence false
{{- end }}
log_dest stdout
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
log_timestamp true
{{- with .Values.broker.extraConfig }}
# extraConfig
{{ . }}
{{- end }}
{{ end -}}

{{/* Checks that fail the render with a clear message. */}}
{{- define "mlp.validate" -}}
{{- if and .Values.proxy.nativeSidecar (eq .Values.mode "broker") (semverCompare "<1.29.0-0" .Capabilities.KubeVersion.Version) -}}
{{- fail (printf "proxy.nativeSidecar needs Kubernetes >= 1.29 (cluster: %s)" .Capabilities.KubeVersion.Version) -}}
{{- end -}}
{{- if and .Values.broker.auth.enabled (eq .Values.mode "broker") (not .Values.broker.auth.existingSecret) (not .Values.broker.auth.passwordFile) -}}
{{- fail "broker.auth.enabled needs broker.auth.existingSecret or broker.auth.passwordFile" -}}
{{- end -}}
{{- $probes := (.Values.proxy.config | default dict).probes | default dict -}}
{{- if and .Values.broker.auth.enabled (eq .Values.mode "broker") (ne (toString $probes.enabled) "false") (not $probes.username) -}}
{{- fail "broker.auth.enabled: the proxy's canary needs proxy.config.probes.username and password (or set proxy.config.probes.enabled: false)" -}}
{{- end -}}
{{- if and .Values.broker.auth.enabled .Values.broker.livenessProbe.enabled -}}
{{- fail "broker.livenessProbe subscribes anonymously to $SYS: it cannot be used with broker.auth.enabled" -}}
{{- end -}}
{{- $es := .Values.proxy.existingSecret -}}
{{- if and $es.name (not $es.adminTokenKey) (not $es.probesPasswordKey) -}}
{{- fail "proxy.existingSecret.name needs adminTokenKey and/or probesPasswordKey (the keys of that Secret to use)" -}}
{{- end -}}
{{- if and (or $es.adminTokenKey $es.probesPasswordKey) (not $es.name) -}}
{{- fail "proxy.existingSecret.adminTokenKey/probesPasswordKey need proxy.existingSecret.name" -}}
{{- end -}}
{{- if and $es.name $es.adminTokenKey (.Values.proxy.config | default dict).adminToken -}}
{{- fail "set the admin token either in proxy.config.adminToken or in proxy.existingSecret, not both" -}}
{{- end -}}
{{- if and $es.name $es.probesPasswordKey $probes.password -}}
{{- fail "set the canary password either in proxy.config.probes.password or in proxy.existingSecret, not both" -}}
{{- end -}}
{{- if and .Values.proxy.tls.enabled (not .Values.proxy.tls.secretName) -}}
{{- fail "proxy.tls.enabled needs proxy.tls.secretName (a kubernetes.io/tls Secret)" -}}
{{- end -}}
{{- $grace := (.Values.proxy.config | default dict).shutdownGrace | default 10 -}}
{{- $delay := (.Values.proxy.config | default dict).shutdownDelay | default 0 -}}
{{- if ge (addf $grace $delay) (float64 .Values.terminationGracePeriodSeconds) -}}
{{- fail (printf "proxy.config.shutdownDelay + shutdownGrace (%v + %v s) must be shorter than terminationGracePeriodSeconds (%v s)" $delay $grace .Values.terminationGracePeriodSeconds) -}}
{{- end -}}
{{- end -}}
