# syntax=docker/dockerfile:1
# mqtt-liveness-proxy: the proxy alone (the Helm chart runs Mosquitto in its own
# container), compiled JavaScript run by plain node.
#
#   docker build -t mqtt-liveness-proxy:0.1.0 .
#   docker run --rm -p 1883:1883 -p 9464:9464 mqtt-liveness-proxy:0.1.0 --upstream broker:1883 --broker none
#
# Node: the LTS lines the tests run on are 20, 22 and 24 (package.json engines).
ARG NODE_VERSION=22
# Any Debian-based image with node and npm will do (proxy/test/image.test.ts
# builds from a debootstrap root filesystem with Node from the npm registry).
ARG BUILD_IMAGE=node:${NODE_VERSION}-bookworm
ARG RUNTIME_IMAGE=node:${NODE_VERSION}-bookworm-slim

# Compile proxy/src to dist/, then keep the production dependencies only.
# --ignore-scripts: the root `prepare` would build before the sources are here;
# koffi's install script only checks that its prebuilt binary loads.
FROM ${BUILD_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm \
    npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY proxy/src ./proxy/src
COPY broker ./broker
RUN npm run build \
 && npm prune --omit=dev --ignore-scripts --no-audit --no-fund

FROM ${RUNTIME_IMAGE} AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build --chown=root:root /src/node_modules ./node_modules
COPY --from=build --chown=root:root /src/dist ./dist
COPY --chown=root:root package.json ./
COPY --chown=root:root proxy/bin ./proxy/bin
# broker/ holds runtime assets only (mosquitto.conf); the code is in proxy/src/broker/.
COPY --chown=root:root broker/mosquitto.conf ./broker/
# The node image's unprivileged user; numeric so runAsNonRoot can verify it.
USER 1000:1000
# MQTT and the admin server (/metrics, /livez, /readyz).
EXPOSE 1883 9464
ENTRYPOINT ["node", "--max-semi-space-size=8", "/app/proxy/bin/mqtt-liveness-proxy.js"]
CMD []
