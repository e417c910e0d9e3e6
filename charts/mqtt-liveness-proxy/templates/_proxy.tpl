{{/* The proxy container; .sidecar: as a native sidecar (init container). */}}
{{- define "mlp.proxyContainer" -}}
{{- $v := .root.Values -}}
- name: proxy
  image: {{ include "mlp.image" (dict "root" .root "image" $v.proxy.image) }}
  imagePullPolicy: {{ $v.proxy.image.pullPolicy }}
  {{- if .sidecar }}
  restartPolicy: Always
  {{- end }}
  command: ["node", "--max-semi-space-size=8", "/app/proxy/bin/mqtt-liveness-proxy.js"]
  args:
    - --config
    - /etc/mqtt-liveness-proxy/config/config.yaml
    {{- with $v.proxy.extraArgs }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- $secretEnv := include "mlp.proxySecretEnv" .root }}
  {{- if or $v.proxy.env $secretEnv }}
  env:
    {{- with $secretEnv }}
    {{- . | nindent 4 }}
    {{- end }}
    {{- with $v.proxy.env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
  {{- with $v.proxy.envFrom }}
  envFrom:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  ports:
    - name: mqtt
      containerPort: {{ int $v.proxy.ports.mqtt }}
      protocol: TCP
    {{- if $v.proxy.tls.enabled }}
    - name: mqtts
      containerPort: {{ int $v.proxy.tls.port }}
      protocol: TCP
    {{- end }}
    {{- if $v.proxy.websocket.enabled }}
    - name: ws
      containerPort: {{ int $v.proxy.websocket.port }}
      protocol: TCP
    {{- end }}
    - name: admin
      containerPort: {{ int $v.proxy.ports.admin }}
      protocol: TCP
  startupProbe:
    httpGet:
      path: /livez
      port: admin
    {{- toYaml $v.proxy.startupProbe | nindent 4 }}
  livenessProbe:
    httpGet:
      path: /livez
      port: admin
    {{- toYaml $v.proxy.livenessProbe | nindent 4 }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: admin
    {{- toYaml $v.proxy.readinessProbe | nindent 4 }}
  resources:
    {{- toYaml $v.proxy.resources | nindent 4 }}
  securityContext:
    {{- toYaml $v.proxy.securityContext | nindent 4 }}
  volumeMounts:
    - name: proxy-config
      mountPath: /etc/mqtt-liveness-proxy/config
      readOnly: true
    {{- if $v.proxy.tls.enabled }}
    - name: tls
      mountPath: /etc/mqtt-liveness-proxy/tls
      readOnly: true
    {{- end }}
    {{- with $v.proxy.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}
