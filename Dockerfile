# syntax=docker/dockerfile:1
# mqtt-liveness-proxy: the proxy alone (the Helm chart runs Mosquitto in its own
# container). The TypeScript sources run through tsx, a runtime dependency.
#
#   docker build -t mqtt-liveness-proxy:0.1.0 .
#   docker run --rm -p 1883:1883 -p 9464:9464 mqtt-liveness-proxy:0.1.0 --upstream broker:1883 --broker none
#
# Node: the current LTS line; the product supports Node >= 20.18.
ARG NODE_VERSION=22

# Production dependencies only. The full image has the toolchain in case a
# native module (koffi) has no prebuilt binary for the platform.
FROM node:${NODE_VERSION}-bookworm AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund \
 && npm cache clean --force

FROM node:${NODE_VERSION}-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY --from=deps --chown=root:root /app/node_modules ./node_modules
COPY --chown=root:root package.json ./
COPY --chown=root:root proxy/bin ./proxy/bin
COPY --chown=root:root proxy/src ./proxy/src
# broker/ holds runtime assets only (mosquitto.conf); the code is in proxy/src/broker/.
COPY --chown=root:root broker ./broker
# The node image's unprivileged user; numeric so runAsNonRoot can verify it.
USER 1000:1000
# MQTT and the admin server (/metrics, /livez, /readyz).
EXPOSE 1883 9464
ENTRYPOINT ["node", "/app/proxy/bin/mqtt-liveness-proxy.js"]
CMD []
