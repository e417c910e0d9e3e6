#!/bin/sh
# The test files run on every Node LTS line (.ci/run): all of proxy/test except
# those that check artefacts with other tools rather than the Node runtime
# (helm, promtool, Grafana JSON, README, the container image, which brings its
# own Node) and the pulled-cable tests in network namespaces (kernel timing,
# the slowest part; Node 20 runs them in `npm test`).
# Usage: scripts/lts-subset.sh   (prints the files, one a line)
set -eu
cd "$(dirname "$0")/.."
ls proxy/test/*.test.ts | grep -v -E '/(helm|helm-pod|helm-image|dashboard|dashboard-data|prometheus|rules|readme|image|netns|liveness-cable|translate)\.test\.ts$'
